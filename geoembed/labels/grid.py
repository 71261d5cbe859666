"""Read only the chunks of a field that hold samples; :class:`Grid` maps points to pixels.

``Grid`` lives in :mod:`geoembed.grid` (one implementation for the whole package) and is
re-exported here under its old import path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed.grid import Grid

__all__ = ["Grid", "burn", "gather_pixels"]


def burn(
    shapes: Iterable[tuple[Any, int]],
    grid: Grid,
    *,
    fill: int,
    dtype: str,
    all_touched: bool = False,
) -> np.ndarray:
    """Rasterise ``(geometry, value)`` pairs on ``grid``, rows in the grid's own order.

    A pixel takes the value of the last shape covering its centre (every pixel a shape
    touches with ``all_touched=True``); ``fill`` elsewhere. The shapes are burnt on the
    grid's north-up transform and the rows flipped back for a bottom-up grid.

    Returns
    -------
    numpy.ndarray
        ``grid.shape`` array of ``dtype``.
    """
    from rasterio.features import rasterize

    out = rasterize(
        shapes,
        out_shape=grid.shape,
        transform=grid.north_up(),
        fill=fill,
        dtype=dtype,
        all_touched=all_touched,
    )
    return np.ascontiguousarray(out[::-1]) if grid.bottom_up else out


def _take(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(block)[:, rows, cols].T, dtype=np.float32)


def _chunk_of(index: np.ndarray, chunks: tuple[int, ...]) -> np.ndarray:
    bounds = np.cumsum((0, *chunks))
    return np.searchsorted(bounds, index, side="right") - 1


def gather_pixels(field: xr.DataArray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Vectors of pixels ``(rows, cols)`` as ``(n, band)`` float32, reading only needed chunks.

    A Dask-backed field is read with one small task per chunk that holds samples (fancy
    indexing inside the block), all computed together; the other chunks are culled from
    the graph and never read. Output rows follow the input order.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical ``(band, y, x)`` field.
    rows, cols : numpy.ndarray
        Integer pixel indices, all inside the field.

    Returns
    -------
    numpy.ndarray
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    nb = field.sizes["band"]
    out = np.empty((rows.size, nb), dtype=np.float32)
    if rows.size == 0:
        return out
    data: Any = field.data
    if not isinstance(data, dsa.Array):
        # NumPy (or lazily indexed backend): vectorised indexing reads only these pixels
        sel = field.isel(y=xr.DataArray(rows, dims="s"), x=xr.DataArray(cols, dims="s"))
        return np.ascontiguousarray(sel.transpose("s", "band").values, dtype=np.float32)
    cy, cx = data.chunks[1], data.chunks[2]
    by = _chunk_of(rows, cy)
    bx = _chunk_of(cols, cx)
    key = by * len(cx) + bx
    order = np.argsort(key, kind="stable")
    skey = key[order]
    starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
    ends = np.r_[starts[1:], skey.size]
    y_off = np.cumsum((0, *cy))
    x_off = np.cumsum((0, *cx))
    tasks = []
    for s, e in zip(starts, ends):
        idx = order[s:e]
        iy, ix = int(by[idx[0]]), int(bx[idx[0]])
        block = data.blocks[:, iy, ix]
        tasks.append(
            dask.delayed(_take, pure=True)(block, rows[idx] - y_off[iy], cols[idx] - x_off[ix])
        )
    results = dask.compute(*tasks)
    for s, e, res in zip(starts, ends, results):
        out[order[s:e]] = res
    return out
