"""Accuracy assessment: confusion matrix, OA, kappa, per-class accuracies, CV, areas.

Conventions
-----------
* Class ids are ``0..C-1`` (as in :class:`geoembed.labels.TrainingSet`).
* In :func:`accuracy_report` the confusion matrix has rows = reference (true) class and
  columns = predicted (map) class, as in scikit-learn. Producer's accuracy of a class is
  its recall (diagonal / row total), user's accuracy its precision (diagonal / column
  total).
* In :func:`area_adjusted` the error matrix follows Olofsson et al. (2014): rows = map
  class, columns = reference class.
* Confidence intervals are 95 %. Proportions (OA, producer's, user's accuracy) use the
  Wilson score interval, which stays inside [0, 1] and behaves at 0 and 1; F1 uses the
  Wilson interval of the Jaccard index ``TP / (TP + FP + FN)`` mapped through the
  monotone ``F1 = 2J / (1 + J)``; kappa uses the large-sample normal approximation.
* Every function returns plain JSON-serialisable dicts (undefined values are ``None``).

Modules: :mod:`~geoembed.assess.metrics` (confusion matrix and accuracy statistics),
:mod:`~geoembed.assess.folds` (cross-validation), :mod:`~geoembed.assess.areas`
(area-adjusted estimates), :mod:`~geoembed.assess.formatting` (text tables).
"""

from geoembed.assess.areas import area_adjusted
from geoembed.assess.folds import cross_validate, make_folds
from geoembed.assess.formatting import format_report
from geoembed.assess.metrics import Z95, accuracy_from_confusion, accuracy_report, wilson_interval

__all__ = [
    "Z95",
    "accuracy_from_confusion",
    "accuracy_report",
    "area_adjusted",
    "cross_validate",
    "format_report",
    "make_folds",
    "wilson_interval",
]
