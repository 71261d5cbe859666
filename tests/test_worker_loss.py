"""A worker process killed mid-job: Dask re-runs its tasks and the output bytes are the same."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import numpy as np
import pytest

from geoembed.classify import KNNClassifier, predict_field
from geoembed.cluster import KMeans
from geoembed.datasets import synthetic_scene


def _job(field: Any) -> dict[str, bytes]:
    """KMeans fit (several full passes) and a kNN map over the same field."""
    km = KMeans(n_clusters=6, random_state=0, max_iter=8).fit(field)
    data = field[:, ::37, ::41].values.reshape(field.sizes["band"], -1).T
    keep = ~np.isnan(data).any(axis=1)
    X = data[keep]
    y = np.arange(len(X)) % 4
    knn = predict_field(KNNClassifier(3).fit(X, y, allow_small_classes=True), field)
    return {
        "centers": km.cluster_centers_.tobytes(),
        "clusters": km.predict(field).values.tobytes(),
        "knn": knn["classes"].values.tobytes() + knn["confidence"].values.tobytes(),
    }


@pytest.mark.timeout(240)
def test_sigkill_of_a_worker_mid_job_gives_identical_bytes() -> None:
    from distributed import Client, LocalCluster

    field = synthetic_scene(320, 320, seed=3, chunks=40).field
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="2GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        reference = _job(field)
        pids = list(client.run(os.getpid).values())
        killed: list[int] = []

        def kill() -> None:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        timer = threading.Timer(1.0, kill)
        timer.start()
        try:
            again = _job(field)
        finally:
            timer.cancel()
        assert killed, "the worker was not killed while the job ran"
        assert set(client.run(os.getpid).values()) != set(pids)  # the nanny restarted it
    for key, value in reference.items():
        assert again[key] == value, f"{key} differs after a worker was killed"
