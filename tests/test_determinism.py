"""The determinism contract: same inputs -> same bytes, whatever else is going on.

Each test varies one thing a user does not control — the CPU's BLAS/SIMD kernels, the
chunking, the query batch, the scheduler, other work in the same graph — and asserts
byte-identical outputs. See "Determinism" in README.md for the list of guarantees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from geoembed.classify import KNNClassifier, apply_estimator, predict_field
from geoembed.cluster import KMeans
from geoembed.testing import make_field

# -- the same bytes on an older CPU ---------------------------------------------------------

_KERNELS = textwrap.dedent(
    """
    import hashlib, json
    import numpy as np
    from geoembed.classify import KNNClassifier
    from geoembed.cluster import KMeans
    from geoembed.testing import make_field

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 64)).astype(np.float32)
    X[1000:1040] = X[:40]  # duplicates: boundary ties
    y = rng.integers(0, 6, len(X))
    Q = np.concatenate([X[:200], rng.normal(size=(1500, 64)).astype(np.float32)])
    out = {}
    for metric in ("cosine", "euclidean"):
        m = KNNClassifier(5, metric=metric, weights="distance").fit(X, y)
        d, i = m.kneighbors(Q)
        p = m.pixel_outputs(Q, probabilities=True)
        out["knn-" + metric] = hashlib.sha256(d.tobytes() + i.tobytes() + p.tobytes()).hexdigest()
    field = make_field(40, 48, chunks=16, seed=5)
    for metric in ("cosine", "euclidean"):
        km = KMeans(n_clusters=6, metric=metric, random_state=0).fit(field)
        parts = [km.cluster_centers_, km.predict(field).values, km.distance(field).values,
                 km.transform(field).values, km.predict(Q), km.transform(Q)]
        out["kmeans-" + metric] = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes()
                                                          for a in parts)).hexdigest()
    print(json.dumps(out))
    """
)


def _blas_arch() -> str:
    from threadpoolctl import threadpool_info

    archs = [i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"]
    return str(archs[0]) if archs else ""


def _run_kernels(env_extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _KERNELS], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_kernels_give_the_same_bytes_on_an_older_cpu() -> None:
    """Re-run every kernel with NumPy's SIMD dispatch and OpenBLAS forced to older CPUs.

    An AVX-512 machine is made to run OpenBLAS's AVX2 (Haswell) kernel and NumPy's
    baseline loops — the machine on which the float outputs used to differ — and an
    AVX2 machine the Sandy Bridge kernel.
    """
    from numpy._core import _multiarray_umath as mu

    here = _run_kernels({})
    older = "Haswell" if _blas_arch().lower() != "haswell" else "Sandybridge"
    dispatch = [f for f, on in mu.__cpu_features__.items() if on and f in mu.__cpu_dispatch__]
    env = {"OPENBLAS_CORETYPE": older, "NPY_DISABLE_CPU_FEATURES": " ".join(dispatch)}
    there = _run_kernels(env)
    assert there == here


# -- two models in one graph ----------------------------------------------------------------


@pytest.fixture(scope="module")
def field() -> xr.DataArray:
    return make_field(45, 61, chunks=(16, 23), n_classes=4, seed=11)


def _training(field: xr.DataArray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    data = field.values
    rng = np.random.default_rng(seed)
    ys = rng.integers(6, data.shape[1], 80)
    xs = rng.integers(0, data.shape[2], 80)
    X = data[:, ys, xs].T + 0.05 * rng.normal(size=(80, data.shape[0])).astype(np.float32)
    return X.astype(np.float32), ((xs * 4) // data.shape[2]).astype(np.int64)


@pytest.fixture(autouse=True)
def _quiet_mlp() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _predictions(field: xr.DataArray) -> dict[str, Any]:
    """Lazy outputs of two models of each kind, all on the same field."""
    X, y = _training(field)
    out: dict[str, Any] = {}
    for k in (3, 7):
        ds = predict_field(
            KNNClassifier(k, weights="distance").fit(X, y), field, probabilities=True
        )
        for var in ds.data_vars:
            out[f"knn{k}-{var}"] = ds[var]
    for n in (3, 5):
        km = KMeans(n_clusters=n, random_state=0).fit(field)
        out[f"kmeans{n}"] = km.predict(field)
        out[f"kmeans{n}-distance"] = km.distance(field)
    for seed in (0, 1):  # hidden-layer GEMMs round by batch shape on AVX2 kernels
        est = MLPClassifier((48,), max_iter=60, random_state=seed).fit(X, y)
        out[f"mlp{seed}"] = apply_estimator(field, est, output="proba")
    return out


def _bytes(arrays: dict[str, Any]) -> dict[str, bytes]:
    return {k: np.ascontiguousarray(np.asarray(v)).tobytes() for k, v in arrays.items()}


def _together_and_alone(field: xr.DataArray) -> None:
    lazy = _predictions(field)
    keys = list(lazy)
    together = dict(zip(keys, dask.compute(*[lazy[k] for k in keys])))
    alone = {k: lazy[k].compute() for k in keys}
    got, want = _bytes(together), _bytes(alone)
    for k in keys:
        assert got[k] == want[k], f"{k} differs when computed with the other models"
    # and the models really differ (a collision would make them equal)
    assert got["kmeans3"] != got["kmeans5"]
    assert got["knn3-confidence"] != got["knn7-confidence"]
    assert got["mlp0"] != got["mlp1"]


def test_two_models_in_one_graph_equal_their_solo_runs(field) -> None:
    with dask.config.set(scheduler="threads"):
        _together_and_alone(field)


def test_two_models_in_one_graph_on_worker_processes(field, dask_client) -> None:
    _together_and_alone(field)


def test_same_bytes_on_threads_processes_and_any_chunking(field, dask_client) -> None:
    """Every predictor gives the same bytes at any chunking on worker processes; geoembed's
    own predictors also on the threaded scheduler.

    scikit-learn estimators get fixed tiles of a global grid (same batch shape, same
    position per pixel), which is what makes them chunking-invariant; how many threads
    their BLAS uses is theirs (Dask's worker processes pin it to one).
    """
    on_workers = _bytes(_predictions(field))
    for chunks in ({"y": 7, "x": 9}, {"y": -1, "x": -1}):
        rechunked = _bytes(_predictions(field.chunk(chunks)))
        for k, v in on_workers.items():
            assert rechunked[k] == v, f"{k} differs at chunks {chunks}"
    with dask.config.set(scheduler="threads"):
        for chunks in ({"y": 7, "x": 9}, {"y": -1, "x": -1}):
            threaded = _bytes(_predictions(field.chunk(chunks)))
            for k, v in on_workers.items():
                if not k.startswith("mlp"):
                    assert threaded[k] == v, f"{k} differs on threads at chunks {chunks}"


def test_repeated_kmeans_fits_on_a_local_cluster_are_identical(dask_client) -> None:
    field = make_field(64, 80, chunks=16, n_classes=6, seed=2)
    fits = [KMeans(n_clusters=8, random_state=0).fit(field) for _ in range(3)]
    labels = [m.predict(field).values.tobytes() for m in fits]
    for m, lab in zip(fits[1:], labels[1:]):
        assert m.cluster_centers_.tobytes() == fits[0].cluster_centers_.tobytes()
        assert m.n_iter_ == fits[0].n_iter_
        assert lab == labels[0]
    with dask.config.set(scheduler="threads"):
        alone = KMeans(n_clusters=8, random_state=0).fit(field.chunk({"y": 21, "x": 33}))
    assert alone.cluster_centers_.tobytes() == fits[0].cluster_centers_.tobytes()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_demo_on_a_local_cluster_prints_no_run_spec_warnings(tmp_path: Path, dask_client) -> None:
    from geoembed.jobs.demo import run_demo

    def run_spec_logs(dask_scheduler: Any) -> list[str]:
        return [m for _, m in dask_scheduler.get_logs() if "run_spec" in m]

    before = len(dask_client.run_on_scheduler(run_spec_logs))
    collect = _Collect()
    logger = logging.getLogger("distributed")
    logger.addHandler(collect)
    try:
        summary = run_demo(tmp_path / "demo", size=384, chunks=48, points_per_class=10)
    finally:
        logger.removeHandler(collect)
    assert summary["knn"]["overall_accuracy"] > 0.5
    bad = [m for m in collect.messages if "run_spec" in m]
    bad += dask_client.run_on_scheduler(run_spec_logs)[before:]
    assert not bad, bad[:3]


def test_hash_of_outputs_is_stable_across_fits(field) -> None:
    """Refitting from the same data and seed gives the same model token (task keys)."""
    from dask.base import tokenize

    X, y = _training(field)
    a = KNNClassifier(5).fit(X, y)
    b = KNNClassifier(5).fit(X[::-1].copy(), y[::-1].copy())
    assert tokenize(a) == tokenize(b)
    assert tokenize(a) != tokenize(KNNClassifier(7).fit(X, y))
    digest = hashlib.sha256(predict_field(a, field).to_array().values.tobytes()).hexdigest()
    again = hashlib.sha256(predict_field(b, field).to_array().values.tobytes()).hexdigest()
    assert digest == again


def test_no_task_key_names_two_different_computations(field) -> None:
    """Every graph of a KMeans fit (all Lloyd passes) and of two models' predictions:
    a key that appears twice always names the same task."""
    import dask.threaded
    from dask.base import tokenize

    seen: dict[Any, str] = {}
    clashes: list[Any] = []

    def recording_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        graph = dsk.__dask_graph__() if hasattr(dsk, "__dask_graph__") else dsk
        for key, task in dict(graph).items():
            token = tokenize(task)
            if seen.setdefault(key, token) != token:
                clashes.append(key)
        return dask.threaded.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=recording_get):
        fits = [KMeans(n_clusters=n, random_state=0, max_iter=6).fit(field) for n in (3, 5)]
        dask.compute(*[m.predict(field) for m in fits])
    assert not clashes, clashes[:3]


def _mixed() -> tuple[Any, ...]:
    import dask.array as dsa

    a = dask.delayed(lambda: "first", pure=True)()
    b = dsa.arange(3, chunks=2)
    c = dask.delayed(lambda: "last", pure=True)()
    x = xr.DataArray(dsa.zeros(2, chunks=1))
    return a, b, c, x


def _assert_in_order(got: Any) -> None:
    assert got[0] == "first" and got[2] == "last"
    assert np.asarray(got[1]).tolist() == [0, 1, 2]
    assert np.asarray(got[3]).tolist() == [0, 0]


def test_compute_keeps_argument_order_for_mixed_collections() -> None:
    """dask 2026.8 groups mixed collections by kind; geoembed.runtime.compute must not."""
    from geoembed.runtime import compute

    with dask.config.set(scheduler="threads"):
        _assert_in_order(compute(*_mixed()))


def test_compute_keeps_argument_order_on_a_client(dask_client) -> None:
    from geoembed.runtime import compute

    _assert_in_order(compute(*_mixed(), stall_timeout=0))
