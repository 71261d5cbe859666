from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from geoembed.errors import BandMismatchError, CRSMismatchError, LabelError, MissingCRSError
from geoembed.labels import (
    DYNAMIC_WORLD_CLASSES,
    TrainingSet,
    load_class_table,
    load_labels,
    training_from_geometries,
    training_from_table,
)
from geoembed.labels.grid import Grid
from geoembed.testing import make_field, raise_if_dask_computes

UTM = "EPSG:32616"


def _pixel_points(field, rows, cols, rng):
    """Random points strictly inside the given pixels (at least 1 m from any edge)."""
    grid = Grid.of(field)
    fx = rng.uniform(0.1, 0.9, size=len(rows))
    fy = rng.uniform(0.1, 0.9, size=len(rows))
    x = grid.left + (np.asarray(cols) + fx) * grid.dx
    y = grid.top + (np.asarray(rows) + fy) * grid.dy
    return x, y


def _valid_pixels(field, n, rng):
    arr = field.values
    ok = ~np.isnan(arr).any(axis=0)
    rr, cc = np.nonzero(ok)
    pick = rng.choice(rr.size, size=n, replace=False)
    return rr[pick], cc[pick]


# ------------------------------------------------------------------ CRS and reprojection


@pytest.mark.parametrize("bottom_up", [False, True])
def test_points_in_4326_sample_same_pixels_as_pyproj(bottom_up, caplog):
    rng = np.random.default_rng(1)
    field = make_field(bottom_up=bottom_up)
    rows, cols = _valid_pixels(field, 40, rng)
    x, y = _pixel_points(field, rows, cols, rng)
    to_ll = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(x, y)
    gdf = gpd.GeoDataFrame(
        {"cls": rng.integers(0, 3, size=40)}, geometry=gpd.points_from_xy(lon, lat), crs=4326
    )
    # independent reference: pre-project with pyproj and look the pixel up by nearest centre
    back = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    px, py = back.transform(lon, lat)
    expected = np.stack(
        [field.sel(x=a, y=b, method="nearest").values for a, b in zip(px, py)]
    ).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no geopandas CRS-mismatch warning
        with caplog.at_level(logging.INFO, logger="geoembed.labels"):
            ts = training_from_geometries(field, gdf, label_column="cls")
    assert ts.X.shape == (40, 64)
    np.testing.assert_array_equal(ts.X, expected)
    np.testing.assert_array_equal(ts.ids, np.arange(40))
    assert any("reprojected 40 label geometries from EPSG:4326" in n for n in ts.report["notes"])
    assert any("reprojected" in r.message for r in caplog.records)
    np.testing.assert_allclose(ts.xy, np.column_stack([px, py]), atol=1e-6)


def test_labels_without_crs_raise_unless_given():
    field = make_field()
    gdf = gpd.GeoDataFrame({"cls": [0]}, geometry=[shapely.Point(358500.0, 4906500.0)])
    with pytest.raises(MissingCRSError, match="crs="):
        training_from_geometries(field, gdf, label_column="cls", min_valid_fraction=0)
    ts = training_from_geometries(field, gdf, label_column="cls", crs=UTM)
    assert len(ts) == 1
    with pytest.raises(CRSMismatchError):
        load_labels(gdf.set_crs(4326), label_column="cls", crs=UTM)


# ------------------------------------------------------------------ extent, nodata, edges


