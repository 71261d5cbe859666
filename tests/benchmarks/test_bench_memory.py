"""Memory at scale: peak RSS per process at 1e6 px vs a large field (KMeans, ONNX, COG, kNN).

Each workload runs in a fresh subprocess per field size, on a real ``LocalCluster`` of
``GEOEMBED_BENCH_WORKERS`` (default 2) single-threaded worker processes. A sampler
thread reads the resident set size (psutil) of the client process (which also hosts
the scheduler) and of every worker process every 0.1 s; the table gives the peak of
each, and the growth of the client's and of the largest worker's peak from the small to
the large field (target: < +20 %).

Fields (clearly synthetic, never materialised): the lazily generated 64-band float32
field of :mod:`test_bench_knn` (512-px chunks, a tile of pool vectors shifted per block)
for KMeans, ONNX inference and kNN; a lazily generated uint8 class map (512-px chunks,
hashed class ids) for the COG write.

Workloads
---------
* ``kmeans``: ``KMeans(10, metric="cosine", max_iter=3).fit(field)`` then
  ``predict(field)`` reduced to class counts (nothing gathered but the counts).
* ``infer``: :func:`geoembed.infer.predict` of a small real ONNX model
  (:func:`geoembed.infer.models.conv_stack`, 64 bands, two 3 x 3 layers of width 8,
  4 classes), tile 256, overlap 2, reduced to class counts.
* ``cog``: :func:`geoembed.export.write_cog` of the class map to a local file, read
  back and checked (size, a window's values).
* ``knn``: ``predict_field`` of a 300-label kNN model reduced to class counts (the same
  work as ``test_bench_knn.py::test_bench_knn_memory``, per process here).

Sizes: 1024^2 vs 3072^2 (1.05e6 vs 9.4e6 px) by default, 1024^2 vs 10240^2 (1.05e8 px)
with ``GEOEMBED_BENCH_SCALE=full``, 1024^2 vs 2048^2 with ``small``;
``GEOEMBED_BENCH_MEMORY_SIDE=5120`` sets the large side. ``GEOEMBED_BENCH_MEMORY=kmeans,cog``
picks workloads (default: kmeans, infer, cog; kNN has its own case in test_bench_knn).
Run one case by hand: ``python tests/benchmarks/test_bench_memory.py cog 1048576``
(with this directory on ``PYTHONPATH``: the workers unpickle the synthetic field from it).

Known growth (``infer``): the worker peak grows with the scene's width (+54 % at 9.4e6
px, +99 % at 2.6e7 px on 2 workers). CNN output blocks follow the tile grid (504 px for
tile 256, overlap 2), not the 512-px input chunks, so every output block reads a large
part of one input block and thin strips of its upper/left neighbours. Dask's ordering of
this graph (``dask.order``, quadrant by quadrant) makes input blocks whose neighbours
come later wait with their large part in memory: up to 385 MB of window parts on a
worker at 9.4e6 px vs 67 MB at 1e6. A serial replay of ``dask.order``'s order holds 4, 13
and 57 input blocks at 1024^2, 3072^2 and 10240^2 px; a row-major order would hold 2, 2.6
and 8.4 (thin strips of one block row).

Row-major priorities help but do not reach the target. Layer annotations set while
building the graph do not reach the scheduler (low-level fusion, on by default, returns
a plain dict), and geoembed cannot annotate the field's own layers; a global
``dask.annotate(priority=f)`` around the user's ``compute`` (``f`` giving input blocks,
window parts and CNN blocks minus their top-left field pixel, row-major) does reach it.
Measured on 2 workers (load 2-3, max worker MiB, 3 runs at 1e6/9.4e6, 2 at 2.6e7):
default 805-852 / 1196-1259 / 1461-1474 (medians +44 %, +73 %); annotated 788-792 / 960-997 /
1081-1146 (+22 %, +36-45 %). In a serial replay of the annotated order, an input block
stays whole until the parts for the next block row are cut, unless the window parts
share their input block's priority. On 1 worker (1 run each) the annotated order meets
the target (936 -> 986 MiB, +5 %; default 973 -> 1297, +33 %): the rest of the growth on
2 workers is probably blocks waiting for window parts cut on the other worker (not verified).

What a worker holds (a scheduler-side sampler of ``worker.data`` every 0.2 s, 3072^2 px,
2 workers): at most 3 input blocks as keys, but 6-9 window parts that are views, each
keeping a whole 64 MiB input block alive (about 450 MiB per worker): on a distributed
cluster the window parts are cut as soon as their input block exists, and what waits
is the large part of a block whose output block still lacks a neighbour's thin strip.
``tests/_order_replay.py`` counts these (a serial replay of ``dask.order`` that treats
such views as holding their block; ``tests/test_infer_order.py`` is a strict xfail on
it): 4, 13 and 27 input blocks at 1024^2, 3072^2 and 5120^2 px, with a reduction or
with one leaf per block (a store) alike. Graph changes tried and dropped (outputs
bit-identical, measured on 2 workers under load 12-17, one run each):

* every window part of an input block made a dependency of the output block that
  takes its largest part (so the block dies with that task): replay 13 -> 6 at 3072^2,
  but RSS 1145-1268 MiB at 9.4e6 px (main 1207) and 1484 at 2.6e7 (main 1601; 808 /
  871 at 1e6): on a cluster the parts are cut early anyway.
* output blocks aligned the other way (thin strips from the lower/right neighbours):
  replay 24 / 52 at 3072^2 / 5120^2, worse (Dask's order is backward within a group
  but forward between groups, so either direction meets the wrong one).
* a wavefront: the window parts of input block (a, b) wait for a token of the output
  blocks owning (a - 1, b) and (a, b - 1). Replay with root tasks taken only when
  nothing else is ready (root-task queuing): 2 blocks at any size; measured 885 ->
  1140 MiB (+29 %) at 9.4e6 px: the workers, short of ready work, pull queued input
  blocks ahead of the wavefront. Re-keying the input blocks behind the same gates
  (inlining the field's chunk task) puts every task on one worker (the gates' data
  lives there): 814 -> 1153 / 1635 MiB at 9.4e6 / 2.6e7 px. Both also limit the
  parallelism to an anti-diagonal of blocks.
* dummy tasks that give row-major blocks more dependencies (``dask.order`` breaks ties
  by the number of dependencies): replay 11 / 18, and 24 / 46 with one leaf per block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _results
import numpy as np
import pytest
from _clusters import local_cluster

pytestmark = [pytest.mark.bench, pytest.mark.timeout(0)]

HERE = Path(__file__).resolve().parent
SCALE = os.environ.get("GEOEMBED_BENCH_SCALE", "").lower()
WORKERS = int(os.environ.get("GEOEMBED_BENCH_WORKERS", "2"))
CHUNK = 512
SMALL_SIDE = 1024
_DEFAULT_LARGE = {"small": 2048, "full": 10240}.get(SCALE, 3072)
LARGE_SIDE = int(os.environ.get("GEOEMBED_BENCH_MEMORY_SIDE", _DEFAULT_LARGE))
WORKLOADS = tuple(
    w for w in os.environ.get("GEOEMBED_BENCH_MEMORY", "kmeans,infer,cog").split(",") if w
)
TARGET = 0.20


# ---------------------------------------------------------------- measurement
class PeakRSS:
    """Peak resident memory of each of a set of processes (sampled every ``interval`` s).

    Parameters
    ----------
    pids : dict of str to int
        Role name (``"client"``, ``"worker-0"`` ...) -> process id.
    interval : float
        Sampling period in seconds.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.base = {name: 0 for name in pids}
        self.peak = {name: 0 for name in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        for name, p in self.procs.items():
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            self.peak[name] = max(self.peak[name], rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._sample()
        self.base = dict(self.peak)
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self._sample()


def _warm_up() -> None:
    """Import what the tasks need, so that the start of a run is not counted as growth."""
    import onnxruntime  # noqa: F401
    import rasterio  # noqa: F401
    import sklearn.neighbors  # noqa: F401

    import geoembed.classify
    import geoembed.cluster
    import geoembed.export
    import geoembed.infer  # noqa: F401


def _count_blocks(b: np.ndarray) -> np.ndarray:
    return np.bincount(b.ravel().astype(np.int64), minlength=256)[None, None, :]


def _counts(cls: Any) -> np.ndarray:
    """Per-class pixel counts of a lazy 2-D class map (only the counts reach the client)."""
    counts = cls.map_blocks(_count_blocks, new_axis=2, chunks=(1, 1, 256), dtype=np.int64)
    return np.asarray(counts.sum(axis=(0, 1)).compute())


def _class_block(block_info: Any = None) -> np.ndarray:
    """A hashed uint8 class map block (10 classes, no nodata), a function of position."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    return _class_values(y0, y1, x0, x1)


def _class_values(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    yy = np.arange(y0, y1, dtype=np.uint64)[:, None]
    xx = np.arange(x0, x1, dtype=np.uint64)[None, :]
    # one hashed class per 4 x 8 px cell, so the map compresses about as a real one does
    h = (yy // np.uint64(4)) * np.uint64(0x9E3779B97F4A7C15) ^ (xx // np.uint64(8))
    h = (h ^ (h >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    return ((h >> np.uint64(32)) % np.uint64(10)).astype(np.uint8)


def class_map(height: int, width: int) -> Any:
    """A lazily generated (y, x) uint8 class map with a CRS and regular coordinates."""
    import dask.array as dsa
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    ychunks = tuple(min(CHUNK, height - i) for i in range(0, height, CHUNK))
    xchunks = tuple(min(CHUNK, width - i) for i in range(0, width, CHUNK))
    data = dsa.map_blocks(
        _class_block, chunks=(ychunks, xchunks), dtype=np.uint8, name="synthetic-classes"
    )
    da = xr.DataArray(
        data,
        dims=("y", "x"),
        coords={
            "y": 5_000_000.0 - 10.0 * (np.arange(height) + 0.5),
            "x": 400_000.0 + 10.0 * (np.arange(width) + 0.5),
        },
        name="class",
    )
    return da.rio.write_crs("EPSG:32633")


def _work(workload: str, side: int, tmp: Path) -> dict[str, Any]:
    """Run one workload on a ``side x side`` field (inside the sampled window)."""
    from test_bench_knn import synthetic_field, training

    n = side * side
    if workload == "kmeans":
        from geoembed.cluster import KMeans

        field = synthetic_field(side, side)
        model = KMeans(10, metric="cosine", max_iter=3, random_state=0).fit(field)
        total = _counts(model.predict(field).data)
        assert total.sum() == n, total
        return {"n_iter": int(model.n_iter_)}
    if workload == "infer":
        from geoembed.infer import predict
        from geoembed.infer.models import conv_stack

        path = conv_stack(tmp / "conv.onnx", bands=64, width=8, depth=2, n_classes=4, seed=0)
        ds = predict(synthetic_field(side, side), path, tile=256, overlap=2, check_overlap=False)
        total = _counts(ds["classes"].data)
        assert total.sum() == n and total[4:].sum() == 0, total
        return {}
    if workload == "cog":
        import rasterio
        from rasterio.windows import Window

        from geoembed.export import write_cog

        out = write_cog(class_map(side, side), tmp / "classes.tif", class_names=list("abcdefghij"))
        with rasterio.open(out) as src:
            assert (src.height, src.width, src.dtypes[0]) == (side, side, "uint8")
            y0, x0 = side // 2 - 100, side // 3
            win = src.read(1, window=Window(x0, y0, 300, 200))
            assert np.array_equal(win, _class_values(y0, y0 + 200, x0, x0 + 300))
            assert src.overviews(1), "a COG of this size has overviews"
        return {"bytes": os.path.getsize(out)}
    if workload == "knn":
        from geoembed.classify import KNNClassifier, predict_field

        X, y = training(300)
        model = KNNClassifier(5).fit(X, y)
        total = _counts(predict_field(model, synthetic_field(side, side))["class"].data)
        assert total.sum() == n, total
        return {}
    raise ValueError(f"unknown workload {workload!r}; use kmeans, infer, cog or knn")


def run_case(workload: str, pixels: int) -> dict[str, Any]:
    """One workload at one size on a fresh LocalCluster; peak RSS of every process."""
    side = round(np.sqrt(pixels))
    cluster, client = local_cluster(WORKERS, _warm_up)
    _warm_up()  # the client's imports too, so that only the work is measured
    try:
        pids = {"client": os.getpid()}
        for i, (_, pid) in enumerate(sorted(client.run(os.getpid).items())):
            pids[f"worker-{i}"] = pid
        with tempfile.TemporaryDirectory(prefix="geoembed-mem-") as d:
            with PeakRSS(pids) as rss:
                t0 = time.perf_counter()
                extra = _work(workload, side, Path(d))
                wall = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    return {
        "workload": workload,
        "pixels": side * side,
        "wall": wall,
        "peak": rss.peak,
        "base": rss.base,
        **extra,
    }


def _spawn(workload: str, pixels: int) -> dict[str, Any]:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        # workers unpickle the synthetic field's functions from test_bench_knn
        PYTHONPATH=os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
    )
    res = subprocess.run(
        [sys.executable, __file__, workload, str(pixels)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{workload} at {pixels} px failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _roles(r: dict[str, Any]) -> dict[str, int]:
    workers = [v for k, v in r["peak"].items() if k.startswith("worker")]
    return {"client": r["peak"]["client"], "max worker": max(workers)}


def table(workload: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Lines of the per-process table of one workload (small run ``a``, large run ``b``)."""
    mib = 2**20
    ra, rb = _roles(a), _roles(b)
    lines = [
        f"{'workload':8s} {'pixels':>12s} {'wall s':>8s} {'client MiB':>11s} "
        f"{'max worker MiB':>15s} {'workers MiB':>20s}"
    ]
    for r, roles in ((a, ra), (b, rb)):
        ws = " ".join(f"{v / mib:.0f}" for k, v in sorted(r["peak"].items()) if k != "client")
        lines.append(
            f"{workload:8s} {r['pixels']:>12,d} {r['wall']:8.1f} {roles['client'] / mib:11.0f} "
            f"{roles['max worker'] / mib:15.0f} {ws:>20s}"
        )
    growth = " ".join(f"{k} {rb[k] / ra[k] - 1:+.1%}" for k in ra)
    lines.append(
        f"growth {a['pixels']:.2g} -> {b['pixels']:.2g} px: {growth} (target < +{TARGET:.0%})"
    )
    return lines


@pytest.mark.parametrize("workload", WORKLOADS)
def test_bench_memory(workload: str) -> None:
    a = _spawn(workload, SMALL_SIDE * SMALL_SIDE)
    b = _spawn(workload, LARGE_SIDE * LARGE_SIDE)
    print(f"\n== {workload}: peak RSS per process, {WORKERS} workers ==")
    for line in table(workload, a, b):
        print(line)
    ra, rb = _roles(a), _roles(b)
    for role in ra:
        _results.record(
            "memory",
            f"{workload} peak RSS growth ({role}) {a['pixels']:.0e} -> {b['pixels']:.0e} px",
            value=[100 * (rb[role] / ra[role] - 1)],
            unit="%",
            summary="rss_growth",
            note=f"1 run per size; walls {a['wall']:.0f} s / {b['wall']:.0f} s",
        )


if __name__ == "__main__":
    print(json.dumps(run_case(sys.argv[1], int(sys.argv[2]))))
