"""Approximate kNN (faiss IVF or HNSW) for label sets far beyond Earth Engine's 1 M rows.

Approximate search is never chosen silently: it is a separate class, and fitting it
measures recall@k against exact search on a sample, stored in ``model.recall`` and in the
attributes of every output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geoembed._exact import unit_rows
from geoembed.classify.knn import KNNClassifier
from geoembed.classify.search import _cosine_key, exact_kneighbors
from geoembed.errors import ModelError

__all__ = ["INDEXES", "ApproximateKNNClassifier", "recall_at_k"]

INDEXES = ("ivf", "hnsw")


#: vectors added to a faiss index per step of its build's progress bar
_ADD_BATCH = 65536


def _index_bar(total: int, kind: str) -> Any:
    """Return a bar over the index build's steps when ``geoembed.progress`` is set."""
    import dask

    if not dask.config.get("geoembed.progress", False):
        return None
    from geoembed._bars import progress_bar

    return progress_bar(total, f"building the {kind} index", unit="step")


def _advance(bar: Any) -> None:
    if bar is not None:
        bar.update(1)


def recall_at_k(approx_ind: Any, exact_ind: Any) -> float:
    """Fraction of the exact neighbours that the approximate search found.

    Rows of ``exact_ind`` and ``approx_ind`` are the neighbour ids of each query.
    """
    total = sum(len(e) for e in exact_ind)
    hits = sum(len(np.intersect1d(a, e)) for a, e in zip(approx_ind, exact_ind))
    return hits / total if total else 1.0


