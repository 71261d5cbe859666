"""Regression of continuous targets: exact kNN (vs scikit-learn), CV on real samples, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray
from click.testing import CliRunner

from geoembed import open_embeddings
from geoembed.classify import apply_estimator
from geoembed.cli import main
from geoembed.errors import BandMismatchError, LabelError
from geoembed.regress import (
    KNNRegressor,
    cross_validate_regression,
    predict_regression,
    regression_metrics,
    targets_from_table,
)
from geoembed.schema import aef_band_names
from geoembed.testing import make_field, raise_if_dask_computes

REGIONS = ("amazon_forest", "california_coast", "iowa_ag")


def _table(shared_data: Path, region: str) -> Path:
    return shared_data / "aef" / f"dw_samples_2024_{region}.csv"


def _unique_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated vectors: scikit-learn orders exact ties arbitrarily."""
    _, first = np.unique(X, axis=0, return_index=True)
    keep = np.sort(first)
    return X[keep], y[keep]


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_regressor_matches_sklearn_brute(shared_data: Path, region: str, metric: str) -> None:
    from sklearn.neighbors import KNeighborsRegressor

    ts = targets_from_table(_table(shared_data, region), aef_band_names(), target_column="S1_VV")
    X, y = _unique_rows(ts.X, ts.y)
    rng = np.random.default_rng(1)
    noisy = (X[:150] + 0.02 * rng.standard_normal(X[:150].shape)).astype(np.float32)
    for weights in ("uniform", "distance"):
        ours = KNNRegressor(7, metric=metric, weights=weights).fit(X, y)
        ref = KNeighborsRegressor(7, metric=metric, weights=weights, algorithm="brute").fit(X, y)
        d1, i1 = ours.kneighbors(noisy)
        d2, i2 = ref.kneighbors(noisy)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(d1, d2, atol=1e-6)
        np.testing.assert_allclose(ours.predict(noisy), ref.predict(noisy), rtol=1e-5)
        # queries that are training vectors: distance 0 (exactly, here) takes that target
        p_self = ours.predict(X[:40])
        np.testing.assert_allclose(p_self, ref.predict(X[:40]), rtol=1e-3)
        if weights == "distance":
            np.testing.assert_array_equal(p_self, y[:40])


def test_spread_is_std_of_neighbour_targets(shared_data: Path) -> None:
    ts = targets_from_table(_table(shared_data, "iowa_ag"), aef_band_names(), target_column="trees")
    model = KNNRegressor(5).fit(ts.X, ts.y)
    out = model.pixel_outputs(ts.X[:50] + 0.01)
    _, ind = model.kneighbors(ts.X[:50] + 0.01)
    np.testing.assert_allclose(out[:, 0], ts.y[ind].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], ts.y[ind].std(axis=1), rtol=1e-5, atol=1e-7)


def test_spatial_cv_r2_on_real_samples(shared_data: Path) -> None:
    """Spatial CV (10 km blocks, lon/lat 0.1 degree) R² of kNN (k=10) per region and target."""
    floors = {"S1_VV": 0.6, "S1_VH": 0.6, "trees": 0.2, "crops": 0.0}
    lines = []
    for region in REGIONS:
        for target, floor in floors.items():
            ts = targets_from_table(
                _table(shared_data, region), aef_band_names(), target_column=target
            )
            spatial = cross_validate_regression(
                lambda: KNNRegressor(10), ts, cv="spatial_blocks:5:0.1", seed=0
            )
            rand = cross_validate_regression(lambda: KNNRegressor(10), ts, cv="random:5", seed=0)
            p = spatial["pooled"]
            lines.append(
                f"{region:17s} {target:6s} spatial R2 {p['r2']:.3f}"
                f" (random {rand['pooled']['r2']:.3f})"
                f" RMSE {p['rmse']:.3f} MAE {p['mae']:.3f} bias {p['bias']:+.4f}"
                f" [{spatial['n_groups']} blocks]"
            )
            assert p["r2"] is not None and p["r2"] >= floor, lines[-1]
            assert spatial["n_groups"] >= 5
    print("\nkNN regression, k=10, cosine:\n" + "\n".join(lines))


def test_regression_metrics_definitions() -> None:
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.0, 4.5])
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 0.25) / 4))
    assert m["mae"] == pytest.approx(0.5)
    assert m["bias"] == pytest.approx(0.0)
    assert m["r2"] == pytest.approx(1 - 1.5 / 5.0)
    assert regression_metrics([2.0, 2.0], [1.0, 3.0])["r2"] is None


def test_field_prediction_is_lazy_chunk_independent_and_exact() -> None:
    field = make_field(37, 53, chunks=16)
    vec = field.values.reshape(64, -1).T
    valid = ~np.isnan(vec).any(axis=1)
    rng = np.random.default_rng(0)
    pick = rng.choice(np.flatnonzero(valid), 60, replace=False)
    target = rng.normal(size=60) * 3 + np.arange(60) % 4
    model = KNNRegressor(5, weights="distance").fit(vec[pick], target, band_names=aef_band_names())
    with raise_if_dask_computes():
        ds = predict_regression(model, field)
        other = predict_regression(model, field.chunk({"y": 9, "x": 20}))
    a = ds["value"].values
    assert a.dtype == np.float32
    assert np.array_equal(a, other["value"].values, equal_nan=True)
    assert np.array_equal(ds["spread"].values, other["spread"].values, equal_nan=True)
    assert np.isnan(a[2:5, 3:7]).all() and not np.isnan(a.ravel()[valid]).any()
    expect = model.predict(vec[valid]).astype(np.float32)
    np.testing.assert_array_equal(a.ravel()[valid], expect)
    with pytest.raises(BandMismatchError):
        predict_regression(model, field.isel(band=slice(0, 32)))


