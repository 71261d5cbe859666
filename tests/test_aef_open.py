"""open_aef on local mirrors cut from the real Wisconsin tile (two UTM zones, top-down and
bottom-up): the de-quantized vectors equal the tile's, NaN where -128."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from _aef_mirror import MASK_COLS, MASK_ROWS, SPLIT_COL, Mirror, bbox_of, build_mirror, codes_at
from _io_data import formula

from geoembed.errors import DataRequestError, MissingInputError, SchemaError
from geoembed.io.aef import dequantize_block
from geoembed.io.aef_index import PUBLIC_PREFIX, AefSource, resolve_source, select_files
from geoembed.io.aef_open import open_aef
from geoembed.testing import raise_if_dask_computes

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]


@pytest.fixture(scope="module", params=[False, True], ids=["top-down", "bottom-up"])
def mirror(
    request: pytest.FixtureRequest, aef_tif: Path, tmp_path_factory: pytest.TempPathFactory
) -> Mirror:
    root = tmp_path_factory.mktemp("aef-bottom-up" if request.param else "aef-top-down")
    return build_mirror(aef_tif, root, bottom_up=request.param)


def decoded(q: np.ndarray) -> np.ndarray:
    """Reference decoding: float32 as geoembed computes it, checked against float64 maths."""
    v = dequantize_block(q, axis=0)
    ref = formula(q)
    ref[:, (q == -128).any(axis=0)] = np.nan
    np.testing.assert_allclose(v, ref, rtol=1e-6, atol=1e-7)
    return v


def tile_values_at(m: Mirror, field) -> np.ndarray:
    """The tile's de-quantized vectors at the pixel centres of a zone-16 field."""
    return decoded(codes_at(m, field["x"].values, field["y"].values))


def test_bbox_across_zones_gives_the_tiles_vectors(mirror: Mirror) -> None:
    bbox = bbox_of(mirror, slice(20, 70), slice(20, 80))
    with raise_if_dask_computes():
        fields = open_aef(bbox, 2024, source=str(mirror.root))
    assert set(fields) == {"15N", "16N"}
    z16, z15 = fields["16N"], fields["15N"]
    assert z16.rio.crs.to_epsg() == 32616 and z15.rio.crs.to_epsg() == 32615
    assert z16.dtype == np.float32 and z16.dims == ("band", "y", "x")
    assert float(z16["y"][0]) > float(z16["y"][-1])  # north-up, also from bottom-up files
    # zone 16: the tile's own pixels, both files of the zone, masked block NaN in all bands
    got = z16.values
    np.testing.assert_array_equal(got, tile_values_at(mirror, z16))
    t = mirror.transform
    x_mask = t.c + t.a * (MASK_COLS.start + 0.5)
    y_mask = t.f + t.e * (MASK_ROWS.start + 0.5)
    assert np.isnan(z16.sel(x=x_mask, y=y_mask, method="nearest").values).all()
    # the window reaches the split row of the two 16N files and the western edge of 16N
    assert float(z16["x"].min()) == pytest.approx(t.c + t.a * (SPLIT_COL + 0.5))
    assert z16.sizes["y"] >= 50
    # zone 15: the warped file's pixels; every valid vector is one of the tile's
    with rasterio.open(mirror.zone15) as ds:
        codes = ds.read()
        inv = ~ds.transform
        c, r = inv * (float(z15["x"][0]), float(z15["y"][0]))
        cc, rr = inv * (float(z15["x"][-1]), float(z15["y"][-1]))
    if ds.transform.e > 0:
        codes = codes[:, ::-1]
        r, rr = codes.shape[1] - r, codes.shape[1] - rr
    q = codes[:, int(r) : int(rr) + 1, int(c) : int(cc) + 1]
    np.testing.assert_array_equal(z15.values, decoded(q))
    valid = ~np.isnan(z15.values[0])
    assert valid.sum() > 500
    tile = {tuple(v) for v in decoded(mirror.codes).reshape(64, -1).T}
    assert all(tuple(v) in tile for v in z15.values[:, valid].T)


