"""The one pixel grid (:class:`geoembed.grid.Grid`): slicing, strides, bounds, tokens,
points, half-open indexing, bottom-up fields, and the same pixels wherever it is used."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from affine import Affine
from dask.base import tokenize
from pyproj import Transformer
from rasterio.features import rasterize
from shapely.geometry import Polygon, box

from geoembed.errors import MissingCRSError
from geoembed.grid import Grid
from geoembed.labels import training_from_geometries
from geoembed.labels.grid import burn
from geoembed.testing import make_field
from geoembed.train.data import grid_transform, labels_from_polygons

#: a geographic grid whose spacing is not exactly representable (the hard case for bits)
GEO = {"crs": "EPSG:4326", "origin": (-88.768831, 44.294613), "res": 8.983152841195214e-05}


def _field(bottom_up: bool = False, **kw: Any) -> xr.DataArray:
    return make_field(21, 33, bands=2, chunks=None, nodata_patch=False, bottom_up=bottom_up, **kw)


@pytest.mark.parametrize("bottom_up", [False, True])
def test_of_field(bottom_up: bool) -> None:
    field = _field(bottom_up)
    g = Grid.of(field)
    assert g.shape == (21, 33) and (g.height, g.width) == (21, 33)
    assert g.crs.epsg == 32616
    assert g.bottom_up is bottom_up
    dy = 10.0 if bottom_up else -10.0
    assert g.transform == Affine(10.0, 0.0, 358410.0, 0.0, dy, 4906600.0)
    assert (g.left, g.top, g.dx, g.dy) == (358410.0, 4906600.0, 10.0, dy)
    coords = g.coords()
    np.testing.assert_array_equal(coords["x"], field.x.values)
    np.testing.assert_array_equal(coords["y"], field.y.values)
    assert Grid.of(field.isel(band=0)) == g  # a (y, x) map of the field has its grid


def test_schema_and_labels_export_the_same_class() -> None:
    from geoembed.labels.grid import Grid as LabelsGrid
    from geoembed.schema import Grid as SchemaGrid

    assert SchemaGrid is Grid and LabelsGrid is Grid


@pytest.mark.parametrize("bottom_up", [False, True])
@pytest.mark.parametrize(
    "ys, xs",
    [
        (slice(2, 9), slice(3, 30)),
        (slice(-5, None), slice(None, -4)),
        (slice(0, 100), slice(30, 100)),  # stops past the end are clipped, as in NumPy
        (slice(7, 7), slice(3, 1)),  # empty
    ],
)
def test_slicing_matches_the_sliced_field(bottom_up: bool, ys: slice, xs: slice) -> None:
    field = _field(bottom_up)
    g = Grid.of(field)[ys, xs]
    assert g.shape == (field.y.values[ys].size, field.x.values[xs].size)
    if 0 not in g.shape:
        assert g == Grid.of(field.isel(y=ys, x=xs))


@pytest.mark.parametrize("bottom_up", [False, True])
def test_strides_are_blocks_from_the_corner(bottom_up: bool) -> None:
    field = _field(bottom_up)
    g = Grid.of(field)
    for s in (1, 2, 3, 7, 40):
        d = g.decimate(s)
        assert d == g[::s, ::s]
        assert d.shape == (-(-21 // s), -(-33 // s))
        assert d.transform == g.transform * Affine.scale(s)
        # centres of the s x s blocks (full blocks), i.e. the mean of their coordinates
        nx = 33 // s
        if nx:
            blocks = field.x.values[: nx * s].reshape(nx, s).mean(axis=1)
            np.testing.assert_allclose(d.coords()["x"][:nx], blocks, rtol=0, atol=1e-6)
    assert g[1:20:4, 5::3] == Grid(
        g.transform * Affine.translation(5, 1) * Affine.scale(3, 4), (5, 10), g.crs
    )
    assert g[1:20:4, 5::4] == g[1:20, 5:].decimate(4)
    with pytest.raises(ValueError, match="stride"):
        g.decimate(0)
    with pytest.raises(ValueError, match="positive"):
        g[::-1, :]
    with pytest.raises(TypeError, match="two slices"):
        g[3]  # type: ignore[index]


@pytest.mark.parametrize("bottom_up", [False, True])
def test_bounds(bottom_up: bool) -> None:
    field = _field(bottom_up)
    g = Grid.of(field)
    south = 4906600.0 if bottom_up else 4906600.0 - 210.0
    assert g.bounds == (358410.0, south, 358410.0 + 330.0, south + 210.0)
    assert g.bounds == tuple(field.rio.bounds(recalc=True))
    assert g[5:9, 10:12].bounds == tuple(field.isel(y=slice(5, 9), x=slice(10, 12)).rio.bounds())


def test_north_up_is_the_flipped_field() -> None:
    bottom = _field(True)
    flipped = bottom.isel(y=slice(None, None, -1))
    assert Grid.of(bottom).north_up() == Grid.of(flipped).transform
    top = _field(False)
    assert Grid.of(top).north_up() == Grid.of(top).transform
    # a decimated bottom-up grid: the image of rows 0, s, 2s, ... flipped (viz's formula)
    ys = bottom.y.values
    for s in (2, 3, 4, 8):
        kept_last = ((ys.size - 1) // s) * s
        top_edge = float(ys[kept_last]) - 5.0 + 10.0 * s
        assert Grid.of(bottom).decimate(s).north_up() == Affine(
            10.0 * s, 0.0, 358410.0, 0.0, -10.0 * s, top_edge
        )


def test_tokens_are_stable_and_tell_grids_apart() -> None:
    field = _field()
    g = Grid.of(field)
    assert tokenize(g) == tokenize(Grid.of(field.copy(deep=True)))
    assert tokenize(g) == tokenize(pickle.loads(pickle.dumps(g)))
    assert pickle.loads(pickle.dumps(g)) == g and hash(pickle.loads(pickle.dumps(g))) == hash(g)
    code = (
        "from geoembed.grid import Grid; from geoembed.testing import make_field; "
        "from dask.base import tokenize; "
        "print(tokenize(Grid.of(make_field(21, 33, bands=2, chunks=None, nodata_patch=False))))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == tokenize(g)  # the same in another process (no id() or salt in it)
    variants = [
        g[1:, :],
        g[:, :-1],
        g.decimate(2),
        Grid.of(_field(True)),
        Grid.of(_field(crs="EPSG:32617")),
        Grid(g.transform, g.shape, None),
        Grid(g.transform * Affine.translation(1e-6, 0), g.shape, g.crs),
    ]
    # the CRS given as text or as the field's rasterio CRS: equal grids, equal tokens
    named = Grid(g.transform, g.shape, "EPSG:32616")
    assert named == g and tokenize(named) == tokenize(g) and hash(named) == hash(g)
    tokens = {tokenize(v) for v in variants} | {tokenize(g)}
    assert len(tokens) == len(variants) + 1
    assert all(v != g for v in variants)
    with pytest.raises(AttributeError, match="frozen"):
        g.geobox = None  # type: ignore[misc]


def test_reproject_points_matches_pyproj() -> None:
    g = Grid.of(_field())
    rng = np.random.default_rng(1)
    lon = rng.uniform(-89.0, -88.5, 50)
    lat = rng.uniform(44.0, 44.5, 50)
    x, y = g.reproject_points(lon, lat, "EPSG:4326")
    ex, ey = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True).transform(lon, lat)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    lon2, lat2 = g.points_to(x, y, "EPSG:4326")
    np.testing.assert_allclose(lon2, lon, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lat2, lat, rtol=0, atol=1e-9)
    same = g.reproject_points(x, y, "EPSG:32616")
    np.testing.assert_array_equal(same[0], x)
    with pytest.raises(MissingCRSError, match="write_crs"):
        Grid(g.transform, g.shape).reproject_points(lon, lat, "EPSG:4326")


@pytest.mark.parametrize("bottom_up", [False, True])
def test_index_half_open_edges(bottom_up: bool) -> None:
    g = Grid.of(_field(bottom_up))
    x0, y0 = 358410.0, 4906600.0
    sign = 1.0 if bottom_up else -1.0
    far_x, far_y = x0 + 330.0, y0 + sign * 210.0
    x = np.array([x0, x0 + 10.0, far_x - 1e-6, far_x, x0, x0, x0, np.nan, x0 - 1e-9])
    y = np.array([y0, y0, y0, y0, y0 + sign * 10.0, far_y - sign * 1e-6, far_y, y0, y0])
    row, col, inside = g.index(x, y)
    assert inside.tolist() == [True, True, True, False, True, True, False, False, False]
    assert row[inside].tolist() == [0, 0, 0, 1, 20]
    assert col[inside].tolist() == [0, 1, 32, 0, 0]
    # every pixel centre maps back to its pixel
    rr, cc = np.meshgrid(np.arange(21), np.arange(33), indexing="ij")
    xy = g.centres(rr.ravel(), cc.ravel())
    r2, c2, ok = g.index(xy[:, 0], xy[:, 1])
    assert ok.all() and (r2 == rr.ravel()).all() and (c2 == cc.ravel()).all()


def _old_train_transform(field: xr.DataArray) -> tuple[Affine, bool]:
    """train.data.grid_transform before the Grid (origin of a bottom-up grid from its last row)."""
    x, y = field.x.values, field.y.values
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    if dy > 0:
        return Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, -dy, float(y[-1]) + dy / 2), True
    return Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2), False


def _polygons(field: xr.DataArray, on_centres: bool, n: int = 30) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(3)
    xs, ys = field.x.values, field.y.values
    geoms = []
    for _ in range(n):
        if on_centres:  # edges exactly through pixel centres: the tie the last bits decide
            c = np.sort(rng.choice(xs.size, 2, replace=False))
            r = np.sort(rng.choice(ys.size, 2, replace=False))
            geoms.append(box(xs[c[0]], min(ys[r]), xs[c[1]], max(ys[r])))
        else:
            px = rng.uniform(xs.min(), xs.max(), 3)
            py = rng.uniform(ys.min(), ys.max(), 3)
            geoms.append(Polygon(zip(px, py)))
    return gpd.GeoDataFrame({"cls": np.arange(n) % 3}, geometry=geoms, crs=field.rio.crs)


def _old_labels(field: xr.DataArray, polys: gpd.GeoDataFrame, all_touched: bool) -> np.ndarray:
    transform, flip = _old_train_transform(field)
    shapes = zip(polys.geometry, polys["cls"])
    out = rasterize(shapes, out_shape=field.shape[1:], transform=transform, fill=-1,
                    dtype="int16", all_touched=all_touched)  # fmt: skip
    return out[::-1] if flip else out


@pytest.mark.parametrize("all_touched", [False, True])
@pytest.mark.parametrize("kw", [{}, {"bottom_up": True}, GEO, {**GEO, "bottom_up": True}], ids=str)
def test_train_labels_before_and_after(kw: dict, all_touched: bool) -> None:
    """labels_from_polygons burns the same pixels as before the Grid, except the documented
    case: bottom-up grids with an inexact spacing, for pixel centres exactly on an edge."""
    field = _field(**kw)
    assert grid_transform(field)[1] is bool(kw.get("bottom_up"))
    exact = not (kw.get("bottom_up") and "crs" in kw)
    assert (grid_transform(field) == _old_train_transform(field)) is exact
    for on_centres in (False, True):
        polys = _polygons(field, on_centres)
        new = labels_from_polygons(field, polys, label_column="cls", all_touched=all_touched)
        old = _old_labels(field, polys, all_touched)
        present = np.unique(old[old >= 0])
        remapped = np.where(old >= 0, np.searchsorted(present, np.maximum(old, 0)), -1)
        if exact or not on_centres:
            np.testing.assert_array_equal(new.ids, remapped)
        elif not all_touched:  # the one change: ties fall as in the kNN samples (next test)
            assert (new.ids != remapped).any()


@pytest.mark.parametrize("kw", [{}, {"bottom_up": True}, GEO, {**GEO, "bottom_up": True}], ids=str)
def test_training_and_knn_labels_burn_the_same_pixels(kw: dict) -> None:
    """The CNN's dense labels and the kNN samples take the same pixels of each polygon,
    even for edges through pixel centres on an inexact bottom-up grid (where the
    pre-Grid transforms disagreed)."""
    field = _field(**kw)
    polys = _polygons(field, on_centres=True, n=12)
    for all_touched in (False, True):
        for i in range(len(polys)):
            one = polys.iloc[[i]]
            dense = labels_from_polygons(field, one, label_column="cls", all_touched=all_touched)
            ts = training_from_geometries(
                field, one, label_column="cls", all_touched=all_touched, on_conflict="keep"
            )
            r, c, inside = Grid.of(field).index(ts.xy[:, 0], ts.xy[:, 1])
            assert inside.all()
            mask = np.zeros(field.shape[1:], dtype=bool)
            mask[r, c] = True
            np.testing.assert_array_equal(mask, dense.ids >= 0)


def test_burn_bottom_up_is_the_flipped_north_up_burn() -> None:
    bottom = _field(True)
    top = bottom.isel(y=slice(None, None, -1))
    polys = _polygons(bottom, on_centres=False)
    shapes = list(zip(polys.geometry, polys["cls"]))
    a = burn(shapes, Grid.of(bottom), fill=-1, dtype="int16")
    b = burn(shapes, Grid.of(top), fill=-1, dtype="int16")
    np.testing.assert_array_equal(a, b[::-1])
    assert (a >= 0).any()


def test_grid_module_imports_only_the_data_model() -> None:
    path = Path(__file__).resolve().parents[1] / "geoembed" / "grid.py"
    tree = ast.parse(path.read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    internal = {m for m in mods if m.startswith("geoembed")}
    assert internal <= {"geoembed.errors", "geoembed.schema"}, internal


@pytest.mark.parametrize("bottom_up", [False, True])
def test_transform_vs_rioxarray_recalc(bottom_up: bool) -> None:
    """The COG writer and strided inference used rioxarray's recalculated transform:
    the same bits on exactly spaced coordinates; otherwise the pixel sizes differ by the
    rounding of the coordinates (one ulp of the origin per pixel: 1.6e-11 relative here)."""
    exact = _field(bottom_up)
    assert Grid.of(exact).transform == exact.rio.transform(recalc=True)
    geo = _field(bottom_up, **GEO)
    ours, theirs = Grid.of(geo).transform, geo.rio.transform(recalc=True)
    assert ours != theirs
    np.testing.assert_allclose(tuple(ours)[:6], tuple(theirs)[:6], rtol=1e-10, atol=1e-13)
