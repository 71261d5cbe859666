"""Exact k-nearest-neighbour classification on BLAS, with stable tie-breaking.

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

Every reported distance, neighbour and vote is therefore a function of the query and the
training set only: the same bytes whatever the query batch, the chunking, the thread
split, and whether the CPU runs AVX2 or AVX-512 kernels.

Distances follow scikit-learn's brute-force definitions, computed from the exact
scores:

* ``cosine``: rows are scaled to unit length (norms in float64) and the distance is
  ``clip(1 - s, 0, 2)`` in float32, with ``s`` the float64 similarity rounded to float32.
  scikit-learn takes ``s`` from its float32 GEMM instead, so distances agree with
  ``KNeighborsClassifier(algorithm="brute")`` to a few float32 ulp of the similarity
  (``|d - d_sklearn| <= 4 * 2**-23``), and predictions and neighbours agree except at
  neighbours whose distances differ by less than that;
* ``euclidean``: the squared distance ``|q|^2 - 2 q.x + |x|^2`` in float64, rounded to
  float32 (scikit-learn's float64 up-cast path), then its square root.

Ties: neighbours at equal distance are ordered by their position in the model's canonical
training order (training rows sorted by their bytes, then label), so the result does not
depend on the order of the training rows; equal votes go to the lowest class id.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from dask.base import normalize_token
from sklearn.base import BaseEstimator, ClassifierMixin

from geoembed._exact import pair_dots, row_dots, unit_rows
from geoembed.errors import LabelError, ModelError, NotFittedError

__all__ = ["METRICS", "WEIGHTS", "KNNClassifier", "exact_kneighbors"]

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


def _normalize(X: np.ndarray) -> np.ndarray:
    """Scale rows to unit length (float32), as the cosine metric compares them."""
    return unit_rows(X)


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


class _Index:
    """Training matrix prepared for search (normalised, tiled), rebuilt after unpickling."""

    def __init__(self, X: np.ndarray, metric: str) -> None:
        self._scratch = threading.local()
        self.metric = metric
        self.n, self.d = X.shape
        self.X = _normalize(X) if metric == "cosine" else np.ascontiguousarray(X, np.float32)
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

        Dask workers set MALLOC_TRIM_THRESHOLD_, which makes glibc map and page-fault
        every large allocation afresh: reusing the score tile avoids that cost in every
        tile.
        """
        size = shape[0] * shape[1]
        buf = getattr(self._scratch, name, None)
        if buf is None or buf.size < size:
            buf = np.empty(size, np.float32)
            setattr(self._scratch, name, buf)
        return buf[:size].reshape(shape)

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
                Qx = _normalize(Qx)
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


