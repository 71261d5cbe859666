"""TESSERA tiles in geotessera's format (int8 + per-pixel scales + landmask GeoTIFF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from geoembed.errors import MissingInputError, SchemaError
from geoembed.io.tessera import dequantize_tessera_block, open_tessera
from geoembed.testing import raise_if_dask_computes

H, W, B = 67, 53, 128  # non-square, ragged against the chunks used below
TRANSFORM = Affine(10.0, 0.0, 300010.0, 0.0, -10.0, 5801230.0)


def write_tile(d: Path, *, scales_shape: str = "hw", name: str = "grid_0.15_52.05") -> dict:
    rng = np.random.default_rng(7)
    codes = rng.integers(-127, 128, size=(H, W, B), dtype=np.int8)
    if scales_shape == "hw":
        scales = rng.uniform(0.001, 0.05, size=(H, W)).astype(np.float32)
        scales[10:14, 20:25] = 0  # no embedding here (water / no data)
        scales[3, 4] = np.nan
    else:
        scales = rng.uniform(0.001, 0.05, size=(H, W, 1)).astype(np.float32)
        scales[10:14, 20:25] = 0
    np.save(d / f"{name}.npy", codes)
    np.save(d / f"{name}_scales.npy", scales)
    landmask = d / f"{name}.tiff"
    prof = {"driver": "GTiff", "height": H, "width": W, "count": 1, "dtype": "uint8"}
    with rasterio.open(landmask, "w", crs="EPSG:32631", transform=TRANSFORM, **prof) as ds:
        ds.write(np.ones((1, H, W), dtype=np.uint8))
    return {"tile": d / f"{name}.npy", "landmask": landmask, "codes": codes, "scales": scales}


def reference(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    s = scales.reshape(H, W).astype(np.float64)
    v = codes.astype(np.float64) * s[..., None]
    v[(s == 0) | ~np.isfinite(s)] = np.nan
    return np.moveaxis(v, -1, 0).astype(np.float32)


@pytest.mark.parametrize("scales_shape", ["hw", "hw1"])
def test_tile_opens_as_the_documented_values(tmp_path: Path, scales_shape: str) -> None:
    t = write_tile(tmp_path, scales_shape=scales_shape)
    with raise_if_dask_computes():
        field = open_tessera(t["tile"], landmask=t["landmask"], chunks=32)
    assert field.dims == ("band", "y", "x") and field.shape == (B, H, W)
    assert field.dtype == np.float32 and field.rio.crs.to_epsg() == 32631
    assert field.rio.transform().almost_equals(TRANSFORM)
    assert list(field["band"].values[:2]) == ["T000", "T001"]
    assert field.chunks[1] == (32, 32, 3) and field.chunks[0] == (B,)
    values = field.values
    np.testing.assert_allclose(values, reference(t["codes"], t["scales"]), rtol=1e-6)
    assert np.isnan(values[:, 10:14, 20:25]).all()
    if scales_shape == "hw":
        assert np.isnan(values[:, 3, 4]).all()
    assert np.isfinite(values[:, 0, 0]).all()
    np.testing.assert_array_equal(
        dequantize_tessera_block(t["codes"][:5, :6], t["scales"][:5, :6]), values[:, :5, :6]
    )


def test_windows_are_read_from_the_memory_map(tmp_path: Path) -> None:
    t = write_tile(tmp_path)
    field = open_tessera(t["tile"], landmask=t["landmask"], chunks=16)
    part = field.isel(y=slice(40, 50), x=slice(30, 40)).values
    full = reference(t["codes"], t["scales"])[:, 40:50, 30:40]
    np.testing.assert_allclose(part, full, rtol=1e-6)


def test_bad_tiles_fail_before_any_task(tmp_path: Path) -> None:
    t = write_tile(tmp_path)
    with pytest.raises(MissingInputError, match="scales"):
        open_tessera(t["tile"], landmask=t["landmask"], scales=tmp_path / "nope.npy")
    np.save(tmp_path / "bad_scales.npy", np.ones((H, W + 1), dtype=np.float32))
    with pytest.raises(SchemaError, match="must be"):
        open_tessera(t["tile"], landmask=t["landmask"], scales=tmp_path / "bad_scales.npy")
    np.save(tmp_path / "f.npy", np.zeros((H, W, B), dtype=np.float32))
    with pytest.raises(SchemaError, match="int8"):
        open_tessera(
            tmp_path / "f.npy",
            landmask=t["landmask"],
            scales=t["tile"].with_name("grid_0.15_52.05_scales.npy"),
        )
    other = tmp_path / "other"
    other.mkdir()
    o = write_tile(other)
    with rasterio.open(o["landmask"]) as src:
        prof = dict(src.profile, width=W - 1)
    small = tmp_path / "small.tiff"
    with rasterio.open(small, "w", **prof) as ds:
        ds.write(np.ones((1, H, W - 1), dtype=np.uint8))
    with pytest.raises(SchemaError, match="landmask of this tile"):
        open_tessera(t["tile"], landmask=small)
