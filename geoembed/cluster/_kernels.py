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

from collections.abc import Iterator

import numpy as np

from geoembed._aef_codes import decode_codes
from geoembed._scratch import scratch
from geoembed._threads import concurrent_tasks, single_thread_blas

__all__ = [
    "BATCH",
    "assign",
    "exact_distances",
    "fixed_point",
    "fixed_point_scale",
    "label_sums",
    "prepare",
    "prepare_columns",
    "single_thread_blas",
]

#: rows handled at once (bounds the (rows x k) distance matrix and the int64 copy)
BATCH = 32768


#: unit roundoff of float32
_U32 = 2.0**-24


def _tie_margin(d: int) -> float:
    """Relative margin under which :func:`assign` re-checks a float32 decision in float64.

    Twice a proven bound. A distance from the fused GEMM (``d + 1`` products, any
    summation order, FMA or not) is off by at most ``g (2 |c||x| + |c|^2)`` with
    ``g = (d + 1) u / (1 - (d + 1) u)``, and by ``u |c|^2`` more for the rounded
    ``|c|^2``; two distances compared, that is at most ``(4 g + 2 u) (|x|^2 + max |c|^2)``
    (as ``2 |c||x| <= |x|^2 + |c|^2``). For cosine, the raw-tile scores of a pixel are
    off by ``(g + u) |x|`` (``u``: the rounding of the normalised pixel the labels
    refer to), well inside ``2 |x|`` times the margin. About ``2**-15`` for 64 bands.
    """
    n = d + 1
    gamma = n * _U32 / (1.0 - n * _U32)
    return 2.0 * (4.0 * gamma + 2.0 * _U32)


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


def _tile_pixels(k: int, d: int) -> int:
    """Pixels per tile of :func:`assign`: the widest tile whose buffers fit in 4 MiB.

    The ``(d + 1 + 2 k)`` float32 values per pixel of a tile and its ``(k, tile)``
    buffers stay within 4 MiB (from 16384 pixels, halved down to 1024): 8192 pixels for
    64 bands and 10 centres. Wider tiles cost a single thread nothing measurable, and
    they matter under the threaded scheduler: every NumPy call of a tile hands the GIL
    over, and two threads on 1024-pixel tiles ran no faster than one (0.9-1.0 x the
    throughput of one thread, 64 bands, 10 centres; 1.7-1.9 x at 8192). Labels do not
    depend on the tile.
    """
    tile = 16384
    while tile > 1024 and (d + 1 + 2 * k) * 4 * tile > 4 << 20:
        tile //= 2
    return tile


