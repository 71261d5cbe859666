"""Create or connect to a Dask scheduler from one ``--scheduler`` string."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from geoembed.errors import GeoembedError, require

__all__ = ["dask_client", "describe_scheduler"]

log = logging.getLogger(__name__)


def describe_scheduler(scheduler: str) -> str:
    """Human-readable description of a ``--scheduler`` value."""
    if scheduler in ("threads", "sync", "synchronous"):
        return f"in-process {scheduler} scheduler"
    if scheduler == "local":
        return "LocalCluster (worker processes on 127.0.0.1)"
    if scheduler.startswith("kubernetes"):
        return "Dask cluster on Kubernetes (dask-kubernetes operator)"
    return f"existing scheduler at {scheduler}"


@contextlib.contextmanager
def dask_client(
    scheduler: str = "local",
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | None = "auto",
    quiet: bool = True,
    timeout: str = "20s",
) -> Iterator[Any]:
    """Open a Dask client for a job and close it (and any cluster it started) afterwards.

    Parameters
    ----------
    scheduler : str
        ``"local"`` starts a ``LocalCluster`` with worker processes on 127.0.0.1;
        ``"threads"`` or ``"sync"`` use Dask's in-process schedulers (no client);
        ``"tcp://host:8786"`` (or ``tls://``) connects to a running scheduler;
        ``"kubernetes"`` or ``"kubernetes:spec.yaml"`` creates a cluster with
        dask-kubernetes' ``KubeCluster`` from a DaskCluster spec (see ``k8s/``).
    workers : int, optional
        Number of workers to start (local and Kubernetes). Default: one per core.
    threads_per_worker : int, default 1
        Threads per local worker process.
    memory_limit : str, optional
        Memory limit per local worker (``"auto"`` shares the machine's memory).
    quiet : bool, default True
        Silence distributed's INFO logging.
    timeout : str, default "20s"
        How long to try to reach an existing scheduler.

    Yields
    ------
    distributed.Client or None
        ``None`` for the in-process schedulers.
    """
    import dask

    if scheduler in ("threads", "sync", "synchronous"):
        name = "threads" if scheduler == "threads" else "synchronous"
        with dask.config.set(scheduler=name):
            yield None
        return

    from distributed import Client, LocalCluster

    if quiet:
        logging.getLogger("distributed").setLevel(logging.WARNING)

    if scheduler == "local":
        n = workers or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # a free port: never clash with a running cluster
            memory_limit=memory_limit,
        )
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return

    if scheduler.startswith("kubernetes"):
        spec = scheduler.partition(":")[2] or None
        kc = require(
            "dask_kubernetes.operator",
            extra="k8s",
            feature="--scheduler kubernetes",
            package="dask-kubernetes",
        )
        if spec:
            import yaml

            with open(spec) as fh:
                custom = yaml.safe_load(fh)
            cluster = kc.KubeCluster(custom_cluster_spec=custom)
        else:
            cluster = kc.KubeCluster(name="geoembed", n_workers=workers or 2)
        try:
            if workers:
                cluster.scale(workers)
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return

    if "://" in scheduler or ":" in scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except OSError as exc:
            raise GeoembedError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({exc}). Check the address, "
                "or use --scheduler local to start workers on this machine."
            ) from exc
        try:
            yield client
        finally:
            client.close()
        return

    raise GeoembedError(
        f"unknown --scheduler {scheduler!r}; use local, threads, sync, tcp://HOST:PORT or "
        "kubernetes[:spec.yaml]."
    )
