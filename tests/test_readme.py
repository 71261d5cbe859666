"""The README's Python quickstart runs as written."""

import re
from pathlib import Path

import rasterio

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    quickstart = next(b for b in blocks if "synthetic_scene" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(quickstart, "README.md", "exec"), {})
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.count == 1 and src.crs is not None
    assert (tmp_path / "clusters.tif").stat().st_size > 0
