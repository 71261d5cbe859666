"""The thread policy of geoembed's Dask workers: a worker plugin.

A worker with ``T`` threads runs ``T`` tasks at once; each task gets one compute thread
(BLAS, OpenMP/faiss, ONNX Runtime, GDAL), so the process never runs more than ``T``
compute threads. :func:`geoembed.runtime.dask_client` registers :class:`ThreadPolicy`
on every cluster it starts or connects to (workers that join later get it too); see
:func:`geoembed._threads.pin_process` for what it sets.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from geoembed._threads import pin_process, unpin_process

__all__ = ["ThreadPolicy", "register_thread_policy"]

#: name under which the plugin is registered (registering again replaces it)
PLUGIN_NAME = "geoembed-thread-policy"


class ThreadPolicy(WorkerPlugin):  # type: ignore[misc]
    """Pin every task of a worker process to one compute thread."""

    name = PLUGIN_NAME

    def setup(self, worker: Any) -> None:
        """Apply the policy in the worker process (not in a process it shares).

        A worker of an in-process cluster (``LocalCluster(processes=False)``) lives in
        the user's own process, beside the scheduler and the client: pinning would make
        the user's own NumPy single-threaded for as long as the cluster lives. There the
        per-task guard (:func:`geoembed._threads.single_thread_blas`) applies instead, as
        on the threaded scheduler.
        """
        from distributed.scheduler import Scheduler

        self._pinned_here = not any(True for _ in Scheduler._instances)
        if self._pinned_here:
            pin_process()

    def teardown(self, worker: Any) -> None:
        """Undo it when the plugin is removed or the worker closes."""
        if getattr(self, "_pinned_here", False):
            unpin_process()


def register_thread_policy(client: Any) -> None:
    """Register :class:`ThreadPolicy` on the client's cluster (current and future workers)."""
    client.register_plugin(ThreadPolicy(), name=PLUGIN_NAME)
