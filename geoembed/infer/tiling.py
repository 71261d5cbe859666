"""One global tile grid for seam-free, chunk-invariant CNN inference.

Geometry (all sizes in input pixels; ``s`` is the model's output stride)
------------------------------------------------------------------------
* The field (padded at its bottom/right edge to a multiple of ``s``) has ``n`` rows. Tiles
  of ``T x T`` pixels lie on ONE grid per axis (:class:`AxisTiling`) that depends only
  on ``n``, ``T``, the halo ``h``, the blend mode and the step -- never on the Dask
  blocks. A block computes every tile that writes into it, reading the field around it
  (the "window"); blocks that share a tile compute it twice and get the same numbers,
  so block edges cannot make seams, and any chunking gives the same bytes.
* Outside the field, rows and columns are filled with ``padding`` as if the whole field
  had been padded: ``"reflect"`` mirrors the edge *including* the edge pixel (NumPy's
  ``"symmetric"``, repeated for very wide pads), ``"nearest"`` repeats the edge pixel
  (:func:`source_index`).
* ``blend="none"``: tile interiors ``I = T - 2h`` start at ``0, I, 2I, ...`` with the last
  one moved back to end at the field's edge (``n - I``). Each output pixel comes from
  exactly one tile (the one whose interior starts last at or before it), so every output
  pixel is computed with at least ``h`` pixels of context on every side: when ``h``
  covers the model's receptive radius the result equals a whole-image run bit for bit.
* ``blend="linear"`` / ``"cosine"``: for models that are not translation-exact (U-Nets
  with pooling). Tiles start at ``-h, -h + step, -h + 2 step, ...`` while they start
  inside the field (default ``step = T - 2h``) and are averaged with weights that ramp
  across the overlap ``o = T - step`` of two neighbours: 0 in the outer
  ``m = max(0, (o - h) / 2)`` pixels of a tile, rising (linearly, or as ``sin^2``) to 1 at
  ``o - m`` from the edge, 1 inside (:func:`edge_weights`). The weighted sum runs over
  every tile whose footprint holds the pixel, in global tile order, in float64, and is
  divided by the sum of the weights. With ``T = 256, h = 51, step = 204`` the weights are
  ukis-csmask's Tukey(0.4) window and its tile placement (51 pixels of reflect padding,
  then a tile every 204 pixels).
* A strided model maps a ``T x T`` tile to ``T/s x T/s`` outputs; ``T``, ``h`` and
  ``step`` are multiples of ``s`` so tiles fall on whole output pixels. A patch
  classifier (``s == T``, e.g. 120 x 120 -> 1 x 1 x 43) runs with ``h = 0``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np

__all__ = [
    "PAD_MODES",
    "AxisTiling",
    "Window",
    "blend_starts",
    "block_edges",
    "edge_weights",
    "run_region",
    "source_index",
    "tile_starts",
]

#: user-facing padding name -> numpy.pad mode (Dask's "reflect" is NumPy's "symmetric")
PAD_MODES = {"reflect": "symmetric", "nearest": "edge"}

Runner = Callable[[np.ndarray], np.ndarray]


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def tile_starts(size: int, interior: int) -> list[int]:
    """Interior starts of unblended tiles along one axis.

    Parameters
    ----------
    size : int
        Length of the axis.
    interior : int
        Interior length of a tile (``T - 2h``).

    Returns
    -------
    list of int
        ``0, I, 2I, ...`` with the last start moved back to ``size - I``.
    """
    if size <= interior:
        return [0]
    starts = list(range(0, size - interior, interior))
    starts.append(size - interior)
    return starts


def blend_starts(size: int, halo: int, step: int) -> list[int]:
    """Return blended tile starts ``-h, -h + step, ...`` while they start inside ``size``."""
    return [-halo + k * step for k in range(math.ceil((size + halo) / step))]


def edge_weights(n: int, overlap: float, halo: float, mode: str) -> np.ndarray:
    """1-D blending weights of a tile output of length ``n``.

    Parameters
    ----------
    n : int
        Tile output length.
    overlap : float
        Overlap ``o`` of two neighbouring tiles (output pixels).
    halo : float
        Halo ``h`` (output pixels): the weight is 0 up to ``m = max(0, (o - h) / 2)`` from
        an edge and rises to 1 at ``o - m``.
    mode : {"none", "linear", "cosine"}
        Ramp shape.

    Returns
    -------
    numpy.ndarray
        float64 weights in ``[0, 1]`` (1 everywhere for ``"none"`` or no overlap).
    """
    if mode == "none" or overlap <= 0 or halo <= 0:
        return np.ones(n)
    margin = max(0.0, (overlap - halo) / 2)
    width = overlap - 2 * margin
    i = np.arange(n)
    d = np.minimum(i, n - 1 - i) + 0.5
    t = np.clip((d - margin) / width, 0.0, 1.0)
    return t if mode == "linear" else np.sin(0.5 * np.pi * t) ** 2


def source_index(idx: np.ndarray, size: int, padding: str) -> np.ndarray:
    """Field row (or column) that a possibly out-of-field index reads under ``padding``.

    ``"reflect"`` equals ``numpy.pad(..., mode="symmetric")`` for any pad width (the
    mirror image repeats with period ``2 * size``); ``"nearest"`` clips to the edge.
    """
    if padding == "nearest":
        return np.clip(idx, 0, size - 1)
    m = np.mod(idx, 2 * size)
    return np.where(m < size, m, 2 * size - 1 - m)


@dataclasses.dataclass(frozen=True)
class AxisTiling:
    """The global tile grid along one axis of the (stride-padded) field.

    Attributes
    ----------
    size : int
        Axis length ``n`` in input pixels (a multiple of ``stride``).
    tile, halo, stride : int
        ``T``, ``h`` and ``s``.
    blend : {"none", "linear", "cosine"}
        Tile combination (see the module docstring).
    step : int, optional
        Spacing of blended tiles (default ``T - 2h``).
    """

    size: int
    tile: int
    halo: int
    stride: int = 1
    blend: str = "none"
    step: int | None = None

    @property
    def starts(self) -> np.ndarray:
        """Tile starts (input pixels; negative or past the end where padding is read)."""
        h = self.halo
        if self.blend == "none":
            return np.asarray(tile_starts(self.size, self.tile - 2 * h), dtype=np.int64) - h
        step = self.step or self.tile - 2 * h
        return np.asarray(blend_starts(self.size, h, step), dtype=np.int64)

    @property
    def spans(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)``: the field pixels each tile writes to (both non-decreasing)."""
        starts = self.starts
        if self.blend == "none":
            lo = starts + self.halo
            hi = np.append(lo[1:], self.size)
            return lo, hi
        return np.maximum(starts, 0), np.minimum(starts + self.tile, self.size)

    def tiles_for(self, lo: int, hi: int) -> range:
        """Return the indices of the tiles that write into field pixels ``[lo, hi)``."""
        span_lo, span_hi = self.spans
        k0 = int(np.searchsorted(span_hi, lo, side="right"))
        k1 = int(np.searchsorted(span_lo, hi, side="left"))
        return range(k0, k1)

    def window(self, lo: int, hi: int, padding: str) -> tuple[int, int]:
        """Field pixels ``[a, b)`` that the tiles writing into ``[lo, hi)`` read."""
        ks = self.tiles_for(lo, hi)
        starts = self.starts
        idx = source_index(np.arange(starts[ks[0]], starts[ks[-1]] + self.tile), self.size, padding)
        return int(idx.min()), int(idx.max()) + 1


