"""Replay Dask's static task order and count the input blocks it keeps in memory.

A cheap, deterministic stand-in for a peak-RSS measurement of a blockwise-with-halo
graph (CNN inference): the graph a distributed scheduler receives (low-level fusion
on, as ``Client.compute`` optimises it) is ordered with :func:`dask.order.order` and
run one task at a time in that order. A task's result is released when its last
dependent has run. An input block counts as alive while its own result is alive, or
while a window piece cut from it as a *view* (a piece of at least half the block:
:func:`geoembed.infer.blocks._window_piece` copies thinner ones) is alive, since the
view keeps the whole block's buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

Key = Hashable


def _name(key: Key) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


def _views(raw: dict[Key, Any], block_px: int) -> dict[Key, Key]:
    """Window-piece key -> input key, for pieces that stay views of their input block."""
    out: dict[Key, Key] = {}
    for key, task in raw.items():
        if not (isinstance(task, tuple) and len(task) >= 4):
            continue
        if getattr(task[0], "__name__", "") != "_window_piece":
            continue
        sy, sx = task[2], task[3]
        if 2 * (sy.stop - sy.start) * (sx.stop - sx.start) >= block_px:
            out[key] = task[1]
    return out


def peak_inputs(collection: Any, is_input: Callable[[Key], bool], block_px: int) -> tuple[int, int]:
    """Peak number of input blocks alive in a serial run in ``dask.order`` order.

    Parameters
    ----------
    collection : dask collection
        What would be computed (e.g. a reduction of the inference output).
    is_input : callable
        ``is_input(key)`` is true for the keys of the input blocks.
    block_px : int
        Pixels per input block (to tell views from copies among the window pieces).

    Returns
    -------
    (int, int)
        The peak number of input blocks alive at once, and the number of input blocks.
    """
    from dask._task_spec import Alias
    from dask.base import collections_to_expr
    from dask.order import order

    raw = dict(collections_to_expr([collection], optimize_graph=False).__dask_graph__())
    fused = dict(collections_to_expr([collection], optimize_graph=True).__dask_graph__())
    views = _views(raw, block_px)
    # a fused task stands for the original keys that alias it
    stands_for: dict[Key, set[Key]] = {k: {k} for k in fused}
    for key, task in fused.items():
        if isinstance(task, Alias):
            stands_for[next(iter(task.dependencies))].add(key)
    deps = {k: set(t.dependencies) for k, t in fused.items()}
    waiting = {k: 0 for k in fused}
    for ds in deps.values():
        for d in ds:
            waiting[d] += 1

    def holds(key: Key) -> set[Key]:
        out: set[Key] = set()
        for orig in stands_for[key]:
            if is_input(orig):
                out.add(orig)
            elif orig in views:
                out.add(views[orig])
        return out

    priority = order(fused)
    alive: set[Key] = set()
    peak = 0
    for key in sorted(fused, key=priority.__getitem__):
        alive.add(key)
        for d in deps[key]:
            waiting[d] -= 1
            if waiting[d] == 0:
                alive.discard(d)
        held: set[Key] = set()
        for k in alive:
            held |= holds(k)
        peak = max(peak, len(held))
    n_inputs = sum(1 for k in raw if is_input(k))
    return peak, n_inputs


def lazy_field(side: int, bands: int = 8, chunk: int = 512) -> Any:
    """A lazily generated ``(band, y, x)`` float32 field in ``chunk``-px blocks (zeros).

    Only the graph's shape matters to :func:`peak_inputs`; nothing is computed.
    """
    import dask.array as dsa
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    data = dsa.zeros((bands, side, side), chunks=(bands, chunk, chunk), dtype=np.float32)
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(bands)],
            "y": 5_000_000.0 - 10.0 * (np.arange(side) + 0.5),
            "x": 400_000.0 + 10.0 * (np.arange(side) + 0.5),
        },
        name="embedding",
    )
    return da.rio.write_crs("EPSG:32633")
