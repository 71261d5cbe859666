"""Halo and tile logic for seam-free CNN inference.

Geometry (all sizes in input pixels; ``s`` is the model's output stride)
------------------------------------------------------------------------
* The field is padded at its bottom/right edge to a multiple of ``s`` and every block
  (Dask chunk, a multiple of ``s`` pixels) is read with a halo of ``h`` pixels on each
  side (``dask.array.overlap`` with neighbouring blocks). Outside the field the halo is
  filled with ``padding``, tile by tile (no padded copy of the block or field is made):
  ``"reflect"`` mirrors the edge *including* the edge pixel (NumPy's ``"symmetric"``,
  Dask's ``"reflect"``), ``"nearest"`` repeats the edge pixel.
* Inside a block, tiles of ``T x T`` pixels step by the *interior* ``I = T - 2h``; the last
  tile of a row/column is shifted back to end at the block's edge (tiles overlap more
  there, never less). A tile contributes only its interior ``[h, T - h)``, so every output
  pixel is computed with at least ``h`` pixels of real context on every side: when ``h``
  covers the model's receptive radius the result equals a whole-image run bit for bit,
  whatever the chunking. Blocks smaller than a tile are padded (``padding``) beyond their
  halo; that padding lies outside every used pixel's receptive field.
* ``blend="linear"`` / ``"cosine"``: for models that are not translation-exact (U-Nets
  with pooling). Tiles start at ``0, step, 2 step, ...`` in the halo-extended block
  (default ``step = T - 2h``; the last tile may run past the halo into ``padding``) and
  are averaged with weights that ramp across the overlap ``o = T - step`` of two
  neighbours: 0 in the outer ``m = max(0, (o - h) / 2)`` pixels of a tile, rising
  (linearly, or as ``sin^2``) to 1 at ``o - m`` from the edge, 1 inside. The ramps of two
  neighbours sum to one. With the default step the outer ``h/2`` of a tile is never
  used, so a translation-exact model with receptive radius <= ``h/2`` still gives the
  whole-image result (up to float rounding). With ``step = T - o`` and ``h = o``, the
  weights are a Tukey (tapered cosine) window, the scheme ukis-csmask uses. Blending
  happens within a block; block borders stay at tile-interior borders as with ``"none"``.
* A strided model maps a ``T x T`` tile to ``T/s x T/s`` outputs; ``T`` and ``h`` are
  multiples of ``s`` so tile interiors fall on whole output pixels. A patch classifier
  (``s == T``, e.g. 120 x 120 -> 1 x 1 x 43) runs with ``h = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["PAD_MODES", "blend_starts", "edge_weights", "run_tiles", "tile_starts"]

#: user-facing padding name -> numpy.pad mode (Dask's "reflect" is NumPy's "symmetric")
PAD_MODES = {"reflect": "symmetric", "nearest": "edge"}

Runner = Callable[[np.ndarray], np.ndarray]


def tile_starts(size: int, interior: int) -> list[int]:
    """Start offsets (in block-interior coordinates) of the tiles along one axis.

    Parameters
    ----------
    size : int
        Interior length of the block.
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


def blend_starts(extent: int, tile: int, step: int) -> list[int]:
    """Tile starts ``0, step, ...`` until a tile reaches ``extent`` (halo-extended length)."""
    starts = [0]
    while starts[-1] + tile < extent:
        starts.append(starts[-1] + step)
    return starts


