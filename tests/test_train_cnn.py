"""geoembed train-cnn: labels on the grid, spatial split, training, ONNX export, CLI.

Real data: the Sentinel-2 L1C scene and land-use mask in ../shared/data/s2_slovenia
(MIT licence, from the eo-learn project).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("onnx")

from geoembed.errors import CRSMismatchError, LabelError, OutputError
from geoembed.testing import make_field
from geoembed.train import train_cnn
from geoembed.train.data import (
    IGNORE,
    LabelGrid,
    _dilate,
    class_weights,
    labels_from_polygons,
    labels_from_raster,
    sample_patches,
    spatial_split,
)

S2_BANDS = [f"B{i:02d}" for i in range(1, 9)] + ["B8A", "B09", "B10", "B11", "B12"]
TIME_STEP = 2  # one of the five cloud-free scenes
# small settings so that one training run takes a few seconds on one core
FAST = dict(patch=32, block=50, n_patches=64, batch_size=16, width=16, threads=1, progress=False)


def _s2_field(shared_data: Path, t: int = TIME_STEP) -> xr.DataArray:
    d = shared_data / "s2_slovenia"
    scene = np.load(d / "REFERENCE_SCENES.npy", mmap_mode="r")[t]
    ring = json.loads((d / "bbox.geojson").read_text())["coordinates"][0]
    x0, x1 = min(p[0] for p in ring), max(p[0] for p in ring)
    y0, y1 = min(p[1] for p in ring), max(p[1] for p in ring)
    h, w = scene.shape[:2]
    dx, dy = (x1 - x0) / w, (y1 - y0) / h
    da = xr.DataArray(
        np.ascontiguousarray(np.moveaxis(scene, -1, 0), dtype=np.float32),
        dims=("band", "y", "x"),
        coords={
            "band": S2_BANDS,
            "y": y1 - dy * (np.arange(h) + 0.5),
            "x": x0 + dx * (np.arange(w) + 0.5),
        },
        name="embedding",
    )
    return da.rio.write_crs("EPSG:32633").chunk({"band": -1, "y": 64, "x": 64})


@pytest.fixture(scope="module")
def s2(shared_data: Path) -> xr.DataArray:
    return _s2_field(shared_data)


@pytest.fixture(scope="module")
def lulc(shared_data: Path) -> np.ndarray:
    return np.load(shared_data / "s2_slovenia" / "LULC.npy")[:, :, 0]


@pytest.fixture(scope="module")
def lulc_tif(s2: xr.DataArray, lulc: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "lulc.tif"
    lab = xr.DataArray(lulc, dims=("y", "x"), coords={"y": s2.y, "x": s2.x})
    lab.rio.write_crs("EPSG:32633").rio.write_nodata(0).rio.to_raster(path)
    return path


@pytest.fixture(scope="module")
def trained(s2: xr.DataArray, lulc_tif: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("model") / "lulc.onnx"
    return train_cnn(s2, out, labels_raster=lulc_tif, epochs=12, seed=0, **FAST)


# --- real data --------------------------------------------------------------------------------


def test_real_scene_validation_accuracy_vs_knn(trained, lulc: np.ndarray) -> None:
    cnn, knn = trained.metrics["cnn"], trained.metrics["knn"]
    print(
        f"\ns2_slovenia t={TIME_STEP}, {cnn['pixels']} held-out pixels: "
        f"CNN acc {cnn['accuracy']:.3f} bal {cnn['balanced_accuracy']:.3f} "
        f"kappa {cnn['kappa']:.3f} | kNN(k=5) acc {knn['accuracy']:.3f} "
        f"bal {knn['balanced_accuracy']:.3f} kappa {knn['kappa']:.3f}"
    )
    # both scored on the same held-out pixels: every labelled pixel of the validation blocks
    val = trained.split.val_mask & (lulc > 0)
    assert cnn["pixels"] == knn["pixels"] == int(val.sum())
    # well above chance on land use (forest/grassland/shrub ... from 13 spectral bands)
    assert cnn["kappa"] > 0.3
    assert cnn["accuracy"] > 0.6
    # the validation blocks never entered training: windows keep `gap` px away from them
    near_val = _dilate(trained.split.val_mask, trained.split.gap)
    for r0, r1, c0, c1 in trained.train_windows:
        assert not near_val[r0:r1, c0:c1].any()
    assert trained.report["gap"] >= trained.report["receptive_radius"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("weighting", ["sqrt", "none"])
def test_real_scenes_all_time_steps(shared_data: Path, lulc_tif: Path, weighting: str) -> None:
    """Default settings (30 epochs, early stopping, width 32) on each of the five scenes."""
    print(
        f"\n class weighting {weighting}\n t  CNN acc/bal/kappa     kNN acc/bal/kappa   best epoch"
    )
    for t in range(5):
        res = train_cnn(
            _s2_field(shared_data, t), None, labels_raster=lulc_tif, patch=32, threads=1,
            progress=False, class_weighting=weighting,
        )  # fmt: skip
        c, k = res.metrics["cnn"], res.metrics["knn"]
        print(
            f" {t}  {c['accuracy']:.3f}/{c['balanced_accuracy']:.3f}/{c['kappa']:.3f}"
            f"    {k['accuracy']:.3f}/{k['balanced_accuracy']:.3f}/{k['kappa']:.3f}"
            f"   {res.report['best_epoch']}",
            flush=True,
        )
        assert c["pixels"] == k["pixels"] > 0


def test_exported_onnx_reproduces_torch(trained) -> None:
    ort = pytest.importorskip("onnxruntime")
    import torch

    session = ort.InferenceSession(str(trained.model_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(2, 13, 41, 57)).astype(np.float32)
    logits, feats = session.run(["logits", "features"], {"input": x})
    with torch.no_grad():
        want = trained.model(torch.from_numpy(x)).numpy()
        want_feats = trained.model.features(torch.from_numpy(x)).numpy()
    assert logits.shape == (2, 5, 41, 57)
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(feats, want_feats, atol=1e-4, rtol=1e-4)
    assert trained.spec["extra"]["onnx_max_abs_diff"] < 1e-4


def test_sidecar_is_what_infer_reads(trained, s2: xr.DataArray) -> None:
    from geoembed.infer.spec import file_sha256, load_model_spec, read_sidecar

    raw = read_sidecar(trained.config_path)
    assert trained.config_path == trained.model_path.with_suffix(".json")
    assert raw["bands"] == S2_BANDS
    assert len(raw["mean"]) == len(raw["std"]) == 13 and min(raw["std"]) > 0
    assert raw["classes"] == ["1", "2", "3", "4", "8"]
    assert raw["extra"]["class_values"] == [1, 2, 3, 4, 8]
    assert len(raw["colors"]) == 5 and all(c.startswith("#") for c in raw["colors"])
    assert raw["receptive_radius"] == sum(trained.spec["extra"]["architecture"]["dilations"])
    assert raw["overlap"] >= raw["receptive_radius"]
    assert raw["output_stride"] == 1 and raw["output_kind"] == "logits"
    assert raw["sha256"] == file_sha256(trained.model_path)
    spec = load_model_spec(trained.model_path)
    assert spec.input_shape == (None, 13, None, None)
    assert spec.outputs["logits"][1] == 5 and spec.features_output == "features"
    # mean/std come from the training pixels: inside each band's range, spread > 0
    lo, hi = s2.min(("y", "x")).values, s2.max(("y", "x")).values
    assert np.all((lo <= raw["mean"]) & (raw["mean"] <= hi))
    assert np.all(np.array(raw["std"]) <= hi - lo)


def test_infer_reproduces_validation_accuracy(trained, s2: xr.DataArray, lulc: np.ndarray) -> None:
    infer = pytest.importorskip("geoembed.infer")
    import dask

    out = infer.predict(s2, trained.model_path, output="classes")
    with dask.config.set(scheduler="sync"):
        classes = out["classes"].values
    val = trained.split.val_mask & (lulc > 0)
    values = np.array(trained.labels.class_values)
    pred = values[classes[val]]
    acc = float((pred == lulc[val]).mean())
    assert acc == pytest.approx(trained.metrics["cnn"]["accuracy"], abs=1e-3)
    # whole-image torch run with the same edge padding (mirrored, edge included)
    import torch

    raw = json.loads(trained.config_path.read_text())
    h = raw["receptive_radius"]
    x = np.pad(s2.values, ((0, 0), (h, h), (h, h)), mode="symmetric")
    x = (x - np.array(raw["mean"])[:, None, None]) / np.array(raw["std"])[:, None, None]
    with torch.no_grad():
        logits = trained.model(torch.from_numpy(x.astype(np.float32))[None])[0].numpy()
    want = logits[:, h:-h, h:-h].argmax(0)
    assert (classes == want).mean() > 0.999


def test_polygon_labels_train(s2, shared_data: Path, lulc: np.ndarray, dask_client) -> None:
    # the sampled windows are read on the LocalCluster's worker processes
    gpkg = shared_data / "s2_slovenia" / "LULC.gpkg"
    grid = labels_from_polygons(s2, gpkg, label_column="LULC_ID", name_column="LULC_NAME", nodata=0)
    values = np.array(grid.class_values)
    burnt = np.where(grid.ids >= 0, values[np.maximum(grid.ids, 0)], 0)
    assert (burnt == lulc).mean() > 0.99  # the polygons are the mask, rows north to south
    assert grid.class_names[grid.class_values.index(2)] == "forest"
    res = train_cnn(
        s2, None, labels=gpkg, label_column="LULC_ID", name_column="LULC_NAME", label_nodata=0,
        epochs=1, **{**FAST, "n_patches": 24, "width": 8},
    )  # fmt: skip
    assert res.labels.class_values == [1, 2, 3, 4, 8]
    assert "forest" in res.spec["classes"]
    assert res.model_path is None and len(res.history) == 1


# --- determinism -------------------------------------------------------------------------------


def _weights(res) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in res.model.state_dict().items()}


def test_same_seed_same_weights(s2: xr.DataArray, lulc_tif: Path) -> None:
    kw = dict(labels_raster=lulc_tif, epochs=2, **{**FAST, "n_patches": 24, "width": 8})
    a = train_cnn(s2, None, seed=5, **kw)
    b = train_cnn(s2, None, seed=5, **kw)
    c = train_cnn(s2, None, seed=6, **kw)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert a.metrics == b.metrics and a.history == b.history
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)


# --- bad input: clear errors before training ---------------------------------------------------


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoembed.train.fit as fit_mod

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(fit_mod, "fit", boom)


def test_label_raster_on_another_grid(s2, lulc, tmp_path, no_training) -> None:
    shifted = xr.DataArray(lulc, dims=("y", "x"), coords={"y": s2.y + 10.0, "x": s2.x})
    path = tmp_path / "shifted.tif"
    shifted.rio.write_crs("EPSG:32633").rio.write_nodata(0).rio.to_raster(path)
    with pytest.raises(LabelError, match=r"another grid.*reproject_match"):
        train_cnn(s2, tmp_path / "m.onnx", labels_raster=path, **FAST)
    cropped = xr.DataArray(lulc[:-1], dims=("y", "x"), coords={"y": s2.y[:-1], "x": s2.x})
    with pytest.raises(LabelError, match="another grid"):
        train_cnn(s2, None, labels_raster=cropped.rio.write_crs("EPSG:32633"), **FAST)
    other = xr.DataArray(lulc, dims=("y", "x"), coords={"y": s2.y, "x": s2.x})
    with pytest.raises(CRSMismatchError, match="EPSG:32634"):
        train_cnn(s2, None, labels_raster=other.rio.write_crs("EPSG:32634"), **FAST)
    assert list(tmp_path.iterdir()) == [path]


def test_missing_label_column(s2, shared_data, tmp_path, no_training) -> None:
    with pytest.raises(LabelError, match=r"no column 'landuse'.*LULC_ID"):
        train_cnn(
            s2, tmp_path / "m.onnx", labels=shared_data / "s2_slovenia" / "LULC.gpkg",
            label_column="landuse", **FAST,
        )  # fmt: skip
    with pytest.raises(LabelError, match="exactly one label source"):
        train_cnn(s2, None, **FAST)
    assert not list(tmp_path.iterdir())


def test_too_few_labelled_pixels(s2, lulc, tmp_path, no_training) -> None:
    sparse = np.zeros_like(lulc)
    sparse[10:14, 10:14] = 2
    sparse[80:83, 80:83] = 3
    lab = xr.DataArray(sparse, dims=("y", "x"), coords={"y": s2.y, "x": s2.x})
    lab = lab.rio.write_crs("EPSG:32633").rio.write_nodata(0)
    with pytest.raises(LabelError, match="Only 25 labelled pixels"):
        train_cnn(s2, tmp_path / "m.onnx", labels_raster=lab, **FAST)
    one = lab.where(lab != 3, 2).rio.write_nodata(0)
    with pytest.raises(LabelError, match="single class"):
        train_cnn(s2, None, labels_raster=one, min_labelled=1, **FAST)
    assert not list(tmp_path.iterdir())


def test_existing_output_is_kept(s2, lulc_tif, tmp_path, no_training) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="overwrite"):
        train_cnn(s2, out, labels_raster=lulc_tif, **FAST)
    with pytest.raises(OutputError, match=r"\.onnx"):
        train_cnn(s2, tmp_path / "m.pt", labels_raster=lulc_tif, **FAST)
    assert out.read_bytes() == b"keep me"


# --- units on synthetic grids ------------------------------------------------------------------


def _grid(ids: np.ndarray) -> LabelGrid:
    n = int(ids.max()) + 1
    return LabelGrid(
        ids.astype(np.int16), list(range(n)), [str(i) for i in range(n)], ["#000000"] * n
    )


def test_split_keeps_a_gap_and_patches_inside_training_area() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=(90, 130)).astype(np.int16)
    ids[:5] = IGNORE
    grid = _grid(ids)
    for seed in range(3):
        split = spatial_split(grid, block=30, val_fraction=0.3, gap=4, seed=seed)
        labelled = ids >= 0
        assert labelled[split.val_mask].sum() >= 0.3 * labelled.sum()
        assert not (split.train_mask & _dilate(split.val_mask, 4)).any()
        assert split.train_mask.sum() + _dilate(split.val_mask, 4).sum() == ids.size
        wins = sample_patches(grid, split, patch=16, n=50, seed=seed)
        assert len(set(wins)) == len(wins) == 50
        for r0, r1, c0, c1 in wins:
            assert split.train_mask[r0:r1, c0:c1].all() and (ids[r0:r1, c0:c1] >= 0).any()


def test_patch_larger_than_training_area_is_reported() -> None:
    grid = _grid(np.ones((40, 40), dtype=np.int16) * np.arange(2).repeat(20)[None, :])
    split = spatial_split(grid, block=20, val_fraction=0.4, gap=5, seed=0)
    with pytest.raises(LabelError, match="No 32 x 32 px training patch fits"):
        sample_patches(grid, split, patch=32, n=4)


def test_class_weights_follow_frequencies() -> None:
    w = class_weights(np.array([900, 100, 0, 25]))
    assert w[2] == 0 and w[0] < w[1] < w[3]
    assert w[[0, 1, 3]].mean() == pytest.approx(1.0)
    assert np.allclose(class_weights(np.array([5, 50]), "none"), 1.0)
    inv = class_weights(np.array([10, 40]), "inverse")
    assert inv[0] / inv[1] == pytest.approx(4.0)


def test_bottom_up_field_labels(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    top = make_field(30, 40, bands=4, chunks=None, nodata_patch=False)
    bottom = make_field(30, 40, bands=4, chunks=None, nodata_patch=False, bottom_up=True,
                        origin=(358410.0, 4906600.0 - 300.0))  # fmt: skip
    x0, y1 = 358410.0, 4906600.0
    polys = gpd.GeoDataFrame(
        {"cls": ["a", "b"]},
        geometry=[box(x0, y1 - 100, x0 + 100, y1), box(x0 + 200, y1 - 300, x0 + 400, y1 - 200)],
        crs="EPSG:32616",
    )
    g_top = labels_from_polygons(top, polys, label_column="cls")
    g_bottom = labels_from_polygons(bottom, polys, label_column="cls")
    assert (g_top.ids == 0).sum() == 100 and (g_top.ids == 1).sum() == 200
    assert g_top.ids[0, 0] == 0  # north-west corner is class "a"
    np.testing.assert_array_equal(g_bottom.ids, g_top.ids[::-1])
    # the same labels as a raster on the bottom-up grid are read back unchanged
    lab = xr.DataArray(g_bottom.ids, dims=("y", "x"), coords={"y": bottom.y, "x": bottom.x})
    path = tmp_path / "lab.tif"
    lab.rio.write_crs("EPSG:32616").rio.write_nodata(IGNORE).rio.to_raster(path)
    back = labels_from_raster(bottom, path)
    np.testing.assert_array_equal(back.ids, g_bottom.ids)


def test_synthetic_field_with_nodata_trains_and_ignores_nan() -> None:
    field = make_field(48, 64, bands=8, chunks=16, nodata_patch=True, n_classes=3, seed=1)
    stripes = (np.arange(64) * 3) // 64
    truth = np.repeat(stripes[None, :], 48, axis=0).astype(np.uint8) + 1
    lab = xr.DataArray(truth, dims=("y", "x"), coords={"y": field.y, "x": field.x})
    lab = lab.rio.write_crs(field.rio.crs)
    res = train_cnn(
        field, None, labels_raster=lab, epochs=3, patch=8, block=16, n_patches=48,
        batch_size=8, width=8, dilations=(1, 2, 1), threads=1, progress=False, seed=0,
    )  # fmt: skip
    nan = np.isnan(field.values).any(axis=0)
    assert nan.sum() == 12
    val = res.split.val_mask
    # NaN pixels are ignored: only valid labelled pixels of the validation blocks are scored
    assert res.metrics["cnn"]["pixels"] == int((val & ~nan).sum())
    assert res.report["receptive_radius"] == 4 and res.spec["receptive_radius"] == 4
    assert all(n > 0 for n in res.report["train_pixels_per_class"].values())
    assert res.metrics["knn"]["accuracy"] > 0.95  # well separated synthetic classes
    assert np.isfinite([h["train_loss"] for h in res.history]).all()


def test_torch_load_only_with_weights_only() -> None:
    root = Path(__file__).resolve().parents[1] / "geoembed"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant), path
                assert kw["weights_only"].value is True, path


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_train_cnn(s2: xr.DataArray, lulc_tif: Path, tmp_path: Path) -> None:
    from geoembed.cli import main

    src = tmp_path / "s2.tif"
    s2.rio.to_raster(src)
    with rasterio.open(src, "r+") as ds:
        ds.descriptions = tuple(S2_BANDS)
    out = tmp_path / "cnn.onnx"
    args = [
        "--scheduler", "sync", "train-cnn", str(src), "--labels-raster", str(lulc_tif),
        "-o", str(out), "--epochs", "2", "--patch", "32", "--block", "50", "--patches", "32",
        "--width", "8", "--threads", "1", "--json",
    ]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["model"] == str(out) and out.is_file() and out.with_suffix(".json").is_file()
    assert {"cnn", "knn"} <= set(summary["validation"])
    assert json.loads(out.with_suffix(".json").read_text())["bands"] == S2_BANDS
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "overwrite" in again.output
    # the model runs with `geoembed infer` as written (sidecar picked up next to it)
    classes = tmp_path / "classes.tif"
    ran = CliRunner().invoke(
        main, ["--scheduler", "sync", "infer", str(src), "--model", str(out), "-o", str(classes)]
    )
    assert ran.exit_code == 0, ran.output
    with rasterio.open(classes) as ds:
        assert (ds.height, ds.width) == (s2.sizes["y"], s2.sizes["x"])
        assert set(np.unique(ds.read(1))) <= set(range(5))
    bad = CliRunner().invoke(
        main, ["train-cnn", str(src), "--labels", str(lulc_tif), "-o", str(tmp_path / "x.onnx")]
    )
    assert bad.exit_code == 2 and "Error:" in bad.output
