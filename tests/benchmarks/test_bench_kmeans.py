"""KMeans: geoembed vs dask-ml vs scikit-learn (in memory) vs faiss (on a sample).

Data: a synthetic AlphaEarth-like field (clearly synthetic): 64-d unit vectors drawn
around 200 latent centres plus noise, stored as int8 codes in memory and de-quantized
lazily per 512 x 512 chunk, as ``open_embeddings`` does for AEF COGs. Every method sees
the same float32 values. All runs are side by side in this process on the machine's
cores (Dask threaded scheduler).

Columns
-------
fit s
    Wall time of ``fit``.
predict Mpx/s/core
    Pixels labelled per second per core (whole field, labels computed, not written).
inertia vs sklearn
    Inertia of the method's centres over *all* pixels (one exact evaluation shared by
    every method) relative to full-data scikit-learn Lloyd (``KMeans(n_init=1,
    algorithm="lloyd")``) from k-means++; ``n/a`` where scikit-learn did not fit in memory.
x dask-ml
    dask-ml fit time / geoembed fit time.

Capping dask-ml: dask-ml's KMeans is very slow (about 870 s for 2e6 x 64, k=10 on the
2-core reference machine, see reference/performance.md), so it runs with
``max_iter=DASKML_MAX_ITER`` (default 20, the same as geoembed's maximum passes; its
default is 300) and only at the smallest size; at larger sizes its fit time is
**extrapolated** linearly in the pixel count from the smallest size (marked ``~``).

Sizes: 5e5, 1e6 and 2e6 pixels, k in {10, 32} (``GEOEMBED_BENCH_KMEANS_K=10,32,100``
chooses k); ``GEOEMBED_BENCH_SCALE=large``: 2e6 and 2e7 pixels, k in {10, 32, 100};
``medium``: 2e6 only; ``small``: 2e5 and 1e6 pixels, k in {10, 32}.

The predict comparison runs geoembed (the float32 field in memory, the threaded
scheduler) and scikit-learn's ``predict`` (the in-memory matrix, its OpenMP threads)
interleaved, ``REPEATS`` rounds; both use every core, so the per-core ratio is the
ratio of wall times.
"""

from __future__ import annotations

import os
import time
from typing import Any

import _results
import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

from geoembed.cluster import KMeans
from geoembed.io.aef import dequantize_aef
from geoembed.schema import aef_band_names

pytestmark = [pytest.mark.bench, pytest.mark.timeout(4 * 3600)]

SCALE = os.environ.get("GEOEMBED_BENCH_SCALE", "").lower()
SMALL = SCALE == "small"
if SMALL:
    SIZES, KS = [(400, 500), (1000, 1000)], [10, 32]
elif SCALE == "medium":  # the 2e6 size only
    SIZES, KS = [(1000, 2000)], [10, 32, 100]
elif SCALE == "large":
    SIZES, KS = [(1000, 2000), (4000, 5000)], [10, 32, 100]
else:  # the sizes: 5e5, 1e6 and 2e6 pixels
    SIZES, KS = [(500, 1000), (1000, 1000), (1000, 2000)], [10, 32]
KS = [int(k) for k in os.environ.get("GEOEMBED_BENCH_KMEANS_K", ",".join(map(str, KS))).split(",")]
DASKML_MAX_ITER = int(os.environ.get("GEOEMBED_BENCH_DASKML_MAX_ITER", "20"))
SKLEARN_MAX_ITER = 100
CHUNK = 512
CORES = os.cpu_count() or 1
REPEATS = _results.REPEATS


