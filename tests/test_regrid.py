"""Nearest-neighbour regridding of lazy fields (``geoembed.io.regrid``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rioxarray
import xarray as xr
from _aws_sessions import count_aws_sessions
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_reproject

from geoembed.io.aef import dequantize_block
from geoembed.io.regrid import reproject_nearest

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def field(aef_tif: Path) -> xr.DataArray:
    """The real Wisconsin AEF field, decoded, NaN where any band is nodata (EPSG:32616)."""
    raw = rioxarray.open_rasterio(aef_tif, mask_and_scale=False)
    assert isinstance(raw, xr.DataArray)
    values = dequantize_block(raw.values, axis=0)
    values[:, 40:45, 50:60] = np.nan  # a nodata hole
    out = raw.copy(data=values.astype(np.float32))
    return out.rio.write_nodata(np.nan, encoded=False)


def _target(f: xr.DataArray, crs: str, resolution: float) -> GeoBox:
    bounds = f.rio.transform_bounds(crs)
    # a grid that cuts the field's edge, so some output blocks need no source at all
    w, s, e, n = bounds
    return GeoBox.from_bbox((w - (e - w) / 3, s, e, n), crs=crs, resolution=resolution)


@pytest.mark.parametrize(
    "crs, resolution",
    [("EPSG:32615", 10.0), ("EPSG:32615", 7.3), ("EPSG:4326", 0.00013)],
)
@pytest.mark.parametrize(
    "chunks", [{"y": 97, "x": 97}, {"y": 23, "x": 31}, {"band": 16, "y": 40, "x": 30}]
)
def test_equals_gdal_warping_band_by_band(
    field: xr.DataArray,
    crs: str,
    resolution: float,
    chunks: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The S3 emulator of the cloud tests leaves AWS keys in the environment for the session;
    # with them the reference (rasterio warping band by band) builds boto3 sessions for every
    # band of every block and takes 10-85 s per case instead of under 2 s.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    lazy = field.chunk(chunks)
    geobox = _target(field, crs, resolution)
    expected = xr_reproject(lazy, geobox, resampling="nearest", dst_nodata=np.nan)
    out = reproject_nearest(lazy, geobox)
    assert out.dims == ("band", "y", "x") and out.dtype == np.float32
    assert out.chunks[1:] == expected.chunks[1:]
    values = out.values
    np.testing.assert_array_equal(values, expected.values)
    assert np.isnan(values).any() and (~np.isnan(values)).any()
    np.testing.assert_array_equal(out["x"].values, expected[expected.dims[-1]].values)
    np.testing.assert_array_equal(out["y"].values, expected[expected.dims[-2]].values)
    np.testing.assert_array_equal(out["band"].values, field["band"].values)


def test_one_warp_per_block_not_per_band(
    field: xr.DataArray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With AWS keys in the environment every rasterio warp builds boto3 sessions.

    One GDAL call per block instead of one per band (64) cuts them accordingly.
    """
    geobox = _target(field, "EPSG:32615", 10.0)
    made = count_aws_sessions(monkeypatch)

    def sessions(run: object) -> int:
        made.clear()
        run.compute(scheduler="sync")  # type: ignore[attr-defined]
        return len(made)

    lazy = field.chunk({"y": 50, "x": 50})
    few = lazy.isel(band=slice(0, 4))
    ours, ours_few = (sessions(reproject_nearest(f, geobox)) for f in (lazy, few))
    per_band = sessions(xr_reproject(few, geobox, resampling="nearest"))
    assert 0 < ours == ours_few  # does not grow with the bands (64 vs 4)
    assert per_band >= 4 * ours  # the per-band warp: at least one round per band
