"""Regression of continuous targets (canopy height, backscatter, class shares) from embeddings.

* :func:`targets_from_table` / :func:`targets_from_geometries`: the target values under
  points or polygons, or beside an already-sampled table, with the training-data checks
  of :mod:`geoembed.labels` (CRS, extent, nodata, per-reason rejection counts).
* :class:`KNNRegressor`: exact, deterministic kNN regression (mean or distance-weighted
  mean of the ``k`` neighbours' targets, and their spread), on the exact neighbour search
  of :class:`geoembed.classify.KNNClassifier`; :func:`predict_regression` applies it to a
  lazy field. Any fitted scikit-learn regressor runs blockwise with
  :func:`geoembed.classify.apply_estimator` (``output="value"``).
* :func:`regression_metrics` / :func:`cross_validate_regression`: RMSE, MAE, R² and bias
  with random or spatial cross-validation (the folds of :func:`geoembed.assess.make_folds`).
"""

from geoembed.regress.assess import cross_validate_regression, regression_metrics
from geoembed.regress.knn import KNNRegressor, predict_regression
from geoembed.regress.targets import TargetSet, targets_from_geometries, targets_from_table

__all__ = [
    "KNNRegressor",
    "TargetSet",
    "cross_validate_regression",
    "predict_regression",
    "regression_metrics",
    "targets_from_geometries",
    "targets_from_table",
]
