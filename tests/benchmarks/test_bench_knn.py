"""kNN classification: geoembed vs the notebook pattern, dask-ml ParallelPostFit, raw faiss.

Data (clearly synthetic): a lazily generated 64-band float32 field whose pixels are
drawn from a pool of 65 536 unit vectors around 40 cluster centres (cheap to generate,
so the benchmark measures classification, not random-number generation). Labels: n_train
vectors from the same clusters, 9 classes. k = 5, cosine, uniform weights.

Variants, each in its own subprocess (so peak RSS figures do not pollute each other):

* ``geoembed``: ``predict_field`` on a LocalCluster (W single-threaded worker processes),
  the class map reduced to per-block class counts (nothing written), end to end on the
  whole field (field generation + graph + kNN + reduction).
* ``notebook``: ``field.values.reshape`` then ``KNeighborsClassifier(algorithm="brute")
  .predict`` in one process (BLAS limited to one thread), on a sub-field.
* ``ppf``: ``dask_ml.wrappers.ParallelPostFit(KNeighborsClassifier)`` on the same lazily
  generated Dask array (reshaped to (pixels, 64)), same LocalCluster, on a sub-field.
* ``faiss``: raw faiss ``IndexFlatIP`` search (one thread) on one in-memory 512 x 512
  block of normalised vectors (search only, no vote: the strictest baseline); the same
  block through geoembed's kernel (``KNNClassifier.pixel_outputs``) for reference.

Reported: pixels/s per core two ways: wall time x cores, and pixels per CPU-second of the
processes doing the work (worker processes for the Dask variants; robust when other jobs
share the machine), the ratios geoembed / variant, and the peak RSS of each subprocess
tree. A second table gives the peak RSS of geoembed at two field sizes with the same
512-px chunks: 1024^2 vs 3072^2 (1e6 vs 9.4e6 px) by default, 1024^2 vs 10240^2 (1.05e8
px) with ``GEOEMBED_BENCH_SCALE=full``, 1024^2 vs 2048^2 with ``small``.

Sizes: the field is 3200 x 3200 (1.02e7 px) in 512-px chunks; slow baselines run on a
sub-field sized to take tens of seconds. ``GEOEMBED_BENCH_SCALE=small``: 1024 x 1024 and
smaller sub-fields (a quick check). Workers: ``GEOEMBED_BENCH_WORKERS`` (default 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import _results
import numpy as np
import pytest
from _clusters import local_cluster

pytestmark = [pytest.mark.bench, pytest.mark.timeout(7200)]

SCALE = os.environ.get("GEOEMBED_BENCH_SCALE", "").lower()
SMALL = SCALE == "small"
FULL = SCALE == "full"
SIDE = 1024 if SMALL else 3200
CHUNK = 512
WORKERS = int(os.environ.get("GEOEMBED_BENCH_WORKERS", "2"))
N_TRAIN = (300, 3000, 30000)
K = 5
#: pixels of the sub-field for the slow baselines, per n_train (about 10-60 s each)
BASELINE_PIXELS = {300: 2_000_000, 3000: 400_000, 30000: 50_000}
if SMALL:
    BASELINE_PIXELS = {300: 300_000, 3000: 100_000, 30000: 16_000}
REPEATS = _results.REPEATS
MEMORY_SIDES = (1024, 2048) if SMALL else ((1024, 10240) if FULL else (1024, 3072))


# ---------------------------------------------------------------- synthetic data
def _pool(seed: int = 0, n: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, 64))
    lab = rng.integers(0, 40, n)
    v = centres[lab] + 0.8 * rng.normal(size=(n, 64))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v.T.astype(np.float32)), lab


def _tile(seed: int) -> np.ndarray:
    """One (64, CHUNK, CHUNK) tile of pool vectors in a hashed order (made on a worker)."""
    pool, _ = _pool(seed)
    yy = np.arange(CHUNK, dtype=np.uint64)[:, None]
    xx = np.arange(CHUNK, dtype=np.uint64)[None, :]
    h = (yy * np.uint64(2654435761) + xx * np.uint64(40503)) % np.uint64(pool.shape[1])
    return np.ascontiguousarray(pool[:, h.astype(np.int64)])


def _gen_block(tile: np.ndarray, block_info: Any = None) -> np.ndarray:
    """A fresh block: the tile shifted along x by an offset that depends on the block
    position (one copy, about what handing over a decoded chunk costs)."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
    h, w = y1 - y0, x1 - x0
    s = int((y0 // CHUNK * 7919 + x0 // CHUNK * 104729) % CHUNK)
    out = np.empty((tile.shape[0], h, w), np.float32)
    right = min(w, CHUNK - s)
    out[:, :, :right] = tile[:, :h, s : s + right]
    if right < w:
        out[:, :, right:] = tile[:, :h, : w - right]
    return out


def synthetic_field(height: int, width: int, chunk: int = CHUNK) -> Any:
    """Lazily generated canonical field (nothing is held in memory)."""
    import dask
    import dask.array as dsa
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    ychunks = tuple(min(chunk, height - i) for i in range(0, height, chunk))
    xchunks = tuple(min(chunk, width - i) for i in range(0, width, chunk))
    data = dsa.map_blocks(
        _gen_block,
        dask.delayed(_tile, pure=True)(0),
        chunks=((64,), ychunks, xchunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        name="synthetic-field",
    )
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(64)],
            "y": 5_000_000.0 - 10.0 * (np.arange(height) + 0.5),
            "x": 400_000.0 + 10.0 * (np.arange(width) + 0.5),
        },
        name="embedding",
    )
    return da.rio.write_crs("EPSG:32633")