def make_codes(height: int, width: int, seed: int = 0) -> np.ndarray:
    """AEF-like int8 codes ``(64, y, x)``: 200 latent unit centres + noise, unit length."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    codes = np.empty((64, height, width), dtype=np.int8)
    rows_per = max(1, 262_144 // width)
    for y0 in range(0, height, rows_per):
        y1 = min(height, y0 + rows_per)
        n = (y1 - y0) * width
        which = rng.integers(0, 200, n)
        v = centres[which] + 0.35 * rng.normal(size=(n, 64)) / 8
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        q = np.sign(v) * np.sqrt(np.abs(v)) * 127.5  # inverse of sign(q) (q / 127.5) ** 2
        codes[:, y0:y1, :] = (
            np.clip(np.rint(q), -127, 127).astype(np.int8).T.reshape(64, y1 - y0, width)
        )
    return codes


def _dequant_again(v: np.ndarray) -> np.ndarray:
    """A copy (a task of its own, so the field is a float32 Dask array)."""
    return v.copy()


def make_field(codes: np.ndarray, *, decoded_first: bool = False) -> xr.DataArray:
    """The codes as a lazily de-quantized field, as ``open_embeddings`` gives AEF COGs.

    geoembed's consumers read the int8 codes under it and decode inside their tasks;
    ``decoded_first`` hides the codes (a float32 Dask array, the previous behaviour).
    """
    _, h, w = codes.shape
    data = dequantize_aef(dsa.from_array(codes, chunks=(-1, CHUNK, CHUNK)))
    if decoded_first:
        data = data.map_blocks(_dequant_again, dtype=np.float32)
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": aef_band_names(),
            "y": 5e6 - 10 * (np.arange(h) + 0.5),
            "x": 4e5 + 10 * (np.arange(w) + 0.5),
        },
        name="embedding",
    )
    return da.rio.write_crs("EPSG:32633")


def as_matrix(field: xr.DataArray) -> dsa.Array:
    """The field as a lazy (pixels, 64) matrix, one row-chunk per block row (for dask-ml)."""
    data = field.data.rechunk((-1, CHUNK, -1))
    return data.transpose(1, 2, 0).reshape(-1, 64)


def exact_inertia(field: xr.DataArray, centers: np.ndarray) -> float:
    model = KMeans(len(centers))
    model.cluster_centers_ = np.asarray(centers, dtype=np.float32)
    model.n_features_in_ = 64
    model.feature_names_in_ = aef_band_names()
    return -model.score(field)


def timed(fn: Any, runs: list[float] | None = None, n: int = 1) -> tuple[float, Any]:
    """Median wall time of ``n`` calls (all appended to ``runs``) and the last result."""
    times, out = _results.repeat(fn, n)
    if runs is not None:
        runs.extend(times)
    return float(np.median(times)), out


def fits_in_memory(n: int) -> bool:
    import psutil

    return psutil.virtual_memory().available > 4 * n * 64 * 4


def run_case(
    codes: np.ndarray, k: int, daskml_ref: dict[int, tuple[float, int]], ratios: list[str]
) -> list[dict[str, Any]]:
    field = make_field(codes)
    n = field.sizes["y"] * field.sizes["x"]
    rows: list[dict[str, Any]] = []

    # geoembed, exact Lloyd passes over every pixel
    runs: dict[str, list[float]] = {k: [] for k in ("fit", "pred", "first", "pred_f32", "sk_pred")}
    t_fit, model = timed(
        lambda: KMeans(k, metric="euclidean", random_state=0).fit(field), runs["fit"], REPEATS
    )
    t_pred, _ = timed(lambda: model.predict(field).data.sum().compute(), runs["pred"], REPEATS)
    rows.append(
        dict(
            method="geoembed lloyd",
            fit=t_fit,
            pred=n / t_pred / CORES / 1e6,
            centers=model.cluster_centers_,
            note=f"{model.n_iter_} passes; predict incl. int8 decoding",
        )
    )
    # the same predict with the codes hidden under a float32 field (decoded first)
    first = make_field(codes, decoded_first=True)
    timed(lambda: model.predict(first).data.sum().compute(), runs["first"], REPEATS)
    _results.record(
        "kmeans",
        f"{n:.0e} px k={k}: predict on AEF codes (decoded in the tasks) vs decoded first",
        value=runs["pred"],
        baseline=runs["first"],
    )
    # geoembed, sample only
    t_fit, smodel = timed(lambda: KMeans(k, mode="sample", random_state=0).fit(field))
    rows.append(
        dict(
            method="geoembed sample",
            fit=t_fit,
            pred=rows[0]["pred"],
            centers=smodel.cluster_centers_,
            note=f"{smodel.sample_size_} px",
        )
    )

    # scikit-learn in memory (the reference inertia)
    ref_inertia = None
    x = None
    if fits_in_memory(n):
        from sklearn.cluster import KMeans as SKKMeans

        x = np.ascontiguousarray(field.data.transpose(1, 2, 0).reshape(-1, 64).compute())
        t_fit, sk = timed(
            lambda: SKKMeans(
                k, n_init=1, algorithm="lloyd", max_iter=SKLEARN_MAX_ITER, random_state=0
            ).fit(x)
        )
        h, w = field.sizes["y"], field.sizes["x"]
        mem = field.copy(
            data=dsa.from_array(
                np.ascontiguousarray(x.T).reshape(64, h, w), chunks=(-1, CHUNK, CHUNK)
            )
        )
        both = _results.interleaved(
            {
                "geo": lambda: model.predict(mem).data.sum().compute(),
                "sk": lambda: sk.predict(x),
            }
        )
        runs["pred_f32"].extend(both["geo"])
        runs["sk_pred"].extend(both["sk"])
        t_pred = float(np.median(both["sk"]))
        rows.append(
            dict(
                method="sklearn (in memory)",
                fit=t_fit,
                pred=n / t_pred / CORES / 1e6,
                centers=sk.cluster_centers_,
                note=f"{sk.n_iter_} its",
            )
        )
        ref_inertia = exact_inertia(field, sk.cluster_centers_)
        # geoembed predict on the same in-memory float32 values sklearn and faiss get
        t_pred = float(np.median(runs["pred_f32"]))
        rows.append(
            dict(
                method="geoembed predict, f32",
                fit=rows[0]["fit"],
                pred=n / t_pred / CORES / 1e6,
                centers=None,
                note="field already float32 in memory, as sklearn gets it",
            )
        )
        del mem

    # faiss on its default sample (256 points per centroid)
    if x is not None:
        import faiss

        km = faiss.Kmeans(64, k, niter=20, seed=0)
        t_fit, _ = timed(lambda: km.train(x))
        t_pred, _ = timed(lambda: km.index.search(x, 1))
        rows.append(
            dict(
                method="faiss (256 k sample)",
                fit=t_fit,
                pred=n / t_pred / CORES / 1e6,
                centers=km.centroids,
                note=f"{256 * k} px",
            )
        )

    # dask-ml: measured at the smallest size, extrapolated above it
    import dask_ml.cluster

    if k not in daskml_ref:
        xd = as_matrix(field)
        est = dask_ml.cluster.KMeans(n_clusters=k, max_iter=DASKML_MAX_ITER, random_state=0)
        t_fit, _ = timed(lambda: est.fit(xd))
        t_pred, _ = timed(lambda: est.predict(xd).sum().compute())
        daskml_ref[k] = (t_fit, n)
        rows.append(
            dict(
                method=f"dask-ml (max_iter={DASKML_MAX_ITER})",
                fit=t_fit,
                pred=n / t_pred / CORES / 1e6,
                centers=est.cluster_centers_,
                note=f"{est.n_iter_} its",
            )
        )
    else:
        t_ref, n_ref = daskml_ref[k]
        rows.append(
            dict(
                method="dask-ml (extrapolated)",
                fit=t_ref * n / n_ref,
                pred=None,
                centers=None,
                note=f"~ linear from {n_ref:.0e} px",
            )
        )

    geo_fit = rows[0]["fit"]
    dml_fit = rows[-1]["fit"]
    for row in rows:
        if row["centers"] is not None:
            inertia = exact_inertia(field, row["centers"])
            row["rel"] = None if ref_inertia is None else inertia / ref_inertia - 1
        else:
            row["rel"] = None
        row["x_daskml"] = dml_fit / row["fit"]
    rows[0]["speedup_vs_daskml"] = dml_fit / geo_fit
    extrapolated = "extrapolated" in rows[-1]["method"]
    geo_rel = rows[0]["rel"]
    dml_rel = None if extrapolated else rows[-1]["rel"]
    ratios.append(
        f"KMeans fit vs dask-ml, {n:.0e} px k={k}: {dml_fit / geo_fit:.1f} x "
        f"(target >= 20 x; geoembed {geo_fit:.2f} s [{min(runs['fit']):.2f}, "
        f"{max(runs['fit']):.2f}], dask-ml {dml_fit:.1f} s"
        + (" extrapolated" if extrapolated else "")
        + (
            ""
            if geo_rel is None
            else f"; inertia vs sklearn: geoembed {100 * geo_rel:+.2f} %"
            + ("" if dml_rel is None else f", dask-ml {100 * dml_rel:+.2f} %")
        )
        + ")"
    )
    _results.record(
        "kmeans",
        f"{n:.0e} px k={k}: geoembed lloyd fit vs dask-ml fit (speed-up)",
        value=runs["fit"],
        baseline=[dml_fit],
        summary="kmeans_fit_vs_daskml" if n >= 5e5 else None,
        note="dask-ml: 1 run" + (", extrapolated linearly in pixels" if extrapolated else ""),
    )
    if runs["sk_pred"]:  # both use every core (threads): per-core times scale alike
        _results.record(
            "kmeans",
            f"{n:.0e} px k={k}: geoembed predict (f32 in memory) vs sklearn predict, per core",
            value=[t * CORES for t in runs["pred_f32"]],
            baseline=[t * CORES for t in runs["sk_pred"]],
            summary="kmeans_predict_vs_sklearn",
        )
        g, b = runs["pred_f32"], runs["sk_pred"]
        rate_g, rate_b = (n / float(np.median(v)) / CORES / 1e6 for v in (g, b))
        ratios.append(
            f"KMeans predict vs scikit-learn per core, {n:.0e} px k={k}: "
            f"{np.median(b) / np.median(g):.2f} x [{min(b) / max(g):.2f}, "
            f"{max(b) / min(g):.2f}] (target >= 1.0 x; geoembed {rate_g:.2f}, "
            f"sklearn {rate_b:.2f} Mpx/s/core)"
        )
    return rows


def fmt(row: dict[str, Any], n: int, k: int) -> str:
    rel = "n/a" if row["rel"] is None else f"{100 * row['rel']:+.2f} %"
    pred = "-" if row["pred"] is None else f"{row['pred']:.2f}"
    fit = f"{'~' if 'extrapolated' in row['method'] else ''}{row['fit']:.1f}"
    return (
        f"| {n:.0e} | {k:>3} | {row['method']:<24} | {fit:>8} | {pred:>6} | {rel:>9} | "
        f"{row['x_daskml']:>7.1f} | {row['note']} |"
    )


def test_bench_kmeans() -> None:
    lines = [
        "",
        f"KMeans benchmark ({SCALE or 'full'} scale, {CORES} cores, threaded scheduler)",
        "| pixels | k | method | fit s | predict Mpx/s/core | inertia vs sklearn | x dask-ml "
        "| note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    daskml_ref: dict[int, tuple[float, int]] = {}
    ratios: list[str] = []
    t_all = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        for h, w in SIZES:
            codes = make_codes(h, w)
            for k in KS:
                rows = run_case(codes, k, daskml_ref, ratios)
                for row in rows:
                    lines.append(fmt(row, h * w, k))
                print("\n".join(lines[-len(rows) :]), flush=True)
                geo = rows[0]
                assert geo["centers"].shape == (k, 64)
            del codes
    lines.append(f"total benchmark time: {time.perf_counter() - t_all:.0f} s")
    lines.append(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    lines.extend(["", *ratios])
    print("\n".join(lines))
