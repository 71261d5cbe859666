"""Block work of CNN inference: the lazy per-block graph and what each task runs.

:func:`_stacked` builds one Dask task per output block on the global tile grid
(:mod:`geoembed.infer.tiling`); each task (:func:`_block`) reads the field around its
block as slices of the input blocks, cuts the tiles, normalises and NaN-fills them and
runs them through a per-process cached session (:func:`_runner`). :func:`_classes_block`
and :func:`_probs_to_uint8` turn the stacked scores into class maps and stored
probabilities, block by block. An AEF field opened by geoembed flows as its int8 codes:
each task decodes the window it reads.
"""

from __future__ import annotations

from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoembed._aef_codes import aef_codes_of, dequantize_block
from geoembed.infer.plan import InferencePlan
from geoembed.infer.session import get_session
from geoembed.infer.tiling import (
    PAD_MODES,
    AxisTiling,
    Window,
    _round_up,
    block_edges,
    run_region,
)

__all__: list[str] = []


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _runner(plan: InferencePlan) -> Any:
    session = get_session(plan.path, plan.sha256, providers=plan.providers, threads=plan.threads)
    names = [n for n in (plan.score_output, plan.features_output) if n is not None]
    dtype = np.dtype(plan.input_dtype)
    mean = None if plan.mean is None else np.asarray(plan.mean, np.float32)[:, None, None]
    std = None if plan.std is None else np.asarray(plan.std, np.float32)[:, None, None]

    def run(batch: np.ndarray) -> np.ndarray:
        # batch is a fresh copy of the tiles: normalise and fill NaN in place
        if mean is not None:
            batch -= mean
        if std is not None:
            batch /= std
        np.copyto(batch, np.float32(plan.nodata_fill), where=np.isnan(batch))
        feed = batch if batch.dtype == dtype else batch.astype(dtype)
        res = session.run(names, {plan.input_name: feed})
        parts = []
        for name, arr in zip(names, res):
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim == 2:
                arr = arr[:, :, None, None]
            if name == plan.score_output and plan.softmax:
                arr = _softmax(arr)
            parts.append(arr)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    return run