def assign(
    x: np.ndarray,
    centers: np.ndarray,
    metric: str,
    *,
    columns: bool = False,
    invalid: int | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """Index of the nearest centre for each pixel of ``x`` (already :func:`prepare`-d).

    Pixels are handled in cache-sized tiles (a column tile is first copied into a
    contiguous ``(d + 1, tile)`` buffer whose last row is ones: a strided column block
    aliases in the cache): one GEMM with the centres scaled by ``-2`` (exact, a power of
    two) and their norms as an extra column, a minimum over the centres, and a second
    small GEMM that counts, per pixel, the centres within the rounding error of the best
    one and sums their indices. A pixel with exactly one such centre has its label; the
    others (near ties) are collected over the whole call and re-decided exactly in
    float64, in one batch. Labels therefore do not depend on the tiling or the BLAS.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)`` float32 rows, or ``(d, n)`` columns when ``columns`` is true (the
        layout of a ``(band, y, x)`` block), or with ``columns`` a ``(d, y, x)`` block as
        it is (any strides: tiles of whole rows are copied, the block never is; labels in
        row-major pixel order).
    centers : numpy.ndarray
        ``(k, d)`` float32 centres (unit-length for ``"cosine"``).
    metric : {"euclidean", "cosine"}
    columns : bool
        Layout of ``x``.
    invalid : int, optional
        Label given to pixels holding NaN (nodata), detected in the kernel from the
        per-pixel squared norm (no separate pass over ``x``). By default NaN pixels
        are not told apart.
    normalize : bool, default False
        With ``columns``: ``x`` is not yet :func:`prepare`-d. For ``"cosine"`` the
        tiles are not normalised at all: the nearest unit centre of a pixel does not
        depend on its length, so the GEMM scores the raw tile with a tolerance scaled
        by each pixel's norm (``2 |x| margin``, the normalised ``2 margin``), and the
        near ties are re-decided on :func:`prepare`-d rows as always: the labels are
        those of the normalised pixels. An int8 ``x`` (columns) holds AEF codes,
        decoded tile by tile as :func:`decode_codes` does.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 labels; ties go to the lowest index.
    """
    n = n_of(x) if columns else x.shape[0]
    k, d = centers.shape
    labels = np.empty(n, dtype=np.int64)
    if n == 0:
        return labels
    c32 = np.ascontiguousarray(centers, dtype=np.float32)
    c64 = c32.astype(np.float64)
    cosine = metric == "cosine"
    scale_free = cosine and normalize and columns  # raw tiles, tolerance scaled by |x|
    margin = np.float32(_tie_margin(d))
    cc = np.zeros(k, np.float32) if cosine else np.add.reduce(c64 * c64, axis=1).astype(np.float32)
    scaled = np.negative(c32) if cosine else c32 * np.float32(-2.0)
    # columns: the norms ride in the GEMM, [-2 C | |c|^2] @ [x ; 1] (no pass over the distances)
    fused = np.ascontiguousarray(np.concatenate([scaled, cc[:, None]], axis=1))
    # tolerance (|x|^2 + max |c|^2) * margin; cosine: (|x|^2 + 1) * margin, about 2 margin
    cmax = np.float32(1.0) if cosine else np.float32(cc.max())
    # row 0 counts the near centres of a pixel, row 1 sums their indices (exact in float32)
    weights = np.stack([np.ones(k), np.arange(k)]).astype(np.float32)
    one = np.float32(1.0)
    ambiguous: list[np.ndarray] = []
    tile = min(_tile_pixels(k, d), n)
    t = 0
    for start, src in _tiles(x, tile, columns):
        if t != (src.shape[0] if not columns else n_of(src)):  # first and last tiles
            t = src.shape[0] if not columns else n_of(src)
            # reused from call to call (a fresh 2 MiB tile is an mmap on a Dask worker)
            buf = scratch("assign-tile", (d + 1, t) if columns else (0, 0))
            buf[d:] = 1.0
            dv = scratch("assign-dv", (k, t))
            nv = scratch("assign-nv", (k, t))
            tv = scratch("assign-tv", (2, t))
            lv = scratch("assign-lv", (t,))
            tol = scratch("assign-tol", (t,))
        if columns and src.dtype == np.float32 and src.ndim == 2 and src.flags.c_contiguous:
            xb = src  # a contiguous float piece (a fit pass decodes into one): no copy
            np.dot(scaled, xb, out=dv)
            dv += cc[:, None]
        elif columns:  # copied: a strided column block aliases in the cache
            xb = buf[:d]
            _load_tile(xb, src)
            np.dot(fused, buf, out=dv)
        else:  # a transposed view of contiguous rows (BLAS reads it as is)
            xb = src.T
            np.dot(scaled, xb, out=dv)
            dv += cc[:, None]
        np.minimum.reduce(dv, axis=0, out=lv)
        if columns:
            np.einsum("ij,ij->j", xb, xb, out=tol)
        else:
            np.einsum("ij,ij->i", xb.T, xb.T, out=tol)
        if scale_free:  # 2 |x| margin: the (|x|^2 + 1) margin of a unit pixel, scaled by |x|
            np.sqrt(tol, out=tol)
            tol *= np.float32(2.0) * margin
        else:
            tol += cmax  # NaN at a NaN pixel: no centre is then "near", it is re-checked
            tol *= margin
        lv += tol
        np.less_equal(dv, lv, out=nv)
        np.dot(weights, nv, out=tv)
        labels[start : start + t] = tv[1]
        amb = np.flatnonzero(tv[0] != one)  # near ties, and NaN pixels (no centre near)
        if amb.size:
            ambiguous.append(amb + start)
    if ambiguous:
        _recheck(x, labels, np.concatenate(ambiguous), c64, metric, columns, invalid, normalize)
    return labels


def n_of(x: np.ndarray) -> int:
    """Pixels of a ``(d, n)`` or ``(d, y, x)`` column block."""
    return int(np.prod(x.shape[1:]))


def _tiles(x: np.ndarray, tile: int, columns: bool) -> Iterator[tuple[int, np.ndarray]]:
    """``(first pixel, view)`` of the tiles of :func:`assign` (at most ``tile`` pixels each).

    Rows: ``(t, d)`` slices. Columns: ``(d, t)`` slices, or for a ``(d, y, x)`` block
    ``(d, rows, x)`` views of whole rows (or ``(d, t)`` pieces of a row wider than a tile).
    """
    if not columns:
        for start in range(0, x.shape[0], tile):
            yield start, x[start : start + tile]
    elif x.ndim == 2:
        for start in range(0, x.shape[1], tile):
            yield start, x[:, start : start + tile]
    else:
        _, ny, nx = x.shape
        if nx <= tile:
            rows = tile // nx
            for y0 in range(0, ny, rows):
                yield y0 * nx, x[:, y0 : y0 + rows, :]
        else:
            for y in range(ny):
                for x0 in range(0, nx, tile):
                    yield y * nx + x0, x[:, y, x0 : x0 + tile]


def _load_tile(xb: np.ndarray, src: np.ndarray) -> None:
    """Copy a column tile into the contiguous float32 buffer ``xb``, decoding int8 codes.

    Codes become ``sign(q) (q / 127.5) ** 2`` (:func:`decode_codes`, no temporary), NaN
    where ``q == -128``.
    """
    view = xb.reshape(src.shape)
    if src.dtype == np.int8:
        decode_codes(src, out=view)
    else:
        np.copyto(view, src, casting="unsafe")


def _recheck(
    x: np.ndarray,
    labels: np.ndarray,
    idx: np.ndarray,
    c64: np.ndarray,
    metric: str,
    columns: bool,
    invalid: int | None,
    normalize: bool = False,
) -> None:
    """Re-decide the near-tie pixels ``idx`` exactly (float64, row-wise), in place."""
    step = max(1, (1 << 21) // max(c64.size, 1))  # bounds the (rows, k, d) float64 temporary
    for s0 in range(0, idx.size, step):
        part = idx[s0 : s0 + step]
        if columns and x.ndim == 3:
            rows = x[:, part // x.shape[2], part % x.shape[2]].T
        else:
            rows = x[:, part].T if columns else x[part]
        if rows.dtype == np.int8:
            rows = decode_codes(rows)
        if normalize and metric == "cosine":
            rows = prepare(rows, metric)
        lab = np.argmin(_exact_rows(rows, c64, metric), axis=1)
        if invalid is not None:
            lab[np.isnan(rows).any(axis=1)] = invalid
        labels[part] = lab


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


#: clusters up to which :func:`label_sums` adds by band with ``np.bincount`` (above: a sort)
_BINCOUNT_K = 2048


def fixed_point(x: np.ndarray, scale: int, out: np.ndarray | None = None) -> np.ndarray:
    """Values truncated to the fixed-point grid ``2**-scale`` (float32, exact).

    A power-of-two scaling and a truncation, both exact in float32. Raises
    :class:`OverflowError` when a value is too large for the exact sums of
    :func:`label_sums` (at least ``2**(53 - log2 BATCH)`` grid units). ``out``: a
    float32 array of ``x``'s shape to write into (default: a new one).
    """
    q = np.multiply(x, np.float32(2.0**scale), out=out)
    np.trunc(q, out=q)
    limit = np.float32(2.0 ** (53 - int(np.ceil(np.log2(BATCH)))))
    if q.size and max(float(q.max()), -float(q.min())) >= limit:  # no |q| temporary
        raise OverflowError(
            "a pixel value is far larger than any in the initial sample; "
            "increase sample_size so that the sample sees the field's range"
        )
    return q


def label_sums(
    x: np.ndarray,
    labels: np.ndarray,
    k: int,
    scale: int,
    *,
    columns: bool = False,
    truncated: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-cluster sums (int64, units of ``2**-scale``) and counts.

    Values are truncated to the fixed-point grid (:func:`fixed_point`), then summed by
    label in float64, :data:`BATCH` pixels at a time: every term and every partial sum
    is an integer below ``2**53``, so each sum is exact whatever the order of the
    additions, and the result does not depend on the order (or the grouping) of the
    pixels. Up to :data:`_BINCOUNT_K` clusters the sums are ``np.bincount`` by band;
    above, and whenever other tasks compute in this process at the same time
    (:func:`~geoembed._threads.concurrent_tasks`: ``np.bincount`` holds the GIL, 64
    calls per batch), the pixels are grouped by label (:func:`_add_grouped`), in a few
    NumPy calls that release it. Both give the same bits.
    ``columns=True`` takes a ``(d, n)`` block; ``truncated=True`` says ``x`` already
    holds :func:`fixed_point` values (a sample reused over many passes).
    """
    d = x.shape[0] if columns else x.shape[1]
    n = x.shape[1] if columns else x.shape[0]
    sums = np.zeros((k, d), dtype=np.int64)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    for start in range(0, n, BATCH):
        lab = labels[start : start + BATCH]
        if lab.size == 0:
            continue
        part = x[:, start : start + BATCH] if columns else x[start : start + BATCH]
        q = part if truncated else fixed_point(part, scale, out=scratch("sums-q", part.shape))
        if k == 1:
            sums[0] += np.add.reduce(q, axis=1 if columns else 0, dtype=np.float64).astype(np.int64)
            continue
        if k <= _BINCOUNT_K and concurrent_tasks() <= 1:
            bands = q if columns else np.ascontiguousarray(q.T)
            for j in range(d):
                sums[:, j] += np.bincount(lab, weights=bands[j], minlength=k).astype(np.int64)
            continue
        _add_grouped(sums, q, lab, k, columns)
    return sums, counts


def _add_grouped(sums: np.ndarray, q: np.ndarray, lab: np.ndarray, k: int, columns: bool) -> None:
    """``sums[c] += `` the sum of the fixed-point pixels labelled ``c``, sorted by label.

    A stable sort of the labels (a radix sort on 8/16-bit labels), one gather and one
    ``np.add.reduceat`` in float64 over the groups: integer terms and partial sums below
    ``2**53``, so each group's sum is exact, the same bits as ``np.bincount``'s.
    """
    small = lab.astype(np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.int64)
    order = np.argsort(small, kind="stable")
    ls = small[order]
    starts = np.flatnonzero(np.r_[True, ls[1:] != ls[:-1]])
    axis = 1 if columns else 0
    grouped = np.take(q, order, axis=axis)
    part = np.add.reduceat(grouped, starts, axis=axis, dtype=np.float64)
    sums[ls[starts].astype(np.intp)] += (part.T if columns else part).astype(np.int64)