def block_edges(size: int, chunk: int, period: int, offset: int = 0) -> list[int]:
    """Block edges along an axis, aligned to the tile grid to avoid recomputing tiles.

    Parameters
    ----------
    size : int
        Axis length.
    chunk : int
        Wanted block length (rounded to a multiple of ``period``, at least one period).
    period : int
        Tile spacing (interior ``I`` or blend ``step``).
    offset : int
        Where inside a period an edge costs least (0 for interiors; a tile centre for
        blended tiles, so that only one tile straddles the edge).

    Returns
    -------
    list of int
        ``[0, e1, ..., size]``; the first block also takes the ``offset``, the last one
        absorbs a remainder shorter than half a block.
    """
    c = max(period, round(chunk / period) * period)
    edges = [0, *range(offset + c, size, c), size]
    if len(edges) > 2 and edges[-1] - edges[-2] < c / 2:
        del edges[-2]
    return edges


def _batches(items: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


#: one run of a tile's source indices: (first, stop) in the tile, and the source slice
Run = tuple[int, int, slice]


def _runs(idx: np.ndarray) -> list[Run]:
    """Split source indices into runs that plain slices read (steps +1, -1 or 0).

    An interior tile reads one ascending run; a tile over the field's edge reads the
    mirrored (``"reflect"``) or repeated (``"nearest"``) padding as one more run per
    edge. Steps 0 (a repeated pixel) are read as a one-pixel slice and broadcast.
    """
    runs: list[Run] = []
    n, start = len(idx), 0
    while start < n:
        first = int(idx[start])
        step = int(idx[start + 1]) - first if start + 1 < n else 1
        if step not in (-1, 0, 1):
            step = 1
            end = start + 1
        else:
            end = start + 1
            while end < n and int(idx[end]) - int(idx[end - 1]) == step:
                end += 1
        if step == 0:
            src = slice(first, first + 1)
        elif step == 1:
            src = slice(first, first + end - start)
        else:
            last = first - (end - start)
            src = slice(first, last if last >= 0 else None, -1)
        runs.append((start, end, src))
        start = end
    return runs


#: a run cut to one piece: (piece, first, stop, piece-local slice)
Part = tuple[int, int, int, slice]


def _split(run: Run, edges: np.ndarray) -> list[Part]:
    """Split a run of window indices at the piece ``edges`` into piece-local parts."""
    d0, d1, src = run
    n = d1 - d0
    step = src.step or 1
    if src.stop == src.start + 1 and n > 1:  # a repeated pixel (step 0)
        step = 0
    a = int(src.start)
    lo, hi = (a, a + 1) if step == 0 else ((a, a + n) if step == 1 else (a - n + 1, a + 1))
    out: list[Part] = []
    for p in range(len(edges) - 1):
        e0, e1 = int(edges[p]), int(edges[p + 1])
        u, w = max(lo, e0), min(hi, e1)
        if u >= w:
            continue
        if step == 0:
            out.append((p, d0, d1, slice(a - e0, a - e0 + 1)))
        elif step == 1:
            out.append((p, d0 + u - a, d0 + w - a, slice(u - e0, w - e0)))
        else:
            stop = u - 1 - e0
            rev = slice(w - 1 - e0, stop if stop >= 0 else None, -1)
            out.append((p, d0 + a - (w - 1), d0 + a - u + 1, rev))
    return out


@dataclasses.dataclass(frozen=True)
class Window:
    """The field pixels a block's tiles read, as a grid of input-block parts (no copy).

    Attributes
    ----------
    pieces : list of list of numpy.ndarray
        ``(band, h_i, w_j)`` parts, row by row (as :func:`numpy.block` would join them).
    """

    pieces: list[list[np.ndarray]]

    @property
    def row_edges(self) -> np.ndarray:
        """Window rows where each row of pieces starts (and the total, last)."""
        return np.cumsum([0] + [row[0].shape[1] for row in self.pieces])

    @property
    def col_edges(self) -> np.ndarray:
        """Window columns where each column of pieces starts (and the total, last)."""
        return np.cumsum([0] + [p.shape[2] for p in self.pieces[0]])

    @property
    def bands(self) -> int:
        """Number of bands."""
        return int(self.pieces[0][0].shape[0])

    @property
    def dtype(self) -> np.dtype:
        """Element type of the pieces."""
        return self.pieces[0][0].dtype

    def copy_tile(self, dst: np.ndarray, rows: list[Run], cols: list[Run]) -> None:
        """``dst[:] = window[:, rows][:, :, cols]``: one slice copy per run and piece.

        Padding reads (runs of mirrored or repeated indices) cost as little as interior
        reads, and the window is never joined into one array.
        """
        re, ce = self.row_edges, self.col_edges
        rparts = [q for r in rows for q in _split(r, re)]
        cparts = [q for c in cols for q in _split(c, ce)]
        for pr, r0, r1, rs in rparts:
            row = self.pieces[pr]
            for pc, c0, c1, cs in cparts:
                dst[:, r0:r1, c0:c1] = row[pc][:, rs, cs]

    def nodata(self, rows: slice, cols: slice) -> np.ndarray:
        """``(h, w)`` bool: pixels of ``[rows, cols]`` (window indices) with a NaN band."""
        re, ce = self.row_edges, self.col_edges
        out = []
        for i, row in enumerate(self.pieces):
            r0, r1 = max(rows.start, re[i]), min(rows.stop, re[i + 1])
            if r0 >= r1:
                continue
            parts = []
            for j, piece in enumerate(row):
                c0, c1 = max(cols.start, ce[j]), min(cols.stop, ce[j + 1])
                if c0 >= c1:
                    continue
                part = piece[:, r0 - re[i] : r1 - re[i], c0 - ce[j] : c1 - ce[j]]
                # NaN propagates through the band sum
                parts.append(np.isnan(np.add.reduce(part, axis=0, dtype=np.float32)))
            out.append(parts)
        return np.block(out)


def _copy_tile(dst: np.ndarray, x: np.ndarray, rows: list[Run], cols: list[Run]) -> None:
    """``dst[:] = x[:, rows][:, :, cols]``, one slice copy per pair of runs (no temporaries).

    Padding reads (runs of mirrored or repeated indices) cost as little as interior
    reads: a fancy-index ``take`` would copy whole window rows first.
    """
    Window([[x]]).copy_tile(dst, rows, cols)


def run_region(
    x: np.ndarray | Window,
    origin: tuple[int, int],
    run: Runner,
    *,
    ty: AxisTiling,
    tx: AxisTiling,
    region: tuple[tuple[int, int], tuple[int, int]],
    n_out: int,
    batch_size: int = 8,
    fixed_batch: int | None = None,
    padding: str = "reflect",
) -> np.ndarray:
    """Run a model over the global tiles that write into one region of the field.

    Parameters
    ----------
    x : numpy.ndarray or Window
        ``(band, wy, wx)`` float field pixels starting at field pixel ``origin`` (one
        array, or the input-block parts that make it up); must hold ``ty.window(...)`` x
        ``tx.window(...)`` of the region. Not modified.
    origin : (int, int)
        Field row and column of ``x[:, 0, 0]``.
    run : callable
        ``run(batch)`` with ``batch`` ``(n, band, T, T)`` (a fresh array it may modify)
        returns ``(n, n_out, T/s, T/s)``.
    ty, tx : AxisTiling
        The global grids along y and x (same tile, halo, stride, blend).
    region : ((y0, y1), (x0, x1))
        Field pixels to produce (multiples of the stride).
    n_out : int
        Output channels of ``run``.
    batch_size : int
        Tiles per ``run`` call.
    fixed_batch : int, optional
        The model's fixed batch size: short batches are padded by repeating a tile.
    padding : {"reflect", "nearest"}
        Fill beyond the field's edges.

    Returns
    -------
    numpy.ndarray
        ``(n_out, (y1 - y0) / s, (x1 - x0) / s)`` float32, identical for any split of the
        field into regions.
    """
    (y0, y1), (x0, x1) = region
    win = x if isinstance(x, Window) else Window([[x]])
    t, s = ty.tile, ty.stride
    to = t // s
    oy, ox = (y1 - y0) // s, (x1 - x0) // s
    starts_y, starts_x = ty.starts, tx.starts
    ks_y, ks_x = ty.tiles_for(y0, y1), tx.tiles_for(x0, x1)
    rows = {
        k: _runs(source_index(np.arange(t) + starts_y[k], ty.size, padding) - origin[0])
        for k in ks_y
    }
    cols = {
        k: _runs(source_index(np.arange(t) + starts_x[k], tx.size, padding) - origin[1])
        for k in ks_x
    }
    positions = [(a, b) for a in ks_y for b in ks_x]
    per_call = fixed_batch or batch_size

    def batches() -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
        for group in _batches(positions, per_call):
            m = fixed_batch or len(group)
            batch = np.empty((m, win.bands, t, t), dtype=win.dtype)
            for i, (a, b) in enumerate(group):
                win.copy_tile(batch[i], rows[a], cols[b])
            batch[len(group) :] = batch[0]
            yield group, run(batch)[: len(group)]

    if ty.blend == "none":
        out = np.empty((n_out, oy, ox), dtype=np.float32)
        lo_y, hi_y = ty.spans
        lo_x, hi_x = tx.spans
        for group, res in batches():
            for i, (a, b) in enumerate(group):
                ra, rb = max(lo_y[a], y0), min(hi_y[a], y1)
                ca, cb = max(lo_x[b], x0), min(hi_x[b], x1)
                ta, tb = (ra - starts_y[a]) // s, (ca - starts_x[b]) // s
                out[:, (ra - y0) // s : (rb - y0) // s, (ca - x0) // s : (cb - x0) // s] = res[
                    i, :, ta : ta + (rb - ra) // s, tb : tb + (cb - ca) // s
                ]
        return out

    step = ty.step or t - 2 * ty.halo
    w1 = edge_weights(to, (t - step) // s, ty.halo // s, ty.blend)
    w2 = np.outer(w1, w1)
    acc = np.zeros((n_out, oy, ox), dtype=np.float64)
    wsum = np.zeros((oy, ox), dtype=np.float64)
    for group, res in batches():
        for i, (a, b) in enumerate(group):
            # tile output rows r0 .. r0 + to, in output pixels of the region
            r0, c0 = (starts_y[a] - y0) // s, (starts_x[b] - x0) // s
            ry0, rx0 = max(0, -r0), max(0, -c0)
            ry1, rx1 = min(to, oy - r0), min(to, ox - c0)
            w = w2[ry0:ry1, rx0:rx1]
            sl = (slice(r0 + ry0, r0 + ry1), slice(c0 + rx0, c0 + rx1))
            acc[(slice(None), *sl)] += res[i, :, ry0:ry1, rx0:rx1] * w
            wsum[sl] += w
    return (acc / wsum).astype(np.float32)
