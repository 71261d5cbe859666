"""The exact k-nearest-neighbour search kernel: float32 candidates, exact decisions.

The search runs in two stages, so that results never depend on the BLAS kernel:

1. **Candidates** (fast, any rounding): a tile of query vectors is multiplied by the
   training matrix with one float32 GEMM (NumPy's BLAS) and each row of the cache-sized
   score tile is reduced to its best ``k + 1`` columns: with ``k + 1`` vectorised
   ``argmax`` passes up to 4 096 training vectors, and with faiss's C++ min-heap over the
   NumPy score tiles above that.
2. **Decision** (exact, order-fixed): the candidates are re-scored in float64 with
   :mod:`geoembed._exact` (exact products, fixed summation order), ranked by distance and
   then by canonical training position. A row is accepted only if no training vector
   outside its candidates could reach its top ``k`` given a proven bound on the float32
   GEMM's error (``|fl(q.x) - q.x| <= d u |q| |x| / (1 - d u)``); the rare other rows
   (exact duplicates, near ties) are re-scored over every training vector whose float32
   score is within twice that bound of the k-th best.

Every reported distance and neighbour is therefore a function of the query and the
training set only: the same bytes whatever the query batch, the chunking, the thread
split, and whether the CPU runs AVX2 or AVX-512 kernels. The distance definitions and
the tie rules are described in :mod:`geoembed.classify.knn`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from geoembed._exact import pair_dots, row_dots, unit_rows
from geoembed._scratch import scratch

__all__ = ["METRICS", "WEIGHTS", "ExactIndex", "canonical_order", "exact_kneighbors"]

METRICS = ("cosine", "euclidean")
WEIGHTS = ("uniform", "distance")

#: elements of one score tile (float32): 2 MiB keeps it in the L2/L3 cache
_TILE_ELEMS = 1 << 19
#: widest training tile; wider training sets are searched tile by tile and merged
_COL_TILE = 4096
#: above this many training vectors, rows are reduced with faiss's C++ heap (one compare
#: per score) instead of k + 1 argmax passes (measured: argmax passes win up to ~4 000)
_HEAP_MIN_TRAIN = 4096
#: training / query tile of the heap path (score tile 2 MiB)
_HEAP_COLS = 1024
_HEAP_ROWS = 512
#: unit roundoff of float32
_U32 = 2.0**-24


def _cosine_key(s: np.ndarray) -> np.ndarray:
    """scikit-learn's cosine distance ``clip(1 - s, 0, 2)`` in the dtype of ``s``."""
    d = s * -1
    d += 1
    return np.clip(d, 0.0, 2.0, out=d)


def _extract(S: np.ndarray, m: int, vals: np.ndarray, idx: np.ndarray, col0: int) -> None:
    """Move the ``m`` largest entries of each row of ``S`` (destroyed) into vals/idx.

    Equal values come out in column order (``argmax`` returns the first maximum).
    """
    q, ncol = S.shape
    flat = S.reshape(-1)
    offsets = np.arange(q) * ncol
    for j in range(m):
        a = S.argmax(axis=1)
        pos = offsets + a
        vals[:, j] = flat[pos]
        idx[:, j] = a + col0
        if j < m - 1:
            flat[pos] = -np.inf


