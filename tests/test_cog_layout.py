"""Tall, wide and odd-shaped COGs: written, validated on read-back, and truly tiled.

rio-cogeo flags a tiled level whose width is exactly one tile as "not tiled" (e.g. the
512-pixel-wide first overview of a 2048 x 1024 raster); ``write_cog`` used to fail on it.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geoembed.export import verify, write_cog
from geoembed.export.cog_layout import cog_check, ifds_tiled
from geoembed.schema import map_like
from geoembed.testing import make_field

SHAPES = [
    # (rows, cols, blocksize): which level is one tile wide
    (513, 512, 512),  # smallest failing shape at 512-pixel tiles: the full resolution
    (1025, 1024, 512),  # smallest failing overview: level 0 (513 x 512) is one tile wide
    (2048, 1024, 512),  # the reported case: overview 0 is 1024 x 512
    (300, 1100, 512),  # wide
    (1027, 515, 512),  # odd sizes, partial edge tiles
]


def _raster(rows: int, cols: int, chunks: int | None, dtype: str) -> tuple[object, np.ndarray]:
    field = make_field(rows, cols, bands=2, chunks=None)
    rng = np.random.default_rng(rows * 7 + cols)
    if dtype == "uint8":
        values = rng.integers(0, 5, (rows, cols)).astype(np.uint8)
        data = dsa.from_array(values, chunks=chunks) if chunks else values
        return map_like(field, data, name="class", nodata=255), values
    values = rng.random((rows, cols), dtype=np.float32)
    data = dsa.from_array(values, chunks=chunks) if chunks else values
    return map_like(field, data, name="confidence"), values


def _check_read_back(path: Path, values: np.ndarray) -> None:
    valid, errors, _ = cog_check(path)
    assert valid, errors
    # rio-cogeo itself differs from cog_check by "not tiled" lines only, and the TIFF's
    # IFDs (full resolution and every overview) really are tiled
    _, raw_errors, _ = cog_validate(str(path), quiet=True)
    assert all(e.endswith("is not tiled") for e in raw_errors), raw_errors
    with open(path, "rb") as f:
        tiled = ifds_tiled(f)
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert len(tiled) == 1 + len(src.overviews(1)) and all(tiled)
        np.testing.assert_array_equal(src.read(1), values)
    assert verify(path)["valid"]


@pytest.mark.parametrize(("rows", "cols", "blocksize"), SHAPES)
def test_float_raster_shapes(tmp_path: Path, rows: int, cols: int, blocksize: int) -> None:
    da, values = _raster(rows, cols, None, "float32")
    out = write_cog(da, tmp_path / "conf.tif", blocksize=blocksize)
    _check_read_back(Path(out), values)


@pytest.mark.parametrize(("rows", "cols"), [(1040, 512), (1025, 1024)])
def test_chunked_class_map_tall(tmp_path: Path, rows: int, cols: int) -> None:
    # several chunks: overviews computed chunk by chunk (512: aligned) or by GDAL (518: not)
    for chunks in (512, 518):
        da, values = _raster(rows, cols, chunks, "uint8")
        out = write_cog(da, tmp_path / f"class-{chunks}.tif", blocksize=512)
        _check_read_back(Path(out), values)


def test_striped_file_still_fails(tmp_path: Path) -> None:
    path = tmp_path / "striped.tif"
    profile = {"driver": "GTiff", "width": 600, "height": 600, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((1, 600, 600), np.uint8))
    with open(path, "rb") as f:
        assert ifds_tiled(f) == [False]
    valid, errors, _ = cog_check(path)
    assert not valid
    assert any("not tiled" in e for e in errors)


def test_ifds_tiled_rejects_non_tiff(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    path.write_bytes(b"not a tiff at all")
    with open(path, "rb") as f, pytest.raises(ValueError, match="not a TIFF"):
        ifds_tiled(f)


def test_bigtiff_ifds(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    profile = {
        "driver": "GTiff",
        "width": 64,
        "height": 64,
        "count": 1,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
        "BIGTIFF": "YES",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 64, 64), np.uint8))
        dst.build_overviews([2], rasterio.enums.Resampling.nearest)
    assert path.read_bytes()[2:4] == b"+\x00"  # BigTIFF version 43
    with open(path, "rb") as f:
        assert ifds_tiled(f) == [True, True]