def test_out_of_extent_and_nodata_points_rejected_with_counts():
    field = make_field()  # nodata patch rows 2:5, cols 3:7
    grid = Grid.of(field)
    right = grid.left + grid.width * grid.dx
    bottom = grid.top + grid.height * grid.dy
    xs = [
        grid.left + 10.5 * grid.dx,  # valid
        grid.left + 20.5 * grid.dx,  # valid
        grid.left + 30.5 * grid.dx,  # valid
        right + 0.01,  # just beyond the right edge: outside, not snapped
        grid.left - 1e5,  # far away
        grid.left + 5.5 * grid.dx,  # inside x, but y below the bottom edge
        grid.left + 4.5 * grid.dx,  # nodata
        grid.left + 6.5 * grid.dx,  # nodata
    ]
    ys = [grid.top + (r + 0.5) * grid.dy for r in (10, 20, 30, 10, 10)]
    ys += [bottom + grid.dy * 0.01, grid.top + 2.5 * grid.dy, grid.top + 4.5 * grid.dy]
    gdf = gpd.GeoDataFrame(
        {"cls": ["a", "b", "a", "a", "b", "a", "b", "a"]},
        geometry=gpd.points_from_xy(xs, ys),
        crs=UTM,
    )
    ts = training_from_geometries(field, gdf, label_column="cls", min_valid_fraction=0.3)
    assert ts.report["rejected"] == {"nodata": 2, "outside": 3}
    assert ts.report["rejected_ids"] == {"nodata": [6, 7], "outside": [3, 4, 5]}
    np.testing.assert_array_equal(ts.ids, [0, 1, 2])
    assert ts.report["valid_fraction"] == pytest.approx(3 / 8)
    json.dumps(ts.report)  # JSON-serialisable
    # the same labels fail with the default minimum valid fraction (0.5)
    with pytest.raises(LabelError, match=r"only 3 of 8 rows.*nodata: 2.*outside: 3"):
        training_from_geometries(field, gdf, label_column="cls")


def test_all_outside_fails_before_any_dask_task():
    field = make_field()
    gdf = gpd.GeoDataFrame(
        {"cls": [0, 1]}, geometry=[shapely.Point(0, 0), shapely.Point(1, 1)], crs=UTM
    )
    with raise_if_dask_computes(), pytest.raises(LabelError, match="outside: 2"):
        training_from_geometries(field, gdf, label_column="cls")


@pytest.mark.parametrize("bottom_up", [False, True])
def test_edge_points_half_open_convention(bottom_up):
    field = make_field(bottom_up=bottom_up, nodata_patch=False)
    g = Grid.of(field)
    far_x = g.left + g.width * g.dx
    far_y = g.top + g.height * g.dy
    mid_x = g.left + 10.5 * g.dx
    mid_y = g.top + 10.5 * g.dy
    x = np.array([g.left, mid_x, far_x, mid_x, g.left + 5 * g.dx, mid_x])
    y = np.array([mid_y, g.top, mid_y, far_y, mid_y, g.top + 7 * g.dy])
    row, col, inside = g.index(x, y)
    np.testing.assert_array_equal(inside, [True, True, False, False, True, True])
    assert (row[0], col[0]) == (10, 0)  # near (left) edge: column 0
    assert (row[1], col[1]) == (0, 10)  # edge at `top`: row 0
    assert col[4] == 5  # shared edge: the pixel with the larger index
    assert row[5] == 7
    gdf = gpd.GeoDataFrame({"cls": [0] * 6}, geometry=gpd.points_from_xy(x, y), crs=UTM)
    ts = training_from_geometries(field, gdf, label_column="cls")
    assert ts.report["rejected"] == {"outside": 2}
    assert ts.report["rejected_ids"]["outside"] == [2, 3]
    values = field.values
    np.testing.assert_array_equal(ts.X[0], values[:, 10, 0])
    np.testing.assert_array_equal(ts.X[2], values[:, 10, 5])


# ------------------------------------------------------------------ polygons


def _box(field, r0, r1, c0, c1):
    """Polygon covering pixels rows r0..r1-1, cols c0..c1-1 exactly (edges on pixel edges)."""
    g = Grid.of(field)
    xs = [g.left + c0 * g.dx, g.left + c1 * g.dx]
    ys = [g.top + r0 * g.dy, g.top + r1 * g.dy]
    return shapely.box(min(xs), min(ys), max(xs), max(ys))


