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
from typing import Any

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


def _quads(a: np.ndarray, pad: float | int) -> list[np.ndarray]:
    """Return the four pixels of each 2 x 2 cell as views ``(..., ceil(h/2), ceil(w/2))``."""
    h, w = a.shape[-2:]
    if h % 2 or w % 2:
        width = [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)]
        a = np.pad(a, width, constant_values=pad)
    return [a[..., 0::2, 0::2], a[..., 0::2, 1::2], a[..., 1::2, 0::2], a[..., 1::2, 1::2]]


def _pad_value(dtype: np.dtype, nodata: float | int | None) -> float | int:
    if nodata is not None:
        return nodata
    return np.nan if dtype.kind == "f" else 0


def _valid(q: list[np.ndarray], shape: tuple[int, ...], nodata: float | int | None) -> list[Any]:
    """Return the validity masks of the four pixels of each cell."""
    valid: list[Any] = [~_invalid(v, nodata) for v in q]
    if nodata is None and q[0].dtype.kind != "f":
        h, w = shape[-2:]
        valid = [np.ones(q[0].shape, bool) for _ in q]
        if h % 2:  # padded last row must not vote
            valid[2][..., -1, :] = False
            valid[3][..., -1, :] = False
        if w % 2:
            valid[1][..., :, -1] = False
            valid[3][..., :, -1] = False
    return valid


def mode2x2(a: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """Most frequent valid value of each 2 x 2 cell (nodata when the cell has none).

    Ties go to the first of the tied pixels in row order.
    """
    q = _quads(a, _pad_value(a.dtype, nodata))
    valid = _valid(q, a.shape, nodata)
    counts = [v.astype(np.uint8) for v in valid]
    for i in range(4):
        for j in range(i + 1, 4):
            same = (q[i] == q[j]) & valid[i] & valid[j]
            counts[i] += same
            counts[j] += same
    out = q[0].copy()
    best = counts[0]
    for i in range(1, 4):
        better = counts[i] > best
        out[better] = q[i][better]
        best = np.maximum(best, counts[i])
    return out


def average2x2(a: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """Mean of the valid values of each 2 x 2 cell (nodata when the cell has none)."""
    q = _quads(a, _pad_value(a.dtype, nodata))
    valid = _valid(q, a.shape, nodata)
    total = np.zeros(q[0].shape, np.float64)
    n = np.zeros(q[0].shape, np.uint8)
    for v, ok in zip(q, valid):
        total += np.where(ok, v, 0)
        n += ok
    empty = n == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = total / n
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
