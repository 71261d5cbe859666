"""xarray inputs (in memory, lazy, Xee-like), laziness of open/check/describe, Xee extra."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geoembed.errors import (
    DimensionError,
    MissingCRSError,
    MissingDependencyError,
    QuantizationError,
)
from geoembed.io import describe, open_embeddings
from geoembed.io.aef import dequantize_block
from geoembed.schema import check_embedding
from geoembed.testing import InaccessibleArray, make_field, raise_if_dask_computes


def test_canonical_field_passes_through_lazily() -> None:
    field = make_field(37, 53, chunks=16)
    with raise_if_dask_computes():
        out = open_embeddings(field, bands=64)
    assert out.chunks == field.chunks  # dask input keeps its chunks
    xr.testing.assert_equal(out, field)


def test_numpy_backed_input_gets_chunked() -> None:
    field = make_field(30, 20, chunks=None)
    out = open_embeddings(field)
    assert out.chunks is not None and out.chunks[0] == (64,)
    np.testing.assert_array_equal(out.values, field.values)


def test_wrong_dim_order_is_fixed_and_values_follow() -> None:
    field = make_field(12, 9, chunks=None)
    flipped = field.transpose("x", "y", "band").rename({"x": "lon", "y": "lat"})
    out = open_embeddings(flipped)
    assert out.dims == ("band", "y", "x")
    np.testing.assert_array_equal(out.values, field.values)


def test_unknown_dims_are_refused() -> None:
    da = xr.DataArray(np.zeros((3, 4, 5), np.float32), dims=("a", "b", "c"))
    with pytest.raises(DimensionError, match="cannot tell"):
        open_embeddings(da)


def test_no_crs_is_refused() -> None:
    field = make_field(8, 9, chunks=4).drop_vars("spatial_ref")
    with raise_if_dask_computes(), pytest.raises(MissingCRSError, match="write_crs"):
        open_embeddings(field)


def test_crs_attribute_is_recovered() -> None:
    field = make_field(8, 9, chunks=4).drop_vars("spatial_ref")
    ds = field.to_dataset("band")
    ds.attrs["crs"] = "EPSG:32616"
    out = open_embeddings(ds)
    assert out.rio.crs.to_epsg() == 32616
    assert [str(b) for b in out.band.values] == [str(b) for b in field.band.values]


def test_xee_like_dataset_year_selection() -> None:
    """Xee layout: one variable per band over (time, y, x), crs in attrs."""
    f23 = make_field(10, 11, chunks=None, seed=1)
    f24 = make_field(10, 11, chunks=None, seed=2)
    stacked = xr.concat(
        [f23, f24], dim=pd.Index(pd.to_datetime(["2023-01-01", "2024-01-01"]), name="time")
    ).drop_vars("spatial_ref")
    ds = stacked.to_dataset("band")
    ds.attrs["crs"] = "EPSG:32616"
    out = open_embeddings(ds, year=2023)
    np.testing.assert_array_equal(out.values, f23.values)
    with pytest.raises(DimensionError, match="year="):
        open_embeddings(ds)


def test_in_memory_int8() -> None:
    rng = np.random.default_rng(5)
    field = make_field(6, 7, chunks=None)
    codes = rng.integers(-128, 128, size=field.shape).astype(np.int8)
    da = field.copy(data=codes)
    with pytest.raises(QuantizationError, match="quantization='aef'"):
        open_embeddings(da)
    np.testing.assert_array_equal(
        open_embeddings(da, quantization="aef").values, dequantize_block(codes)
    )
    da.attrs["_FillValue"] = -128
    np.testing.assert_array_equal(open_embeddings(da).values, dequantize_block(codes))
    assert da.attrs["_FillValue"] == -128 and da.dtype == np.int8  # caller's object untouched


def test_open_check_describe_touch_no_pixels() -> None:
    """Metadata work never reads data: an array that raises on access goes through."""
    shape = (64, 300, 200)
    da = xr.DataArray(
        xr.Variable(("band", "y", "x"), InaccessibleArray(shape, np.float32)),
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(64)],
            "y": 5000.0 - 10 * np.arange(300),
            "x": 100.0 + 10 * np.arange(200),
        },
    ).rio.write_crs("EPSG:32616")
    with raise_if_dask_computes():
        field = open_embeddings(da.chunk({"y": 100, "x": 100}), bands=64)
        check_embedding(field, bands=64)
        info = describe(field, sample=0)
    assert info["height"] == 300 and info["width"] == 200 and info["bands"] == 64


def test_describe_samples_in_one_compute() -> None:
    field = make_field(200, 300, chunks=50)
    with raise_if_dask_computes(max_computes=1) as counter:
        info = describe(field, sample=2000)
    assert counter.total == 1
    assert 1 < info["sample_windows"] <= 16
    assert 1500 <= info["sample_pixels"] <= 2600
    assert info["unit_length"] is True
    assert info["vector_length"]["min"] >= 0.99


def test_describe_bottom_up_and_nodata() -> None:
    field = make_field(37, 53, chunks=16, bottom_up=True)
    info = describe(field, sample=10**6)
    assert info["orientation"] == "bottom-up"
    assert info["resolution"] == [10.0, 10.0]
    assert info["sample_pixels"] == 37 * 53
    assert info["nodata_fraction"] == pytest.approx(12 / (37 * 53))
    assert info["crs"] == "EPSG:32616"
    left, bottom, right, top = info["bounds"]
    assert (right - left, top - bottom) == (530.0, 370.0)


def test_describe_non_epsg_crs_is_wkt() -> None:
    wkt = (
        'PROJCS["custom",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
        '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
        'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
        'PARAMETER["central_meridian",-87.5],PARAMETER["scale_factor",0.9996],'
        'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1]]'
    )
    field = make_field(10, 10, chunks=None).rio.write_crs(wkt)
    info = describe(field, sample=0)
    assert info["crs"].startswith("PROJCS") or info["crs"].startswith("PROJCRS")


def test_xee_without_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from geoembed.io.xee import open_xee

    monkeypatch.setitem(sys.modules, "ee", None)  # import ee -> ImportError
    with pytest.raises(MissingDependencyError, match=r"geoembed\[ee\]"):
        open_xee(
            "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL",
            crs="EPSG:32616",
            crs_transform=(10, 0, 0, 0, -10, 0),
            shape_2d=(10, 10),
        )


def test_grid_for_bbox_is_explicit_and_snapped() -> None:
    from geoembed.io.xee import grid_for_bbox

    grid = grid_for_bbox((-88.78, 44.29, -88.76, 44.30), crs="EPSG:32616", scale=10)
    a, b, c, d, e, f = grid["crs_transform"]
    assert (a, b, d, e) == (10, 0, 0, -10)
    assert c % 10 == 0 and f % 10 == 0
    width, height = grid["shape_2d"]
    assert 150 < width < 180 and 100 < height < 130  # ~1.6 km x ~1.1 km