def _batches(items: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_tiles(
    x: np.ndarray,
    run: Runner,
    *,
    n_out: int,
    tile: int,
    halo: int,
    stride: int = 1,
    batch_size: int = 8,
    fixed_batch: int | None = None,
    blend: str = "none",
    padding: str = "reflect",
    step: int | None = None,
    missing: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> np.ndarray:
    """Run a model over the tiles of one halo-extended block.

    Parameters
    ----------
    x : numpy.ndarray
        ``(band, by + 2h, bx + 2h)`` float block with its halo; ``by`` and ``bx`` are
        multiples of ``stride``. Not modified.
    run : callable
        ``run(batch)`` with ``batch`` ``(n, band, T, T)`` (a fresh array it may modify)
        returns ``(n, n_out, T/s, T/s)``.
    n_out : int
        Output channels of ``run``.
    tile, halo, stride : int
        ``T``, ``h`` and ``s`` (see the module docstring).
    batch_size : int
        Tiles per ``run`` call.
    fixed_batch : int, optional
        The model's fixed batch size: short batches are padded by repeating a tile.
    blend : {"none", "linear", "cosine"}
        How overlapping tiles are combined.
    padding : {"reflect", "nearest"}
        Fill beyond the halo for blocks smaller than a tile.
    step : int, optional
        Tile spacing for blended runs (default ``T - 2h``); a multiple of ``stride``.
    missing : (top, bottom, left, right)
        Halo rows/columns absent from ``x`` because the block touches the field's edge;
        they are filled with ``padding`` tile by tile, as if ``x`` had been padded (no
        copy of the block is made).

    Returns
    -------
    numpy.ndarray
        ``(n_out, by/s, bx/s)`` float32.
    """
    t, h, s = tile, halo, stride
    top, bottom, left, right = missing
    by, bx = x.shape[1] + top + bottom - 2 * h, x.shape[2] + left + right - 2 * h
    interior = t - 2 * h
    step = step or interior
    if blend == "none":
        ys, xs = tile_starts(by, interior), tile_starts(bx, interior)
    else:
        ys, xs = blend_starts(by + 2 * h, t, step), blend_starts(bx + 2 * h, t, step)
    virtual = _Virtual(x, top, left, PAD_MODES[padding])
    oy, ox, to, ho = by // s, bx // s, t // s, h // s
    positions = [(a, b) for a in ys for b in xs]
    per_call = fixed_batch or batch_size

    if blend == "none":
        out = np.empty((n_out, oy, ox), dtype=np.float32)
        for group in _batches(positions, per_call):
            res = _run_batch(virtual, group, t, run, fixed_batch)
            for k, (a, b) in enumerate(group):
                a0, b0 = a // s, b // s
                ny, nx = min(to - 2 * ho, oy - a0), min(to - 2 * ho, ox - b0)
                out[:, a0 : a0 + ny, b0 : b0 + nx] = res[k, :, ho : ho + ny, ho : ho + nx]
        return out

    acc = np.zeros((n_out, oy, ox), dtype=np.float64)
    wsum = np.zeros((oy, ox), dtype=np.float64)
    w1 = edge_weights(to, (t - step) // s, ho, blend)
    w2 = np.outer(w1, w1)
    for group in _batches(positions, per_call):
        res = _run_batch(virtual, group, t, run, fixed_batch)
        for k, (a, b) in enumerate(group):
            # tile output covers output rows a/s - ho .. a/s - ho + to of the block
            r0, c0 = a // s - ho, b // s - ho
            ry0, rx0 = max(0, -r0), max(0, -c0)
            ry1, rx1 = min(to, oy - r0), min(to, ox - c0)
            w = w2[ry0:ry1, rx0:rx1]
            sl = (slice(r0 + ry0, r0 + ry1), slice(c0 + rx0, c0 + rx1))
            acc[(slice(None), *sl)] += res[k, :, ry0:ry1, rx0:rx1] * w
            wsum[sl] += w
    return (acc / wsum).astype(np.float32)


class _Virtual:
    """A block seen as if padded by ``top``/``left`` rows/columns (and without bound after).

    ``tile(a, b, t)`` returns the ``t x t`` window at virtual offset ``(a, b)``; the parts
    outside the data are filled with NumPy's pad ``mode`` from the data inside the window,
    which equals padding the whole block when the window holds at least as many data
    rows/columns as it pads (always true for the halo: ``h < T / 2``).
    """

    def __init__(self, x: np.ndarray, top: int, left: int, mode: str) -> None:
        self.x, self.top, self.left, self.mode = x, top, left, mode

    def window(self, a: int, b: int, t: int) -> np.ndarray:
        ny, nx = self.x.shape[1:]
        r0, c0 = a - self.top, b - self.left
        r1, c1 = r0 + t, c0 + t
        part = self.x[:, max(r0, 0) : min(r1, ny), max(c0, 0) : min(c1, nx)]
        pads = ((0, 0), (max(0, -r0), max(0, r1 - ny)), (max(0, -c0), max(0, c1 - nx)))
        if any(p for pair in pads for p in pair):
            part = np.pad(part, pads, mode=self.mode)  # type: ignore[call-overload]
        return part


def _run_batch(
    x: _Virtual, group: list[tuple[int, int]], t: int, run: Runner, fixed: int | None
) -> np.ndarray:
    n = len(group)
    m = fixed or n
    batch = np.empty((m, x.x.shape[0], t, t), dtype=x.x.dtype)
    for k, (a, b) in enumerate(group):
        batch[k] = x.window(a, b, t)
    for k in range(n, m):
        batch[k] = batch[0]
    return run(batch)[:n]
