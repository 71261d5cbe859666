"""Per-pixel KMeans kernels: assignment, exact partial sums, distances.

Everything here works on a C-contiguous float32 ``(n, band)`` matrix of valid pixel
vectors and is deterministic *per pixel*: a pixel gets the same label and contributes
the same amount to the sums whatever block (chunking) it arrives in.

* Labels come from a float32 GEMM (``X @ C.T``) plus an argmin. Rows whose best and
  second-best distances are closer than the GEMM's rounding error are re-decided in
  float64 with a row-wise formula, so BLAS blocking can never flip a label.
* Per-cluster sums are accumulated in **fixed point** (``int64``, ``2**-scale`` units):
  integer addition is associative, so the sums over a field are bit-identical whatever
  the chunking, the number of workers and the order of the reduction.
"""

from __future__ import annotations

import itertools

import numpy as np

from geoembed._threads import single_thread_blas

__all__ = [
    "BATCH",
    "assign",
    "exact_distances",
    "fixed_point_scale",
    "label_sums",
    "prepare",
    "prepare_columns",
    "single_thread_blas",
]

#: rows handled at once (bounds the (rows x k) distance matrix and the int64 copy)
BATCH = 32768

#: relative margin under which the float32 GEMM decision is re-checked in float64
_TIE_MARGIN = 2.0**-12


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Return the vectors the metric works on: unit-length rows for ``"cosine"``.

    Row norms are computed in float64 row by row, so the result of a pixel does not
    depend on the other rows. Zero vectors stay zero.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric != "cosine":
        return x
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.add.reduce(x64 * x64, axis=1))
    norms[norms == 0] = 1.0
    return (x64 / norms[:, None]).astype(np.float32)


def prepare_columns(xt: np.ndarray, metric: str) -> np.ndarray:
    """:func:`prepare` for a ``(d, n)`` block (one pixel per column), without transposing."""
    if metric != "cosine":
        return xt if xt.dtype == np.float32 else xt.astype(np.float32)
    x64 = xt.astype(np.float64)
    norms = np.sqrt(np.add.reduce(x64 * x64, axis=0))
    norms[norms == 0] = 1.0
    return (x64 / norms[None, :]).astype(np.float32)


def _exact_rows(x: np.ndarray, centers64: np.ndarray, metric: str) -> np.ndarray:
    """Float64 distances of a few rows to all centres, computed row-wise."""
    x64 = x.astype(np.float64)
    if metric == "cosine":
        return 1.0 - np.add.reduce(x64[:, None, :] * centers64[None, :, :], axis=2)
    diff = x64[:, None, :] - centers64[None, :, :]
    return np.add.reduce(diff * diff, axis=2)


