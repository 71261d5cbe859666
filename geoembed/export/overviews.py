"""Overview pyramids computed chunk by chunk (in parallel) instead of by GDAL at the end.

Each overview level halves the previous one: MODE for class maps (nodata ignored, ties go
to the first of the four pixels in row order), AVERAGE for continuous rasters (nodata and
NaN ignored). A chunk's overviews line up with the whole image's when its start offsets
are multiples of the largest overview factor, which :func:`chunks_aligned` checks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["average2x2", "chunks_aligned", "mode2x2", "overview_factors", "pyramid"]


def overview_factors(height: int, width: int, blocksize: int) -> tuple[int, ...]:
    """Decimation factors (2, 4, ...) until the smallest level fits in one tile.

    Matches the default of GDAL's COG driver.
    """
    factors: list[int] = []
    f = 1
    while max(math.ceil(height / f), math.ceil(width / f)) > blocksize:
        f *= 2
        factors.append(f)
    return tuple(factors)


def chunks_aligned(chunks: Sequence[Sequence[int]], factor: int) -> bool:
    """Whether every chunk of the last two axes starts at a multiple of ``factor``."""
    for axis in chunks[-2:]:
        starts = np.cumsum((0, *axis[:-1]))
        if np.any(starts % factor):
            return False
    return True


def _invalid(v: np.ndarray, nodata: float | int | None) -> np.ndarray:
    if nodata is None:
        return np.isnan(v) if v.dtype.kind == "f" else np.zeros(v.shape, bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.isnan(v)
    bad = v == nodata
    if v.dtype.kind == "f":
        bad |= np.isnan(v)
    return bad


def _quads(a: np.ndarray, pad: float | int) -> np.ndarray:
    """(..., h, w) -> (4, ..., ceil(h/2), ceil(w/2)): the four pixels of each 2x2 cell."""
    h, w = a.shape[-2:]
    if h % 2 or w % 2:
        width = [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)]
        a = np.pad(a, width, constant_values=pad)
    return np.stack([a[..., 0::2, 0::2], a[..., 0::2, 1::2], a[..., 1::2, 0::2], a[..., 1::2, 1::2]])


def _pad_value(dtype: np.dtype, nodata: float | int | None) -> float | int:
    if nodata is not None:
        return nodata
    return np.nan if dtype.kind == "f" else 0


def mode2x2(a: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """Most frequent valid value of each 2 x 2 cell (nodata when the cell has none)."""
    q = _quads(a, _pad_value(a.dtype, nodata))
    bad = _invalid(q, nodata)
    if nodata is None and a.dtype.kind != "f":
        # odd edges padded with 0 must not vote: mark the padding invalid
        h, w = a.shape[-2:]
        if h % 2:
            bad[2:, ..., -1, :] = True
        if w % 2:
            bad[1::2, ..., :, -1] = True
    valid = ~bad
    counts = np.zeros(q.shape, np.int8)
    for i in range(4):
        for j in range(4):
            counts[i] += (q[i] == q[j]) & valid[j]
    counts[bad] = -1
    pick = counts.argmax(axis=0)
    return np.take_along_axis(q, pick[np.newaxis], axis=0)[0]


def average2x2(a: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """Mean of the valid values of each 2 x 2 cell (nodata when the cell has none)."""
    q = _quads(a, _pad_value(a.dtype, nodata)).astype(np.float64)
    bad = _invalid(q, nodata)
    if nodata is None and a.dtype.kind != "f":
        h, w = a.shape[-2:]
        if h % 2:
            bad[2:, ..., -1, :] = True
        if w % 2:
            bad[1::2, ..., :, -1] = True
    q[bad] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(q, axis=0)
    empty = np.isnan(mean)
    if a.dtype.kind in "iu":
        fill = 0 if nodata is None else nodata
        out = np.where(empty, fill, np.floor(mean + 0.5))
        return out.astype(a.dtype)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        mean[empty] = nodata
    return mean.astype(a.dtype)


def pyramid(
    a: np.ndarray, factors: Sequence[int], resampling: str, nodata: float | int | None
) -> list[np.ndarray]:
    """Overview levels of ``a`` for ``factors`` (2, 4, 8...), each from the previous one."""
    step = {"mode": mode2x2, "average": average2x2}.get(resampling)
    levels: list[np.ndarray] = []
    cur = a
    for _ in factors:
        if step is None:  # nearest
            cur = cur[..., 0::2, 0::2]
        else:
            cur = step(cur, nodata)
        levels.append(np.ascontiguousarray(cur))
    return levels