def test_one_grid_nearest_neighbour(mirror: Mirror) -> None:
    bbox = bbox_of(mirror, slice(20, 70), slice(20, 80))
    with raise_if_dask_computes():
        field = open_aef(bbox, 2024, source=str(mirror.root), crs="EPSG:32616", resolution=10)
    assert field.rio.crs.to_epsg() == 32616
    assert field.dims == ("band", "y", "x")
    assert field.rio.resolution() == (10.0, -10.0)
    values = field.values
    east = field["x"].values > mirror.transform.c + 10 * SPLIT_COL
    # where zone 16 has data the field is the tile itself (same grid: no resampling)
    np.testing.assert_array_equal(values[:, :, east], tile_values_at(mirror, field.isel(x=east)))
    # west of the split the pixels come from zone 15, nearest-neighbour: tile vectors only
    tile = {tuple(v) for v in decoded(mirror.codes).reshape(64, -1).T}
    west = values[:, :, ~east].reshape(64, -1)
    ok = ~np.isnan(west[0])
    assert ok.sum() > 0.8 * ok.size
    assert all(tuple(v) in tile for v in west[:, ok].T)


def test_coarse_resolution_reads_an_overview(mirror: Mirror) -> None:
    bbox = bbox_of(mirror, slice(0, 97), slice(50, 97))
    fields = open_aef(bbox, 2024, source=str(mirror.root), resolution=20)
    z16 = fields["16N"]
    assert z16.rio.resolution() == (20.0, -20.0)
    # the first overview of the northern 16N file, de-quantized, is what was read
    north = next(
        f for f in mirror.files if f.name.endswith("0-0000000000.tiff") and "16N" in str(f)
    )
    with rasterio.open(north, overview_level=0) as ds:
        q = ds.read()
        if ds.transform.e > 0:
            q = q[:, ::-1]
        top = max(ds.bounds.top, ds.bounds.bottom)
    row0 = round((top - float(z16["y"][0]) - 10) / 20)
    part = z16.values[:, : q.shape[1] - row0, : q.shape[2]]
    np.testing.assert_array_equal(part, decoded(q[:, row0 : row0 + part.shape[1], : part.shape[2]]))


def test_year_selects_files(mirror: Mirror) -> None:
    src = resolve_source(str(mirror.root))
    bbox = bbox_of(mirror, slice(0, 97), slice(0, 97))
    assert {f.zone for f in select_files(src, 2024, bbox)} == {"15N", "16N"}
    assert [f.zone for f in select_files(src, 2023, bbox)] == ["16N"]
    with pytest.raises(DataRequestError, match="no file for year 2019"):
        open_aef(bbox, 2019, source=str(mirror.root))


def test_index_paths_are_rerooted_on_a_mirror(tmp_path: Path) -> None:
    src = AefSource("m", str(tmp_path))
    assert src.resolve(PUBLIC_PREFIX + "2024/16N/a.tiff") == str(tmp_path / "2024/16N/a.tiff")
    assert src.resolve("2024/16N/a.tiff") == str(tmp_path / "2024/16N/a.tiff")
    assert src.resolve("s3://other/x.tiff") == "s3://other/x.tiff"
    url = AefSource("u", "gs://bucket/mirror/")
    assert url.resolve(PUBLIC_PREFIX + "2024/16N/a.tiff") == "gs://bucket/mirror/2024/16N/a.tiff"
    assert resolve_source("source-coop").root.startswith("https://")


def test_bad_requests_fail_before_any_task(mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="wrong order"):
        open_aef((-88.76, 44.3, -88.77, 44.29), 2024, source=str(mirror.root))
    with pytest.raises(SchemaError, match="bbox_crs"):
        open_aef((358410, 4905630, 359380, 4906600), 2024, source=str(mirror.root))
    with pytest.raises(DataRequestError, match="intersects"):
        open_aef((10.0, 50.0, 10.1, 50.1), 2024, source=str(mirror.root))
    with pytest.raises(MissingInputError, match=r"aef_index\.parquet"):
        open_aef((10.0, 50.0, 10.1, 50.1), 2024, source=str(tmp_path))


def test_bbox_in_utm(mirror: Mirror) -> None:
    t = mirror.transform
    box = (t.c + 600, t.f - 600, t.c + 800, t.f - 400)
    fields = open_aef(box, 2024, source=str(mirror.root), bbox_crs="EPSG:32616")
    z16 = fields["16N"]
    assert float(z16["x"].min()) <= t.c + 600 + 5 and float(z16["x"].max()) >= t.c + 800 - 5
    np.testing.assert_array_equal(z16.values, tile_values_at(mirror, z16))