def _block(
    pieces: list[list[np.ndarray]],
    plan: InferencePlan,
    ty: AxisTiling,
    tx: AxisTiling,
    origin: tuple[int, int],
    region: tuple[tuple[int, int], tuple[int, int]],
) -> np.ndarray:
    """Infer one output block -> ``(n_out, (y1 - y0)/s, (x1 - x0)/s)``.

    ``pieces`` are the parts of the input blocks that make up the block's window (every
    field pixel its tiles read), row by row; ``origin`` is the window's first field pixel
    and ``region`` the field pixels the block produces.
    """
    if pieces[0][0].dtype == np.int8:  # AEF codes: decoded here, as the field would be
        pieces = [[dequantize_block(p, axis=0) for p in row] for row in pieces]
    x = Window(pieces)  # tiles are cut from the parts: the window is never joined
    (y0, y1), (x0, x1) = region
    s = plan.stride
    # a pixel is nodata when any band is NaN
    own = (slice(y0 - origin[0], y1 - origin[0]), slice(x0 - origin[1], x1 - origin[1]))
    valid: np.ndarray = ~x.nodata(*own)
    by, bx = valid.shape
    if s > 1:
        valid = np.asarray(valid.reshape(by // s, s, bx // s, s).any(axis=(1, 3)))
    if not valid.any():
        return np.full((plan.n_out, by // s, bx // s), np.nan, dtype=np.float32)
    res = run_region(
        x,
        origin,
        _runner(plan),
        ty=ty,
        tx=tx,
        region=region,
        n_out=plan.n_out,
        batch_size=plan.batch_size,
        fixed_batch=plan.fixed_batch,
        padding=plan.padding,
    )
    if not valid.all():
        res[:, ~valid] = np.nan
    return res


def _window_piece(block: np.ndarray, sy: slice, sx: slice) -> np.ndarray:
    """Return the part ``[:, sy, sx]`` of an input block that a block's window needs.

    A thin part (less than half the block: a halo strip) is copied, since a view would
    keep the whole input block alive until the window's block runs; larger parts stay
    views (copying them would not free much).
    """
    part = block[:, sy, sx]
    return part.copy() if 2 * part.size < block.size else part


def _probs_to_uint8(p: np.ndarray) -> np.ndarray:
    """Probabilities 0..1 -> uint8 0..254 (value / 254), NaN -> 255."""
    out = np.full(p.shape, 255, dtype=np.uint8)
    ok = ~np.isnan(p)
    out[ok] = np.rint(np.clip(p[ok], 0.0, 1.0) * 254.0).astype(np.uint8)
    return out


def _classes_block(stacked: np.ndarray, n_classes: int, nodata: int) -> np.ndarray:
    """``(n_out, y, x)`` -> ``(2, y, x)`` float32: class id (as float) and confidence."""
    probs = stacked[:n_classes]
    valid = ~np.isnan(probs[0])
    cls = np.full(probs.shape[1:], nodata, dtype=np.float32)
    conf = np.full(probs.shape[1:], np.nan, dtype=np.float32)
    if valid.any():
        p = probs[:, valid]
        cls[valid] = np.argmax(p, axis=0)
        conf[valid] = p.max(axis=0)
    return np.stack([cls, conf])


def _axis_tilings(plan: InferencePlan, ny: int, nx: int) -> tuple[AxisTiling, AxisTiling]:
    kw = dict(
        tile=plan.tile, halo=plan.overlap, stride=plan.stride, blend=plan.blend, step=plan.step
    )
    return AxisTiling(size=ny, **kw), AxisTiling(size=nx, **kw)  # type: ignore[arg-type]


def _edges(plan: InferencePlan, size: int, chunk: int) -> list[int]:
    """Output block edges along an axis: near ``chunk``, aligned to the tile grid."""
    t, h, s = plan.tile, plan.overlap, plan.stride
    if plan.blend == "none":
        return block_edges(size, chunk, t - 2 * h)
    step = plan.step or t - 2 * h
    # an edge through a tile's centre is straddled by that tile only
    offset = ((t // 2 - h) % step) // s * s
    return block_edges(size, chunk, step, offset)


def _stacked(field: xr.DataArray, plan: InferencePlan) -> dsa.Array:
    """Build the lazy ``(n_out, y/s, x/s)`` model output: one task per output block.

    Output blocks follow the global tile grid (:func:`_edges`), not the field's chunks;
    each reads exactly the field pixels its tiles need (its window) as slices of the
    input blocks, so memory stays bounded by the chunk size and no block ever sees a
    different tiling than a whole-image run.
    """
    s = plan.stride
    data = field.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=(-1, 512, 512))
    # an AEF field opened by geoembed: its int8 codes travel (4 x less than float32) and
    # each block decodes the window it reads (the same values; pixels masked per pixel)
    codes = aef_codes_of(data)
    data = codes if codes is not None else data.astype(np.float32, copy=False)
    ny, nx = data.shape[1:]
    py, px = _round_up(ny, s) - ny, _round_up(nx, s) - nx
    if py or px:
        data = dsa.pad(data, ((0, 0), (0, py), (0, px)), mode=PAD_MODES[plan.padding])
    data = data.rechunk({0: -1})
    ny, nx = ny + py, nx + px
    ty, tx = _axis_tilings(plan, ny, nx)
    ey = _edges(plan, ny, max(data.chunks[1]))
    ex = _edges(plan, nx, max(data.chunks[2]))
    cy = np.cumsum((0, *data.chunks[1]))
    cx = np.cumsum((0, *data.chunks[2]))

    def pieces(lo: int, hi: int, bounds: np.ndarray) -> list[tuple[int, slice]]:
        return [
            (k, slice(max(lo, bounds[k]) - bounds[k], min(hi, bounds[k + 1]) - bounds[k]))
            for k in range(len(bounds) - 1)
            if bounds[k] < hi and bounds[k + 1] > lo
        ]

    # every name derives from the field's graph, the plan (model digest included) and
    # the block layout: two models or two fields never share a key
    token = tokenize(data.name, plan, ty, tx, ey, ex)
    name, part = f"geoembed-infer-{token}", f"geoembed-infer-window-{token}"
    dsk: dict[Any, Any] = {}
    for i in range(len(ey) - 1):
        ry = (ey[i], ey[i + 1])
        wy = ty.window(*ry, plan.padding)
        for j in range(len(ex) - 1):
            rx = (ex[j], ex[j + 1])
            wx = tx.window(*rx, plan.padding)
            rows = []
            for a, sy in pieces(*wy, cy):
                row = []
                for b, sx in pieces(*wx, cx):
                    key = (part, i, j, a, b)
                    dsk[key] = (_window_piece, (data.name, 0, a, b), sy, sx)
                    row.append(key)
                rows.append(row)
            dsk[(name, 0, i, j)] = (_block, rows, plan, ty, tx, (wy[0], wx[0]), (ry, rx))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[data])
    chunks = ((plan.n_out,), tuple(np.diff(ey) // s), tuple(np.diff(ex) // s))
    return dsa.Array(graph, name, chunks, meta=np.empty((0, 0, 0), dtype=np.float32))
