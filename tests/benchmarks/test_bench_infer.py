"""CNN inference: geoembed.infer.predict vs raw ONNX Runtime on the same tiles.

Model: a small U-Net (2 poolings, width 16, 3 x 3 convolutions, 10 classes) on a
64-band field, built with PyTorch (random, seeded weights: nothing is trained) and
exported to ONNX with dynamic H/W. Data: a synthetic 64-band float32 field (clearly
synthetic: seeded Gaussian noise) in 768 x 768 blocks.

Tables
------
1. geoembed vs raw: ``predict(tile=256, overlap=32, batch_size=8)`` on the synchronous
   Dask scheduler (one process, one ORT thread) against a plain loop that cuts *the same
   tiles* from a reflect-padded NumPy array, runs them through one ``InferenceSession``
   (one thread, batches of 8) and pastes the interiors. Both outputs are checked to be
   identical. Ratio = geoembed throughput / raw throughput (target >= 0.85).
2. Overlap overhead, through geoembed: 256-px tiles with a halo h = 32 (interior
   T = 192) against 256-px tiles without halo, so ONNX Runtime runs the same tile shape;
   measured extra CPU time vs theory ``((T + 2h) / T) ** 2 - 1`` = 77.8 % (target: <= theory
   + 10 points, stable over the runs). Each round runs every variant once on the same
   in-memory data (interleaved, so a round's variants share the machine's load), after
   one warm-up run of each (session cache and allocations warm), with one ORT thread and
   BLAS/OpenMP limited to one thread; the overhead is computed per round (h32 / h0 of
   the same round) and reported as median [min, max] over ``GEOEMBED_BENCH_REPEATS``
   (>= 3) rounds. A second row keeps the interior at 256 (tiles of 320, theory 56.3 %),
   which also measures ONNX Runtime's per-pixel speed at 320 vs 256.
3. Workers: the same job on a LocalCluster with 1 and with 2 single-threaded worker
   processes (field generated in the workers); throughput ratio (ideal 2.0 on >= 2 free
   cores).

Sizes: 2304 x 2304 in 768-px blocks (144 tiles per run with the halo), median of 3
interleaved runs, and 1536 x 1536 for the worker table; ``GEOEMBED_BENCH_SCALE=small``:
1536 x 1536 (64 tiles), median of 3, and 768 x 1536 (one block per worker).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import _results
import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from geoembed.infer import predict  # noqa: E402
from geoembed.infer.tiling import tile_starts  # noqa: E402

SMALL = os.environ.get("GEOEMBED_BENCH_SCALE", "").lower() == "small"
SIZE = (1536, 1536) if SMALL else (2304, 2304)
WORKER_SIZE = (768, 1536) if SMALL else (1536, 1536)
BLOCK = 768  # a multiple of 256 and of 192: whole tiles with and without a 32-px halo
BANDS = 64
TILE, HALO, BATCH = 256, 32, 8
REPEATS = _results.REPEATS


def _unet(path: Path) -> str:
    from torch import nn

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.ReLU()
        )

    class UNet(nn.Module):
        def __init__(self, cin: int = BANDS, w: int = 16, ncls: int = 10) -> None:
            super().__init__()
            self.e1, self.e2, self.e3 = block(cin, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.pool = nn.MaxPool2d(2)
            self.u2, self.d2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), block(4 * w, 2 * w)
            self.u1, self.d1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), block(2 * w, w)
            self.head = nn.Conv2d(w, ncls, 1)

        def forward(self, x: Any) -> Any:
            a = self.e1(x)
            b = self.e2(self.pool(a))
            c = self.e3(self.pool(b))
            d = self.d2(torch.cat([self.u2(c), b], 1))
            return self.head(self.d1(torch.cat([self.u1(d), a], 1)))

    torch.manual_seed(0)
    dyn = {0: "N", 2: "H", 3: "W"}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            UNet().eval(),
            torch.zeros(1, BANDS, 64, 64),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": dyn, "logits": dyn},
            dynamo=False,
            opset_version=17,
        )
    return str(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _unet(tmp_path_factory.mktemp("bench") / "unet.onnx")


def _coords(h: int, w: int) -> dict[str, Any]:
    return {
        "band": [f"F{i:03d}" for i in range(BANDS)],
        "y": 5_000_000.0 - 10.0 * (np.arange(h) + 0.5),
        "x": 500_000.0 + 10.0 * (np.arange(w) + 0.5),
    }


def numpy_field(h: int, w: int) -> xr.DataArray:
    data = np.random.default_rng(0).standard_normal((BANDS, h, w), dtype=np.float32)
    da = xr.DataArray(
        dsa.from_array(data, chunks=(BANDS, BLOCK, BLOCK)),
        dims=("band", "y", "x"),
        coords=_coords(h, w),
        name="embedding",
    )
    return da.rio.write_crs("EPSG:32633")


def lazy_field(h: int, w: int) -> xr.DataArray:
    rng = dsa.random.default_rng(0)
    data = rng.standard_normal((BANDS, h, w), dtype=np.float32, chunks=(BANDS, BLOCK, BLOCK))
    da = xr.DataArray(data, dims=("band", "y", "x"), coords=_coords(h, w), name="embedding")
    return da.rio.write_crs("EPSG:32633")


def raw_onnxruntime(model: str, img: np.ndarray, tile: int, halo: int) -> tuple[np.ndarray, int]:
    """The same tiles as geoembed (its global grid), one session, batches of 8."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    _, h, w = img.shape
    padded = np.pad(img, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    interior = tile - 2 * halo
    ys, xs = tile_starts(h, interior), tile_starts(w, interior)
    jobs = [(a, b, min(interior, h - a), min(interior, w - b)) for a in ys for b in xs]
    probs = np.empty((10, h, w), dtype=np.float32)
    for i in range(0, len(jobs), BATCH):
        group = jobs[i : i + BATCH]
        batch = np.stack([padded[:, y : y + tile, x : x + tile] for y, x, _, _ in group])
        logits = sess.run(None, {"input": batch})[0]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        for k, (y, x, ny, nx) in enumerate(group):
            probs[:, y : y + ny, x : x + nx] = logits[k, :, halo : halo + ny, halo : halo + nx]
    return probs, len(jobs)


def _n_tiles(h: int, w: int, tile: int, halo: int) -> int:
    """Tiles geoembed runs for an ``h x w`` field: one global grid, none shared by blocks.

    ``BLOCK`` is a multiple of every interior used here, so blocks align with tiles.
    """
    per = tile - 2 * halo
    return len(tile_starts(h, per)) * len(tile_starts(w, per))


def _timed(fn: Any) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()`` (CPU time of this process: all its threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _best(
    fns: dict[str, Any], repeats: int = REPEATS, *, warm: bool = True
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU time of each function, runs interleaved (the machine is shared).

    With ``warm``, every function runs once first, untimed (session cache, allocations).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        for fn in fns.values() if warm else ():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                _RUNS.setdefault(name, []).append(_timed(fn))
    return {
        name: (
            float(np.median([w for w, _ in _RUNS[name]])),
            float(np.median([c for _, c in _RUNS[name]])),
        )
        for name in fns
    }


#: every (wall, CPU) run of the last _best call, per function
_RUNS: dict[str, list[tuple[float, float]]] = {}


def test_bench_infer_vs_raw_and_overlap(model: str) -> None:
    h, w = SIZE
    field = numpy_field(h, w)
    img = field.data.compute()
    mpix = h * w / 1e6
    kw: dict[str, Any] = dict(batch_size=BATCH, threads=1, check_overlap=False)
    with dask.config.set(scheduler="synchronous"):
        ref, n_tiles = raw_onnxruntime(model, img, TILE, HALO)
        probs = predict(field, model, tile=TILE, overlap=HALO, output="probabilities", **kw)[
            "probabilities"
        ]
        assert np.array_equal(probs.values, ref), "geoembed and the raw loop run the same tiles"
        no_halo = predict(field, model, tile=TILE, overlap=0, **kw)["classes"]
        halo = predict(field, model, tile=TILE, overlap=HALO, **kw)["classes"]
        big = predict(field, model, tile=TILE + 2 * HALO, overlap=HALO, **kw)["classes"]
        _RUNS.clear()
        t = _best(
            {
                "raw": lambda: raw_onnxruntime(model, img, TILE, HALO),
                "geoembed": lambda: probs.values,
                "h0": lambda: no_halo.values,
                "h32": lambda: halo.values,
                "h32-320": lambda: big.values,
            }
        )
    inner = TILE - 2 * HALO
    print()
    print(
        f"CNN inference, U-Net w16 64 bands, {h} x {w} px, tile {TILE}, overlap {HALO}, "
        f"batch {BATCH}, 1 ORT thread, {n_tiles} tiles, median of {REPEATS} interleaved runs "
        "(wall / CPU s)"
    )
    print(
        f"{'method':<30}{'wall s':>8}{'CPU s':>8}{'tiles/s':>9}{'Mpix/s':>8}"
        f"{'ratio wall':>11}{'ratio CPU':>10}"
    )
    for name, label in (("raw", "raw onnxruntime (same tiles)"), ("geoembed", "geoembed (sync)")):
        wall, cpu = t[name]
        print(
            f"{label:<30}{wall:>8.2f}{cpu:>8.2f}{n_tiles / wall:>9.2f}{mpix / wall:>8.3f}"
            f"{t['raw'][0] / wall:>11.2f}{t['raw'][1] / cpu:>10.2f}"
        )
    print("ratio = geoembed throughput / raw throughput (target >= 0.85)")
    print(
        f"{'overlap overhead':<20}{'interior':>9}{'tile':>6}{'tiles':>7}{'work':>8}"
        f"{'wall s':>8}{'CPU s':>8}{'wall':>8}{'CPU':>8}{'theory':>8}"
    )
    work0 = _n_tiles(h, w, TILE, 0) * TILE**2
    print(
        f"{'  h=0 (reference)':<20}{TILE:>9}{TILE:>6}{_n_tiles(h, w, TILE, 0):>7}{'':>8}"
        f"{t['h0'][0]:>8.2f}{t['h0'][1]:>8.2f}"
    )
    cpu_of = {name: [c for _, c in runs] for name, runs in _RUNS.items()}
    _results.record(
        "infer",
        "U-Net w16 geoembed vs raw onnxruntime (CPU s)",
        value=cpu_of["geoembed"],
        baseline=cpu_of["raw"],
    )
    rows = []
    for key, interior, tile in (("h32", inner, TILE), ("h32-320", TILE, TILE + 2 * HALO)):
        theory = ((interior + 2 * HALO) / interior) ** 2 - 1
        # extra CPU time over the no-halo run of the same round, minus theory (points)
        extra = [100 * (c / c0 - 1 - theory) for c, c0 in zip(cpu_of[key], cpu_of["h0"])]
        _results.record(
            "infer",
            f"U-Net w16 overlap {HALO}, interior {interior}: CPU overhead minus theory",
            value=extra,
            unit="points",
            summary="cnn_overlap_vs_theory" if key == "h32" else None,
            note=f"per round vs h0 of the round; median of {REPEATS}",
        )
        wall, cpu = t[key]
        n = _n_tiles(h, w, tile, HALO)
        print(
            f"{'  h=' + str(HALO):<20}{interior:>9}{tile:>6}{n:>7}{n * tile**2 / work0 - 1:>+8.1%}"
            f"{wall:>8.2f}{cpu:>8.2f}{wall / t['h0'][0] - 1:>+8.1%}{cpu / t['h0'][1] - 1:>+8.1%}"
            f"{theory:>+8.1%}"
        )
        rows.append((interior, theory, extra))
    print(
        "work = extra tile pixels run through the model; wall/CPU = extra time (medians); "
        "theory = ((T + 2h) / T)^2 - 1 with T the interior. The second row also includes "
        f"ONNX Runtime's different per-pixel speed at {TILE + 2 * HALO} x {TILE + 2 * HALO} tiles."
    )
    for interior, theory, extra in rows:
        med, lo, hi = float(np.median(extra)), min(extra), max(extra)
        verdict = "met" if hi <= 10 else ("median met" if med <= 10 else "MISSED")
        if interior != inner:
            verdict = "informative (includes ONNX Runtime's speed at larger tiles)"
        print(
            f"CNN overlap overhead, interior {interior}: {100 * theory + med:+.1f} % CPU "
            f"(median; per round [{100 * theory + lo:+.1f}, {100 * theory + hi:+.1f}]) vs "
            f"theory {100 * theory:+.1f} %: {med:+.1f} points [{lo:+.1f}, {hi:+.1f}], "
            f"target <= +10 points over {REPEATS} runs: {verdict}"
        )


def test_bench_infer_workers(model: str) -> None:
    from distributed import Client, LocalCluster

    h, w = WORKER_SIZE
    kw: dict[str, Any] = dict(batch_size=BATCH, check_overlap=False)
    rows = []
    for n in (1, 2):
        with (
            LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster),
        ):
            warm = predict(lazy_field(256, 256 * n), model, tile=TILE, overlap=HALO, **kw)
            warm["classes"].values  # noqa: B018  (every worker builds its session)
            job = predict(lazy_field(h, w), model, tile=TILE, overlap=HALO, **kw)["classes"]
            rows.append(
                (n, _best({"job": lambda job=job: job.values}, repeats=1, warm=False)["job"][0])
            )
    print()
    print(f"CNN inference on a LocalCluster, {h} x {w} px, tile {TILE}, overlap {HALO}")
    print(f"{'workers':>8}{'s':>8}{'Mpix/s':>9}{'speed-up':>10}")
    for n, t in rows:
        print(f"{n:>8}{t:>8.2f}{h * w / 1e6 / t:>9.3f}{rows[0][1] / t:>10.2f}")
