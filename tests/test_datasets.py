"""Tests of the synthetic AlphaEarth-like scene (geoembed.datasets)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point

from geoembed.datasets import CLASSES, SyntheticScene, synthetic_scene
from geoembed.errors import SchemaError
from geoembed.schema import check_embedding
from geoembed.testing import raise_if_dask_computes


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return synthetic_scene(192, 256, seed=3, chunks=(64, 96))


@pytest.fixture(scope="module")
def computed(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray]:
    return scene.field.values, scene.truth.values


def test_huge_scene_is_lazy_and_cheap() -> None:
    import tracemalloc

    tracemalloc.start()
    with raise_if_dask_computes():
        big = synthetic_scene(20_000, 20_000, seed=1)
        check_embedding(big.field, bands=64)
        assert big.field.shape == (64, 20_000, 20_000)
        assert big.truth.shape == (20_000, 20_000)
        assert big.field.chunks[1][0] == 512
        assert len(big.field.chunks[0]) == 1
        sub = big.field.isel(y=slice(10_000, 10_010), x=slice(5_000, 5_010))
        points = big.sample_points(5, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB to build a 95 GiB lazy scene"
    assert len(points) == 5 * len(CLASSES)
    # a small window of the huge scene computes only the block it touches
    vals = sub.values
    assert vals.shape == (64, 10, 10)
    assert np.all(np.isfinite(vals))


def test_field_is_canonical_and_marked_synthetic(scene: SyntheticScene) -> None:
    f = scene.field
    check_embedding(f, bands=64)
    assert f.name == "embedding"
    assert f.dtype == np.float32
    assert [str(b) for b in f["band"].values[:2]] == ["A00", "A01"]
    assert "synthetic" in f.attrs["description"]
    assert "not real data" in f.attrs["description"]
    assert f.rio.crs.to_epsg() == 32633
    left, bottom, right, top = f.rio.bounds()
    assert (left, top) == (500000.0, 5100000.0)
    assert (right - left, top - bottom) == (2560.0, 1920.0)
    assert f.rio.resolution() == (10.0, -10.0)
    t = scene.truth
    assert t.dims == ("y", "x") and t.dtype == np.uint8
    assert t.rio.crs == f.rio.crs
    assert t.rio.nodata == 255
    np.testing.assert_array_equal(t["x"].values, f["x"].values)
    np.testing.assert_array_equal(t["y"].values, f["y"].values)


def test_custom_grid() -> None:
    s = synthetic_scene(40, 30, crs="EPSG:32616", origin=(358410.0, 4906600.0), res=20.0)
    assert s.field.rio.crs.to_epsg() == 32616
    assert s.field.rio.bounds() == (358410.0, 4905800.0, 359010.0, 4906600.0)
    assert s.field.rio.transform().a == 20.0


def test_unit_length_and_nodata(computed: tuple[np.ndarray, np.ndarray]) -> None:
    field, truth = computed
    nan = np.isnan(field)
    # nodata is all-band and exactly where the truth says 255
    assert np.array_equal(nan.any(axis=0), nan.all(axis=0))
    np.testing.assert_array_equal(nan[0], truth == 255)
    assert 0.005 < nan[0].mean() < 0.1
    lengths = np.linalg.norm(field[:, ~nan[0]], axis=0)
    assert lengths.min() >= 0.99 and lengths.max() <= 1.01
    present = set(np.unique(truth[truth != 255]).tolist())
    assert present == {c.id for c in CLASSES}


def test_no_nodata_patch() -> None:
    s = synthetic_scene(64, 64, nodata_patch=False, chunks=32)
    assert not np.isnan(s.field.values).any()
    assert (s.truth.values != 255).all()


def test_same_values_whatever_the_chunking() -> None:
    a = synthetic_scene(150, 210, seed=5, chunks=64)
    b = synthetic_scene(150, 210, seed=5, chunks=100)
    c = synthetic_scene(150, 210, seed=5, chunks=(37, 210))
    fa, fb, fc = a.field.values, b.field.values, c.field.values
    assert np.array_equal(fa, fb, equal_nan=True)
    assert np.array_equal(fa, fc, equal_nan=True)
    assert np.array_equal(a.truth.values, b.truth.values)
    # and a window computed alone equals the same window of the whole
    win = b.field.isel(y=slice(70, 90), x=slice(95, 130)).values
    assert np.array_equal(win, fa[:, 70:90, 95:130], equal_nan=True)


def test_seeds_change_the_scene_and_repeat_exactly() -> None:
    a = synthetic_scene(96, 96, seed=1, chunks=48).field.values
    again = synthetic_scene(96, 96, seed=1, chunks=48).field.values
    other = synthetic_scene(96, 96, seed=2, chunks=48).field.values
    assert np.array_equal(a, again, equal_nan=True)
    valid = ~np.isnan(a[0]) & ~np.isnan(other[0])
    assert not np.allclose(a[:, valid], other[:, valid])


def test_graph_is_deterministic() -> None:
    a = synthetic_scene(100, 100, seed=4, chunks=50).field
    b = synthetic_scene(100, 100, seed=4, chunks=50).field
    c = synthetic_scene(100, 100, seed=5, chunks=50).field
    assert a.data.name == b.data.name != c.data.name


def test_spatial_coherence(computed: tuple[np.ndarray, np.ndarray]) -> None:
    field, truth = computed
    valid = ~np.isnan(field[0])
    neigh = np.sum(field[:, :, 1:] * field[:, :, :-1], axis=0)
    both = valid[:, 1:] & valid[:, :-1]
    # real AlphaEarth (Wisconsin tile): median neighbour cosine 0.995
    assert 0.97 < np.median(neigh[both]) < 0.999
    same = truth[:, 1:] == truth[:, :-1]
    assert same[both].mean() > 0.85


def test_class_statistics_are_realistic(computed: tuple[np.ndarray, np.ndarray]) -> None:
    field, truth = computed
    valid = truth != 255
    x = field[:, valid].T.astype(np.float64)
    y = truth[valid]
    means = []
    for c in CLASSES:
        xc = x[y == c.id]
        mu = xc.mean(axis=0)
        mu /= np.linalg.norm(mu)
        means.append(mu)
        # real AlphaEarth: median cosine to the class mean 0.86 (built) .. 0.95 (water)
        assert 0.8 < np.median(xc @ mu) < 0.98, c.name
    m = np.array(means)
    cos = m @ m.T
    off = cos[np.triu_indices(len(CLASSES), 1)]
    # real: between-class-mean cosine 0.45 .. 0.87, median ~0.7
    assert 0.3 < off.min() < 0.6
    assert 0.6 < np.median(off) < 0.85
    assert off.max() < 0.97
    band_std = np.median(x.std(axis=0))
    assert 0.04 < band_std < 0.15  # real: 0.065 .. 0.10


def test_nearest_prototype_and_knn_accuracy(
    scene: SyntheticScene, computed: tuple[np.ndarray, np.ndarray]
) -> None:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    field, truth = computed
    valid = truth != 255
    x = field[:, valid].T
    y = truth[valid]
    nearest = np.argmax(x @ scene.prototypes.T, axis=1)
    acc = float(np.mean(nearest == y))
    pts = scene.sample_points(60, seed=2)
    xp = field[:, pts["row"].to_numpy(), pts["col"].to_numpy()].T
    knn = float(
        cross_val_score(KNeighborsClassifier(5), xp, pts["class_id"].to_numpy(), cv=5).mean()
    )
    print(f"nearest-prototype accuracy {acc:.3f}, kNN(5) 5-fold CV on points {knn:.3f}")
    assert 0.7 < acc < 0.99
    assert 0.7 < knn < 0.995


def test_sample_points(scene: SyntheticScene, computed: tuple[np.ndarray, np.ndarray]) -> None:
    _, truth = computed
    pts = scene.sample_points(25, seed=1)
    assert pts.crs == scene.field.rio.crs
    assert list(pts["class_id"].value_counts().sort_index()) == [25] * len(CLASSES)
    assert set(pts["class"]) == {c.name for c in CLASSES}
    names = {c.id: c.name for c in CLASSES}
    assert all(names[i] == n for i, n in zip(pts["class_id"], pts["class"]))
    # the point geometry is the pixel centre, and that pixel has the point's class
    at = scene.truth.sel(
        x=pts.geometry.x.to_xarray(), y=pts.geometry.y.to_xarray(), method="nearest"
    ).values
    np.testing.assert_array_equal(at, pts["class_id"].to_numpy())
    np.testing.assert_array_equal(truth[pts["row"], pts["col"]], pts["class_id"])
    assert (at != 255).all()
    xs = scene.field["x"].values[pts["col"]]
    np.testing.assert_allclose(pts.geometry.x, xs)
    assert not pts[["row", "col"]].duplicated().any()
    again = scene.sample_points(25, seed=1)
    assert again.geometry.equals(pts.geometry)
    other = scene.sample_points(25, seed=2)
    assert not other.geometry.equals(pts.geometry)


def test_sample_points_warns_when_a_class_is_too_rare() -> None:
    s = synthetic_scene(24, 24, seed=0, chunks=24)
    with pytest.warns(UserWarning, match="fewer than"):
        pts = s.sample_points(400, seed=0)
    assert (pts["class_id"].value_counts() <= 400).all()


def test_sample_polygons(scene: SyntheticScene, computed: tuple[np.ndarray, np.ndarray]) -> None:
    _, truth = computed
    polys = scene.sample_polygons(6, seed=0, size_px=5)
    assert polys.crs == scene.field.rio.crs
    assert list(polys.columns[:4]) == ["polygon_id", "class", "class_id", "n_pixels"]
    assert polys["polygon_id"].is_unique
    assert (polys["class_id"].value_counts() == 6).all()
    assert polys.geometry.is_valid.all()
    xs = scene.field["x"].values
    ys = scene.field["y"].values
    for geom, cid, n in zip(polys.geometry, polys["class_id"], polys["n_pixels"]):
        minx, miny, maxx, maxy = geom.bounds
        cols = np.nonzero((xs > minx) & (xs < maxx))[0]
        rows = np.nonzero((ys > miny) & (ys < maxy))[0]
        inside = [(r, c) for r in rows for c in cols if geom.contains(Point(xs[c], ys[r]))]
        assert len(inside) == n
        assert all(truth[r, c] == cid for r, c in inside)
        # a margin of one pixel around the polygon is still inside the raster
        assert minx > xs[0] - 10 and maxx < xs[-1] + 10
    # no two polygons overlap
    assert not any(
        polys.geometry.iloc[i].intersects(polys.geometry.iloc[j])
        for i in range(len(polys))
        for j in range(i + 1, len(polys))
    )
    roads = polys[polys["class"] == "road"]
    assert len(roads) == 6  # thin class: 1 x 5 strips
    big = polys[polys["class"] == "crops"]
    assert (big["n_pixels"] == 25).all()


def test_bad_arguments() -> None:
    with pytest.raises(SchemaError, match="at least 2 x 2"):
        synthetic_scene(1, 10)
    with pytest.raises(SchemaError, match="chunks"):
        synthetic_scene(10, 10, chunks=0)
    with pytest.raises(SchemaError, match="size_px"):
        synthetic_scene(10, 10).sample_polygons(1, size_px=0)


def test_class_table() -> None:
    assert [c.id for c in CLASSES] == list(range(len(CLASSES)))
    names = [c.name for c in CLASSES]
    assert {"water", "trees", "crops", "grass", "built", "road", "bare"} == set(names)
    assert len(set(c.color for c in CLASSES)) == len(CLASSES)
    assert CLASSES[0].hex == "#419bdf"
    s = synthetic_scene(8, 8)
    assert s.class_names == names
    assert s.colors[1] == CLASSES[1].color


@pytest.mark.shared_data
def test_statistics_close_to_real_alphaearth(shared_data, computed) -> None:
    """The synthetic class spreads are within the range measured on real AEF samples."""
    import pandas as pd

    field, truth = computed
    bands = [f"A{i:02d}" for i in range(64)]
    real_within = []
    for path in sorted((shared_data / "aef").glob("dw_samples_2024_*.csv")):
        df = pd.read_csv(path)
        x = df[bands].to_numpy(np.float64)
        for lab in (0, 1, 2, 4, 6, 7):  # water trees grass crops built bare
            xc = x[df["dw_label"].to_numpy() == lab]
            mu = xc.mean(axis=0)
            real_within.append(np.median(xc @ (mu / np.linalg.norm(mu))))
    valid = truth != 255
    x = field[:, valid].T.astype(np.float64)
    y = truth[valid]
    synth_within = []
    for c in CLASSES:
        xc = x[y == c.id]
        mu = xc.mean(axis=0)
        synth_within.append(np.median(xc @ (mu / np.linalg.norm(mu))))
    lo, hi = np.min(real_within), np.max(real_within)
    assert lo - 0.03 <= np.median(synth_within) <= hi
    assert abs(np.median(synth_within) - np.median(real_within)) < 0.05


def test_computes_on_worker_processes(dask_client) -> None:
    s = synthetic_scene(100, 140, seed=7, chunks=48)
    local = s.field.data.compute(scheduler="sync")
    remote = dask_client.compute(s.field.data).result()
    assert np.array_equal(local, remote, equal_nan=True)
    np.testing.assert_array_equal(
        dask_client.compute(s.truth.data).result(), s.truth.data.compute(scheduler="sync")
    )
    # the shared prototype table is one task, not copied into every block's task
    graph = dict(s.field.data.__dask_graph__())
    assert sum(1 for k in graph if isinstance(k, str) and k.startswith("synthetic-space")) == 1
