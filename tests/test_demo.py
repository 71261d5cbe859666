"""The demo end to end: synthetic scene -> Zarr/COG -> kNN + KMeans -> scores."""

import json

import rasterio
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from geoembed.cli import main


def test_demo_cli_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(
        main,
        [
            "--scheduler",
            "threads",
            "-q",
            "demo",
            "--out",
            str(out),
            "--size",
            "192",
            "--chunks",
            "96",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["scene"]["synthetic"] is True
    # The synthetic classes are separable but noisy: kNN is good, not perfect.
    assert 0.6 < summary["knn"]["overall_accuracy"] <= 1.0
    assert summary["kmeans"]["adjusted_rand_index"] > 0.2
    for key in ("truth", "knn_map", "knn_confidence", "clusters"):
        path = summary["outputs"][key]
        valid, errors, _ = cog_validate(path)
        assert valid, (key, errors)
    with rasterio.open(summary["outputs"]["knn_map"]) as src:
        assert src.crs is not None and src.nodata == 255
        assert src.colormap(1)
    assert (out / "field.zarr").is_dir() and (out / "quicklook.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["knn"] == summary["knn"]