def _canonical_order(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Permutation sorting training rows by (vector bytes, label): row order stops mattering."""
    o1 = np.argsort(y, kind="stable")
    rows = np.ascontiguousarray(X[o1]).view(np.dtype((np.void, X.dtype.itemsize * X.shape[1])))
    o2 = np.argsort(rows.ravel(), kind="stable")
    return o1[o2]


class KNNClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Exact k-nearest-neighbour classifier for embedding vectors.

    A scikit-learn estimator: ``get_params``/``set_params``, ``clone``, ``score``;
    parameters are validated in :meth:`fit`; an unfitted model raises
    :class:`~geoembed.errors.NotFittedError`.

    Parameters
    ----------
    n_neighbors : int, default 5
        Number of neighbours (``k``; the old keyword ``k=`` still works, deprecated).
    metric : {"cosine", "euclidean"}, default "cosine"
        Cosine distance suits unit-length embeddings (AlphaEarth).
    weights : {"uniform", "distance"}, default "uniform"
        Equal votes, or votes weighted by inverse distance (scikit-learn's definition:
        a query at distance 0 from some training vectors takes only their votes).
    allow_small_classes : bool, default False
        Accept classes with fewer than ``n_neighbors`` training vectors.

    Attributes
    ----------
    n_features_in_ : int
        Length of the vectors.
    classes_ : ndarray (n_classes,) int64
        Class ids ``0..n_classes-1`` (names in ``class_names``).
    X_ : ndarray (n, d) float32
        Training vectors in canonical order.
    y_ : ndarray (n,) int64
        Their class ids ``0..n_classes-1``.
    rows_ : ndarray (n,) int64
        Position of each canonical row in the training data passed to :meth:`fit`.
    class_names, class_values, colors, band_names
        Metadata saved with the model.
    """

    kind = "exact"

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "cosine",
        weights: str = "uniform",
        allow_small_classes: bool = False,
        **deprecated: Any,
    ) -> None:
        if "k" in deprecated:
            warnings.warn(
                "KNNClassifier(k=...) is deprecated; use n_neighbors=.",
                DeprecationWarning,
                stacklevel=2,
            )
            n_neighbors = deprecated.pop("k")
        if deprecated:
            raise TypeError(f"unexpected keyword arguments {sorted(deprecated)}")
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.weights = weights
        self.allow_small_classes = allow_small_classes

    def _validate_params(self) -> None:  # type: ignore[override]
        if self.metric not in METRICS:
            raise ModelError(f"metric {self.metric!r} is not supported; use one of {METRICS}.")
        if self.weights not in WEIGHTS:
            raise ModelError(f"weights {self.weights!r} is not supported; use one of {WEIGHTS}.")
        k = self.n_neighbors
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ModelError(f"n_neighbors (k) must be a positive integer, got {k!r}.")

    @property
    def k(self) -> int:
        """Number of neighbours (``n_neighbors``)."""
        return int(self.n_neighbors)

    # -- fitting -------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        class_names: Sequence[str] | None = None,
        class_values: Sequence[Any] | None = None,
        colors: Sequence[Any] | None = None,
        band_names: Sequence[str] | None = None,
        allow_small_classes: bool | None = None,
    ) -> KNNClassifier:
        """Store the training vectors (no copy of the field is involved).

        Parameters
        ----------
        X : array-like (n, d)
            Training vectors (float32 is kept; other dtypes are converted).
        y : array-like (n,)
            Class ids ``0..n_classes-1``.
        class_names : sequence of str, optional
            Names of the classes (length ``n_classes``); default ``"0"``, ``"1"``...
        class_values : sequence, optional
            Original label values (as in the label file), saved with the model.
        colors : sequence, optional
            One colour per class (saved with the model, used for COG colour maps).
        band_names : sequence of str, optional
            Band names of the field the vectors came from; checked at prediction.
        allow_small_classes : bool, optional
            Accept classes with fewer than ``k`` training vectors (default: the
            constructor's ``allow_small_classes``).

        Returns
        -------
        KNNClassifier
            ``self``.

        Raises
        ------
        LabelError
            Empty training data, non-finite vectors, bad class ids, or a class with fewer
            than ``k`` vectors.
        """
        self._validate_params()
        if allow_small_classes is None:
            allow_small_classes = bool(self.allow_small_classes)
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) == 0:
            raise LabelError(
                f"training vectors must be a non-empty (n, bands) array; got shape {X.shape}."
            )
        if y.shape != (len(X),):
            raise LabelError(f"{len(X)} training vectors but labels of shape {y.shape}.")
        if not np.issubdtype(y.dtype, np.integer):
            raise LabelError(
                f"class ids must be integers 0..C-1, got dtype {y.dtype}; build the training "
                "data with geoembed.labels, which encodes label values as class ids."
            )
        X = np.ascontiguousarray(X, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if len(bad):
            raise LabelError(
                f"{len(bad)} training vectors hold NaN or inf (rows {bad[:10].tolist()}); "
                "drop them (they come from nodata pixels)."
            )
        n_classes = len(class_names) if class_names is not None else int(y.max()) + 1
        if y.min() < 0 or y.max() >= n_classes:
            raise LabelError(
                f"class ids must lie in 0..{n_classes - 1}; found {int(y.min())}..{int(y.max())}."
            )
        if len(X) < self.k:
            raise LabelError(
                f"k={self.k} neighbours requested but only {len(X)} training vectors; "
                "lower -k or add labels."
            )
        counts = np.bincount(y, minlength=n_classes)
        names = [str(c) for c in class_names] if class_names is not None else None
        small = [c for c in range(n_classes) if 0 < counts[c] < self.k]
        if small and not allow_small_classes:
            label = names or [str(c) for c in range(n_classes)]
            listed = ", ".join(f"{label[c]!r} ({counts[c]})" for c in small[:10])
            raise LabelError(
                f"k={self.k} is larger than the smallest class: {listed} have fewer than k "
                "training samples. Lower -k, add labels for those classes, or drop them."
            )
        order = _canonical_order(X, y)
        self.X_ = X[order]
        self.y_ = y[order].astype(np.int64)
        self.rows_ = order.astype(np.int64)
        self.n_classes = n_classes
        self.n_features_in_ = int(X.shape[1])
        self.classes_ = np.arange(n_classes, dtype=np.int64)
        self.class_names = names or [str(c) for c in range(n_classes)]
        self.class_values = list(class_values) if class_values is not None else None
        self.colors = list(colors) if colors is not None else None
        self.band_names = [str(b) for b in band_names] if band_names is not None else None
        self._index: _Index | None = None
        return self

    @classmethod
    def from_training(
        cls,
        training: Any,
        k: int = 5,
        *,
        metric: str = "cosine",
        weights: str = "uniform",
        allow_small_classes: bool = False,
    ) -> KNNClassifier:
        """Fit on a :class:`geoembed.labels.TrainingSet` (keeps its class table and bands)."""
        return cls(k, metric=metric, weights=weights).fit(
            training.X,
            training.y,
            class_names=getattr(training, "class_names", None),
            class_values=getattr(training, "class_values", None),
            colors=getattr(training, "colors", None),
            band_names=getattr(training, "bands", None),
            allow_small_classes=allow_small_classes,
        )

    # -- state -----------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        """Number of training vectors."""
        return len(self.X_)

    @property
    def n_features(self) -> int:
        """Length of the vectors."""
        return int(self.X_.shape[1])

    def _check_fitted(self) -> None:
        if not hasattr(self, "X_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted; call fit() first.")

    @property
    def index(self) -> _Index:
        """The search structure (built on first use, also after unpickling on a worker)."""
        self._check_fitted()
        index = getattr(self, "_index", None)
        if index is None:
            index = self._index = _Index(self.X_, self.metric)
        return index

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["_index"] = None  # rebuilt on the worker: ship only the training data
        return state

    def __dask_tokenize__(self) -> str:
        self._check_fitted()
        h = hashlib.sha1(usedforsecurity=False)
        for a in (self.X_, self.y_):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((type(self).__name__, self.params(), self.n_classes)).encode())
        return h.hexdigest()

    def params(self) -> dict[str, Any]:
        """Parameters saved with the model."""
        return {"k": self.k, "metric": self.metric, "weights": self.weights}

    # -- prediction ------------------------------------------------------------------------
    def _check_queries(self, Q: Any) -> np.ndarray:
        self._check_fitted()
        Q = np.asarray(Q)
        if Q.ndim != 2 or Q.shape[1] != self.n_features:
            raise ModelError(
                f"queries have shape {Q.shape}; this model takes vectors of length "
                f"{self.n_features}."
            )
        return np.ascontiguousarray(Q, dtype=np.float32)

    def _search(
        self, Q: np.ndarray, distances: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray]:
        return self.index.search(Q, self.k, distances=distances)

    def kneighbors(self, Q: Any) -> tuple[np.ndarray, np.ndarray]:
        """Distances and training-row indices of the ``k`` nearest neighbours.

        Indices refer to the rows of the ``X`` given to :meth:`fit`. Distances are sorted
        ascending; equal distances keep the canonical training order.
        """
        dist, ind = self._search(self._check_queries(Q))
        assert dist is not None
        return dist, self.rows_[ind]

    def _votes(
        self, Q: np.ndarray, need_counts: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Count the votes: totals ``(q, C)`` (None if not needed), class ids, winning share."""
        dist, ind = self._search(Q, distances=self.weights == "distance")
        lab = self.y_[ind]
        q, k = lab.shape
        r = np.arange(q)
        C = self.n_classes
        pred: Any
        counts: Any
        if self.weights == "uniform" and k < 16 and C <= 16 and not need_counts:
            # 4-bit counters packed in one uint64 per pixel: k + C vector passes
            shifts = (4 * lab).astype(np.uint64)
            packed = np.zeros(q, np.uint64)
            for j in range(k):
                packed += np.left_shift(np.uint64(1), shifts[:, j])
            best = np.zeros(q, np.uint64)
            pred = np.zeros(q, np.int64)
            for c in range(C):
                cnt = (packed >> np.uint64(4 * c)) & np.uint64(15)
                pred[cnt > best] = c  # strictly more votes: ties keep the lower class id
                np.maximum(best, cnt, out=best)
            return None, pred, best / k
        flat = (r[:, None] * C + lab).ravel()
        if self.weights == "uniform":
            counts = np.bincount(flat, minlength=q * C).astype(np.float64).reshape(q, C)
            pred = counts.argmax(axis=1)
            return counts, pred, counts[r, pred] / k
        assert dist is not None
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        inf_mask = np.isinf(w)
        inf_row = inf_mask.any(axis=1)
        w[inf_row] = inf_mask[inf_row]
        # bincount adds each row's weights in neighbour order, in float64, like sklearn
        counts = np.bincount(flat, weights=w.ravel(), minlength=q * C).reshape(q, C)
        if k < 8:
            pred = counts.argmax(axis=1)
        else:
            # scikit-learn's weighted_mode sums each class with np.sum (pairwise order
            # for k >= 8): decide with the same sums so that near-ties break the same way
            w64 = w.astype(np.float64)
            best = np.zeros(q)
            pred = np.zeros(q, np.int64)
            for c in np.unique(lab):
                s = np.where(lab == c, w64, 0.0).sum(axis=1)
                pred[s > best] = c
                best = np.maximum(best, s)
        return counts, pred, counts[r, pred] / counts.sum(axis=1)

    def predict(self, Q: Any) -> np.ndarray:
        """Class ids (int64) of the query vectors."""
        return self._votes(self._check_queries(Q), need_counts=False)[1]

    def predict_proba(self, Q: Any) -> np.ndarray:
        """Vote shares per class, shape ``(n, n_classes)``, float64."""
        counts, _, _ = self._votes(self._check_queries(Q))
        assert counts is not None
        return counts / counts.sum(axis=1, keepdims=True)

    def pixel_outputs(self, Q: np.ndarray, probabilities: bool = False) -> np.ndarray:
        """``(n, 2 [+ C])`` float32: class id, confidence (winning vote share), [shares]."""
        counts, pred, share = self._votes(self._check_queries(Q), need_counts=probabilities)
        out = np.empty((len(pred), 2 + (self.n_classes if probabilities else 0)), np.float32)
        out[:, 0] = pred
        out[:, 1] = share
        if probabilities:
            assert counts is not None
            out[:, 2:] = counts / counts.sum(axis=1, keepdims=True)
        return out


@normalize_token.register(KNNClassifier)
def _tokenize_knn(model: KNNClassifier) -> str:
    # more specific than the BaseEstimator normaliser dask-ml registers, which hashes
    # get_params() and every fitted attribute (rows_ depends on the training-row order)
    return model.__dask_tokenize__()


def exact_kneighbors(
    X: np.ndarray, Q: np.ndarray, k: int, *, metric: str = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of ``Q`` among the rows of ``X`` (indices into ``X``, no reordering).

    Used to measure the recall of approximate indexes.
    """
    index = _Index(np.ascontiguousarray(X, dtype=np.float32), metric)
    dist, ind = index.search(np.ascontiguousarray(Q, dtype=np.float32), min(k, len(X)))
    assert dist is not None
    return dist, ind