@pytest.mark.parametrize("bottom_up", [False, True])
def test_polygon_pixels_and_groups(bottom_up):
    field = make_field(bottom_up=bottom_up)
    g = Grid.of(field)
    tri = shapely.Polygon(
        [
            (g.left + 20.3 * g.dx, g.top + 8.2 * g.dy),
            (g.left + 35.7 * g.dx, g.top + 9.1 * g.dy),
            (g.left + 27.4 * g.dx, g.top + 30.6 * g.dy),
        ]
    )
    polys = [_box(field, 10, 14, 40, 45), _box(field, 1, 6, 2, 9), tri]
    gdf = gpd.GeoDataFrame({"cls": ["x", "y", "x"]}, geometry=polys, crs=UTM)
    ts = training_from_geometries(field, gdf, label_column="cls")
    counts = np.bincount(ts.ids, minlength=3)
    # independent count: pixel centres inside the triangle
    centres_x, centres_y = np.meshgrid(field.x.values, field.y.values)
    n_tri = int(shapely.contains_xy(tri, centres_x, centres_y).sum())
    # box 2 covers 5 x 7 = 35 pixels, of which the 3 x 4 nodata patch is 12
    assert counts.tolist() == [20, 35 - 12, n_tri]
    assert ts.report["rejected_samples"]["nodata_pixels"] == 12
    json.dumps(ts.report)
    np.testing.assert_array_equal(ts.groups, ts.ids)
    # sampled vectors are the field's values at the pixel centres given in xy
    for i in range(0, len(ts), 7):
        expected = field.sel(x=ts.xy[i, 0], y=ts.xy[i, 1]).values
        np.testing.assert_array_equal(ts.X[i], expected)
    touched = training_from_geometries(field, gdf, label_column="cls", all_touched=True)
    assert np.bincount(touched.ids, minlength=3)[2] > n_tri


def test_stratified_sample_is_seeded_and_chunking_independent():
    polys = None
    results = []
    for chunks in (16, 7, None):
        field = make_field(chunks=chunks)
        polys = [_box(field, 0, 12, 0, 20), _box(field, 15, 37, 10, 30), _box(field, 0, 30, 35, 53)]
        gdf = gpd.GeoDataFrame({"cls": ["a", "b", "a"]}, geometry=polys, crs=UTM)
        ts = training_from_geometries(field, gdf, label_column="cls", samples_per_class=25, seed=3)
        results.append(ts)
    for ts in results:
        assert ts.class_counts() == {"a": 25, "b": 25}
        assert not np.isnan(ts.X).any()  # nodata picks were replaced by further candidates
        np.testing.assert_array_equal(ts.X, results[0].X)
        np.testing.assert_array_equal(ts.xy, results[0].xy)
    other = training_from_geometries(
        make_field(),
        gpd.GeoDataFrame({"cls": ["a", "b", "a"]}, geometry=polys, crs=UTM),
        label_column="cls",
        samples_per_class=25,
        seed=4,
    )
    assert not np.array_equal(other.xy, results[0].xy)


# ------------------------------------------------------------------ laziness


def test_only_chunks_holding_samples_are_read():
    base = make_field(chunks=16)  # 37 x 53 -> 3 x 4 chunks
    computed: list[tuple[int, int]] = []
    allowed = {(0, 0), (2, 3)}

    def guard(block, block_info=None):
        loc = tuple(block_info[0]["chunk-location"][1:])
        if loc not in allowed:
            raise AssertionError(f"chunk {loc} was read but holds no sample")
        computed.append(loc)
        return block

    field = base.copy(data=base.data.map_blocks(guard, dtype=np.float32))
    xs = base.x.values
    ys = base.y.values
    pts = [shapely.Point(xs[c], ys[r]) for r, c in [(0, 0), (10, 12), (36, 52), (33, 50)]]
    gdf = gpd.GeoDataFrame({"cls": [0, 1, 0, 1]}, geometry=pts, crs=UTM)
    with dask.config.set(scheduler="sync"):
        ts = training_from_geometries(field, gdf, label_column="cls")
    assert sorted(computed) == sorted(allowed)
    np.testing.assert_array_equal(ts.X[3], base.values[:, 33, 50])


