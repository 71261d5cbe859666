"""CNN feature maps from ``geoembed infer --features`` feed ``cluster`` and ``classify``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from geoembed.cli import main
from geoembed.export import write_cog
from geoembed.infer import write_sidecar
from geoembed.infer.models import conv_stack
from geoembed.io import open_embeddings
from geoembed.testing import make_field


def _cli(*args: str) -> dict:
    res = CliRunner().invoke(main, ["--scheduler", "threads", "-q", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_feature_map_is_a_field_for_cluster_and_classify(tmp_path: Path) -> None:
    import geopandas as gpd

    field = make_field(48, 72, bands=8, chunks=None, n_classes=3, seed=5)
    source = tmp_path / "image.tif"
    write_cog(field, source, blocksize=16)
    model = Path(conv_stack(tmp_path / "m.onnx", bands=8, depth=2, features=True, n_classes=3))
    write_sidecar(model.with_suffix(".json"), classes=["a", "b", "c"], receptive_radius=2)

    feats = tmp_path / "features.zarr"
    _cli(
        "infer",
        str(source),
        "--model",
        str(model),
        "--tile",
        "32",
        "--overlap",
        "4",
        "-o",
        str(tmp_path / "cnn.tif"),
        "--features",
        str(feats),
    )
    features = open_embeddings(feats)
    assert features.sizes["band"] == 16 and str(features["band"].values[0]) == "F000"
    assert features.rio.crs == field.rio.crs

    clusters = tmp_path / "clusters.tif"
    _cli("cluster", str(feats), "-k", "3", "--seed", "0", "-o", str(clusters))
    assert cog_validate(str(clusters))[0]

    # labels: one point per stripe column of the source field, in the field's CRS
    xs = field["x"].values[[5, 30, 60, 8, 33, 65, 10, 28, 55]]
    ys = field["y"].values[[20, 30, 40, 35, 15, 25, 44, 10, 30]]
    stripe = [(int(np.searchsorted(field["x"].values, x)) * 3) // 72 for x in xs]
    labels = gpd.GeoDataFrame(
        {"class": [f"s{s}" for s in stripe]},
        geometry=gpd.points_from_xy(xs, ys),
        crs=field.rio.crs,
    )
    labels.to_file(tmp_path / "labels.gpkg")
    out = tmp_path / "map.tif"
    summary = _cli(
        "classify",
        str(feats),
        "--labels",
        str(tmp_path / "labels.gpkg"),
        "--label-column",
        "class",
        "-k",
        "1",
        "-o",
        str(out),
    )
    assert cog_validate(str(out))[0]
    assert summary
