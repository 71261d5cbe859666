"""Exact kNN regression: the mean (or distance-weighted mean) of the k neighbours' targets.

Neighbours come from the exact, deterministic search behind
:class:`geoembed.classify.KNNClassifier` (:class:`geoembed.classify.search.ExactIndex`): the
same neighbours as scikit-learn's brute-force search, ties broken by the canonical
training order (rows sorted by their bytes, then target). The weighted sums are
order-fixed float64 dot products (:mod:`geoembed._exact`), so a pixel's prediction
depends only on its vector and the training data, whatever the chunking or the CPU.

Neighbours at exactly equal distance (e.g. repeated vectors in an Earth Engine export)
are taken in canonical order here, while scikit-learn's order among them is arbitrary: only
there can the two differ.

Definitions follow ``sklearn.neighbors.KNeighborsRegressor``: ``uniform`` is the mean of
the targets; ``distance`` weights them by ``1 / distance`` (a query at distance 0 from
some training vectors takes the mean of those only). The spread is the (population)
standard deviation of the ``k`` neighbours' targets, unweighted.
"""

from __future__ import annotations

import hashlib
from typing import Any

import dask
import numpy as np
import xarray as xr

from geoembed._blockwise import map_pixels
from geoembed._exact import row_dots
from geoembed._threads import single_thread_blas
from geoembed.classify.search import METRICS, WEIGHTS, ExactIndex, canonical_order
from geoembed.errors import BandMismatchError, LabelError, ModelError
from geoembed.output_schema import SPREAD, VALUE, continuous_map
from geoembed.schema import check_embedding

__all__ = ["KNNRegressor", "predict_regression"]


