"""Similarity search: exact similarity fields, global top-N, thresholds, CLI on real data."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rioxarray
import shapely
import xarray as xr
from click.testing import CliRunner

from geoembed import open_embeddings
from geoembed import similar as sm
from geoembed.cli import main
from geoembed.errors import BandMismatchError, LabelError
from geoembed.testing import make_field, raise_if_dask_computes


def _vectors(field: xr.DataArray) -> np.ndarray:
    return field.values.reshape(field.sizes["band"], -1).T


def _expected(q: np.ndarray, refs: np.ndarray, metric: str, reduce: str) -> np.ndarray:
    q64, r64 = q.astype(np.float64), refs.astype(np.float64)
    if metric == "cosine":
        q64 = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
        r64 = r64 / np.linalg.norm(r64, axis=1, keepdims=True)
    if reduce == "mean":
        r64 = r64.mean(axis=0, keepdims=True)
        if metric == "cosine":
            r64 /= np.linalg.norm(r64)
    return (q64 @ r64.T).max(axis=1)


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_similarity_exact_lazy_and_chunk_independent(metric: str, reduce: str) -> None:
    field = make_field(37, 53, chunks=16)
    refs = field.values[:, 20:23, 2:4].reshape(64, -1).T * 1.5  # not unit length
    with raise_if_dask_computes():
        sim = sm.similarity(field, refs, metric=metric, reduce=reduce)
        other = sm.similarity(field.chunk({"y": 5, "x": 50}), refs, metric=metric, reduce=reduce)
    got = sim.values
    assert sim.dims == ("y", "x") and got.dtype == np.float32 and sim.rio.crs == field.rio.crs
    assert np.array_equal(got, other.values, equal_nan=True)
    assert np.isnan(got[2:5, 3:7]).all()
    q = _vectors(field)
    ok = ~np.isnan(q).any(axis=1)
    np.testing.assert_allclose(got.ravel()[ok], _expected(q[ok], refs, metric, reduce), atol=2e-6)


def test_similarity_task_keys_are_tokenized_from_inputs() -> None:
    field = make_field(37, 53, chunks=16)
    refs = field.values[:, 20:23, 2:4].reshape(64, -1).T
    name = sm.similarity(field, refs).data.name
    assert sm.similarity(field, refs.copy()).data.name == name
    assert sm.similarity(field, refs[:3]).data.name != name
    assert sm.similarity(field, refs, reduce="max").data.name != name
    assert sm.similarity(field + 0, refs).data.name != name


def test_similarity_ranks_the_reference_class_first() -> None:
    field = make_field(37, 53, chunks=16, n_classes=4)
    stripe = (np.arange(53) * 4) // 53
    refs = field.values[:, 30:33, 1:4].reshape(64, -1).T  # stripe 0
    sim = sm.similarity(field, refs).values
    means = [np.nanmean(sim[:, stripe == s]) for s in range(4)]
    assert means[0] > max(means[1:]) + 0.4, means


def test_similarity_input_errors() -> None:
    field = make_field(37, 53, chunks=16)
    with pytest.raises(BandMismatchError, match="64 bands"):
        sm.similarity(field, np.ones((3, 32), np.float32))
    with pytest.raises(LabelError, match="NaN"):
        sm.similarity(field, np.full(64, np.nan))
    with pytest.raises(LabelError, match="metric"):
        sm.similarity(field, np.ones(64), metric="l1")


def _ties_field() -> xr.DataArray:
    sim = sm.similarity(make_field(37, 53, chunks=16), np.ones(64, np.float32))
    # round to 0.05: many ties, which must go to the lower pixel index
    return (np.round(sim * 20) / 20).astype(np.float32).rename("similarity")


def _full_sort(sim: np.ndarray, n: int) -> np.ndarray:
    flat = sim.ravel()
    idx = np.flatnonzero(~np.isnan(flat))
    order = np.lexsort((idx, -flat[idx].astype(np.float64)))
    return idx[order][:n]


def test_top_similar_tree_equals_full_sort_with_ties() -> None:
    sim = _ties_field()
    values = sim.values
    for n in (1, 7, 60, 5000):
        expect = _full_sort(values, n)
        for chunks, split in (
            ({"y": 16, "x": 16}, 2),
            ({"y": 5, "x": 7}, 3),
            ({"y": 37, "x": 53}, 8),
        ):
            with raise_if_dask_computes():
                lazy = sm.top_similar(sim.chunk(chunks), n, split_every=split)
            top = lazy.compute()
            got = top["row"].to_numpy() * 53 + top["col"].to_numpy()
            np.testing.assert_array_equal(got, expect)
    assert len(top) == int((~np.isnan(values)).sum())  # n beyond the valid pixels
    assert top["rank"].tolist() == list(range(1, len(top) + 1))
    np.testing.assert_array_equal(top["x"], sim.x.values[top["col"]])
    np.testing.assert_array_equal(top["y"], sim.y.values[top["row"]])


def test_top_similar_on_local_cluster(dask_client: object) -> None:
    sim = _ties_field().chunk({"y": 10, "x": 10})
    on_cluster = sm.top_similar(sim, 25, split_every=2).compute()
    local = sm.top_similar(sim, 25, split_every=2).compute(scheduler="sync")
    assert on_cluster.equals(local)


def test_choose_threshold_precision_and_quantile() -> None:
    field = make_field(37, 53, chunks=None, n_classes=4, nodata_patch=False)
    stripe = (np.arange(53) * 4) // 53
    v = field.values
    pos = v[:, :, stripe == 0][:, ::3].reshape(64, -1).T
    neg = v[:, :, stripe != 0][:, ::5].reshape(64, -1).T
    info = sm.choose_threshold(pos, negatives=neg, precision=0.95)
    assert info["reached"] and info["precision"] >= 0.95 and info["recall"] > 0.9
    scores = sm.SimilarityScorer(pos)(neg)
    assert np.mean(scores >= info["threshold"]) < 0.05
    q = sm.choose_threshold(pos, quantile=0.1)
    assert q["precision"] is None and q["recall"] == pytest.approx(0.9, abs=0.02)
    assert q["method"].startswith("quantile 0.1")
    with pytest.raises(LabelError, match="at least two"):
        sm.choose_threshold(pos[:5], groups=np.zeros(5))


def test_similarity_mask_values() -> None:
    sim = _ties_field()
    mask = sm.similarity_mask(sim, 0.5)
    m, s = mask.values, sim.values
    assert m.dtype == np.uint8 and mask.rio.nodata == 255 and mask.rio.crs is not None
    assert (m[np.isnan(s)] == 255).all()
    assert np.array_equal(m[~np.isnan(s)] == 1, s[~np.isnan(s)] >= 0.5)


def test_reference_vectors_from_points_and_polygons(aef_tif: Path, tmp_path: Path) -> None:
    field = open_embeddings(aef_tif)
    xs, ys = field.x.values, field.y.values
    pts = gpd.GeoDataFrame(
        {"note": ["a", "b"]},
        geometry=gpd.points_from_xy(xs[[5, 60]], ys[[7, 80]]),
        crs=field.rio.crs,
    )
    pts.to_crs("EPSG:4326").to_file(tmp_path / "pts.geojson")
    X, groups = sm.reference_vectors(field, tmp_path / "pts.geojson")
    np.testing.assert_array_equal(X, field.values[:, [7, 80], [5, 60]].T)
    assert groups.tolist() == [0, 1]
    box = shapely.box(xs[10] - 5, ys[14] - 5, xs[13] + 5, ys[10] + 5)  # 4 x 5 pixel centres
    polys = gpd.GeoDataFrame(geometry=[box], crs=field.rio.crs)
    X, groups = sm.reference_vectors(field, polys)
    assert X.shape == (20, 64) and (groups == 0).all()
    far = gpd.GeoDataFrame(geometry=gpd.points_from_xy([0.0], [0.0]), crs=field.rio.crs)
    with pytest.raises(LabelError):
        sm.reference_vectors(field, far)


@pytest.mark.slow
def test_top_similar_on_a_field_larger_than_worker_memory(dask_client: object) -> None:
    """A 3072 x 3072 x 64 synthetic field (2.4 GB float32) on two 2 GiB workers."""
    import time

    from geoembed.datasets import synthetic_scene

    scene = synthetic_scene(3072, 3072, chunks=512, seed=5)
    refs = scene.field[:, 100:103, 100:103].values.reshape(64, -1).T
    sim = sm.similarity(scene.field, refs)
    t0 = time.perf_counter()
    top = sm.top_similar(sim, 1000).compute()
    seconds = time.perf_counter() - t0
    print(f"\ntop 1000 of 3072 x 3072 pixels on 2 workers: {seconds:.1f} s")
    assert len(top) == 1000 and top["similarity"].is_monotonic_decreasing
    check = sim[:512, :512].values  # the block holding the references
    assert top["similarity"].iloc[0] >= np.nanmax(check)


def test_cli_similar_real_tile(aef_tif: Path, tmp_path: Path) -> None:
    field = open_embeddings(aef_tif)
    xs, ys = field.x.values, field.y.values
    rng = np.random.default_rng(0)
    like_rc = rng.integers(0, 97, size=(12, 2))
    like = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(xs[like_rc[:, 1]], ys[like_rc[:, 0]]), crs=field.rio.crs
    )
    like.to_file(tmp_path / "like.gpkg")
    out, mask, top, rep = (tmp_path / n for n in ("sim.tif", "mask.tif", "top.parquet", "r.json"))
    args = ["--scheduler", "sync", "similar", str(aef_tif), "--like", str(tmp_path / "like.gpkg")]
    args += ["--reduce", "max", "-o", str(out), "--mask", str(mask), "--quantile", "0.2"]
    base = list(args)
    args += ["--top", "20", "--top-out", str(top), "--report", str(rep), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    sim = rioxarray.open_rasterio(out).squeeze("band")
    assert sim.dtype == np.float32 and sim.rio.crs == field.rio.crs
    expect = sm.similarity(field, field.values[:, like_rc[:, 0], like_rc[:, 1]].T, reduce="max")
    np.testing.assert_array_equal(sim.values, expect.values)
    table = gpd.read_parquet(top)
    assert table.crs == field.rio.crs and len(table) == 20
    n_refs = len(np.unique(like_rc[:, 0] * 97 + like_rc[:, 1]))
    assert (table["similarity"].to_numpy()[:n_refs] >= np.float32(0.99999)).all()  # themselves
    np.testing.assert_array_equal(table.geometry.x, table["x"])
    assert table["similarity"].iloc[0] == sim.values.max()
    t = summary["threshold"]["threshold"]
    m = rioxarray.open_rasterio(mask).squeeze("band").values
    assert np.array_equal(m == 1, sim.values >= t)
    assert json.loads(rep.read_text())["threshold"]["method"].startswith("quantile 0.2")
    print(f"\nsimilar (max over 12 real points): threshold {t:.3f}, {int((m == 1).sum())} px pass")
    clash = CliRunner().invoke(main, [*base, "--top", "5"])
    assert clash.exit_code == 2 and "--top-out" in clash.output
    unused = CliRunner().invoke(main, [*base[:-4], "--unlike", str(tmp_path / "like.gpkg")])
    assert unused.exit_code == 2 and "--unlike only" in unused.output
