"""Confusion matrix, overall accuracy, kappa and per-class accuracies with 95 % CIs.

See :mod:`geoembed.assess` for the conventions (matrix axes, interval methods).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from geoembed.errors import LabelError

__all__ = ["Z95", "accuracy_from_confusion", "accuracy_report", "wilson_interval"]

#: two-sided 95 % normal quantile
Z95 = 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``successes / n`` (None when ``n == 0``)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    # clamp so that the interval always holds p despite rounding at p = 0 or 1
    return (max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p)))


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


def _as_ids(values: Any, n_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise LabelError(f"{what} must be a 1-D array of class ids, got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise LabelError(f"{what} must hold integer class ids 0..{n_classes - 1}.")
        arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        raise LabelError(
            f"{what} holds {int(bad.sum())} values outside the class ids 0..{n_classes - 1} "
            f"(e.g. {arr[bad][:5].tolist()}); drop nodata pixels (255) and map labels to ids "
            "first."
        )
    return arr.astype(np.int64)


def accuracy_report(
    y_true: Any,
    y_pred: Any,
    *,
    class_names: Sequence[str],
    weights: Any = None,
) -> dict[str, Any]:
    """Confusion matrix and accuracy statistics with 95 % confidence intervals.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        Reference and predicted class ids ``0..C-1``.
    class_names : sequence of str
        Name of each class id (fixes ``C``).
    weights : array-like, optional
        Per-sample weights (e.g. inverse inclusion probabilities). The matrix holds
        weighted counts and confidence intervals use Kish's effective sample size.

    Returns
    -------
    dict
        ``confusion_matrix`` (rows reference, columns predicted), ``overall_accuracy`` and
        ``overall_accuracy_ci95``, ``kappa`` and ``kappa_ci95``, ``macro_f1``, and
        ``per_class[name]`` with ``producers_accuracy``, ``users_accuracy``, ``f1`` (each
        with ``..._ci95``), ``support`` (reference count) and ``predicted`` count.
    """
    names = [str(c) for c in class_names]
    C = len(names)
    yt = _as_ids(y_true, C, "y_true")
    yp = _as_ids(y_pred, C, "y_pred")
    if yt.shape != yp.shape:
        raise LabelError(f"y_true has {yt.size} values but y_pred has {yp.size}.")
    if weights is None:
        w = np.ones(yt.size, dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != yt.shape or (w < 0).any() or not np.isfinite(w).all():
            raise LabelError("weights must be finite, non-negative and one per sample.")
    cm = np.zeros((C, C), dtype=np.float64)
    np.add.at(cm, (yt, yp), w)
    n_eff = (w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0
    return accuracy_from_confusion(cm, class_names=names, n_eff=n_eff)


def accuracy_from_confusion(
    confusion: Any,
    *,
    class_names: Sequence[str],
    n_eff: float | None = None,
) -> dict[str, Any]:
    """Accuracy statistics from a confusion matrix (rows reference, columns predicted).

    Use it when the matrix was counted elsewhere, e.g. blockwise over a whole map
    against a reference raster, so that no per-pixel arrays are needed.

    Parameters
    ----------
    confusion : array-like
        ``(C, C)`` counts (or weighted counts).
    class_names : sequence of str
        Name of each class id.
    n_eff : float, optional
        Effective sample size for the confidence intervals (default: the total count).

    Returns
    -------
    dict
        The same keys as :func:`accuracy_report`.
    """
    names = [str(c) for c in class_names]
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.shape != (len(names), len(names)):
        raise LabelError(
            f"confusion matrix has shape {cm.shape}; expected {len(names)} x {len(names)}."
        )
    total = cm.sum()
    if n_eff is None:
        n_eff = float(total)
    scale = n_eff / total if total > 0 else 0.0  # weighted counts -> effective counts
    diag = np.diag(cm)
    rows, cols = cm.sum(axis=1), cm.sum(axis=0)
    oa = _ratio(diag.sum(), total)
    pe = float((rows * cols).sum() / total**2) if total > 0 else None
    kappa = kappa_ci = None
    if oa is not None and pe is not None and pe < 1.0:
        kappa = (oa - pe) / (1.0 - pe)
        se = math.sqrt(oa * (1 - oa) / (n_eff * (1 - pe) ** 2)) if n_eff > 0 else 0.0
        kappa_ci = [kappa - Z95 * se, kappa + Z95 * se]
    per_class: dict[str, Any] = {}
    f1s = []
    for i, name in enumerate(names):
        tp, fn, fp = diag[i], rows[i] - diag[i], cols[i] - diag[i]
        pa, ua = _ratio(tp, rows[i]), _ratio(tp, cols[i])
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        jac = wilson_interval(tp * scale, (tp + fp + fn) * scale)
        f1_ci = None if jac is None else [2 * j / (1 + j) for j in jac]
        if f1 is not None:
            f1s.append(f1)
        per_class[name] = {
            "producers_accuracy": pa,
            "producers_accuracy_ci95": _pair(wilson_interval(tp * scale, rows[i] * scale)),
            "users_accuracy": ua,
            "users_accuracy_ci95": _pair(wilson_interval(tp * scale, cols[i] * scale)),
            "f1": f1,
            "f1_ci95": f1_ci,
            "support": _num(rows[i]),
            "predicted": _num(cols[i]),
        }
    return {
        "kind": "accuracy",
        "n": _num(total),
        "class_names": names,
        "confusion_matrix": [[_num(v) for v in row] for row in cm],
        "confusion_matrix_axes": {"rows": "reference", "columns": "predicted"},
        "overall_accuracy": oa,
        "overall_accuracy_ci95": _pair(wilson_interval(diag.sum() * scale, n_eff)),
        "kappa": kappa,
        "kappa_ci95": kappa_ci,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "per_class": per_class,
        "ci_method": "wilson (proportions), wilson-on-jaccard (F1), normal (kappa)",
    }


def _num(v: float) -> int | float:
    f = float(v)
    return int(f) if f.is_integer() else f