class KNNRegressor:
    """Exact k-nearest-neighbour regressor for embedding vectors.

    Parameters
    ----------
    k : int, default 5
        Number of neighbours.
    metric : {"cosine", "euclidean"}, default "cosine"
        As for :class:`geoembed.classify.KNNClassifier`.
    weights : {"uniform", "distance"}, default "uniform"
        Mean of the neighbours' targets, or their ``1 / distance`` weighted mean.

    Attributes
    ----------
    X_ : ndarray (n, d) float32
        Training vectors in canonical order.
    y_ : ndarray (n,) float64
        Their targets.
    rows_ : ndarray (n,) int64
        Position of each canonical row in the data passed to :meth:`fit`.
    """

    kind = "exact"

    def __init__(self, k: int = 5, *, metric: str = "cosine", weights: str = "uniform") -> None:
        if metric not in METRICS:
            raise ModelError(f"metric {metric!r} is not supported; use one of {METRICS}.")
        if weights not in WEIGHTS:
            raise ModelError(f"weights {weights!r} is not supported; use one of {WEIGHTS}.")
        if not isinstance(k, int | np.integer) or k < 1:
            raise ModelError(f"k must be a positive integer, got {k!r}.")
        self.k = int(k)
        self.metric = metric
        self.weights = weights
        self.band_names: list[str] | None = None
        self._index: ExactIndex | None = None

    def fit(self, X: Any, y: Any, *, band_names: Any = None) -> KNNRegressor:
        """Store the training vectors and their targets.

        Raises
        ------
        LabelError
            Empty data, non-finite vectors or targets, or fewer than ``k`` samples.
        """
        X = np.asarray(X)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0:
            raise LabelError(
                f"training vectors must be a non-empty (n, bands) array, got {X.shape}."
            )
        if y.shape != (len(X),):
            raise LabelError(f"{len(X)} training vectors but targets of shape {y.shape}.")
        X = np.ascontiguousarray(X, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1) | ~np.isfinite(y))
        if len(bad):
            raise LabelError(
                f"{len(bad)} training rows hold NaN or inf (rows {bad[:10].tolist()}); drop them."
            )
        if len(X) < self.k:
            raise LabelError(
                f"k={self.k} neighbours requested but only {len(X)} training samples; lower k= "
                "or add samples."
            )
        order = canonical_order(X, y)
        self.X_ = X[order]
        self.y_ = y[order]
        self.rows_ = order.astype(np.int64)
        self.band_names = [str(b) for b in band_names] if band_names is not None else None
        self._index = None
        return self

    @classmethod
    def from_targets(cls, targets: Any, k: int = 5, **kwargs: Any) -> KNNRegressor:
        """Fit on a :class:`geoembed.regress.TargetSet`."""
        return cls(k, **kwargs).fit(targets.X, targets.y, band_names=targets.bands)

    @property
    def n_features(self) -> int:
        """Length of the vectors."""
        return int(self.X_.shape[1])

    def _check_fitted(self) -> None:
        if not hasattr(self, "X_"):
            raise ModelError("this KNNRegressor is not fitted; call fit() first.")

    @property
    def index(self) -> ExactIndex:
        """The exact search structure (built on first use, also on each worker)."""
        self._check_fitted()
        if self._index is None:
            self._index = ExactIndex(self.X_, self.metric)
        return self._index

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_index"] = None
        return state

    def __dask_tokenize__(self) -> str:
        self._check_fitted()
        h = hashlib.sha1(usedforsecurity=False)
        for a in (self.X_, self.y_):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((type(self).__name__, self.params())).encode())
        return h.hexdigest()

    def params(self) -> dict[str, Any]:
        """Parameters of the model."""
        return {"k": self.k, "metric": self.metric, "weights": self.weights}

    def _check_queries(self, Q: Any) -> np.ndarray:
        self._check_fitted()
        Q = np.asarray(Q)
        if Q.ndim != 2 or Q.shape[1] != self.n_features:
            raise ModelError(
                f"queries have shape {Q.shape}; this model takes vectors of length "
                f"{self.n_features}."
            )
        return np.ascontiguousarray(Q, dtype=np.float32)

    def kneighbors(self, Q: Any) -> tuple[np.ndarray, np.ndarray]:
        """Distances and training-row indices (rows of the ``X`` given to :meth:`fit`)."""
        dist, ind = self.index.search(self._check_queries(Q), self.k)
        assert dist is not None
        return dist, self.rows_[ind]

    def _outputs(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, ind = self.index.search(Q, self.k)
        assert dist is not None
        t = self.y_[ind]
        if self.weights == "uniform":
            w = np.ones_like(t)
        else:
            with np.errstate(divide="ignore"):
                w = 1.0 / dist.astype(np.float64)
            inf = np.isinf(w)
            rows = inf.any(axis=1)
            w[rows] = inf[rows]
        pred = row_dots(w, t) / row_dots(w, np.ones_like(w))
        mean = row_dots(t, np.ones_like(t)) / self.k
        dev = t - mean[:, None]
        spread = np.sqrt(row_dots(dev, dev) / self.k)
        return pred, spread

    def predict(self, Q: Any) -> np.ndarray:
        """Predicted targets (float64)."""
        return self._outputs(self._check_queries(Q))[0]

    def pixel_outputs(self, Q: np.ndarray) -> np.ndarray:
        """``(n, 2)`` float32: prediction, neighbour spread (std of the k targets)."""
        pred, spread = self._outputs(self._check_queries(Q))
        return np.column_stack([pred, spread]).astype(np.float32)


def _regress_block(vectors: np.ndarray, model: KNNRegressor) -> np.ndarray:
    with single_thread_blas():
        return model.pixel_outputs(vectors)


def predict_regression(
    model: KNNRegressor, field: xr.DataArray, *, source: str | None = None
) -> xr.Dataset:
    """Predict every pixel of ``field`` with a fitted :class:`KNNRegressor`, lazily.

    Parameters
    ----------
    model : KNNRegressor
        A fitted model (sent to each worker once, as a delayed object).
    field : xarray.DataArray
        Canonical embedding field.
    source : str, optional
        How to name the field in error messages.

    Returns
    -------
    xarray.Dataset
        ``value`` and ``spread`` (y, x) float32, NaN at nodata. Nothing is computed.
    """
    check_embedding(field, source=source, require_crs=False)
    model._check_fitted()
    names = [str(b) for b in field["band"].values]
    if len(names) != model.n_features or (model.band_names and model.band_names != names):
        raise BandMismatchError(
            f"{source or 'the embedding field'} has bands {names[:3]}... ({len(names)}) but the "
            f"model was fitted on {model.n_features} features "
            f"{(model.band_names or [])[:3]}...; use the field the samples came from."
        )
    out = map_pixels(
        field,
        _regress_block,
        n_out=2,
        args=(dask.delayed(model, pure=True),),
        fill=np.nan,
        dtype=np.float32,
        name="knn_regression",
    )
    attrs = {"model": "knn", **model.params()}
    value = continuous_map(
        field,
        out.isel(output=0, drop=True),
        name=VALUE,
        attrs=dict(attrs, long_name="kNN prediction"),
    )
    spread = continuous_map(
        field,
        out.isel(output=1, drop=True),
        name=SPREAD,
        attrs=dict(attrs, long_name="standard deviation of the neighbours' targets"),
    )
    return xr.Dataset({VALUE: value, SPREAD: spread})
