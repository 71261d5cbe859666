"""Lloyd and mini-batch refinement, in memory (a sample) or over a whole field.

One Lloyd pass over a field is one Dask computation: every block returns the exact
(fixed-point, int64) per-cluster sums and counts of its valid pixels, and Dask's tree
reduction adds them. Integer addition is associative, so the new centres are
bit-identical whatever the chunking, worker count or reduction order.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as dsa
import numpy as np

from geoembed._aef_codes import aef_codes_of, decode_codes
from geoembed._compute import compute
from geoembed._scratch import scratch
from geoembed.cluster._kernels import (
    BATCH,
    assign,
    fixed_point,
    label_sums,
    prepare_columns,
    single_thread_blas,
)

#: pixels of int8 codes decoded at once (64 bands: 1 MiB of float32, cache-sized)
DECODE_PIXELS = 4096
#: pixels per piece of a block in a Lloyd pass (64 bands: 2 MiB of float32, L2-sized)
PASS_PIXELS = 8192
#: sample pixels per thread of a sample pass, at least (below: fewer threads)
SAMPLE_PIECE = 16384

__all__ = [
    "DECODE_PIXELS",
    "PASS_PIXELS",
    "LloydResult",
    "PassStats",
    "Sample",
    "field_pass",
    "lloyd",
    "matrix_pass",
    "minibatch",
    "sample_pass",
    "sample_threads",
]

log = logging.getLogger(__name__)


@dataclass
class PassStats:
    """What one assignment pass returns: exact sums, counts, and the sum of squares."""

    sums: np.ndarray  # (k, d) int64, units of 2**-scale
    counts: np.ndarray  # (k,) int64
    scale: int
    sumsq: float | None = None  # sum of squared norms (euclidean) or of pixel counts (cosine)

    def float_sums(self) -> np.ndarray:
        """Return the sums as float64, in data units."""
        return self.sums.astype(np.float64) * 2.0**-self.scale


@dataclass
class LloydResult:
    """Outcome of a refinement."""

    centers: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    counts: np.ndarray


def _sq_norm_fixed(x: np.ndarray, scale: int, *, columns: bool = False) -> int:
    """Exact (fixed-point) sum of squared pixel norms, pixel by pixel in float64."""
    total = 0
    n = x.shape[1] if columns else x.shape[0]
    for start in range(0, n, BATCH):
        if columns:
            xb = x[:, start : start + BATCH].astype(np.float64)
            per_pixel = np.add.reduce(xb * xb, axis=0)
        else:
            xb = x[start : start + BATCH].astype(np.float64)
            per_pixel = np.add.reduce(xb * xb, axis=1)
        total += int((per_pixel * 2.0**scale).astype(np.int64).sum())
    return total


def _block_stats(
    block: np.ndarray,
    centers: np.ndarray,
    *,
    metric: str,
    scale: int,
    sq_scale: int | None,
) -> np.ndarray:
    """Fixed-point sums, counts and squared norms of one block's pixels, by cluster.

    The block is read in pieces of whole rows, about :data:`PASS_PIXELS` pixels each
    (an int8 block holds AEF codes, decoded piece by piece; a float block is copied
    piece by piece, never reshaped as a whole). Nodata pixels are found by the assign
    kernel. The statistics are integer sums of per-pixel terms, so they are the same
    bits whatever the pieces.
    """
    nb, ny, nx = block.shape
    k, d = centers.shape
    out = np.zeros((k * d + k + 1, 1, 1), dtype=np.int64)
    codes = block.dtype == np.int8
    rows = max(1, PASS_PIXELS // max(nx, 1))
    with single_thread_blas():
        for y0 in range(0, ny, rows):
            part = block[:, y0 : y0 + rows]
            # reused: no fresh mmap per piece; a float block keeps its dtype (float64 is
            # normalised in float64 for cosine, as before)
            piece = scratch("pass-piece", part.shape, np.float32 if codes else part.dtype)
            if codes:
                decode_codes(part, out=piece)
            else:
                np.copyto(piece, part)
            xt = prepare_columns(piece.reshape(nb, -1), metric)
            labels = assign(xt, centers, metric, columns=True, invalid=-1)
            if labels.size and labels.min() < 0:
                keep = labels >= 0
                xt, labels = xt[:, keep], labels[keep]
                if labels.size == 0:
                    continue
            sums, counts = label_sums(xt, labels, k, scale, columns=True)
            out[: k * d, 0, 0] += sums.ravel()
            out[k * d : k * d + k, 0, 0] += counts
            if sq_scale is not None:
                out[-1, 0, 0] += (
                    _sq_norm_fixed(xt, sq_scale, columns=True)
                    if metric != "cosine"
                    else xt.shape[1]
                )
    return out


def field_pass(
    data: dsa.Array,
    centers: np.ndarray,
    *,
    metric: str,
    scale: int,
    sq_scale: int | None = None,
) -> PassStats:
    """One exact assignment pass over every valid pixel of a ``(band, y, x)`` array.

    Parameters
    ----------
    data : dask.array.Array
        Field data, band in one chunk.
    centers : numpy.ndarray
        ``(k, d)`` float32 centres, sent to the workers once (``dask.delayed``).
    metric : {"euclidean", "cosine"}
    scale : int
        Fixed-point exponent of the sums.
    sq_scale : int, optional
        Also return the sum of squared norms (fixed point with this exponent).

    Returns
    -------
    PassStats
    """
    k, d = centers.shape
    length = k * d + k + 1
    codes = aef_codes_of(data)  # AEF int8 codes: decoded inside the tasks
    data = data if codes is None else codes
    parts = dsa.map_blocks(
        _block_stats,
        data,
        dask.delayed(np.ascontiguousarray(centers, dtype=np.float32), pure=True),
        metric=metric,
        scale=scale,
        sq_scale=sq_scale,
        chunks=((length,), (1,) * len(data.chunks[1]), (1,) * len(data.chunks[2])),
        dtype=np.int64,
        meta=np.empty((0, 0, 0), dtype=np.int64),
        token="geoembed-kmeans-pass",  # prefix; the key hashes the centres and data
    )
    (total,) = compute(parts.sum(axis=(1, 2), dtype=np.int64))
    total = np.asarray(total, dtype=np.int64)
    sumsq = None
    if sq_scale is not None:
        sumsq = float(total[-1]) * (2.0**-sq_scale if metric != "cosine" else 1.0)
    return PassStats(
        sums=total[: k * d].reshape(k, d),
        counts=total[k * d : k * d + k],
        scale=scale,
        sumsq=sumsq,
    )


def matrix_pass(
    x: np.ndarray,
    centers: np.ndarray,
    *,
    metric: str,
    scale: int,
    sq_scale: int | None = None,
    xt: np.ndarray | None = None,
) -> PassStats:
    """Run the same pass over an in-memory, already prepared ``(n, d)`` matrix.

    ``xt``, the same matrix transposed ``(d, n)`` C-contiguous (the assign kernel's fast
    layout), is used for the labels and sums when given (the same results).
    """
    k = centers.shape[0]
    with single_thread_blas():
        if xt is None:
            labels = assign(x, centers, metric)
            sums, counts = label_sums(x, labels, k, scale)
        else:
            labels = assign(xt, centers, metric, columns=True)
            sums, counts = label_sums(xt, labels, k, scale, columns=True)
    sumsq = None
    if sq_scale is not None:
        sumsq = (
            float(_sq_norm_fixed(x, sq_scale)) * 2.0**-sq_scale
            if metric != "cosine"
            else float(x.shape[0])
        )
    return PassStats(sums=sums, counts=counts, scale=scale, sumsq=sumsq)


@dataclass
class Sample:
    """An in-memory, already prepared sample, laid out for many passes.

    ``x`` is ``(n, d)``; ``xt`` the same values ``(d, n)`` C-contiguous (the assign
    kernel's fast layout); ``q`` the columns truncated to the fixed-point grid of
    ``scale`` once (:func:`~geoembed.cluster._kernels.fixed_point`), so a pass only
    assigns and adds. ``threads`` pieces of the sample are passed at once (labels are
    per pixel and the sums exact integers: the same results as one piece). Each piece
    keeps its last labels and sums (``state``), and the next pass adds only the pixels
    whose label changed: integer sums, so exactly the sums a full pass would give.
    """

    x: np.ndarray
    xt: np.ndarray
    q: np.ndarray
    scale: int
    threads: int = 1
    state: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )

    @classmethod
    def of(cls, x: np.ndarray, scale: int, threads: int | None = None) -> Sample:
        """Lay out the prepared ``(n, d)`` matrix ``x`` for passes on the grid ``scale``."""
        xt = np.ascontiguousarray(x.T)
        if threads is None:
            threads = sample_threads(x.shape[0])
        return cls(x=x, xt=xt, q=fixed_point(xt, scale), scale=scale, threads=threads)


def sample_threads(n: int) -> int:
    """Threads for a pass over an ``n``-pixel sample.

    The cores (at most 8), with at least :data:`SAMPLE_PIECE` pixels per thread.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return int(max(1, min(cores, 8, n // SAMPLE_PIECE)))


def _sample_piece(
    sample: Sample, centers: np.ndarray, metric: str, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the sums and counts of pixels ``lo:hi`` (from the last pass when few moved)."""
    k = centers.shape[0]
    q = sample.q[:, lo:hi]
    with single_thread_blas():
        labels = assign(sample.xt[:, lo:hi], centers, metric, columns=True)
        last = sample.state.get((lo, hi))
        if last is None or last[1].shape[0] != k:
            sums, counts = label_sums(q, labels, k, sample.scale, columns=True, truncated=True)
        else:
            old, sums, counts = last
            moved = np.flatnonzero(labels != old)
            if 2 * moved.size > labels.size:  # most moved: add them all again
                sums, counts = label_sums(q, labels, k, sample.scale, columns=True, truncated=True)
            elif moved.size:
                qm = np.ascontiguousarray(q[:, moved])
                add = label_sums(qm, labels[moved], k, sample.scale, columns=True, truncated=True)
                sub = label_sums(qm, old[moved], k, sample.scale, columns=True, truncated=True)
                sums = sums + add[0] - sub[0]
                counts = counts + add[1] - sub[1]
    sample.state[(lo, hi)] = (labels, sums, counts)
    return sums, counts


def sample_pass(
    sample: Sample,
    centers: np.ndarray,
    *,
    metric: str,
    sq_scale: int | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> PassStats:
    """:func:`matrix_pass` over a :class:`Sample` (the same results), in pieces on ``pool``."""
    n = sample.x.shape[0]
    parts = sample.threads if pool is not None else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    pieces = list(itertools.pairwise(bounds))
    if parts > 1 and pool is not None:
        futures = [pool.submit(_sample_piece, sample, centers, metric, a, b) for a, b in pieces]
        results = [f.result() for f in futures]
    else:
        results = [_sample_piece(sample, centers, metric, a, b) for a, b in pieces]
    sums = results[0][0].copy()
    counts = results[0][1].copy()
    for s_, c_ in results[1:]:
        sums += s_
        counts += c_
    sumsq = None
    if sq_scale is not None:
        sumsq = (
            float(_sq_norm_fixed(sample.x, sq_scale)) * 2.0**-sq_scale
            if metric != "cosine"
            else float(n)
        )
    return PassStats(sums=sums, counts=counts, scale=sample.scale, sumsq=sumsq)


def inertia_of(stats: PassStats, centers: np.ndarray, metric: str) -> float:
    """Objective of the assignment that produced ``stats`` (for ``centers``).

    Euclidean: ``sum ||x||^2 - 2 sum_j c_j . S_j + sum_j n_j ||c_j||^2``;
    cosine: ``n - sum_j c_j . S_j`` (unit rows, unit centres).
    """
    c = centers.astype(np.float64)
    s = stats.float_sums()
    dot = float(np.sum(c * s))
    if metric == "cosine":
        return max(float(stats.sumsq or 0.0) - dot, 0.0)
    cc = np.add.reduce(c * c, axis=1)
    return max(float(stats.sumsq or 0.0) - 2.0 * dot + float(np.dot(stats.counts, cc)), 0.0)


def _update(
    stats: PassStats,
    centers: np.ndarray,
    metric: str,
    pool: np.ndarray,
) -> np.ndarray:
    """Compute new centres from exact sums; empty clusters re-seeded from the pool."""
    sums = stats.float_sums()
    counts = stats.counts
    new = centers.astype(np.float64).copy()
    full = counts > 0
    if metric == "cosine":
        norms = np.sqrt(np.add.reduce(sums * sums, axis=1))
        ok = full & (norms > 0)
        new[ok] = sums[ok] / norms[ok, None]
    else:
        new[full] = sums[full] / counts[full, None]
    new32 = new.astype(np.float32)
    empty = np.flatnonzero(~full)
    if empty.size and pool.shape[0]:
        new32 = reseed_empty(new32, empty, pool, metric)
    return new32


def reseed_empty(
    centers: np.ndarray, empty: np.ndarray, pool: np.ndarray, metric: str
) -> np.ndarray:
    """Move empty clusters onto the pool points farthest from their centres.

    Deterministic: the pool is the seeded sample (ordered by pixel index) and ties go
    to the lowest row.
    """
    centers = centers.copy()
    labels = assign(pool, centers, metric)
    from geoembed.cluster._kernels import exact_distances

    dist = exact_distances(pool, centers, labels, metric)
    order = np.lexsort((np.arange(pool.shape[0]), -dist))
    for j, row in zip(empty, order[: len(empty)]):
        centers[j] = pool[row]
    log.info("re-seeded %d empty cluster(s) on far sample points", len(empty))
    return centers


def lloyd(
    run_pass: Callable[[np.ndarray, bool], PassStats],
    centers: np.ndarray,
    *,
    metric: str,
    max_iter: int,
    tol: float,
    pool: np.ndarray,
    inertia_tol: float = 0.0,
    progress_label: str | None = None,
) -> LloydResult:
    """Lloyd iterations driven by ``run_pass(centers, want_sumsq)``.

    Stops when the squared centre shift is at most ``tol``, when a pass lowered the
    inertia by less than the fraction ``inertia_tol``, or after ``max_iter`` passes.
    The returned inertia is that of the last assignment pass, an upper bound of the
    inertia of the returned (updated) centres. With ``progress_label`` and the Dask config
    ``geoembed.progress`` set, the passes show one bar of ``max_iter`` passes.
    """
    bar: Any = None
    if progress_label is not None:
        if dask.config.get("geoembed.progress", False):
            from geoembed._bars import progress_bar

            bar = progress_bar(max_iter, progress_label, unit="pass")
    try:
        it, centers, inertia, counts, converged = _iterate(
            run_pass, centers, metric, max_iter, tol, pool, inertia_tol, bar
        )
    finally:
        if bar is not None:
            bar.close()
    return LloydResult(
        centers=centers, inertia=inertia, n_iter=it, converged=converged, counts=counts
    )


def _iterate(
    run_pass: Callable[[np.ndarray, bool], PassStats],
    centers: np.ndarray,
    metric: str,
    max_iter: int,
    tol: float,
    pool: np.ndarray,
    inertia_tol: float,
    bar: Any,
) -> tuple[int, np.ndarray, float, np.ndarray, bool]:
    """Run the Lloyd passes of :func:`lloyd`; advance ``bar`` once per pass."""
    sumsq: float | None = None
    inertia = float("inf")
    counts = np.zeros(centers.shape[0], dtype=np.int64)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        stats = run_pass(centers, sumsq is None)
        if sumsq is None:
            sumsq = stats.sumsq
        stats.sumsq = sumsq
        previous, inertia = inertia, inertia_of(stats, centers, metric)
        counts = stats.counts
        new = _update(stats, centers, metric, pool)
        shift = float(np.sum((new.astype(np.float64) - centers.astype(np.float64)) ** 2))
        centers = new
        log.debug("lloyd iteration %d: inertia %.6g, shift %.3g", it, inertia, shift)
        if bar is not None:
            bar.update(1)
        if shift <= tol or (inertia_tol > 0 and previous - inertia <= inertia_tol * inertia):
            converged = True
            break
    return it, centers, inertia, counts, converged


def minibatch(
    draw: Callable[[int], np.ndarray],
    centers: np.ndarray,
    *,
    metric: str,
    max_iter: int,
    tol: float,
    pool: np.ndarray,
    patience: int = 5,
) -> LloydResult:
    """Mini-batch k-means (per-centre learning rate ``1 / count``).

    ``draw(step)`` returns the prepared vectors of mini-batch ``step``. Stops when the
    exponentially weighted centre shift stays under ``tol`` for ``patience`` steps, or
    after ``max_iter`` steps.
    """
    k, d = centers.shape
    seen = np.zeros(k, dtype=np.float64)
    cur = centers.astype(np.float64)
    ewa: float | None = None
    calm = 0
    converged = False
    step = 0
    inertia = float("inf")
    for step in range(1, max_iter + 1):
        xb = draw(step)
        if xb.shape[0] == 0:
            continue
        c32 = cur.astype(np.float32)
        labels = assign(xb, c32, metric)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.zeros((k, d), dtype=np.float64)
        np.add.at(sums, labels, xb.astype(np.float64))
        seen += counts
        upd = counts > 0
        new = cur.copy()
        new[upd] += (sums[upd] - counts[upd, None] * cur[upd]) / seen[upd, None]
        if metric == "cosine":
            norms = np.sqrt(np.add.reduce(new * new, axis=1))
            new[norms > 0] /= norms[norms > 0, None]
        shift = float(np.sum((new - cur) ** 2))
        cur = new
        ewa = shift if ewa is None else 0.7 * ewa + 0.3 * shift
        calm = calm + 1 if ewa <= tol else 0
        if calm >= patience:
            converged = True
            break
    centers32 = cur.astype(np.float32)
    empty = np.flatnonzero(seen == 0)
    if empty.size:
        centers32 = reseed_empty(centers32, empty, pool, metric)
    return LloydResult(
        centers=centers32,
        inertia=inertia,
        n_iter=step,
        converged=converged,
        counts=seen.astype(np.int64),
    )
