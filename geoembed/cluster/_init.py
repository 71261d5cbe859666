"""Sampling pixels of a field and k-means++ seeding.

The sample is chosen on the *global* pixel grid from the seed alone (flat indices
``row * width + col``), so it is the same whatever the chunking. Only the chunks that
hold a sampled pixel are read: each such chunk becomes one small task that returns
its sampled vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as dsa
import numpy as np

from geoembed._aef_codes import aef_codes_of, dequantize_block
from geoembed._compute import compute
from geoembed.cluster._kernels import prepare

__all__ = ["PixelSample", "draw_sample", "kmeans_plusplus", "read_pixels", "windows_sample"]

#: stream ids mixed into the seed, so that sampling, init and restarts never share draws
STREAM_SAMPLE = 0x5A3F1E
STREAM_INIT = 0x1217
STREAM_BATCH = 0xBA7C


@dataclass(frozen=True)
class PixelSample:
    """Valid pixel vectors drawn uniformly from a field.

    Attributes
    ----------
    x : numpy.ndarray
        ``(m, band)`` float32 vectors, ordered by global pixel index.
    index : numpy.ndarray
        ``(m,)`` int64 flat global pixel indices (``row * width + col``).
    drawn : int
        Pixels drawn (valid or not).
    total : int
        Pixels in the field.
    complete : bool
        True when every pixel of the field was drawn (the sample *is* the field).
    """

    x: np.ndarray
    index: np.ndarray
    drawn: int
    total: int

    @property
    def complete(self) -> bool:
        """Whether the sample covers the whole field."""
        return self.drawn >= self.total

    @property
    def valid_fraction(self) -> float:
        """Fraction of drawn pixels that were valid."""
        return self.x.shape[0] / max(self.drawn, 1)


def _take(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(block)[:, rows, cols].T, dtype=np.float32)


def _take_codes(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """:func:`_take` on a block of AEF codes: only the taken pixels are decoded (same bits)."""
    return np.ascontiguousarray(dequantize_block(np.asarray(block)[:, rows, cols], axis=0).T)


def read_pixels(data: dsa.Array, index: np.ndarray) -> np.ndarray:
    """Read the vectors at sorted flat pixel indices, touching only their chunks.

    Parameters
    ----------
    data : dask.array.Array
        ``(band, y, x)`` array.
    index : numpy.ndarray
        Sorted int64 flat indices.

    Returns
    -------
    numpy.ndarray
        ``(len(index), band)`` float32, in the order of ``index`` (NaN rows kept).

    A lazily de-quantized AEF field is read as its int8 codes and only the taken
    pixels are decoded (the values :func:`dequantize_block` gives the whole chunk).
    """
    codes = aef_codes_of(data)
    take = _take if codes is None else _take_codes
    source = data if codes is None else codes
    width = data.shape[2]
    rows = index // width
    cols = index % width
    ybounds = np.cumsum((0, *data.chunks[1]))
    xbounds = np.cumsum((0, *data.chunks[2]))
    by = np.searchsorted(ybounds, rows, side="right") - 1
    bx = np.searchsorted(xbounds, cols, side="right") - 1
    block_id = by * len(data.chunks[2]) + bx
    order = np.argsort(block_id, kind="stable")
    ids, starts = np.unique(block_id[order], return_index=True)
    stops = np.r_[starts[1:], len(order)]
    blocks = source.to_delayed(optimize_graph=True)
    tasks = []
    for bid, s0, s1 in zip(ids, starts, stops):
        sel = order[s0:s1]
        iy, ix = divmod(int(bid), len(data.chunks[2]))
        tasks.append(
            dask.delayed(take, pure=True)(
                blocks[0, iy, ix], rows[sel] - ybounds[iy], cols[sel] - xbounds[ix]
            )
        )
    parts = compute(*tasks) if tasks else []
    out = np.empty((len(index), data.shape[0]), dtype=np.float32)
    for s0, s1, part in zip(starts, stops, parts):
        out[order[s0:s1]] = part
    return out


def draw_sample(data: dsa.Array, size: int, seed: int, *, max_rounds: int = 6) -> PixelSample:
    """Draw ``size`` valid pixels uniformly at random (fewer if the field has fewer).

    Parameters
    ----------
    data : dask.array.Array
        ``(band, y, x)`` field data.
    size : int
        Wanted number of valid pixels.
    seed : int
        Random seed; the chosen pixels depend only on it and the grid size.
    max_rounds : int
        Extra rounds drawn when nodata pixels make the first draw fall short.

    Returns
    -------
    PixelSample
    """
    _, height, width = data.shape
    total = int(height) * int(width)
    rng = np.random.default_rng([int(seed), STREAM_SAMPLE])
    chosen = np.empty(0, dtype=np.int64)
    xs: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    n_valid = 0
    for _ in range(max_rounds):
        remaining = total - chosen.size
        if n_valid >= size or remaining <= 0:
            break
        if chosen.size == 0:
            extra = min(size, total)
        else:
            frac = max(n_valid / chosen.size, 1e-3)
            extra = min(int(np.ceil((size - n_valid) / frac * 1.2)), remaining)
        if remaining <= 2 * extra and total <= 50_000_000:
            new = np.setdiff1d(np.arange(total, dtype=np.int64), chosen, assume_unique=True)
        else:
            # draw from the pixels not drawn yet, keeping the random order before cutting
            cand = rng.choice(total, size=min(total, extra + chosen.size), replace=False)
            cand = cand[~np.isin(cand, chosen)].astype(np.int64)
            new = np.sort(cand[:extra])
        vec = read_pixels(data, new)
        ok = ~np.isnan(vec).any(axis=1)
        xs.append(vec[ok])
        idx.append(new[ok])
        n_valid += int(ok.sum())
        chosen = np.union1d(chosen, new)
    index = np.concatenate(idx) if idx else np.empty(0, dtype=np.int64)
    x = np.concatenate(xs) if xs else np.empty((0, data.shape[0]), dtype=np.float32)
    order = np.argsort(index, kind="stable")
    index, x = index[order], x[order]
    if index.size > size:
        pick = np.random.default_rng([int(seed), STREAM_SAMPLE, 1])
        keep = np.sort(pick.choice(index.size, size=size, replace=False))
        index, x = index[keep], x[keep]
    return PixelSample(x=np.ascontiguousarray(x), index=index, drawn=int(chosen.size), total=total)


def windows_sample(
    data: dsa.Array, n_windows: int, window: int, rng: np.random.Generator
) -> np.ndarray:
    """Return the valid vectors of ``n_windows`` random ``window x window`` cells of a global grid.

    The cells are fixed on the pixel grid (not on chunks), so the pixels a draw
    returns do not depend on the chunking; only the chunks under the cells are read.
    """
    _, height, width = data.shape
    ny = -(-height // window)
    nx = -(-width // window)
    cells = np.sort(rng.choice(ny * nx, size=min(n_windows, ny * nx), replace=False))
    parts = []
    for c in cells:
        iy, ix = divmod(int(c), nx)
        parts.append(data[:, iy * window : (iy + 1) * window, ix * window : (ix + 1) * window])
    blocks = compute(*parts)
    out = []
    for b in blocks:
        flat = np.asarray(b).reshape(b.shape[0], -1)
        ok = ~np.isnan(flat).any(axis=0)
        out.append(np.ascontiguousarray(flat[:, ok].T, dtype=np.float32))
    return np.concatenate(out) if out else np.empty((0, data.shape[0]), dtype=np.float32)


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator, metric: str) -> np.ndarray:
    """Greedy k-means++ seeding on an in-memory sample (float64, deterministic).

    Each step draws ``2 + ln k`` candidates with probability proportional to the squared
    distance to the nearest chosen centre and keeps the one that lowers the potential
    most (the variant scikit-learn uses).

    Parameters
    ----------
    x : numpy.ndarray
        ``(m, d)`` float32 sample, already :func:`prepare`-d for ``metric``.
    k : int
        Number of centres.
    rng : numpy.random.Generator
        Source of randomness.
    metric : {"euclidean", "cosine"}
        For ``"cosine"`` the rows are unit vectors and the returned centres are too.

    Returns
    -------
    numpy.ndarray
        ``(k, d)`` float32 centres (rows of ``x``).
    """
    x64 = x.astype(np.float64)
    m = x64.shape[0]
    sq = np.add.reduce(x64 * x64, axis=1)
    trials = 2 + int(np.log(k))

    def sqdist(c: np.ndarray) -> np.ndarray:
        return np.maximum(
            sq[:, None] - 2.0 * (x64 @ c.T) + np.add.reduce(c * c, axis=1)[None, :], 0
        )

    first = int(rng.integers(m))
    centers = [first]
    closest = sqdist(x64[[first]])[:, 0]
    for _ in range(1, k):
        pot = closest.sum()
        if pot <= 0:
            # all remaining points coincide with a centre: take unused rows in order
            unused = np.setdiff1d(np.arange(m), centers)
            centers.append(int(unused[0]))
            continue
        cum = np.cumsum(closest)
        cand = np.searchsorted(cum, rng.random(trials) * cum[-1], side="right")
        cand = np.minimum(cand, m - 1)
        d_cand = np.minimum(closest[:, None], sqdist(x64[cand]))
        best = int(np.argmin(d_cand.sum(axis=0)))
        centers.append(int(cand[best]))
        closest = d_cand[:, best]
    out = x[np.array(centers)].astype(np.float32)
    return prepare(out, metric)