# ------------------------------------------------------------------ readers


def test_csv_lonlat_wkt_and_geo_columns(tmp_path: Path):
    field = make_field()
    rng = np.random.default_rng(5)
    rows, cols = _valid_pixels(field, 12, rng)
    x, y = _pixel_points(field, rows, cols, rng)
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(x, y)
    labels = rng.choice(["crop", "forest"], size=12)
    ref = training_from_geometries(
        field,
        gpd.GeoDataFrame({"c": labels}, geometry=gpd.points_from_xy(x, y), crs=UTM),
        label_column="c",
    )
    p = tmp_path / "pts.csv"
    pd.DataFrame({"Longitude": lon, "Latitude": lat, "c": labels}).to_csv(p, index=False)
    gdf = load_labels(p, label_column="c")
    assert gdf.crs.to_epsg() == 4326  # lon/lat columns default to EPSG:4326
    ts = training_from_geometries(field, p, label_column="c")
    np.testing.assert_array_equal(ts.X, ref.X)
    # x/y columns have no default CRS
    pxy = tmp_path / "xy.csv"
    pd.DataFrame({"x": x, "y": y, "c": labels}).to_csv(pxy, index=False)
    with pytest.raises(MissingCRSError, match="crs="):
        load_labels(pxy, label_column="c")
    np.testing.assert_array_equal(
        training_from_geometries(field, pxy, label_column="c", crs=UTM).X, ref.X
    )
    # WKT column (needs crs=) and an Earth Engine-style .geo column (GeoJSON, EPSG:4326)
    pw = tmp_path / "wkt.csv"
    pd.DataFrame({"WKT": [f"POINT ({a} {b})" for a, b in zip(x, y)], "c": labels}).to_csv(
        pw, index=False
    )
    np.testing.assert_array_equal(
        training_from_geometries(field, pw, label_column="c", crs=UTM).X, ref.X
    )
    geo = [json.dumps({"type": "Point", "coordinates": [a, b]}) for a, b in zip(lon, lat)]
    pg = tmp_path / "geo.csv"
    pd.DataFrame({".geo": geo, "c": labels}).to_csv(pg, index=False)
    np.testing.assert_array_equal(training_from_geometries(field, pg, label_column="c").X, ref.X)
    with pytest.raises(LabelError, match="no label column 'klass'"):
        load_labels(p, label_column="klass")


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet", ".shp"])
def test_vector_file_round_trip(tmp_path: Path, suffix: str):
    field = make_field()
    gdf = gpd.GeoDataFrame(
        {"cls": ["a", "b", "a"]},
        geometry=[
            _box(field, 10, 14, 40, 45),
            shapely.Point(field.x.values[30], field.y.values[20]),
            _box(field, 20, 25, 5, 9),
        ],
        crs=UTM,
    )
    if suffix == ".shp":  # a Shapefile holds one geometry type
        gdf = gdf.iloc[[0, 2]].reset_index(drop=True)
    ref = training_from_geometries(field, gdf, label_column="cls")
    path = tmp_path / f"labels{suffix}"
    if suffix == ".parquet":
        gdf.to_parquet(path)
    else:
        gdf.to_file(path)
    ts = training_from_geometries(field, path, label_column="cls")
    np.testing.assert_array_equal(ts.X, ref.X)
    np.testing.assert_array_equal(ts.ids, ref.ids)
    if suffix == ".shp":
        path.with_suffix(".prj").unlink()
        with pytest.raises(MissingCRSError):
            load_labels(path, label_column="cls")


# ------------------------------------------------------------------ classes


