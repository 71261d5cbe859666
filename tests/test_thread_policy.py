"""One thread policy per worker: T task threads never run more than T compute threads.

The OS threads of a real worker process (LocalCluster, one worker with 3 threads) are
sampled from /proc while a kNN, a KMeans and an ONNX job run. Compute threads are the
worker's task threads plus the native threads (not Python threads) that libraries start
for their pools; the native ones are compared with the same process when idle but warmed
up (libraries imported, so helper threads started at import are in the idle count).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from geoembed import _threads
from geoembed.classify import KNNClassifier
from geoembed.classify.field import predict_field
from geoembed.cluster import KMeans
from geoembed.runtime import dask_client
from geoembed.testing import make_field

THREADS = 3

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")


def _busy(seconds: float) -> np.ndarray:
    import faiss  # noqa: F401

    import geoembed.classify  # noqa: F401

    time.sleep(seconds)
    return np.zeros(2_000_000, dtype=np.float32)  # big enough to use Dask's offload path


def _native_threads(previous: set[int]) -> tuple[set[int], int, int]:
    """OS threads of this process that are not Python threads, and the thread counts.

    A thread counts as native only when it was native in the previous sample too, so a
    Python thread caught between its start and its registration is not mistaken for one.
    """
    tids = {int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")}
    python = {t.native_id for t in threading.enumerate()}
    native = tids - python
    return native, len(native & previous), len(tids)


def _start_sampling(dask_worker: Any) -> None:
    """In the worker: sample its native threads every 2 ms until stopped."""
    stop = threading.Event()
    peaks = {"native": 0, "executor": 0}

    def run() -> None:
        previous: set[int] = set()
        while not stop.is_set():
            previous, native, _ = _native_threads(previous)
            executor = sum(
                t.name.startswith(dask_worker.executors["default"]._thread_name_prefix)
                for t in threading.enumerate()
            )
            peaks["native"] = max(peaks["native"], native)
            peaks["executor"] = max(peaks["executor"], executor)
            time.sleep(0.002)

    thread = threading.Thread(target=run, daemon=True, name="geoembed-test-sampler")
    dask_worker._geoembed_sampler = (stop, thread, peaks)
    thread.start()


def _stop_sampling(dask_worker: Any) -> dict[str, int]:
    stop, thread, peaks = dask_worker._geoembed_sampler
    stop.set()
    thread.join(5)
    return dict(peaks)


def _import_onnxruntime(dask_worker: Any) -> None:
    # onnxruntime starts a helper thread on import (not a compute thread): import it
    # before the idle count of the ONNX job
    import onnxruntime  # noqa: F401

    time.sleep(0.2)


def _idle_native(dask_worker: Any) -> int:
    previous, _, _ = _native_threads(set())
    time.sleep(0.01)
    return _native_threads(previous)[1]


@pytest.fixture(scope="module")
def worker() -> Iterator[tuple[Any, int]]:
    with dask_client("local", workers=1, threads_per_worker=THREADS) as client:
        (pid,) = client.run(os.getpid).values()
        # warm up: every task thread started, results moved between threads and processes
        futures = [client.submit(_busy, 0.3, pure=False) for _ in range(3 * THREADS)]
        client.gather(futures)
        del futures
        time.sleep(0.5)
        yield client, pid


def _measure(client: Any, job: Callable[[], Any]) -> dict[str, int]:
    (idle,) = client.run(_idle_native).values()
    client.run(_start_sampling)
    try:
        job()
    finally:
        (peaks,) = client.run(_stop_sampling).values()
    return {"idle_native": idle, **peaks}


def test_the_policy_is_active_on_workers(worker):
    client, _ = worker
    state = client.run(
        lambda: (
            _threads.pinned_threads(),
            os.environ.get("GDAL_NUM_THREADS"),
            _threads.gdal_threads(),
        )
    )
    assert list(state.values()) == [(1, "1", "1")]
    from geoembed.infer.session import default_threads

    assert client.submit(default_threads, pure=False).result() == 1


def test_knn_kmeans_and_onnx_jobs_stay_within_worker_threads(worker, tmp_path):
    client, _ = worker
    field = make_field(192, 256, bands=8, chunks=32, n_classes=4, seed=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 8)).astype(np.float32)
    knn = KNNClassifier(n_neighbors=7).fit(x, rng.integers(0, 4, 4000))

    from geoembed.infer import predict
    from geoembed.infer.models import conv_stack

    model = conv_stack(tmp_path / "conv.onnx", bands=8, width=32, depth=3, seed=3)
    jobs = {
        "knn": lambda: predict_field(knn, field, probabilities=True).compute(),
        "kmeans": lambda: KMeans(6, random_state=0, sample_size=2000, max_iter=5).fit(field),
    }
    counts = {name: _measure(client, job) for name, job in jobs.items()}
    client.run(_import_onnxruntime)
    counts["onnx"] = _measure(client, lambda: predict(field, model, tile=64, overlap=3).compute())
    for name, c in counts.items():
        # compute threads = the T task threads + threads started by native libraries
        # (BLAS, OpenMP/faiss, ONNX Runtime, GDAL pools): those must stay at their idle count
        assert c["executor"] <= THREADS, f"{name}: {counts}"
        extra = c["native"] - c["idle_native"]
        assert c["executor"] + max(extra, 0) <= THREADS, f"{name}: {counts}"
        assert extra <= 0, f"{name} started {extra} native compute threads: {counts}"


def test_threaded_scheduler_keeps_the_per_task_guard():
    from threadpoolctl import threadpool_info

    def blas_limits() -> list[int]:
        return [int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_limits()
    with dask_client("threads") as client:
        assert client is None and _threads.pinned_threads() is None
        with _threads.single_thread_blas():
            inside = blas_limits()
    assert all(n == 1 for n in inside)
    assert blas_limits() == before  # restored when the last task left


def test_pin_process_sets_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("GDAL_NUM_THREADS", "4")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _threads.pin_process()
    try:
        assert os.environ["GDAL_NUM_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
        assert _threads.gdal_threads() == "1" and _threads.pinned_threads() == 1
    finally:
        _threads.unpin_process()
    assert os.environ["GDAL_NUM_THREADS"] == "4" and "OMP_NUM_THREADS" not in os.environ
    assert _threads.pinned_threads() is None


def test_an_in_process_cluster_leaves_the_users_process_alone():
    """processes=False: the worker shares the user's process, which is not pinned."""
    from distributed import Client, LocalCluster

    from geoembed.runtime.threads import register_thread_policy

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        register_thread_policy(client)
        assert client.run(lambda: _threads.pinned_threads()) == {
            w: None for w in client.scheduler_info()["workers"]
        }
        assert _threads.pinned_threads() is None
    assert _threads.pinned_threads() is None
