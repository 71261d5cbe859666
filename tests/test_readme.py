"""The README's Python quickstart runs as written."""

import re
from pathlib import Path

import numpy as np
import rasterio

from geoembed.colors import default_color
from geoembed.export import read_class_names

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    quickstart = next(b for b in blocks if "synthetic_scene" in b)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(quickstart, "README.md", "exec"), ns)
    field, training = ns["field"], ns["training"]
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.count == 1 and src.crs == field.rio.crs
        assert (src.height, src.width) == (field.sizes["y"], field.sizes["x"])
        assert read_class_names(tmp_path / "map.tif") == dict(enumerate(training.class_names))
        classes = src.read(1)
        assert set(np.unique(classes)) <= set(range(len(training.class_names))) | {255}
    with rasterio.open(tmp_path / "clusters.tif") as src:
        assert src.crs == field.rio.crs and src.dtypes[0] == "uint8"
        clusters = src.read(1)
        assert set(np.unique(clusters[clusters != 255])) == set(range(7))
        cmap = src.colormap(1)  # KMeans maps carry a colour table
        assert all(cmap[i][:3] == default_color(i)[:3] for i in range(7))
