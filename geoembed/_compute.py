"""Compute Dask collections with an optional progress bar and a stall watchdog.

On a distributed client, :func:`compute` polls the scheduler while the job runs: when no
task finishes for ``geoembed.stall-timeout`` seconds (Dask config, set by
:func:`geoembed.runtime.dask_client` from ``--stall-timeout``), the job is cancelled and
:class:`~geoembed.errors.StalledJobError` names the tasks still running and their workers,
instead of the command waiting forever on a wedged worker.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from geoembed._bars import LineProgress, progress_bar
from geoembed.errors import StalledJobError

__all__ = ["LineProgress", "compute", "progress_bar"]

log = logging.getLogger("geoembed.progress")

#: stall timeout (seconds) when neither the argument nor the Dask config sets one
_DEFAULT_STALL = 1800.0


def _client_or_none() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def compute(
    *objs: Any,
    progress: bool = False,
    label: str = "computing",
    stall_timeout: float | None = None,
) -> Sequence[Any]:
    """Compute Dask collections (on the current client if there is one).

    Parameters
    ----------
    *objs : dask collections
        Arrays, Delayed objects or xarray objects.
    progress : bool, default False
        Show a progress bar (tasks done / total) on stderr.
    label : str
        Text in front of the bar.
    stall_timeout : float, optional
        Seconds without a finished task before the job is cancelled (distributed
        client only); default: the ``geoembed.stall-timeout`` Dask config value
        (1800 s); 0 disables the watchdog.

    Returns
    -------
    tuple
        The computed results, in order.
    """
    import dask

    objs = _one_kind(objs)
    client = _client_or_none()
    if client is None:
        if progress:
            with _local_progress(label):
                return dask.compute(*objs)
        return dask.compute(*objs)

    if stall_timeout is None:
        stall_timeout = float(dask.config.get("geoembed.stall-timeout", _DEFAULT_STALL))
    total = _graph_size(objs) if progress else None
    futures = client.compute(list(objs))
    try:
        _watch(client, futures, label, progress=progress, stall_timeout=stall_timeout, total=total)
    except BaseException:
        # a failure or an interrupt: tasks not yet started (e.g. the final rename of a
        # write) must not run after the caller has cleaned up
        client.cancel(futures)
        raise
    return client.gather(futures)


def _identity(x: Any) -> Any:
    return x


def _one_kind(objs: Sequence[Any]) -> tuple[Any, ...]:
    """Wrap collections in Delayed when their kinds are mixed.

    dask 2026.8 returns ``dask.compute(delayed, array, delayed)`` (and the same through
    ``Client.compute``) grouped by collection kind, not in argument order. Results of one
    kind come back in order, so giving every argument the same kind keeps the order; a
    Delayed that depends on an array still computes the array's whole graph.
    """
    import dask
    from dask.delayed import Delayed

    kinds = {type(o) for o in objs if dask.is_dask_collection(o)}
    if len(kinds) < 2:
        return tuple(objs)
    wrap = dask.delayed(_identity, pure=True)
    return tuple(
        wrap(o) if dask.is_dask_collection(o) and not isinstance(o, Delayed) else o for o in objs
    )


def _graph_size(objs: Sequence[Any]) -> int:
    """Count the tasks in the graphs of ``objs``: the bar's total up front."""
    keys: set[Any] = set()
    for o in objs:
        if _is_collection(o):
            keys.update(o.__dask_graph__().keys())
    return len(keys)


def _is_collection(obj: Any) -> bool:
    import dask

    return bool(dask.is_dask_collection(obj))


def _watch(
    client: Any,
    futures: list[Any],
    label: str,
    *,
    progress: bool,
    stall_timeout: float,
    total: int | None = None,
) -> None:
    """Wait for ``futures``, drawing a bar and raising if no task finishes for too long."""
    from contextlib import nullcontext

    from distributed import wait

    # how often to look at the scheduler; a finished job is noticed at once (wait)
    poll = 0.3 if progress else 2.0
    if stall_timeout > 0:
        poll = min(poll, stall_timeout / 4)
    keys = [f.key for f in futures]
    last_done, last_change = -1, time.monotonic()
    # the bar has its total from the first frame (the graph's size, corrected by the
    # scheduler's own count once it has the tasks)
    bar_cm = progress_bar(total, label, unit="task") if progress else None
    with bar_cm if bar_cm is not None else nullcontext() as bar:
        while True:
            try:
                wait(futures, timeout=poll)
                finished = True
            except TimeoutError:
                finished = any(f.status == "error" for f in futures)
            if finished:
                if bar is not None:
                    bar.n = bar.total or bar.n
                    bar.refresh()
                return
            done, n_tasks = client.run_on_scheduler(_task_counts, keys)
            if bar is not None:
                if total is None or n_tasks > total:
                    total = n_tasks
                    bar.total = total
                bar.n = done
                bar.refresh()
            now = time.monotonic()
            if done != last_done:
                last_done, last_change = done, now
            elif stall_timeout > 0 and now - last_change > stall_timeout:
                raise StalledJobError(_stall_message(client, stall_timeout, done, n_tasks))


def _stall_message(client: Any, stall_timeout: float, done: int, total: int) -> str:
    from dask.utils import key_split

    processing = client.processing()
    running = [(w, k) for w, ks in processing.items() for k in ks]
    if not processing:
        where = "no worker is connected to the scheduler"
    elif not running:
        where = f"no task is running on the {len(processing)} connected workers"
    else:
        shown = ", ".join(f"{key_split(k)!s} {k!s} on {w}" for w, k in running[:3])
        more = f" and {len(running) - 3} more" if len(running) > 3 else ""
        where = f"still running: {shown}{more}"
    return (
        f"the job stalled: no task finished for {stall_timeout:g} s ({done} of {total} done; "
        f"{where}). Check the workers' logs, or raise --stall-timeout for very slow tasks."
    )


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


def _local_progress(label: str) -> Any:
    """Return a Dask callback for the local schedulers: tqdm's own on a TTY, else log lines."""
    if sys.stderr.isatty():
        from tqdm.dask import TqdmCallback

        # TqdmCallback sizes its bar from the graph before the first task runs
        return TqdmCallback(desc=label, file=sys.stderr, leave=False, unit="task")
    return _LineCallback(label)


class _LineCallback:
    """Dask local-scheduler callback logging a line at each tenth of the tasks."""

    def __new__(cls, label: str) -> Any:
        from dask.callbacks import Callback

        class _Cb(Callback):  # type: ignore[misc]
            def _start_state(self, dsk: Any, state: Any) -> None:
                total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
                self.bar = LineProgress(total, label, unit="task")

            def _posttask(self, *args: Any) -> None:
                self.bar.update(1)

            def _finish(self, *args: Any) -> None:
                self.bar.close()

        return _Cb()