def test_class_tables_and_dynamic_world(tmp_path: Path):
    field = make_field(nodata_patch=False)
    xs, ys = field.x.values, field.y.values
    pts = [shapely.Point(xs[i], ys[i]) for i in range(8)]
    gdf = gpd.GeoDataFrame({"dw": [4, 1, 4, 6, 1, 4, 6, 6]}, geometry=pts, crs=UTM)
    plain = training_from_geometries(field, gdf, label_column="dw")
    assert plain.class_values == [1, 4, 6]
    assert plain.class_names == ["1", "4", "6"]
    assert plain.colors is None
    np.testing.assert_array_equal(plain.y, [1, 0, 1, 2, 0, 1, 2, 2])
    dw = training_from_geometries(field, gdf, label_column="dw", class_table="dynamic_world")
    assert dw.class_names == ["trees", "crops", "built"]
    assert dw.colors == ["#397d49", "#e49635", "#c4281b"]
    assert len(DYNAMIC_WORLD_CLASSES.ids) == 9
    # names in the labels, ids/colours from a CSV table: classes ordered by table id
    table = tmp_path / "classes.csv"
    pd.DataFrame(
        {
            "id": [10, 20, 30],
            "name": ["Water", "Forest", "Crop"],
            "color": ["0000ff", "#00aa00", "#ffaa00"],
        }
    ).to_csv(table, index=False)
    named = gdf.assign(name=["crop", "forest", "crop", "water", "forest", "crop", "water", "bog"])
    ts = training_from_geometries(
        field, named, label_column="name", class_table=table, min_valid_fraction=0.5
    )
    assert ts.class_names == ["Water", "Forest", "Crop"]
    assert ts.class_values == [10, 20, 30]
    assert ts.colors == ["#0000ff", "#00aa00", "#ffaa00"]
    assert ts.report["rejected"] == {"unknown_class": 1}
    assert ts.report["rejected_ids"] == {"unknown_class": [7]}
    jtable = tmp_path / "classes.json"
    jtable.write_text(json.dumps({"10": "Water", "20": {"name": "Forest", "color": "#00aa00"}}))
    assert load_class_table(jtable).names == ("Water", "Forest")


# ------------------------------------------------------------------ hygiene


def test_empty_invalid_and_conflicting_geometries():
    field = make_field()
    xs, ys = field.x.values, field.y.values
    g = Grid.of(field)
    bowtie = shapely.Polygon(
        [
            (g.left + 30 * g.dx, g.top + 20 * g.dy),
            (g.left + 40 * g.dx, g.top + 30 * g.dy),
            (g.left + 40 * g.dx, g.top + 20 * g.dy),
            (g.left + 30 * g.dx, g.top + 30 * g.dy),
        ]
    )
    assert not bowtie.is_valid
    geoms = [
        shapely.Point(xs[10], ys[10]),
        shapely.Polygon(),
        bowtie,
        None,
        shapely.Point(xs[12], ys[12]),
        shapely.LineString([(xs[1], ys[1]), (xs[5], ys[5])]),
        shapely.Point(xs[20], ys[20]),
    ]
    gdf = gpd.GeoDataFrame({"cls": ["a", "a", "b", "b", "b", "a", None]}, geometry=geoms, crs=UTM)
    ts = training_from_geometries(field, gdf, label_column="cls", min_valid_fraction=0.2)
    assert ts.report["rejected"] == {
        "empty_geometry": 2,
        "invalid_geometry": 1,
        "missing_label": 1,
        "unsupported_geometry": 1,
    }
    assert ts.report["rejected_ids"]["empty_geometry"] == [1, 3]
    assert ts.report["rejected_ids"]["invalid_geometry"] == [2]
    np.testing.assert_array_equal(ts.ids, [0, 4])
    repaired = training_from_geometries(
        field, gdf, label_column="cls", make_valid=True, min_valid_fraction=0.2
    )
    assert 2 in set(repaired.ids.tolist())
    assert any("make_valid" in n for n in repaired.report["notes"])

    # two points in one pixel with different labels: identical vectors, conflicting labels
    dup = gpd.GeoDataFrame(
        {"cls": ["a", "b", "b", "a"]},
        geometry=[
            shapely.Point(xs[30] - 2, ys[15]),
            shapely.Point(xs[30] + 2, ys[15]),
            shapely.Point(xs[40], ys[30]),
            shapely.Point(xs[45], ys[31]),
        ],
        crs=UTM,
    )
    with pytest.raises(LabelError, match=r"different labels in rows \[0, 1\]"):
        training_from_geometries(field, dup, label_column="cls")
    dropped = training_from_geometries(
        field, dup, label_column="cls", on_conflict="drop", min_valid_fraction=0.2
    )
    np.testing.assert_array_equal(dropped.ids, [2, 3])
    assert dropped.report["conflicting_duplicates"]["ids"] == [0, 1]


