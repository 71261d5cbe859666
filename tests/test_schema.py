import numpy as np
import pytest
import xarray as xr

from geoembed.errors import (
    BandMismatchError,
    ChunkingError,
    DimensionError,
    DTypeError,
    MissingCRSError,
    QuantizationError,
)
from geoembed.schema import DIMS, aef_band_names, check_embedding, map_like, to_canonical
from geoembed.testing import (
    InaccessibleArray,
    UnexpectedDataAccess,
    make_field,
    raise_if_dask_computes,
)


def inaccessible_field(bands: int = 64) -> xr.DataArray:
    da = xr.DataArray(
        InaccessibleArray((bands, 20, 30), np.float32),
        dims=DIMS,
        coords={
            "band": aef_band_names(bands) if bands == 64 else [f"F{i:03d}" for i in range(bands)],
            "y": 100.0 - 10 * np.arange(20),
            "x": 500.0 + 10 * np.arange(30),
        },
        name="embedding",
    )
    return da.rio.write_crs("EPSG:32616")


def test_check_never_reads_pixels():
    da = inaccessible_field()
    check_embedding(da, bands=64)
    check_embedding(da, bands=aef_band_names())
    with pytest.raises(UnexpectedDataAccess):
        da.values  # noqa: B018  (the fixture really is inaccessible)


def test_check_is_lazy_on_dask():
    da = make_field()
    with raise_if_dask_computes():
        check_embedding(da, bands=64)


@pytest.mark.parametrize("bands", [63, 65])
def test_wrong_band_count(bands):
    with pytest.raises(BandMismatchError, match=f"has {bands} bands; expected 64"):
        check_embedding(inaccessible_field(bands), bands=64)


def test_band_order_is_named():
    da = make_field(chunks=None)
    shuffled = da.isel(band=list(range(63, -1, -1)))
    with pytest.raises(BandMismatchError, match="different order"):
        check_embedding(shuffled, bands=aef_band_names())


def test_wrong_dim_order_says_transpose():
    da = make_field().transpose("y", "x", "band")
    with pytest.raises(DimensionError, match="transpose"):
        check_embedding(da)


def test_missing_crs():
    da = make_field().drop_vars("spatial_ref")
    with pytest.raises(MissingCRSError, match="write_crs"):
        check_embedding(da)


def test_dtype_and_band_chunks():
    da = make_field()
    with pytest.raises(DTypeError, match="float64"):
        check_embedding(da.astype("float64"))
    with pytest.raises(ChunkingError, match="chunk"):
        check_embedding(da.chunk({"band": 16}))


def test_errors_are_builtins_too():
    with pytest.raises(ValueError):
        check_embedding(inaccessible_field(63), bands=64)


def test_to_canonical_fixes_and_reports():
    base = make_field(chunks=8)
    messy = (
        base.rename({"y": "lat", "x": "lon"})
        .transpose("lat", "lon", "band")
        .astype("float64")
        .chunk({"band": 8})
    )
    report: list[str] = []
    with raise_if_dask_computes():
        fixed = to_canonical(messy, report=report)
    check_embedding(fixed, bands=64)
    assert any("renamed" in r for r in report)
    assert any("transposed" in r for r in report)
    assert any("float32" in r for r in report)
    assert any("single chunk" in r for r in report)
    np.testing.assert_array_equal(fixed.values, base.values)


def test_to_canonical_stacks_xee_layout():
    base = make_field(chunks=None)
    ds = base.to_dataset("band").expand_dims(time=[2024])
    fixed = to_canonical(ds)
    check_embedding(fixed, bands=aef_band_names())
    assert fixed.rio.crs == base.rio.crs


def test_to_canonical_refuses_int8_codes():
    da = make_field(chunks=None)
    with pytest.raises(QuantizationError, match="quantization='aef'"):
        to_canonical((da * 100).astype("int8"))


def test_map_like_keeps_grid():
    da = make_field(bottom_up=True)
    out = map_like(da, np.zeros((da.sizes["y"], da.sizes["x"]), "uint8"), name="class", nodata=255)
    assert out.rio.crs == da.rio.crs
    assert out.rio.transform() == da.rio.transform()
    assert out.rio.nodata == 255
