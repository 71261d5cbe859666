"""Map coordinates to pixels of a field and read only the chunks that hold samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr
from affine import Affine

from geoembed.schema import resolution

__all__ = ["Grid", "gather_pixels"]


@dataclass(frozen=True)
class Grid:
    """Pixel grid of a field: edges and signed pixel sizes, from its coordinates.

    ``left``/``top`` are the outer edges of column 0 and row 0 (``top`` is the northern
    edge when north-up and the southern edge when bottom-up); ``dx``/``dy`` are signed.
    """

    left: float
    top: float
    dx: float
    dy: float
    width: int
    height: int

    @classmethod
    def of(cls, field: xr.DataArray) -> Grid:
        """Grid of ``field`` (pixel-centre ``x``/``y`` coordinates, regular spacing)."""
        dx, dy = resolution(field)
        x0 = float(field["x"].values[0])
        y0 = float(field["y"].values[0])
        return cls(
            left=x0 - dx / 2.0,
            top=y0 - dy / 2.0,
            dx=dx,
            dy=dy,
            width=int(field.sizes["x"]),
            height=int(field.sizes["y"]),
        )

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row and column of each point, and whether it falls inside the grid.

        Half-open pixels: a point on the edge shared by two pixels belongs to the one with
        the larger index, so a point exactly on the left edge of column 0 (or the top edge
        of row 0, i.e. its edge at ``top``) is inside, and a point exactly on the far edge
        (right of the last column, beyond the last row) is outside. Points are never
        snapped to the nearest pixel.
        """
        fc = (np.asarray(x, dtype=np.float64) - self.left) / self.dx
        fr = (np.asarray(y, dtype=np.float64) - self.top) / self.dy
        finite = np.isfinite(fc) & np.isfinite(fr)
        col = np.floor(np.where(finite, fc, -1.0))
        row = np.floor(np.where(finite, fr, -1.0))
        inside = finite & (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        return row.astype(np.int64), col.astype(np.int64), inside

    def centres(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """``(n, 2)`` pixel-centre coordinates."""
        xs = self.left + (np.asarray(col) + 0.5) * self.dx
        ys = self.top + (np.asarray(row) + 0.5) * self.dy
        return np.column_stack([xs, ys]).astype(np.float64)

    def north_up_window_transform(self, row0: int, col0: int, nrows: int) -> Affine:
        """North-up affine transform of the window ``rows row0..row0+nrows`` from ``col0``.

        For a bottom-up grid the window's rows are then in reverse order (flip them).
        """
        x_left = self.left + col0 * self.dx
        if self.dy < 0:
            y_top = self.top + row0 * self.dy
        else:
            y_top = self.top + (row0 + nrows) * self.dy
        return Affine(self.dx, 0.0, x_left, 0.0, -abs(self.dy), y_top)


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
