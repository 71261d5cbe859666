"""Chunk-wise overview pyramids: against brute force and against GDAL's own overviews."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import rasterio

from geoembed.export import write_cog
from geoembed.export.overviews import (
    average2x2,
    chunks_aligned,
    mode2x2,
    overview_factors,
    pyramid,
)
from geoembed.schema import map_like
from geoembed.testing import make_field


def _cells(a: np.ndarray, pad: float) -> list[list[list[float]]]:
    h, w = a.shape
    out = []
    for i in range(0, h, 2):
        row = []
        for j in range(0, w, 2):
            cell = [a[y, x] for y in (i, i + 1) for x in (j, j + 1) if y < h and x < w]
            row.append(cell)
        out.append(row)
    return out


def _brute_mode(a: np.ndarray, nodata: int) -> np.ndarray:
    res = []
    for row in _cells(a, nodata):
        out_row = []
        for cell in row:
            valid = [v for v in cell if v != nodata]
            if not valid:
                out_row.append(nodata)
                continue
            counts = Counter(valid)
            top = max(counts.values())
            out_row.append(next(v for v in valid if counts[v] == top))  # first in row order
        res.append(out_row)
    return np.array(res, dtype=a.dtype)


@pytest.mark.parametrize("shape", [(8, 10), (7, 9), (1, 5), (6, 1)])
def test_mode2x2_matches_brute_force(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 4, shape).astype(np.uint8)
    a[rng.random(shape) < 0.2] = 255
    np.testing.assert_array_equal(mode2x2(a, 255), _brute_mode(a, 255))


def test_mode2x2_without_nodata_ignores_padding() -> None:
    a = np.array([[0, 0, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(mode2x2(a, None), [[0, 3]])


@pytest.mark.parametrize("shape", [(8, 10), (7, 9)])
def test_average2x2_matches_nanmean(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    a = rng.random(shape).astype(np.float32)
    a[rng.random(shape) < 0.3] = np.nan
    a[:2, :2] = np.nan
    expected = np.array(
        [
            [
                np.mean([v for v in c if not np.isnan(v)]) if any(~np.isnan(c)) else np.nan
                for c in row
            ]
            for row in _cells(a, np.nan)
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(average2x2(a, np.nan), expected, rtol=1e-6)
    q = np.where(np.isnan(a), 255, a * 200).astype(np.uint8)
    got = average2x2(q, 255)
    assert got.dtype == np.uint8 and got[0, 0] == 255


def test_pyramid_multiband_and_factors() -> None:
    a = np.arange(2 * 16 * 12, dtype=np.float32).reshape(2, 16, 12)
    levels = pyramid(a, (2, 4, 8), "average", np.nan)
    assert [lv.shape for lv in levels] == [(2, 8, 6), (2, 4, 3), (2, 2, 2)]
    assert overview_factors(8192, 8192, 512) == (2, 4, 8, 16)
    assert overview_factors(300, 200, 64) == (2, 4, 8)
    assert overview_factors(500, 400, 512) == ()
    assert chunks_aligned(((64, 64, 20), (128, 72)), 64)
    assert not chunks_aligned(((60, 64, 20), (128, 72)), 64)


def _write_both(tmp_path: Path, data: np.ndarray, name: str, nodata: float | int):
    field = make_field(data.shape[-2], data.shape[-1], bands=4, chunks=None)
    da = map_like(field, data, name=name, nodata=nodata)
    fast = write_cog(da.chunk({"y": 128, "x": 128}), tmp_path / "fast.tif", blocksize=64)
    gdal = write_cog(da.chunk({"y": 100, "x": 100}), tmp_path / "gdal.tif", blocksize=64)
    return fast, gdal


def test_chunkwise_average_overviews_match_gdal(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    conf = rng.random((512, 384)).astype(np.float32)
    fast, gdal = _write_both(tmp_path, dsa.from_array(conf), "confidence", np.nan)
    with rasterio.open(fast) as a, rasterio.open(gdal) as b:
        assert a.overviews(1) == b.overviews(1) == [2, 4, 8]
    for level in range(3):
        with (
            rasterio.open(fast, overview_level=level) as a,
            rasterio.open(gdal, overview_level=level) as b,
        ):
            np.testing.assert_allclose(a.read(1), b.read(1), rtol=1e-5)


def test_chunkwise_mode_overviews_match_gdal_first_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 6, (256, 192)).astype(np.uint8)
    cls = base.repeat(2, axis=0).repeat(2, axis=1)  # 2 x 2 cells: no ties at level 1
    flip = rng.random(cls.shape) < 0.1
    cls[flip] = 7  # at most one odd pixel per cell in most cells
    fast, gdal = _write_both(tmp_path, dsa.from_array(cls), "class", 255)
    with rasterio.open(fast, overview_level=0) as a, rasterio.open(gdal, overview_level=0) as b:
        fa, ga = a.read(1), b.read(1)

    def clear_winner(cell: list) -> bool:
        top = Counter(cell).most_common(2)
        return len(top) == 1 or top[0][1] > top[1][1]

    unambiguous = np.array([[clear_winner(c) for c in row] for row in _cells(cls, 255)])
    assert unambiguous.mean() > 0.9
    np.testing.assert_array_equal(fa[unambiguous], ga[unambiguous])
    one_flip = np.array([[sum(v == 7 for v in c) <= 1 for c in row] for row in _cells(cls, 255)])
    np.testing.assert_array_equal(fa[one_flip], base[one_flip])
