"""Regression accuracy: RMSE, MAE, R² and bias, with random or spatial cross-validation.

The folds are those of :func:`geoembed.assess.make_folds` (the classifier CV's folds):
``random:K`` (seeded random K-fold), ``spatial:K`` (whole groups: polygons, points or a
group column), ``spatial_blocks:K:SIZE`` (whole square blocks of SIZE CRS units).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from geoembed.errors import LabelError

__all__ = ["cross_validate_regression", "regression_metrics"]


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """RMSE, MAE, R² (1 - SSE / SST about the reference mean), bias (mean of pred - true).

    Returns
    -------
    dict
        ``n``, ``rmse``, ``mae``, ``r2`` (None when the reference is constant), ``bias``.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise LabelError(f"y_true {t.shape} and y_pred {p.shape} must be equal 1-D shapes.")
    if t.size == 0:
        raise LabelError("no samples to assess.")
    err = p - t
    sst = float(((t - t.mean()) ** 2).sum())
    return {
        "n": int(t.size),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - (err**2).sum() / sst) if sst > 0 else None,
        "bias": float(err.mean()),
    }


def cross_validate_regression(
    estimator_factory: Callable[[], Any],
    targets: Any,
    *,
    cv: str = "random:5",
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validate a regressor on a :class:`geoembed.regress.TargetSet`.

    Parameters
    ----------
    estimator_factory : callable
        Returns a fresh object with ``fit(X, y)`` and ``predict(X)`` (a
        :class:`KNNRegressor`, a scikit-learn regressor...).
    targets : TargetSet
        The samples (``groups`` for ``spatial``, ``xy`` for ``spatial_blocks``).
    cv : str
        See :func:`geoembed.assess.make_folds` (``holdout:F`` too).
    seed : int
        Folds are a deterministic function of the seed.

    Returns
    -------
    dict
        ``folds`` (sizes and metrics per fold), ``pooled`` (metrics of all held-out
        predictions together) and the fold description.
    """
    from geoembed.assess import make_folds

    y = np.asarray(targets.y, dtype=np.float64)
    # make_folds stratifies "random" by class: one pseudo-class gives plain seeded folds
    shim = SimpleNamespace(y=np.zeros(y.size, np.int64), groups=targets.groups, xy=targets.xy)
    folds, info = make_folds(shim, cv, seed=seed)
    info.pop("stratified", None)
    X = np.asarray(targets.X)
    pred = np.full(y.size, np.nan)
    rows = []
    for i, test in enumerate(folds):
        train = np.setdiff1d(np.arange(y.size), test, assume_unique=True)
        if test.size == 0 or train.size == 0:
            raise LabelError(f"cv={cv!r}: fold {i} is empty; use fewer folds.")
        model = estimator_factory()
        model.fit(X[train], y[train])
        p = np.asarray(model.predict(X[test]), dtype=np.float64).reshape(-1)
        pred[test] = p
        rows.append({"fold": i, "n_train": int(train.size), **regression_metrics(y[test], p)})
    tested = np.concatenate(folds)
    return {
        "kind": "regression_cross_validation",
        **info,
        "target": getattr(targets, "target", None),
        "n_folds": len(folds),
        "folds": rows,
        "pooled": regression_metrics(y[tested], pred[tested]),
    }
