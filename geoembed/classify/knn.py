"""Exact k-nearest-neighbour classification on BLAS, with stable tie-breaking.

The neighbours come from the exact search kernel of :mod:`geoembed.classify.search`
(float32 BLAS proposes candidates, an order-fixed float64 re-score decides, with a proven
bound on the GEMM's error), so every reported distance, neighbour and vote is a function
of the query and the training set only: the same bytes whatever the query batch, the
chunking, the thread split, and whether the CPU runs AVX2 or AVX-512 kernels.

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
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from dask.base import normalize_token
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.multiclass import check_classification_targets

from geoembed.classify.search import (
    METRICS,
    WEIGHTS,
    ExactIndex,
    canonical_order,
    exact_kneighbors,
)
from geoembed.errors import LabelError, ModelError, NotFittedError

__all__ = ["METRICS", "WEIGHTS", "KNNClassifier", "exact_kneighbors"]

#: old private names, kept for code that imported them
_Index = ExactIndex
_canonical_order = canonical_order

#: model metadata set by fit (stored privately: public attributes are parameters)
#: largest k whose uniform votes are counted pairwise (k (k - 1) / 2 row comparisons)
_PAIR_VOTE_MAX_K = 32

_METADATA = ("n_classes", "class_names", "class_values", "colors", "band_names")


def _metadata(name: str, doc: str) -> property:
    private = "_" + name

    def get(self: Any) -> Any:
        try:
            return self.__dict__[private]
        except KeyError:
            raise AttributeError(name) from None

    def set_(self: Any, value: Any) -> None:
        self.__dict__[private] = value

    return property(get, set_, doc=doc)


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
    classes_ : ndarray (n_classes,)
        The class labels: ids ``0..n_classes-1`` when ``y`` holds such ids (geoembed's
        training sets), else the sorted distinct values of ``y`` (any labels, as in
        scikit-learn; ``predict`` returns them, class maps hold their positions).
    X_ : ndarray (n, d) float32
        Training vectors in canonical order.
    y_ : ndarray (n,) int64
        Their class ids ``0..n_classes-1`` (positions in ``classes_``).
    rows_ : ndarray (n,) int64
        Position of each canonical row in the training data passed to :meth:`fit`.
    class_names, class_values, colors, band_names
        Metadata saved with the model (properties; set by :meth:`fit`).
    """

    kind = "exact"

    n_classes = _metadata("n_classes", "Number of classes (``len(classes_)``).")
    class_names = _metadata("class_names", "Class names, in class-id order.")
    class_values = _metadata("class_values", "Original label values (None if not given).")
    colors = _metadata("colors", "One colour per class (None if not given).")
    band_names = _metadata("band_names", "Band names of the training field (or None).")

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "cosine",
        weights: str = "uniform",
        allow_small_classes: bool = False,
        k: int | None = None,
    ) -> None:
        if k is not None:
            _warn_k()
            n_neighbors = k
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.weights = weights
        self.allow_small_classes = allow_small_classes

    @classmethod
    def _get_param_names(cls) -> list[str]:
        # the deprecated k= alias is not a parameter of its own (scikit-learn's convention)
        return [p for p in super()._get_param_names() if p != "k"]

    def set_params(self, **params: Any) -> KNNClassifier:
        """Set parameters (scikit-learn's ``set_params``; ``k=`` is ``n_neighbors=``)."""
        if "k" in params:
            _warn_k()
            k = params.pop("k")
            if k is not None:
                params["n_neighbors"] = k
        return super().set_params(**params)  # type: ignore[no-any-return]

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in _METADATA:  # models pickled before the metadata became properties
            if name in state:
                state["_" + name] = state.pop(name)
        super().__setstate__(state)

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
            Class ids ``0..n_classes-1`` (kept as they are, ``classes_`` is
            ``0..n_classes-1``), or any discrete labels (strings, negative or
            non-contiguous integers), encoded as positions in ``classes_ = unique(y)``.
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
        if hasattr(X, "format") and hasattr(X, "toarray"):  # scipy.sparse
            raise LabelError(
                "sparse training vectors are not supported; pass a dense (n, bands) array "
                "(X.toarray())."
            )
        if y is None:
            raise LabelError(
                f"{type(self).__name__} requires y to be passed, but the target y is None; "
                "give one class label per training vector."
            )
        X = np.asarray(X)
        if np.iscomplexobj(X):
            raise LabelError("Complex data not supported: training vectors must be real.")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1 and len(y) == len(X):
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected; it is raveled.",
                DataConversionWarning,
                stacklevel=2,
            )
            y = y.ravel()
        if X.ndim != 2 or len(X) == 0:
            raise LabelError(
                f"training vectors must be a non-empty (n, bands) array; got shape {X.shape}."
            )
        if X.shape[1] == 0:
            raise LabelError(
                f"training vectors have 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
                "required; give (n, bands) vectors."
            )
        if y.shape != (len(X),):
            raise LabelError(f"{len(X)} training vectors but labels of shape {y.shape}.")
        X = np.ascontiguousarray(X, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if len(bad):
            raise LabelError(
                f"{len(bad)} training vectors hold NaN or inf (rows {bad[:10].tolist()}); "
                "drop them (they come from nodata pixels)."
            )
        y, classes, encoded = self._encode_labels(y, class_names)
        n_classes = len(classes)
        if len(X) < self.k:
            raise LabelError(
                f"k={self.k} neighbours requested but only {len(X)} training vectors "
                f"(n_samples={len(X)}); lower k= or add labels."
            )
        counts = np.bincount(y, minlength=n_classes)
        names = [str(c) for c in class_names] if class_names is not None else None
        small = [c for c in range(n_classes) if 0 < counts[c] < self.k]
        if small and not allow_small_classes:
            label = names or [str(c) for c in classes]
            listed = ", ".join(f"{label[c]!r} ({counts[c]})" for c in small[:10])
            raise LabelError(
                f"k={self.k} is larger than the smallest class: {listed} have fewer than k "
                "training samples. Lower k=, add labels for those classes, or drop "
                "them (or pass allow_small_classes=True)."
            )
        order = canonical_order(X, y)
        self.X_ = X[order]
        self.y_ = y[order].astype(np.int64)
        self.rows_ = order.astype(np.int64)
        self.n_classes = n_classes
        self.n_features_in_ = int(X.shape[1])
        self.classes_ = classes
        self.class_names = names or [str(c) for c in classes]
        if class_values is None and encoded:
            class_values = classes.tolist()  # labels given as values: keep them
        self.class_values = list(class_values) if class_values is not None else None
        self.colors = list(colors) if colors is not None else None
        self.band_names = [str(b) for b in band_names] if band_names is not None else None
        self._index: ExactIndex | None = ExactIndex(self.X_, self.metric)  # for predict
        return self

    def _encode_labels(
        self, y: np.ndarray, class_names: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Class ids ``(n,)`` int64, ``classes_`` and whether ``y`` held labels, not ids.

        Non-negative integer ids are kept (``classes_ = 0..C-1``, ``C`` the number of
        names, else ``max + 1``); any other discrete labels become positions in
        ``unique(y)``.
        """
        if np.issubdtype(y.dtype, np.integer) and y.min() >= 0:
            n_classes = len(class_names) if class_names is not None else int(y.max()) + 1
            if y.max() >= n_classes:
                raise LabelError(
                    f"class ids must lie in 0..{n_classes - 1}; found "
                    f"{int(y.min())}..{int(y.max())}."
                )
            return y.astype(np.int64, copy=False), np.arange(n_classes, dtype=np.int64), False
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise LabelError(
                f"{exc} Class labels must be discrete (class ids 0..C-1, names or codes); "
                "geoembed.labels builds them from a label column."
            ) from exc
        classes, ids = np.unique(y, return_inverse=True)
        if class_names is not None and len(class_names) != len(classes):
            raise LabelError(
                f"{len(class_names)} class names for {len(classes)} distinct labels "
                f"{classes[:5].tolist()}; give one name per label (in sorted label order)."
            )
        return ids.astype(np.int64), classes, True

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
    def index(self) -> ExactIndex:
        """The search structure (built on first use, also after unpickling on a worker)."""
        self._check_fitted()
        index = getattr(self, "_index", None)
        if index is None:
            index = self._index = ExactIndex(self.X_, self.metric)
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
        if Q.ndim == 1:
            raise ModelError(
                f"queries must be a 2D (n, {self.n_features}) array, got 1D shape {Q.shape}. "
                "Reshape your data with Q.reshape(1, -1) for a single vector."
            )
        if Q.ndim != 2 or Q.shape[1] != self.n_features:
            raise ModelError(
                f"X has {Q.shape[-1] if Q.ndim else 0} features, but {type(self).__name__} "
                f"is expecting {self.n_features} features as input: queries have shape "
                f"{Q.shape}; this model takes vectors of length {self.n_features}."
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
        return self._count_votes(dist, ind, need_counts)

    def _count_votes(
        self, dist: np.ndarray | None, ind: np.ndarray, need_counts: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Votes of the neighbours ``ind`` (``dist`` needed for distance weights)."""
        q, k = ind.shape
        C = self.n_classes
        if self.weights == "uniform" and k <= _PAIR_VOTE_MAX_K and C <= 255 and not need_counts:
            winner, votes = _plurality(self.y_.astype(np.uint8)[ind.T])
            return None, winner, votes / k
        lab = self.y_[ind]
        r = np.arange(q)
        pred: Any
        counts: Any
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

    def _check_finite(self, Q: np.ndarray) -> np.ndarray:
        bad = np.flatnonzero(~np.isfinite(Q).all(axis=1))
        if len(bad):
            raise ModelError(
                f"{len(bad)} query vectors hold NaN or inf (rows {bad[:10].tolist()}); drop "
                "them first (classify a field with predict_field(), which skips nodata)."
            )
        return Q

    def predict(self, Q: Any) -> np.ndarray:
        """Class labels of the query vectors: ``classes_`` values (ids 0..C-1, int64)."""
        pred = self._votes(self._check_finite(self._check_queries(Q)), need_counts=False)[1]
        return self.classes_[pred]

    def predict_proba(self, Q: Any) -> np.ndarray:
        """Vote shares per class, shape ``(n, n_classes)``, float64."""
        counts, _, _ = self._votes(self._check_finite(self._check_queries(Q)))
        assert counts is not None
        return counts / counts.sum(axis=1, keepdims=True)

    def pixel_outputs(self, Q: np.ndarray, probabilities: bool = False) -> np.ndarray:
        """``(n, 2 [+ C])`` float32: class id, confidence (winning vote share), [shares]."""
        counts, pred, share = self._votes(self._check_queries(Q), need_counts=probabilities)
        return self._outputs(counts, pred, share, probabilities).T

    def _outputs(
        self, counts: np.ndarray | None, pred: np.ndarray, share: np.ndarray, probabilities: bool
    ) -> np.ndarray:
        """``(2 [+ C], n)`` float32 rows: class id, winning share, [shares]."""
        out = np.empty((2 + (self.n_classes if probabilities else 0), len(pred)), np.float32)
        out[0] = pred
        out[1] = share
        if probabilities:
            assert counts is not None
            out[2:] = (counts / counts.sum(axis=1, keepdims=True)).T
        return out

    def block_outputs(
        self,
        Qt: np.ndarray,
        probabilities: bool = False,
        decode: Callable[..., np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pixel_outputs` of the columns of a band-major block ``(d, P)``.

        Returns the ``(2 [+ C], P)`` outputs and the ``(P,)`` mask of columns without
        NaN (the outputs of the others are meaningless). The same values as
        :meth:`pixel_outputs` on ``Qt.T``'s valid rows; the block is read in place.
        ``decode(piece[, out])`` turns slices of ``Qt`` (e.g. AEF int8 codes) into float32
        vectors (:func:`geoembed._aef_codes.decode_codes`).
        """
        self._check_fitted()
        if self.weights == "distance":  # ordered distances: the row-major search
            if decode is not None:
                Qt = decode(Qt)
            valid = ~np.isnan(Qt).any(axis=0)
            out = np.zeros((2 + (self.n_classes if probabilities else 0), Qt.shape[1]), np.float32)
            if valid.any():
                out[:, valid] = self.pixel_outputs(Qt[:, valid].T, probabilities).T
            return out, valid
        ind, valid = self.index.search_bands(Qt, self.k, decode)
        counts, pred, share = self._count_votes(None, ind, probabilities)
        return self._outputs(counts, pred, share, probabilities), valid


def _plurality(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winning class and its vote count per column of ``lab`` ``(k, q)`` uint8 labels.

    Most votes wins, equal votes go to the lowest class id. Counted with ``k (k - 1) / 2``
    pairwise comparisons of whole rows (uint8, vectorised along the pixels) instead of
    a ``(q, C)`` count table: each neighbour's label gets the number of neighbours that
    share it, and the best ``(count, -label)`` key wins.
    """
    k, q = lab.shape
    same = np.ones((k, q), np.uint8)  # neighbours sharing each neighbour's label
    eq = np.empty(q, bool)
    for i in range(k):
        for j in range(i + 1, k):
            np.equal(lab[i], lab[j], out=eq)
            same[i] += eq
            same[j] += eq
    key = same.astype(np.uint16)
    key <<= 8
    key |= 255 - lab  # equal counts: the lower label has the larger key
    best = key.max(axis=0)
    return (255 - (best & 255)).astype(np.int64), best >> 8


def _warn_k() -> None:
    warnings.warn(
        "KNNClassifier(k=...) is deprecated; use n_neighbors=.", DeprecationWarning, stacklevel=3
    )


@normalize_token.register(KNNClassifier)
def _tokenize_knn(model: KNNClassifier) -> str:
    # more specific than the BaseEstimator normaliser dask-ml registers, which hashes
    # get_params() and every fitted attribute (rows_ depends on the training-row order)
    return model.__dask_tokenize__()