def test_class_with_fewer_than_k_samples_is_named_with_row_ids():
    field = make_field()
    xs, ys = field.x.values, field.y.values
    pts = [shapely.Point(xs[10 + i], ys[20]) for i in range(7)]
    gdf = gpd.GeoDataFrame({"cls": ["a"] * 5 + ["rare", "rare"]}, geometry=pts, crs=UTM)
    with pytest.raises(LabelError, match=r"'rare': 2 sample\(s\) from rows \[5, 6\]"):
        training_from_geometries(field, gdf, label_column="cls", min_per_class=3)
    assert len(training_from_geometries(field, gdf, label_column="cls", min_per_class=2)) == 7


# ------------------------------------------------------------------ tables (real data)


def test_table_from_earth_engine_csv(shared_data: Path):
    path = shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"
    field = make_field()
    ts = training_from_table(path, field, label_column="dw_label", class_table="dynamic_world")
    assert isinstance(ts, TrainingSet)
    assert ts.X.shape == (720, 64) and ts.X.dtype == np.float32
    assert ts.n_classes == 9 and set(ts.class_counts().values()) == {80}
    assert ts.class_names[0] == "water" and ts.class_values == list(range(9))
    df = pd.read_csv(path)
    np.testing.assert_array_equal(ts.X, df[[f"A{i:02d}" for i in range(64)]].to_numpy(np.float32))
    assert ".geo" in ts.report["ignored_columns"] and "water" in ts.report["ignored_columns"]
    lon, lat = df["longitude"].to_numpy(), df["latitude"].to_numpy()
    ex, ey = Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(lon, lat)
    np.testing.assert_allclose(ts.xy, np.column_stack([ex, ey]))
    assert ts.to_frame().shape[0] == 720
    json.dumps(ts.report)

    with pytest.raises(BandMismatchError, match=r"missing columns \['A63'\]"):
        training_from_table(df.drop(columns=["A63"]), field, label_column="dw_label")
    with pytest.raises(BandMismatchError, match=r"extra band columns \['A64'\]"):
        training_from_table(df.assign(A64=0.0), field, label_column="dw_label")
    with pytest.raises(LabelError, match="no label column"):
        training_from_table(df, field, label_column="label")

    bad = df.copy()
    bad.loc[[3, 70, 500], "A10"] = np.nan
    ts2 = training_from_table(bad, field, label_column="dw_label")
    assert ts2.report["rejected"] == {"nan": 3}
    assert ts2.report["rejected_ids"] == {"nan": [3, 70, 500]}
    assert len(ts2) == 717 and 70 not in set(ts2.ids.tolist())


def test_table_groups_and_conflicts():
    bands = [f"A{i:02d}" for i in range(64)]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 64))
    X[5] = X[0]
    df = pd.DataFrame(X, columns=bands).assign(
        cls=["a", "b", "a", "b", "a", "b"], region=["n", "n", "s", "s", "e", "e"]
    )
    with pytest.raises(LabelError, match=r"rows \[0, 5\]"):
        training_from_table(df, bands, label_column="cls")
    ts = training_from_table(
        df, bands, label_column="cls", on_conflict="drop", group_column="region"
    )
    np.testing.assert_array_equal(ts.ids, [1, 2, 3, 4])
    assert ts.report["groups"] == ["e", "n", "s"]
    np.testing.assert_array_equal(ts.groups, [1, 2, 2, 0])
    assert ts.xy is None


