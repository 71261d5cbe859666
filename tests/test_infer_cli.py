"""``geoembed infer``: outputs written, features usable as a field, errors before any task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from click.testing import CliRunner

from geoembed.cli import main
from geoembed.infer import write_sidecar
from geoembed.infer.models import conv_stack
from geoembed.testing import make_field


@pytest.fixture
def source(tmp_path: Path) -> Path:
    import rasterio

    field = make_field(60, 70, bands=8, chunks=None, seed=3)
    path = tmp_path / "field.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=70,
        height=60,
        count=8,
        dtype="float32",
        crs=field.rio.crs,
        transform=field.rio.transform(),
        nodata=np.nan,
    ) as dst:
        dst.write(field.values)
        dst.descriptions = tuple(str(b) for b in field["band"].values)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = Path(conv_stack(tmp_path / "m.onnx", bands=8, depth=2, features=True, n_classes=3))
    write_sidecar(
        path.with_suffix(".json"),
        classes=["a", "b", "c"],
        colors=["#ff0000", "#00ff00", "#0000ff"],
        receptive_radius=2,
    )
    return path


def _run(args: list[str]):
    return CliRunner().invoke(main, ["--scheduler", "threads", "-q", *args])


def test_infer_writes_classes_probabilities_features(source, model, tmp_path) -> None:
    import rasterio

    out, probs, feats = tmp_path / "c.tif", tmp_path / "p.tif", tmp_path / "f.zarr"
    res = _run(
        [
            "infer",
            str(source),
            "--model",
            str(model),
            "--tile",
            "32",
            "--overlap",
            "4",
            "-o",
            str(out),
            "--probabilities",
            str(probs),
            "--features",
            str(feats),
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert set(summary["outputs"]) == {"classes", "probabilities", "features"}
    with rasterio.open(out) as ds:
        cls = ds.read(1)
        assert ds.nodata == 255
        assert ds.colormap(1)[0][:3] == (255, 0, 0)
    assert (cls[2:5, 3:7] == 255).all() and set(np.unique(cls)) <= {0, 1, 2, 255}
    with rasterio.open(probs) as ds:
        assert ds.count == 3
        p = ds.read()
    np.testing.assert_allclose(np.nansum(p, axis=0)[10:, 10:], 1.0, rtol=1e-5)

    from geoembed.io import open_embeddings
    from geoembed.schema import check_embedding

    field = open_embeddings(feats)
    check_embedding(field, bands=16)
    assert field.rio.crs is not None
    assert np.isnan(field.values[:, 2:5, 3:7]).all()


def test_infer_band_mismatch_fails_before_writing(source, tmp_path) -> None:
    bad = conv_stack(tmp_path / "bad.onnx", bands=5)
    out = tmp_path / "c.tif"
    res = _run(["infer", str(source), "--model", bad, "-o", str(out)])
    assert res.exit_code == 2
    assert "takes 5 input bands" in res.output
    assert not out.exists()
    assert list(tmp_path.glob("c.tif*")) == []


def test_infer_needs_an_output(source, model) -> None:
    res = _run(["infer", str(source), "--model", str(model)])
    assert res.exit_code != 0
    assert "at least one output" in res.output


OUTPUT_FLAGS = {"classes": ("-o", "c.tif"), "probabilities": ("--probabilities", "p.tif")}
OUTPUT_FLAGS["features"] = ("--features", "f.zarr")


@pytest.mark.parametrize(
    "wanted",
    [
        ("classes",),
        ("probabilities",),
        ("features",),
        ("classes", "probabilities"),
        ("classes", "features"),
        ("probabilities", "features"),
        ("classes", "probabilities", "features"),
    ],
    ids="+".join,
)
def test_every_combination_of_outputs(source, model, tmp_path, wanted) -> None:
    import rasterio

    from geoembed.io import open_embeddings

    args = ["infer", str(source), "--model", str(model), "--tile", "32", "--overlap", "4"]
    for kind in wanted:
        flag, name = OUTPUT_FLAGS[kind]
        args += [flag, str(tmp_path / name)]
    res = _run([*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert set(summary["outputs"]) == set(wanted)
    assert summary["shape"] == {"y": 60, "x": 70}
    written = {p.name for p in tmp_path.iterdir()} - {source.name, "m.onnx", "m.json"}
    names = {OUTPUT_FLAGS[k][1] for k in wanted}
    assert written == names | {f"{n}.stac.json" for n in names}  # each output with its Item
    if "classes" in wanted:
        with rasterio.open(tmp_path / "c.tif") as ds:
            assert ds.read(1)[2:5, 3:7].tolist() == [[255] * 4] * 3
    if "probabilities" in wanted:
        with rasterio.open(tmp_path / "p.tif") as ds:
            probs = ds.read()
        assert probs.shape == (3, 60, 70)
        if "classes" in wanted:
            with rasterio.open(tmp_path / "c.tif") as ds:
                cls = ds.read(1)
            np.testing.assert_array_equal(cls[10:, 10:], probs[:, 10:, 10:].argmax(axis=0))
    if "features" in wanted:
        feats = open_embeddings(tmp_path / "f.zarr")
        assert feats.sizes == {"band": 16, "y": 60, "x": 70}