def test_field_prediction_on_local_cluster(dask_client: object) -> None:
    field = make_field(37, 53, chunks=16)
    vec = field.values.reshape(64, -1).T
    valid = np.flatnonzero(~np.isnan(vec).any(axis=1))[::17]
    model = KNNRegressor(3).fit(vec[valid], np.sin(np.arange(len(valid))))
    ds = predict_regression(model, field)
    on_cluster = ds["value"].compute()
    local = ds["value"].compute(scheduler="sync")
    assert np.array_equal(on_cluster.values, local.values, equal_nan=True)


def test_sklearn_regressor_blockwise_and_cv(shared_data: Path, aef_tif: Path) -> None:
    from sklearn.linear_model import Ridge

    field = open_embeddings(aef_tif)
    ts = targets_from_table(_table(shared_data, "iowa_ag"), field, target_column="S1_VH")
    ridge = Ridge(alpha=1.0).fit(ts.X, ts.y)
    with raise_if_dask_computes():
        out = apply_estimator(field, ridge, output="value")
    vec = field.values.reshape(64, -1).T
    np.testing.assert_allclose(out.values.ravel(), ridge.predict(vec), rtol=1e-5, atol=1e-4)
    cv = cross_validate_regression(lambda: Ridge(alpha=1.0), ts, cv="spatial_blocks:5:10000")
    assert cv["pooled"]["r2"] > 0.3
    print(f"\nRidge S1_VH iowa_ag spatial-CV R2 {cv['pooled']['r2']:.3f}")


def test_target_errors(shared_data: Path, tmp_path: Path) -> None:
    table = _table(shared_data, "iowa_ag")
    with pytest.raises(LabelError, match="no target column"):
        targets_from_table(table, aef_band_names(), target_column="height")
    df = pd.read_csv(table)
    df["bad"] = ["tall" if i == 3 else 1.0 for i in range(len(df))]
    with pytest.raises(LabelError, match="not numbers"):
        targets_from_table(df, aef_band_names(), target_column="bad")
    df["gap"] = np.where(np.arange(len(df)) % 10 == 0, np.nan, 1.0 * np.arange(len(df)))
    ts = targets_from_table(df, aef_band_names(), target_column="gap")
    assert ts.report["rejected"] == {"missing_target": 72}
    assert len(ts) == 648
    with pytest.raises(LabelError, match="only 3 training samples"):
        KNNRegressor(5).fit(ts.X[:3], ts.y[:3])


def _points(field: object, n: int, seed: int) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    rows = rng.choice(field.sizes["y"], n)
    cols = rng.choice(field.sizes["x"], n)
    keep = np.unique(rows * 1000 + cols, return_index=True)[1]
    rows, cols = rows[keep], cols[keep]
    vec = field.values[:, rows, cols]
    height = 20.0 * vec[0] + 5.0 * vec[1] + 10.0
    return gpd.GeoDataFrame(
        {"height": height, "row": rows, "col": cols},
        geometry=gpd.points_from_xy(field.x.values[cols], field.y.values[rows]),
        crs=field.rio.crs,
    )


def test_cli_regress_labels(aef_tif: Path, tmp_path: Path) -> None:
    field = open_embeddings(aef_tif)
    pts = _points(field, 200, 0).to_crs("EPSG:4326")  # reprojected explicitly by geoembed
    pts.to_file(tmp_path / "plots.gpkg")
    out, spread, rep = tmp_path / "h.tif", tmp_path / "s.tif", tmp_path / "r.json"
    args = [
        "--scheduler",
        "sync",
        "regress",
        str(aef_tif),
        "--labels",
        str(tmp_path / "plots.gpkg"),
    ]
    args += ["--target-column", "height", "-k", "1", "-o", str(out), "--spread", str(spread)]
    result = CliRunner().invoke(main, [*args, "--report", str(rep)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pred = rioxarray.open_rasterio(out).squeeze("band")
    assert pred.dtype == np.float32 and pred.rio.crs == field.rio.crs
    back = _points(field, 200, 0)
    got = pred.values[back["row"], back["col"]]
    np.testing.assert_allclose(got, back["height"].to_numpy(np.float32), rtol=1e-6)
    assert float(rioxarray.open_rasterio(spread).max()) == 0.0  # k=1: no spread
    report = json.loads(rep.read_text())
    assert report["training"]["n_samples"] == len(back)
    assert report["cross_validation"]["scheme"] == "spatial_blocks"
    assert report["cross_validation"]["pooled"]["r2"] > 0.3
    # refused before anything is written: both label sources
    again = CliRunner().invoke(
        main, [*args, "--training", str(aef_tif), "-o", str(tmp_path / "x.tif")]
    )
    assert again.exit_code == 2 and "exactly one of" in again.output
    assert not (tmp_path / "x.tif").exists()


def test_cli_regress_training_table(shared_data: Path, aef_tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "vv.tif"
    args = ["--scheduler", "sync", "regress", str(aef_tif), "--training"]
    args += [str(_table(shared_data, "iowa_ag")), "--target-column", "S1_VV", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--cv", "random:5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["cross_validation"]["pooled"]["r2"] > 0.6
    vv = rioxarray.open_rasterio(out).values
    assert np.isfinite(vv).all() and -25 < vv.min() and vv.max() < 5