def _tile_pixels(k: int) -> int:
    """Pixels per tile of :func:`assign`: the ``(k, tile)`` distances stay in cache."""
    return max(256, min(1024, (1 << 15) // max(k, 1)))


def assign(x: np.ndarray, centers: np.ndarray, metric: str, *, columns: bool = False) -> np.ndarray:
    """Index of the nearest centre for each pixel of ``x`` (already :func:`prepare`-d).

    Pixels are handled in cache-sized tiles (a column tile is first copied into a
    contiguous ``(d, tile)`` buffer: a strided column block aliases in the cache): one GEMM
    with the centres scaled by ``-2`` (exact, a power of two), the precomputed centre
    norms added, a minimum over the centres, and a second small GEMM that counts, per
    pixel, the centres within the rounding error of the best one and sums their
    indices. A pixel with exactly one such centre has its label; the others are
    re-decided exactly in float64. Labels therefore do not depend on the tiling or the
    BLAS.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)`` float32 rows, or ``(d, n)`` columns when ``columns`` is true (the
        layout of a ``(band, y, x)`` block).
    centers : numpy.ndarray
        ``(k, d)`` float32 centres (unit-length for ``"cosine"``).
    metric : {"euclidean", "cosine"}
    columns : bool
        Layout of ``x``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 labels; ties go to the lowest index.
    """
    n = x.shape[1] if columns else x.shape[0]
    k, d = centers.shape
    labels = np.empty(n, dtype=np.int64)
    if n == 0:
        return labels
    c32 = np.ascontiguousarray(centers, dtype=np.float32)
    c64 = c32.astype(np.float64)
    cosine = metric == "cosine"
    margin = np.float32(_TIE_MARGIN)
    cc = np.add.reduce(c64 * c64, axis=1).astype(np.float32)
    scaled = np.negative(c32) if cosine else c32 * np.float32(-2.0)
    cmax = np.float32(cc.max())
    # row 0 counts the near centres of a pixel, row 1 sums their indices (exact in float32)
    weights = np.stack([np.ones(k), np.arange(k)]).astype(np.float32)
    tile = _tile_pixels(k)
    buf = np.empty((d, tile) if columns else (0, 0), dtype=np.float32)
    dist = np.empty((k, tile), dtype=np.float32)
    near = np.empty((k, tile), dtype=np.float32)
    tally = np.empty((2, tile), dtype=np.float32)
    limit = np.empty(tile, dtype=np.float32)
    sq = np.empty(tile, dtype=np.float32)
    for start in range(0, n, tile):
        t = min(tile, n - start)
        if columns:  # copied: a strided column block aliases in the cache
            xb = buf if t == tile else buf[:, :t]
            xb[...] = x[:, start : start + t]
        else:  # a transposed view of contiguous rows (BLAS reads it as is)
            xb = x[start : start + t].T
        dv, nv, tv, lv = dist[:, :t], near[:, :t], tally[:, :t], limit[:t]
        if t == tile:
            np.dot(scaled, xb, out=dv)
        else:
            dv[...] = np.dot(scaled, xb)
        if not cosine:
            dv += cc[:, None]
        np.minimum.reduce(dv, axis=0, out=lv)
        if cosine:
            lv += np.float32(2.0) * margin
        else:  # tolerance (|x|^2 + max |c|^2) * margin
            tol = sq[:t]
            if columns:
                np.einsum("ij,ij->j", xb, xb, out=tol)
            else:
                np.einsum("ij,ij->i", xb.T, xb.T, out=tol)
            tol += cmax
            tol *= margin
            lv += tol
        np.less_equal(dv, lv, out=nv)
        if t == tile:
            np.dot(weights, nv, out=tv)
        else:
            tv[...] = np.dot(weights, nv)
        lab = labels[start : start + t]
        lab[...] = tv[1]
        if k > 1:
            amb = np.flatnonzero(tv[0] != 1)
            if amb.size:
                rows = np.ascontiguousarray(xb[:, amb].T)
                lab[amb] = np.argmin(_exact_rows(rows, c64, metric), axis=1)
    return labels


def exact_distances(
    x: np.ndarray, centers: np.ndarray, labels: np.ndarray, metric: str
) -> np.ndarray:
    """Distance of each row to its own centre, in float64, row-wise (deterministic).

    Euclidean distances are returned as distances (not squared); cosine distances as
    ``1 - cos``.
    """
    out = np.empty(x.shape[0], dtype=np.float64)
    c64 = np.asarray(centers, dtype=np.float64)
    for start in range(0, x.shape[0], BATCH):
        xb = x[start : start + BATCH].astype(np.float64)
        cb = c64[labels[start : start + BATCH]]
        if metric == "cosine":
            out[start : start + BATCH] = 1.0 - np.add.reduce(xb * cb, axis=1)
        else:
            diff = xb - cb
            out[start : start + BATCH] = np.sqrt(np.add.reduce(diff * diff, axis=1))
    return out


def fixed_point_scale(n_pixels: int, max_abs: float) -> int:
    """Binary exponent ``s`` of the fixed-point grid (``2**-s``) for exact sums.

    Two constraints, with a factor 8 of headroom above ``max_abs`` (the largest
    magnitude seen in the sample):

    * a batch of :data:`BATCH` values sums exactly in float64 (below ``2**53``);
    * the int64 sum over all ``n_pixels`` pixels cannot overflow (below ``2**62``).
    """
    bound_bits = int(np.ceil(np.log2(max(float(max_abs), 2.0**-20) * 8.0)))
    total_bits = int(np.ceil(np.log2(max(n_pixels, 2))))
    batch_bits = int(np.ceil(np.log2(BATCH)))
    return int(min(62 - total_bits - bound_bits, 53 - batch_bits - bound_bits))


def label_sums(
    x: np.ndarray, labels: np.ndarray, k: int, scale: int, *, columns: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-cluster sums (int64, units of ``2**-scale``) and counts.

    Values are truncated to the fixed-point grid (exactly, in float32: a power-of-two
    scaling and a truncation), rows are grouped by label with a stable radix sort, and
    each group is summed in float64 (``np.add.reduce`` over contiguous rows), which is
    exact because every partial sum is an integer below ``2**53``. The result does not
    depend on the order of the rows. ``columns=True`` takes a ``(d, n)`` block.
    """
    d = x.shape[0] if columns else x.shape[1]
    n = x.shape[1] if columns else x.shape[0]
    sums = np.zeros((k, d), dtype=np.int64)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    factor = np.float32(2.0**scale)
    limit = np.float32(2.0 ** (53 - int(np.ceil(np.log2(BATCH)))))
    small = labels.astype(np.uint16 if k <= 65535 else np.int64)
    for start in range(0, n, BATCH):
        lab = small[start : start + BATCH]
        if lab.size == 0:
            continue
        order = np.argsort(lab, kind="stable")
        if columns:  # gather and transpose in one copy: (pixels, d) rows grouped by label
            q = np.take(x[:, start : start + BATCH].T, order, axis=0)
        else:
            q = x[start : start + BATCH][order]
        q *= factor
        np.trunc(q, out=q)
        if max(float(q.max()), -float(q.min())) >= limit:  # no |q| temporary
            raise OverflowError(
                "a pixel value is far larger than any in the initial sample; "
                "increase sample_size so that the sample sees the field's range"
            )
        ls = lab[order]
        bounds = np.r_[np.flatnonzero(np.r_[True, ls[1:] != ls[:-1]]), ls.size]
        part = np.empty(d, dtype=np.float64)
        for s0, s1 in itertools.pairwise(bounds):
            np.add.reduce(q[s0:s1], axis=0, dtype=np.float64, out=part)
            sums[int(ls[s0])] += part.astype(np.int64)
    return sums, counts