def training(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    pool, lab = _pool()
    rng = np.random.default_rng(seed)
    rows = rng.choice(pool.shape[1], n, replace=False)
    X = pool[:, rows].T + 0.05 * rng.normal(size=(n, 64)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), (lab[rows] % 9).astype(np.int64)


def _sub_shape(pixels: int) -> tuple[int, int]:
    width = min(SIDE, CHUNK * 2)
    return max(1, min(SIDE, pixels // width)), width


# ---------------------------------------------------------------- measurement
class _PeakRSS:
    """Peak resident memory of this process and all its descendants (sampled)."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.05)

    def __enter__(self) -> _PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self._sample()


def _warm_up() -> None:
    """Import what the tasks need, so that timings exclude worker start-up."""
    import dask_ml.wrappers  # noqa: F401
    import sklearn.neighbors  # noqa: F401

    import geoembed.classify  # noqa: F401


def _worker_cpu(client: Any) -> float:
    return sum(client.run(lambda: time.process_time()).values())


def _count_blocks(b: np.ndarray) -> np.ndarray:
    return np.bincount(b.ravel().astype(np.int64), minlength=256)[None, None, :]


def run_variant(variant: str, n_train: int, pixels: int) -> dict[str, Any]:
    """Run one variant in this process; returns timings and peak RSS."""
    from threadpoolctl import threadpool_limits

    X, y = training(n_train)
    out: dict[str, Any] = {"variant": variant, "n_train": n_train}
    if variant in ("geoembed", "memory"):
        from geoembed.classify import KNNClassifier, predict_field

        side = round(np.sqrt(pixels)) if variant == "memory" else SIDE
        h, w = (side, side)
        cluster, client = local_cluster(WORKERS, _warm_up)
        with _PeakRSS() as rss:
            cpu0 = _worker_cpu(client)
            t0 = time.perf_counter()
            field = synthetic_field(h, w)
            model = KNNClassifier(K).fit(X, y)
            cls = predict_field(model, field)["classes"].data
            counts = cls.map_blocks(_count_blocks, new_axis=2, chunks=(1, 1, 256), dtype=np.int64)
            total = counts.sum(axis=(0, 1)).compute()
            wall = time.perf_counter() - t0
            cpu = _worker_cpu(client) - cpu0
        client.close()
        cluster.close()
        assert total.sum() == h * w
        out.update(pixels=h * w, wall=wall, cores=WORKERS, cpu=cpu, peak_rss=rss.peak)
    elif variant == "notebook":
        from sklearn.neighbors import KNeighborsClassifier

        h, w = _sub_shape(pixels)
        with _PeakRSS() as rss, threadpool_limits(1):
            t0 = time.perf_counter()
            c0 = time.process_time()
            field = synthetic_field(h, w)
            arr = field.values.transpose(1, 2, 0).reshape(-1, 64)
            clf = KNeighborsClassifier(K, metric="cosine", algorithm="brute").fit(X, y)
            pred = clf.predict(arr).reshape(h, w)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
        out.update(
            pixels=h * w, wall=wall, cores=1, cpu=cpu, peak_rss=rss.peak, check=int(pred.sum())
        )
    elif variant == "ppf":
        from dask_ml.wrappers import ParallelPostFit
        from sklearn.neighbors import KNeighborsClassifier

        h, w = _sub_shape(pixels)
        cluster, client = local_cluster(WORKERS, _warm_up)
        with _PeakRSS() as rss:
            cpu0 = _worker_cpu(client)
            t0 = time.perf_counter()
            field = synthetic_field(h, w)
            arr = field.data.transpose(1, 2, 0).reshape(-1, 64)
            clf = ParallelPostFit(KNeighborsClassifier(K, metric="cosine", algorithm="brute"))
            clf.fit(X, y)
            pred = clf.predict(arr)
            counts = pred.map_blocks(
                lambda b: np.bincount(b, minlength=16)[None, :],
                new_axis=1,
                chunks=(1, 16),
                dtype=np.int64,
            )
            total = counts.sum(axis=0).compute()
            wall = time.perf_counter() - t0
            cpu = _worker_cpu(client) - cpu0
        client.close()
        cluster.close()
        out.update(
            pixels=h * w,
            wall=wall,
            cores=WORKERS,
            cpu=cpu,
            peak_rss=rss.peak,
            check=int(total.sum()),
        )
    elif variant == "faiss":
        import faiss

        from geoembed.classify import KNNClassifier

        faiss.omp_set_num_threads(1)
        block = synthetic_field(CHUNK, CHUNK).values.reshape(64, -1).T.copy()
        with threadpool_limits(1):
            Q = block / np.linalg.norm(block, axis=1, keepdims=True)
            Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
            index = faiss.IndexFlatIP(64)
            index.add(Xn)
            reps = max(1, int(3e5 // (len(Q) * max(1, n_train // 3000))))
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                index.search(Q, K)
            t_faiss = (time.perf_counter() - t0) / reps
            c_faiss = (time.process_time() - c0) / reps
            model = KNNClassifier(K).fit(X, y)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                model.pixel_outputs(block)
            t_kernel = (time.perf_counter() - t0) / reps
            c_kernel = (time.process_time() - c0) / reps
        out.update(
            pixels=len(Q),
            wall=t_faiss,
            cpu=c_faiss,
            cores=1,
            kernel_wall=t_kernel,
            kernel_cpu=c_kernel,
        )
    else:
        raise ValueError(variant)
    return out


def _spawn(variant: str, n_train: int, pixels: int) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, __file__, variant, str(n_train), str(pixels)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{variant} n={n_train} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _rate(r: dict[str, Any]) -> float:
    return r["pixels"] / (r["wall"] * r["cores"])


def _cpu_rate(r: dict[str, Any]) -> float:
    return r["pixels"] / r["cpu"]


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall rate (its other fields kept), plus all the rates."""
    order = sorted(runs, key=_rate)
    med = dict(order[len(order) // 2])
    med["rates"] = [_rate(r) for r in runs]
    med["cpu_rates"] = [_cpu_rate(r) for r in runs]
    return med


@pytest.mark.parametrize("n_train", N_TRAIN)
def test_bench_knn(n_train: int) -> None:
    t0 = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in ("geo", "nb", "ppf", "fa")}
    for _ in range(REPEATS):  # interleaved, so that every variant sees the same load
        runs["geo"].append(_spawn("geoembed", n_train, SIDE * SIDE))
        runs["nb"].append(_spawn("notebook", n_train, BASELINE_PIXELS[n_train]))
        runs["ppf"].append(_spawn("ppf", n_train, BASELINE_PIXELS[n_train]))
        runs["fa"].append(_spawn("faiss", n_train, CHUNK * CHUNK))
    geo, nb, ppf, fa = (_median_run(runs[v]) for v in ("geo", "nb", "ppf", "fa"))
    rows = [
        ("geoembed (end to end)", geo),
        ("notebook .values + sklearn", nb),
        ("dask-ml ParallelPostFit", ppf),
        ("raw faiss IndexFlatIP, 1 block", fa),
    ]
    g, gc = _rate(geo), _cpu_rate(geo)
    print(
        f"\n== kNN k={K} cosine, n_train={n_train}, {WORKERS} workers "
        f"(scale={SCALE or 'default'}, median of {REPEATS} runs) =="
    )
    print(
        f"{'variant':32s} {'pixels':>9s} {'wall s':>7s} {'kpx/s/core':>10s} {'ratio':>6s} "
        f"{'CPU kpx/s':>9s} {'ratio':>6s} {'peak RSS MiB':>12s}"
    )
    for name, r in rows:
        rss = f"{r['peak_rss'] / 2**20:12.0f}" if "peak_rss" in r else f"{'-':>12s}"
        w, c = _rate(r), _cpu_rate(r)
        print(
            f"{name:32s} {r['pixels']:9d} {r['wall']:7.2f} {w / 1e3:10.1f} {g / w:6.2f} "
            f"{c / 1e3:9.1f} {gc / c:6.2f} {rss}"
        )
        if r is not geo:
            summary = None
            if r is fa and n_train in (300, 3000):
                summary = f"knn{n_train}_vs_faiss"
            for kind, key in (("wall", "rates"), ("CPU", "cpu_rates")):
                _results.record(
                    "knn",
                    f"n={n_train} end to end vs {name} ({kind}, per core)",
                    value=geo[key],
                    baseline=r[key],
                    unit="px/s/core",
                    higher_is_better=True,
                    summary=summary if kind == "wall" else None,
                )
    print(
        f"(ratio = geoembed / variant, per core; CPU = pixels per CPU-second of the worker "
        f"processes, robust to other load.) geoembed kernel alone on the faiss block: "
        f"x{fa['cpu'] / fa['kernel_cpu']:.2f} faiss by CPU time"
    )
    print(
        f"targets: >= 0.8 x raw faiss per core: {g / _rate(fa):.2f} (wall), "
        f"{gc / _cpu_rate(fa):.2f} (CPU); >= 2 x ParallelPostFit: {g / _rate(ppf):.2f} "
        f"(wall), {gc / _cpu_rate(ppf):.2f} (CPU)  [{time.perf_counter() - t0:.0f} s]"
    )
    assert geo["pixels"] >= (1e6 if SMALL else 1e7)


def _cpu_times(fns: dict[str, Any], n: int) -> dict[str, list[float]]:
    """CPU seconds of ``n`` interleaved rounds of every function (one thread)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for name, fn in fns.items():
            c0 = time.process_time()
            fn()
            out[name].append(time.process_time() - c0)
    return out


@pytest.mark.parametrize("n_train", N_TRAIN[:2])
def test_bench_knn_block(n_train: int) -> None:
    """Where a block's time goes: kernel alone, block function, vs raw faiss (one core)."""
    import faiss
    from threadpoolctl import threadpool_limits

    from geoembed._blockwise import _apply_block, _apply_block_bands
    from geoembed._exact import unit_rows
    from geoembed.classify import KNNClassifier

    X, y = training(n_train)
    block = synthetic_field(CHUNK, CHUNK).values
    flat = block.reshape(64, -1)
    model = KNNClassifier(K).fit(X, y)
    f32 = np.dtype(np.float32)
    faiss.omp_set_num_threads(1)
    with threadpool_limits(1):
        Q = unit_rows(np.ascontiguousarray(flat.T))
        index = faiss.IndexFlatIP(64)
        index.add(unit_rows(X))

        def row_major() -> np.ndarray:  # the previous path: transposing copy + rows
            return _apply_block(
                block, pixel_func=model.pixel_outputs, n_out=2, fill=np.nan, out_dtype=f32
            )

        def band_major() -> np.ndarray:
            return _apply_block_bands(
                block, pixel_func=model.block_outputs, n_out=2, fill=np.nan, out_dtype=f32
            )

        assert np.array_equal(row_major(), band_major(), equal_nan=True)
        fns = {
            "raw faiss IndexFlatIP search": lambda: index.search(Q, K),
            "kernel alone (search_bands)": lambda: model.index.search_bands(flat, K),
            "block function (band-major)": band_major,
            "block function (row-major, before)": row_major,
        }
        times = _cpu_times(fns, max(REPEATS, 5))
    base = times["raw faiss IndexFlatIP search"]
    print(f"\n== kNN one {CHUNK}x{CHUNK} block, n_train={n_train}, CPU s, 1 thread ==")
    print(f"{'':36s} {'median':>8s} {'min':>8s} {'max':>8s} {'vs faiss':>9s}")
    for name, t in times.items():
        r = _results.record("knn-block", f"n={n_train} {name} vs faiss", value=t, baseline=base)
        print(
            f"{name:36s} {r['value']['median']:8.3f} {min(t):8.3f} {max(t):8.3f} {r['ratio']:8.2f}x"
        )
    r = _results.record(
        "knn-block",
        f"n={n_train} band-major vs row-major block function",
        value=times["block function (band-major)"],
        baseline=times["block function (row-major, before)"],
    )
    print(f"band-major block function is {r['ratio']:.2f} x the row-major one (speed)")


@pytest.mark.parametrize("n_train", N_TRAIN[:1])
def test_bench_knn_aef_codes(n_train: int) -> None:
    """kNN on an AEF int8 field: codes decoded inside the kNN tasks vs decoded first.

    The same int8 codes (the synthetic field quantised as AEF) in memory, one thread
    (synchronous scheduler, CPU time). ``decoded first``: the float32 field is a Dask
    array of its own (the previous behaviour); ``codes in the kernel``: the kNN tasks
    receive int8 blocks and decode one query tile at a time. Identical maps (asserted).
    """
    import dask
    import dask.array as dsa

    from geoembed.classify import KNNClassifier, predict_field
    from geoembed.io.aef import dequantize_aef

    side = 1024 if SMALL else 2048
    vf = synthetic_field(side, side)
    v = vf.data
    q = dsa.clip(dsa.rint(dsa.sign(v) * dsa.sqrt(abs(v)) * 127.5), -127, 127).astype(np.int8)
    codes = vf.copy(data=q.persist(scheduler="threads"))
    fused = dequantize_aef(codes).rio.write_crs("EPSG:32633")
    first = fused.copy(data=fused.data.map_blocks(np.copy))  # a float32 field in the graph
    X, y = training(n_train)
    model = KNNClassifier(K).fit(X, y)

    def run(field: Any) -> np.ndarray:
        return predict_field(model, field)["classes"].values

    with dask.config.set(scheduler="synchronous"):
        assert np.array_equal(run(fused), run(first))
        times = _cpu_times({"fused": lambda: run(fused), "first": lambda: run(first)}, REPEATS)
    r = _results.record(
        "knn-aef",
        f"n={n_train} {side}^2 AEF int8 field: decode in the kNN kernel vs decoded first",
        value=times["fused"],
        baseline=times["first"],
    )
    print(
        f"\n== kNN on an AEF int8 field {side}x{side}, n_train={n_train}, 1 thread, CPU s ==\n"
        f"decoded first {r['baseline']['median']:.2f}  codes in the kernel "
        f"{r['value']['median']:.2f}  speed ratio {r['ratio']:.2f} x; Dask holds int8 blocks "
        f"(1 B/value) instead of float32 (4 B/value)"
    )


def test_bench_knn_memory() -> None:
    small, large = (side * side for side in MEMORY_SIDES)
    a = _spawn("memory", 300, small)
    b = _spawn("memory", 300, large)
    growth = b["peak_rss"] / a["peak_rss"] - 1
    print(f"\n== geoembed peak RSS (process tree, {WORKERS} workers, n_train=300) ==")
    for r in (a, b):
        print(f"{r['pixels']:>12,d} px  {r['peak_rss'] / 2**20:8.0f} MiB  {r['wall']:7.1f} s")
    print(
        f"growth {a['pixels']:.0e} -> {b['pixels']:.0e} px: {growth * 100:+.1f} % (target < 20 %)"
    )
    _results.record(
        "memory",
        f"kNN peak RSS growth {a['pixels']:.0e} -> {b['pixels']:.0e} px",
        value=[100 * growth],
        unit="%",
        summary="rss_growth",
        note="1 run per size (process-tree peak RSS)",
    )


if __name__ == "__main__":
    result = run_variant(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(result))
