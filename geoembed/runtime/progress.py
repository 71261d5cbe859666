"""Compute Dask collections with an optional progress bar on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["compute"]


def _client_or_none() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def compute(*objs: Any, progress: bool = False, label: str = "computing") -> Sequence[Any]:
    """Compute Dask collections (on the current client if there is one).

    Parameters
    ----------
    *objs : dask collections
        Arrays, Delayed objects or xarray objects.
    progress : bool, default False
        Show a progress bar (tasks done / total) on stderr.
    label : str
        Text in front of the bar.

    Returns
    -------
    tuple
        The computed results, in order.
    """
    import dask

    client = _client_or_none()
    if client is None:
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr, minimum=0.5):
                return dask.compute(*objs)
        return dask.compute(*objs)

    futures = client.compute(list(objs))
    try:
        if progress:
            _bar(client, futures, label)
        return client.gather(futures)
    except BaseException:
        # a failure or an interrupt: tasks not yet started (e.g. the final rename of a
        # write) must not run after the caller has cleaned up
        client.cancel(futures)
        raise


def _bar(client: Any, futures: list[Any], label: str) -> None:
    from tqdm import tqdm

    total = None
    with tqdm(desc=label, unit="task", file=sys.stderr, leave=False) as bar:
        while True:
            finished = all(f.done() for f in futures)
            counts = client.run_on_scheduler(_task_counts, [f.key for f in futures])
            if total is None or counts[1] > total:
                total = counts[1]
                bar.total = total
            bar.n = counts[0]
            bar.refresh()
            if finished:
                bar.n = bar.total or bar.n
                bar.refresh()
                return
            time.sleep(0.3)


def _task_counts(keys: list[Any], dask_scheduler: Any = None) -> tuple[int, int]:
    """Count finished and total tasks that the given keys depend on (runs on the scheduler)."""
    seen: set[Any] = set()
    stack = [dask_scheduler.tasks[k] for k in keys if k in dask_scheduler.tasks]
    done = 0
    while stack:
        ts = stack.pop()
        if ts.key in seen:
            continue
        seen.add(ts.key)
        if ts.state in ("memory", "released", "forgotten", "erred"):
            done += 1
        stack.extend(ts.dependencies)
    return done, len(seen)