def test_find_duplicates_is_bit_exact_and_treats_negative_zero_as_zero():
    from geoembed.labels.hygiene import find_duplicates

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 64)).astype(np.float32)
    y = rng.integers(0, 3, 500)
    X[10], y[10] = X[3], y[3]  # same vector, same label
    X[20], y[20] = X[5], (y[5] + 1) % 3  # same vector, other label
    X[30] = X[31] = 0.0
    X[30, 0] = -0.0
    y[30], y[31] = 0, 1  # equal vectors (-0.0 == 0.0), other labels
    X[40] = X[41]
    X[40, 7] = np.nextafter(X[41, 7], np.float32(9))  # one ulp apart: not equal
    y[40], y[41] = 0, 1
    conflicting, n_dup = find_duplicates(X, y)
    assert np.flatnonzero(conflicting).tolist() == [5, 20, 30, 31]
    assert n_dup == 1


def test_plain_parquet_with_lonlat(tmp_path: Path):
    path = tmp_path / "pts.parquet"
    pd.DataFrame({"lon": [-88.77], "lat": [44.29], "c": ["a"]}).to_parquet(path)
    gdf = load_labels(path, label_column="c")
    assert gdf.crs.to_epsg() == 4326 and gdf.geometry.iloc[0].x == -88.77


def test_sampling_on_a_distributed_cluster(dask_client):
    field = make_field(chunks=8)
    polys = [_box(field, 0, 12, 0, 20), _box(field, 15, 37, 10, 30)]
    gdf = gpd.GeoDataFrame({"cls": ["a", "b"]}, geometry=polys, crs=UTM)
    ts = training_from_geometries(field, gdf, label_column="cls", samples_per_class=30, seed=2)
    with dask.config.set(scheduler="sync"):
        local = training_from_geometries(
            field, gdf, label_column="cls", samples_per_class=30, seed=2
        )
    np.testing.assert_array_equal(ts.X, local.X)
    assert ts.class_counts() == {"a": 30, "b": 30}


def test_class_whose_rows_are_all_rejected_is_left_out_with_a_note():
    field = make_field()
    xs, ys = field.x.values, field.y.values
    pts = [shapely.Point(xs[10 + i], ys[20]) for i in range(6)] + [shapely.Point(0.0, 0.0)]
    gdf = gpd.GeoDataFrame({"cls": [1, 1, 1, 3, 3, 3, 2]}, geometry=pts, crs=UTM)
    ts = training_from_geometries(field, gdf, label_column="cls")
    assert ts.class_values == [1, 3] and ts.class_names == ["1", "3"]
    np.testing.assert_array_equal(ts.y, [0, 0, 0, 1, 1, 1])
    assert ts.report["dropped_classes"] == ["2"]
    assert any("left out" in n for n in ts.report["notes"])


def test_imbalance_is_noted():
    bands = [f"F{i:03d}" for i in range(4)]
    X = np.random.default_rng(1).normal(size=(22, 4))
    df = pd.DataFrame(X, columns=bands).assign(cls=["big"] * 20 + ["small"] * 2)
    ts = training_from_table(df, bands, label_column="cls")
    assert any("class imbalance" in n for n in ts.report["notes"])
    balanced = training_from_table(df.iloc[10:], bands, label_column="cls")
    assert not any("class imbalance" in n for n in balanced.report["notes"])


def test_no_usable_sample_raises_even_without_a_minimum_fraction():
    field = make_field()
    gdf = gpd.GeoDataFrame({"cls": [0]}, geometry=[shapely.Point(0.0, 0.0)], crs=UTM)
    with pytest.raises(LabelError, match="no usable sample"):
        training_from_geometries(field, gdf, label_column="cls", min_valid_fraction=0.0)
