"""The benchmarks' Dask cluster: single-threaded worker processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def local_cluster(workers: int, warm_up: Callable[[], None]) -> tuple[Any, Any]:
    """Start ``workers`` single-threaded worker processes, no memory limit, and a client.

    ``warm_up`` runs on every worker first (imports), so that what a benchmark measures
    excludes worker start-up. Returns ``(cluster, client)``; close both.
    """
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=None,
    )
    client = Client(cluster)
    client.run(warm_up)
    return cluster, client