def _faiss_heap() -> Any:
    """Return faiss when its heap can be used, else None (argmax passes instead)."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a core dependency
        return None
    return faiss if hasattr(faiss, "float_minheap_array_t") else None


class ExactIndex:
    """Training matrix prepared for search (normalised, tiled), rebuilt after unpickling."""

    def __init__(self, X: np.ndarray, metric: str) -> None:
        self.metric = metric
        self.n, self.d = X.shape
        self.X = unit_rows(X) if metric == "cosine" else np.ascontiguousarray(X, np.float32)
        self.sq64 = row_dots(self.X, self.X)  # exact |x|^2 (float64)
        self.xmax = float(np.sqrt(self.sq64.max())) if self.n else 0.0
        if metric == "euclidean":
            self.half_sq = (0.5 * self.sq64).astype(np.float32)
        # proven bound of the float32 candidate scores' error, per unit of |q| |x|max
        # (GEMM: d u / (1 - d u); euclidean adds the rounding of |x|^2 / 2 and of the
        # subtraction); 1 % of slack for the norms' own rounding
        du = (self.d + 3) * _U32
        self.err_unit = 1.01 * du / (1.0 - du)
        if self.n <= _COL_TILE * 3 // 2:
            bounds = [0, self.n]
        else:
            nt = -(-self.n // _COL_TILE)
            bounds = np.linspace(0, self.n, nt + 1).astype(int).tolist()
        self.tiles = list(itertools.pairwise(bounds))
        width = max(b - a for a, b in self.tiles)
        self.query_rows = int(np.clip((_TILE_ELEMS // width) // 64 * 64, 64, 1024))
        self.heap = _faiss_heap() if self.n > _HEAP_MIN_TRAIN else None
        if self.heap is not None:
            self.query_rows = _HEAP_ROWS
            nt = -(-self.n // _HEAP_COLS)
            hb = np.linspace(0, self.n, nt + 1).astype(int).tolist()
            self.heap_tiles = list(itertools.pairwise(hb))  # balanced: all >= 512 wide

    def _buffer(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """Return a reusable per-thread scratch array of ``shape`` (float32).

        Reusing the score tile avoids a fresh ``mmap`` per tile on Dask workers
        (:mod:`geoembed._scratch`).
        """
        return scratch(f"knn-{name}", shape)

    def _scores(self, Qb: np.ndarray, a: int, b: int) -> np.ndarray:
        """Float32 candidate scores (larger is nearer): ``q.x`` or ``q.x - |x|^2 / 2``."""
        S = np.matmul(Qb, self.X[a:b].T, out=self._buffer("S", (len(Qb), b - a)))
        if self.metric == "euclidean":
            S -= self.half_sq[a:b]
        return S

    def top(self, Qb: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``m`` float32 scores per row (descending) and their training indices."""
        q = len(Qb)
        vals = np.empty((q, m), np.float32)
        idx = np.empty((q, m), np.int64)
        if self.heap is not None:
            return self._top_heap(Qb, m, vals, idx)
        if len(self.tiles) == 1:
            _extract(self._scores(Qb, 0, self.n), m, vals, idx, 0)
            return vals, idx
        tv, ti = [], []
        for a, b in self.tiles:
            mt = min(m, b - a)
            v = np.empty((q, mt), np.float32)
            i = np.empty((q, mt), np.int64)
            _extract(self._scores(Qb, a, b), mt, v, i, a)
            tv.append(v)
            ti.append(i)
        V = np.concatenate(tv, axis=1)
        Idx = np.concatenate(ti, axis=1)
        pos = np.empty((q, m), np.int64)
        _extract(V, m, vals, pos, 0)
        return vals, np.take_along_axis(Idx, pos, axis=1)

    def _top_heap(
        self, Qb: np.ndarray, m: int, vals: np.ndarray, idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``m`` with faiss's min-heap over NumPy-computed score tiles.

        The heap keeps the exact multiset of the ``m`` best values; which of several
        equal values it keeps is arbitrary, which is harmless: candidates are re-scored
        exactly and a boundary tie sends the row to the wide re-scoring.
        """
        faiss = self.heap
        assert faiss is not None
        q = len(Qb)
        h = faiss.float_minheap_array_t()
        h.nh = q
        h.k = m
        h.val = faiss.swig_ptr(vals)
        h.ids = faiss.swig_ptr(idx)
        h.heapify()
        for a, b in self.heap_tiles:
            S = self._scores(Qb, a, b)
            h.addn(b - a, faiss.swig_ptr(S), a, 0, q)
        h.reorder()
        return vals, idx

    # -- exact decision --------------------------------------------------------------------
    def _keys(self, Qx: np.ndarray, qsq: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> Any:
        """Exact float32 ranking keys (distances, squared for euclidean) of candidates.

        ``rows`` (n,) and ``cand`` (n, m) index the queries and training vectors.
        """
        s = pair_dots(Qx[rows], self.X[cand])
        if self.metric == "cosine":
            return _cosine_key(s.astype(np.float32))
        d2 = qsq[rows][:, None] - 2.0 * s
        d2 += self.sq64[cand]
        return np.maximum(d2.astype(np.float32), np.float32(0.0))

    def _margin(self, qn: np.ndarray) -> np.ndarray:
        """Float32 score slack that keeps every possible top-k member (per query).

        Twice the GEMM error bound, plus the width of a float32 step of the key (vectors
        whose keys round together with the k-th must be ranked too).
        """
        scale = qn * self.xmax + (0.5 * self.xmax**2 if self.metric == "euclidean" else 0.0)
        err = self.err_unit * scale
        step: Any = 4 * 2.0**-23  # cosine: a few float32 steps of the distance
        if self.metric == "euclidean":
            step = 2.0**-23 * (qn + self.xmax) ** 2
        return 2.0 * err + step + 1e-30

    def search(
        self, Q: np.ndarray, k: int, *, distances: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """Exact ``k`` nearest neighbours of each row of ``Q`` (distance, index).

        With ``distances=False`` only the neighbour *set* is exact (what uniform votes
        need): rows whose candidates are unambiguous skip the float64 re-score, their
        neighbours come unordered, and no distances are returned.
        """
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        nq = len(Q)
        dist = np.empty((nq, k), np.float32) if distances else None
        ind = np.empty((nq, k), np.int64)
        m = min(k + 1, self.n)
        step = self.query_rows
        for q0 in range(0, nq, step):
            Qx = Q[q0 : q0 + step]
            if self.metric == "cosine":
                Qx = unit_rows(Qx)
            qsq = row_dots(Qx, Qx)
            vals, cand = self.top(Qx, m)
            wide = np.empty(0, np.int64)
            if m < self.n:
                # a training vector outside the candidates could still belong in the top k
                thresh = vals[:, k - 1] - self._margin(np.sqrt(qsq))
                wide = np.flatnonzero(vals[:, m - 1] >= thresh)
            if distances or m == self.n:
                rows = np.arange(len(Qx))
                key = self._keys(Qx, qsq, rows, cand)
                o = np.lexsort((cand, key), axis=-1)[:, :k]
                d = np.take_along_axis(key, o, axis=1)
                i = np.take_along_axis(cand, o, axis=1)
            else:  # the first k candidates are exactly the top-k set
                d = np.empty((len(Qx), k), np.float32)
                i = cand[:, :k]
            if len(wide):
                d[wide], i[wide] = self._wide(Qx, qsq, wide, thresh[wide], k)
            if dist is not None:
                dist[q0 : q0 + len(Qx)] = d
            ind[q0 : q0 + len(Qx)] = i
        if dist is not None and self.metric == "euclidean":
            return np.sqrt(dist).astype(np.float64), ind  # float32 root, like scikit-learn
        return dist, ind

    def search_bands(
        self,
        Qt: np.ndarray,
        k: int,
        decode: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k``-nearest-neighbour *sets* of the columns of a band-major block.

        ``Qt`` is ``(d, P)`` (a block as stored, any strides): its columns are the
        queries, read in place by the GEMM (no transposing copy, no normalised copy).
        ``decode(piece, out)``, if given, turns a ``(d, q)`` slice of ``Qt`` (e.g. int8
        codes) into float32 vectors written to ``out`` (a reused tile) and returns it,
        one cache-sized query tile at a time, so that the decoded block never exists as
        a whole. Returns the neighbour indices ``(P, k)`` (unordered
        within a row, like :meth:`search` with ``distances=False``) and the ``(P,)``
        mask of columns without NaN; the indices of NaN columns are meaningless.

        Cosine scores are taken on the raw queries: scaling a row by ``1 / |q|`` does not
        change its ranking, and the error bound is scaled by ``|q|`` and widened by the
        rounding of the normalised query that the exact decision uses (``u |x|max``).
        Columns whose candidates are ambiguous go through :meth:`search` on their own,
        so every result equals :meth:`search`'s exactly.
        """
        d, nq = Qt.shape
        ind = np.zeros((nq, k), np.int64)
        valid = np.empty(nq, bool)
        m = min(k + 1, self.n)
        # every training vector a candidate: rank them all exactly, row by row
        step = nq if m == self.n else self.query_rows
        pending: list[tuple[np.ndarray, np.ndarray]] = []  # ambiguous columns, vectors
        n_pending = 0
        for q0 in range(0, nq, step):
            q1 = min(q0 + step, nq)
            if decode is None:
                T = Qt[:, q0:q1]
            else:  # into a reused tile
                T = decode(Qt[:, q0:q1], self._buffer("dec", (d, q1 - q0)))
            # |q|^2 in float32 along the band axis: NaN marks nodata (the mask, fused);
            # the float32 sum of d squares is within d u of the exact one (bound widened)
            qsq = np.square(T, out=self._buffer("sq", T.shape)).sum(axis=0)
            ok = ~np.isnan(qsq)
            valid[q0:q1] = ok
            if m == self.n:
                cols = np.flatnonzero(ok)
                ind[cols] = self.search(np.ascontiguousarray(T[:, cols].T), k, distances=False)[1]
                continue
            with np.errstate(invalid="ignore"):
                qn = np.sqrt(qsq.astype(np.float64)) * (1.0 + 2.0 * d * _U32)
            vals, cand = self.top(T.T, m)
            if self.metric == "cosine":
                # _margin of a unit query (plus the unit query's rounding), scaled by |q|
                unit = 2.0 * (self.err_unit + 2.0 * _U32) * self.xmax + 4 * 2.0**-23
                margin = qn * unit + 1e-30
            else:
                margin = self._margin(qn)
            with np.errstate(invalid="ignore"):
                wide = np.flatnonzero(vals[:, m - 1] >= vals[:, k - 1] - margin)
            ind[q0:q1] = cand[:, :k]
            if len(wide):  # rare: gathered over tiles, searched in batches (fewer calls)
                pending.append((wide + q0, np.ascontiguousarray(T[:, wide].T)))
                n_pending += len(wide)
                if n_pending >= step:
                    self._search_pending(pending, ind, k)
                    n_pending = 0
        self._search_pending(pending, ind, k)
        return ind, valid

    def _search_pending(
        self, pending: list[tuple[np.ndarray, np.ndarray]], ind: np.ndarray, k: int
    ) -> None:
        """Exact neighbour sets of the gathered ambiguous columns into ``ind`` (empties it).

        :meth:`search` gives every row the same result whatever the batch, so rows of
        several tiles are searched in one call.
        """
        if not pending:
            return
        cols = np.concatenate([c for c, _ in pending])
        rows = np.concatenate([r for _, r in pending])
        pending.clear()
        ind[cols] = self.search(rows, k, distances=False)[1]

    def _wide(
        self, Qx: np.ndarray, qsq: np.ndarray, rows: np.ndarray, thresh: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank ``rows`` over every training vector scoring at least ``thresh`` (rare)."""
        d = np.empty((len(rows), k), np.float32)
        ind = np.empty((len(rows), k), np.int64)
        step = max(1, _TILE_ELEMS // max(self.n, 1))
        for r0 in range(0, len(rows), step):
            rr = rows[r0 : r0 + step]
            S = self._scores(Qx[rr], 0, self.n)
            r_loc, cols = np.nonzero(S >= thresh[r0 : r0 + step, None])
            key = self._keys(Qx, qsq, rr[r_loc], cols[:, None])[:, 0]
            o = np.lexsort((cols, key, r_loc))
            r_loc, cols, key = r_loc[o], cols[o], key[o]
            first = np.searchsorted(r_loc, np.arange(len(rr)))
            take = first[:, None] + np.arange(k)  # every row has >= k candidates
            d[r0 : r0 + len(rr)] = key[take]
            ind[r0 : r0 + len(rr)] = cols[take]
        return d, ind


def canonical_order(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Permutation sorting training rows by (vector bytes, label): row order stops mattering."""
    o1 = np.argsort(y, kind="stable")
    rows = np.ascontiguousarray(X[o1]).view(np.dtype((np.void, X.dtype.itemsize * X.shape[1])))
    o2 = np.argsort(rows.ravel(), kind="stable")
    return o1[o2]


def exact_kneighbors(
    X: np.ndarray, Q: np.ndarray, k: int, *, metric: str = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of ``Q`` among the rows of ``X`` (indices into ``X``, no reordering).

    Used to measure the recall of approximate indexes.
    """
    index = ExactIndex(np.ascontiguousarray(X, dtype=np.float32), metric)
    dist, ind = index.search(np.ascontiguousarray(Q, dtype=np.float32), min(k, len(X)))
    assert dist is not None
    return dist, ind