class ApproximateKNNClassifier(KNNClassifier):
    """kNN classifier on a faiss IVF-Flat or HNSW index (explicitly approximate).

    Parameters
    ----------
    k, metric, weights
        As for :class:`KNNClassifier`.
    index : {"ivf", "hnsw"}, default "ivf"
        IVF-Flat (``nlist`` cells, ``nprobe`` visited) or HNSW (``hnsw_m`` links,
        ``ef_search`` beam).
    nlist : int, optional
        IVF cells; default ``4 * sqrt(n)`` clipped to 16..65536.
    nprobe : int, default 32
        IVF cells visited per query.
    hnsw_m, ef_search : int
        HNSW graph degree and search beam.
    recall_sample : int, default 2000
        Training vectors used as queries (themselves excluded) to measure recall@k at fit.
    seed : int, default 0
        Seed of the IVF training sample and of the recall sample.
    """

    kind = "approximate"

    def __init__(
        self,
        k: int = 5,
        *,
        metric: str = "cosine",
        weights: str = "uniform",
        index: str = "ivf",
        nlist: int | None = None,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_search: int = 128,
        recall_sample: int = 2000,
        seed: int = 0,
    ) -> None:
        super().__init__(k, metric=metric, weights=weights)
        if index not in INDEXES:
            raise ModelError(f"approximate index {index!r} is not supported; use one of {INDEXES}.")
        self.index_kind = index
        self.nlist = nlist
        self.nprobe = int(nprobe)
        self.hnsw_m = int(hnsw_m)
        self.ef_search = int(ef_search)
        self.recall_sample = int(recall_sample)
        self.seed = int(seed)
        self.recall: float | None = None
        self._faiss: Any = None
        self._faiss_bytes: np.ndarray | None = None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor parameters (scikit-learn's ``get_params``; ``clone`` works)."""
        return {
            "k": self.k,
            "metric": self.metric,
            "weights": self.weights,
            "index": self.index_kind,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "hnsw_m": self.hnsw_m,
            "ef_search": self.ef_search,
            "recall_sample": self.recall_sample,
            "seed": self.seed,
        }

    def params(self) -> dict[str, Any]:
        """Parameters saved with the model."""
        p = super().params()
        p.update(
            index=self.index_kind,
            nlist=self.nlist,
            nprobe=self.nprobe,
            hnsw_m=self.hnsw_m,
            ef_search=self.ef_search,
            recall=self.recall,
            seed=self.seed,
        )
        return p

    def fit(self, X: Any, y: Any, **kwargs: Any) -> ApproximateKNNClassifier:
        """Fit, build the faiss index and measure recall@k on a sample."""
        super().fit(X, y, **kwargs)
        self._build()
        self.recall = self._measure_recall()
        return self

    def _vectors(self, X: np.ndarray) -> np.ndarray:
        return unit_rows(X) if self.metric == "cosine" else np.ascontiguousarray(X)

    def _build(self) -> None:
        import faiss

        Xv = self._vectors(self.X_)
        n, d = Xv.shape
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        index: Any
        if self.index_kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, metric)
            index.hnsw.efConstruction = max(40, self.ef_search)
        else:
            nlist = self.nlist or int(np.clip(4 * np.sqrt(n), 1, 65536))
            nlist = max(1, min(nlist, n // 39))  # faiss wants >= 39 points per cell
            self.nlist = nlist
            quantizer = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
            index.cp.seed = self.seed
            rng = np.random.default_rng(self.seed)
            sample = (
                Xv if n <= 256 * nlist else Xv[np.sort(rng.choice(n, 256 * nlist, replace=False))]
            )
        batches = range(0, n, _ADD_BATCH)
        bar = _index_bar(len(batches) + (self.index_kind != "hnsw"), f"faiss {self.index_kind}")
        try:
            if self.index_kind != "hnsw":
                index.train(sample)
                _advance(bar)
            for start in batches:  # in batches, so the bar moves while vectors are added
                index.add(Xv[start : start + _ADD_BATCH])
                _advance(bar)
        finally:
            if bar is not None:
                bar.close()
        self._set_search_params(index)
        self._faiss = index
        self._faiss_bytes = faiss.serialize_index(index)

    def _set_search_params(self, index: Any) -> None:
        if self.index_kind == "hnsw":
            index.hnsw.efSearch = max(self.ef_search, self.k)
        else:
            index.nprobe = min(self.nprobe, index.nlist)

    @property
    def faiss_index(self) -> Any:
        """The faiss index (deserialised on first use, e.g. on a worker)."""
        self._check_fitted()
        if self._faiss is None:
            import faiss

            if self._faiss_bytes is None:
                self._build()
            else:
                self._faiss = faiss.deserialize_index(self._faiss_bytes)
                self._set_search_params(self._faiss)
        return self._faiss

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_faiss"] = None
        return state

    def _raw_search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        D, ind = self.faiss_index.search(self._vectors(Q), k)
        if self.metric == "cosine":
            dist = _cosine_key(D)
        else:
            dist = np.sqrt(np.maximum(D.astype(np.float64), 0.0))
        missing = (ind < 0).any(axis=1)
        if missing.any():  # fewer than k found (tiny cells): exact search for those rows
            d2, i2 = self.index.search(Q[missing], k)
            dist[missing] = d2
            ind[missing] = i2
        return dist, ind

    def _search(self, Q: np.ndarray, distances: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return self._raw_search(Q, self.k)

    def _measure_recall(self) -> float:
        n = self.n_train
        k = min(self.k, n - 1)
        if k < 1:
            return 1.0
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.choice(n, min(self.recall_sample, n), replace=False))
        Q = self.X_[rows]
        _, approx = self._raw_search(Q, k + 1)
        _, exact = exact_kneighbors(self.X_, Q, k + 1, metric=self.metric)
        # each query is a training vector: drop itself from both lists
        a = [row[row != r][:k] for row, r in zip(approx, rows)]
        e = [row[row != r][:k] for row, r in zip(exact, rows)]
        return float(recall_at_k(a, e))

    def measure_recall(self, queries: Any) -> float:
        """recall@k of this index against exact search for the given query vectors."""
        Q = self._check_queries(queries)
        _, approx = self._raw_search(Q, self.k)
        _, exact = self.index.search(Q, self.k)
        return recall_at_k(approx, exact)
