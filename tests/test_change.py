"""Change between years: grid checks, change magnitude, threshold, transitions, CLI.

Year pairs are built from one real year (the Wisconsin tile) or the synthetic scene:
the second year is the first plus small per-pixel noise (re-normalised), with a
rectangle replaced by vectors from elsewhere, so the changed pixels are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import rioxarray
import xarray as xr
from click.testing import CliRunner

from geoembed import change as ch
from geoembed import open_embeddings
from geoembed.classify import KNNClassifier
from geoembed.cli import main
from geoembed.datasets import synthetic_scene
from geoembed.errors import CRSMismatchError, GridMismatchError
from geoembed.export import write_zarr
from geoembed.labels import training_from_geometries
from geoembed.testing import make_field, raise_if_dask_computes

NOISE = 0.02


def _second_year(
    field: xr.DataArray, rect: tuple[int, int, int, int], source: np.ndarray, seed: int = 0
) -> tuple[xr.DataArray, np.ndarray]:
    """Noisy copy of ``field`` with ``rect`` (r0, r1, c0, c1) replaced by ``source`` vectors."""
    v = field.values
    rng = np.random.default_rng(seed)
    w = v + NOISE * rng.standard_normal(v.shape).astype(np.float32)
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    r0, r1, c0, c1 = rect
    w[:, r0:r1, c0:c1] = source.reshape(v.shape[0], r1 - r0, c1 - c0)
    chunks = field.chunks or ((v.shape[0],), (v.shape[1],), (v.shape[2],))
    changed = np.zeros(v.shape[1:], bool)
    changed[r0:r1, c0:c1] = True
    return field.copy(data=dsa.from_array(w.astype(np.float32), chunks=chunks)), changed


def _precision_recall(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = float((pred & truth).sum())
    return tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)


def test_stack_years_and_grid_errors() -> None:
    a = make_field(37, 53, chunks=16)
    b = make_field(37, 53, chunks=(10, 20), seed=1)
    with raise_if_dask_computes():
        stack = ch.stack_years([a, b], [2020, 2024])
    assert stack.dims == ("time", "band", "y", "x")
    assert stack["time"].values.tolist() == [2020, 2024]
    assert stack.chunks[2:] == a.chunks[1:] and stack.rio.crs == a.rio.crs
    with pytest.raises(GridMismatchError, match="different pixel coordinates"):
        ch.stack_years([a, make_field(37, 53, origin=(358420.0, 4906600.0))], names=["a", "b"])
    with pytest.raises(GridMismatchError, match="37 x 53"):
        ch.change_magnitude(a, make_field(37, 52), names=["2020.tif", "2024.tif"])
    with pytest.raises(CRSMismatchError, match=r"2024\.tif"):
        ch.change_magnitude(a, make_field(crs="EPSG:32617"), names=["2020.tif", "2024.tif"])
    with pytest.raises(GridMismatchError, match="bands"):
        ch.stack_years([a, a.assign_coords(band=[f"B{i:02d}" for i in range(64)])])


def test_change_magnitude_exact_lazy_and_chunk_independent() -> None:
    a = make_field(37, 53, chunks=16)
    b = make_field(37, 53, chunks=16, seed=1, nodata_patch=False)
    with raise_if_dask_computes():
        m = ch.change_magnitude(a, b)
        m2 = ch.change_magnitude(a.chunk({"y": 7, "x": 30}), b.chunk({"y": 7, "x": 30}))
    got = m.values
    assert got.dtype == np.float32 and m.dims == ("y", "x") and m.rio.crs == a.rio.crs
    assert np.array_equal(got, m2.values, equal_nan=True)
    va, vb = a.values.astype(np.float64), b.values.astype(np.float64)
    cos = (va * vb).sum(0) / np.sqrt((va * va).sum(0) * (vb * vb).sum(0))
    np.testing.assert_allclose(got, 1 - cos, atol=1e-6)
    assert np.isnan(got[2:5, 3:7]).all() and np.isfinite(got[10:, :]).all()
    assert float(np.nanmax(ch.change_magnitude(a, a).values)) < 1e-6


def test_otsu_threshold_on_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.02, 0.01, 5000), rng.normal(0.5, 0.05, 500)])
    t = ch.otsu_threshold(values)
    assert 0.04 < t < 0.35  # separates the modes: under 1 % on the wrong side
    assert np.mean(values[:5000] >= t) < 0.01 and np.mean(values[5000:] < t) < 0.01
    assert ch.choose_change_threshold(xr.DataArray(np.zeros((4, 4))), 0.3)["threshold"] == 0.3


def test_real_tile_synthetic_change_detected(aef_tif: Path) -> None:
    """Wisconsin 2024 vs a perturbed copy: a 25 x 35 rectangle takes vectors from elsewhere."""
    a = open_embeddings(aef_tif)
    v = a.values
    b, changed = _second_year(a, (30, 55, 40, 75), v[:, 0:25, 0:35])
    m = ch.change_magnitude(a, b, names=["2024", "perturbed"])
    info = ch.choose_change_threshold(m)
    pred = ch.change_mask(m, info["threshold"]).values
    assert set(np.unique(pred)) <= {0, 1}
    precision, recall = _precision_recall(pred == 1, changed)
    print(
        f"\nWisconsin tile, planted change of {changed.sum()} px: threshold "
        f"{info['threshold']:.3f} ({info['method']}), precision {precision:.3f}, "
        f"recall {recall:.3f}"
    )
    assert info["method"].startswith("otsu") and info["threshold"] >= ch.MIN_THRESHOLD
    assert precision >= 0.95 and recall >= 0.85


def test_synthetic_scene_change_and_transitions() -> None:
    scene = synthetic_scene(64, 96, chunks=32, seed=3)
    a = scene.field
    truth = scene.truth.values
    rng = np.random.default_rng(1)
    water = np.argwhere(truth == 0)
    pick = water[rng.choice(len(water), 20 * 30)]
    b, rect = _second_year(a, (40, 60, 10, 40), a.values[:, pick[:, 0], pick[:, 1]], seed=1)
    planted = rect & (truth != 0) & (truth != 255)  # water stays water
    m = ch.change_magnitude(a, b)
    info = ch.choose_change_threshold(m)
    pred = (m >= info["threshold"]).values
    precision, recall = _precision_recall(pred, planted)
    ts = training_from_geometries(a, scene.sample_points(30, seed=0), label_column="class")
    model = KNNClassifier.from_training(ts, 5)
    with raise_if_dask_computes():
        counts, _, _ = ch.transitions(model, a, b)
    c = counts.values
    area = ch.pixel_area_hectares(a)
    report = ch.transition_report(c, model.class_names, pixel_area_ha=area)
    to_water = sum(r["pixels"] for r in report["changes"] if r["to"] == "water")
    print(
        f"\nsynthetic scene, planted change of {planted.sum()} px: threshold "
        f"{info['threshold']:.3f}, precision {precision:.3f}, recall {recall:.3f}; "
        f"kNN transitions to water {to_water} px, top {report['changes'][:3]}"
    )
    assert precision >= 0.95 and recall >= 0.95
    assert area == pytest.approx(0.01)  # 10 m pixels
    assert report["valid_pixels"] == int((truth != 255).sum())
    assert 0.9 * planted.sum() <= to_water <= 1.1 * planted.sum()
    assert all(r["to"] == "water" for r in report["changes"][:3])
    assert report["changed_hectares"] == pytest.approx(report["changed_pixels"] * 0.01)
    assert np.allclose(report["hectares"], c * 0.01)


def test_cli_change_end_to_end(shared_data: Path, aef_tif: Path, tmp_path: Path) -> None:
    a = open_embeddings(aef_tif)
    b, changed = _second_year(a, (30, 55, 40, 75), a.values[:, 0:25, 0:35])
    second = tmp_path / "field_2025.zarr"
    write_zarr(b.rename("embedding"), second)
    out, mask, tr = tmp_path / "change.tif", tmp_path / "mask.tif", tmp_path / "tr.json"
    args = ["--scheduler", "sync", "change", str(aef_tif), str(second), "-o", str(out)]
    args += ["--mask", str(mask), "--transitions", str(tr), "--label-column", "dw_label"]
    args += ["--class-table", "dynamic_world"]
    args += ["--training", str(shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    mag = rioxarray.open_rasterio(out).squeeze("band")
    assert mag.dtype == np.float32 and mag.rio.crs == a.rio.crs
    expect = ch.change_magnitude(a, b).values
    np.testing.assert_array_equal(mag.values, expect)
    mk = rioxarray.open_rasterio(mask).squeeze("band").values
    precision, recall = _precision_recall(mk == 1, changed)
    assert precision >= 0.95 and recall >= 0.85
    report = json.loads(tr.read_text())
    assert report["valid_pixels"] == 97 * 97
    assert "trees" in report["class_names"]
    print(f"\nCLI change on Wisconsin, top transitions: {report['changes'][:3]}")
    assert summary["changed_hectares"] == pytest.approx(report["changed_pixels"] * 0.01)
    # a second year on another grid is refused before anything is written
    shifted = tmp_path / "shifted.zarr"
    write_zarr(b.isel(x=slice(1, None)).rename("embedding"), shifted)
    bad = CliRunner().invoke(
        main,
        [
            "--scheduler",
            "sync",
            "change",
            str(aef_tif),
            str(shifted),
            "-o",
            str(tmp_path / "x.tif"),
        ],
    )
    assert bad.exit_code == 2 and "97 x 96" in bad.output
    assert not (tmp_path / "x.tif").exists()
