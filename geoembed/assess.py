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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from geoembed.errors import LabelError

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


# ---------------------------------------------------------------------------- folds


def _parse_cv(cv: str) -> tuple[str, list[float]]:
    m = re.fullmatch(r"\s*([a-z_]+)\s*((?::\s*[0-9.eE+-]+\s*)*)", str(cv))
    if m is None:
        raise LabelError(
            f"cv={cv!r} is not understood; use 'random:5', 'spatial:5', 'holdout:0.3' or "
            "'spatial_blocks:5:1000' (block size in CRS units)."
        )
    args = [float(a) for a in m.group(2).split(":")[1:]] if m.group(2) else []
    return m.group(1), args


def _group_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Assign whole groups to ``k`` folds, balancing sizes; ties broken by a seeded shuffle."""
    uniq, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(uniq.size)
    order = np.lexsort((shuffled, -sizes))  # largest first, seeded tie-break
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(uniq.size, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    return fold_of_group[inverse.ravel()]


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Seeded stratified assignment of samples to ``k`` folds (round-robin within class)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        fold[idx] = (np.arange(idx.size) + offset) % k
        offset += idx.size
    return fold


def make_folds(ts: Any, cv: str, *, seed: int = 0) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Test-index arrays of each fold for a cross-validation spec, and a description.

    Parameters
    ----------
    ts : TrainingSet
        Needs ``y``; ``groups`` for ``spatial``; ``xy`` for ``spatial_blocks``.
    cv : str
        ``"random:K"`` (stratified K-fold), ``"spatial:K"`` (K folds of whole groups, e.g.
        polygons or regions), ``"spatial_blocks:K:SIZE"`` (K folds of whole square blocks
        of SIZE CRS units built from ``xy``), or ``"holdout:F"`` (one stratified split
        with a test fraction F).
    seed : int
        Seed; the same seed gives the same folds.

    Returns
    -------
    (list of numpy.ndarray, dict)
    """
    scheme, args = _parse_cv(cv)
    y = np.asarray(ts.y)
    n = y.size
    info: dict[str, Any] = {"cv": str(cv), "scheme": scheme, "seed": int(seed)}
    if scheme == "holdout":
        frac = args[0] if args else 0.3
        if not 0.0 < frac < 1.0:
            raise LabelError(f"cv={cv!r}: the hold-out fraction must be between 0 and 1.")
        rng = np.random.default_rng(seed)
        test = []
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            idx = idx[rng.permutation(idx.size)]
            n_test = round(frac * idx.size)
            if idx.size > 1:
                n_test = min(max(n_test, 1), idx.size - 1)
            test.append(idx[:n_test])
        info["test_fraction"] = frac
        return [np.sort(np.concatenate(test))], info
    k = int(args[0]) if args else 5
    if k < 2:
        raise LabelError(f"cv={cv!r}: use at least 2 folds.")
    if scheme == "random":
        fold = _stratified_folds(y, k, seed)
        info["stratified"] = True
    elif scheme in ("spatial", "spatial_blocks"):
        if scheme == "spatial":
            groups = np.asarray(ts.groups)
            info["groups"] = "training-set groups (polygons, points or a group column)"
        else:
            if ts.xy is None:
                raise LabelError(
                    f"cv={cv!r} needs sample coordinates (TrainingSet.xy), which these labels "
                    "lack; use 'spatial:K' with groups, or a table with longitude/latitude."
                )
            size = args[1] if len(args) > 1 else None
            if size is None or size <= 0:
                raise LabelError(f"cv={cv!r}: give a block size, e.g. 'spatial_blocks:5:1000'.")
            bx = np.floor(ts.xy[:, 0] / size).astype(np.int64)
            by = np.floor(ts.xy[:, 1] / size).astype(np.int64)
            _, groups = np.unique(np.column_stack([bx, by]), axis=0, return_inverse=True)
            groups = groups.ravel()
            info["block_size"] = size
        n_groups = int(np.unique(groups).size)
        info["n_groups"] = n_groups
        if n_groups < k:
            raise LabelError(
                f"cv={cv!r}: only {n_groups} spatial groups for {k} folds; use fewer folds or "
                "smaller blocks."
            )
        if n_groups == n:
            info["note"] = "every sample is its own group: this is random, not spatial, CV"
        fold = _group_folds(groups, k, seed)
    else:
        raise LabelError(
            f"cv={cv!r}: unknown scheme {scheme!r}; use random, spatial, spatial_blocks or holdout."
        )
    return [np.flatnonzero(fold == f) for f in range(k)], info


def cross_validate(
    estimator_factory: Callable[[], Any],
    ts: Any,
    *,
    cv: str = "random:5",
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validate a classifier on a training set.

    Random splits of neighbouring pixels overstate accuracy; prefer ``spatial`` (whole
    polygons or regions held out) or ``spatial_blocks`` for a map's accuracy.

    Parameters
    ----------
    estimator_factory : callable
        Returns a fresh object with ``fit(X, y)`` and ``predict(X)`` (scikit-learn-like).
    ts : TrainingSet
        The samples.
    cv : str
        See :func:`make_folds`.
    seed : int
        Folds are a deterministic function of the seed.

    Returns
    -------
    dict
        ``folds`` (per fold: sizes and overall accuracy), ``overall_accuracy_mean`` /
        ``_std`` over folds, and ``pooled`` (:func:`accuracy_report` of all held-out
        predictions together).
    """
    folds, info = make_folds(ts, cv, seed=seed)
    X, y = np.asarray(ts.X), np.asarray(ts.y)
    pred = np.full(y.size, -1, dtype=np.int64)
    fold_rows = []
    for i, test in enumerate(folds):
        train = np.setdiff1d(np.arange(y.size), test, assume_unique=True)
        if test.size == 0 or train.size == 0:
            raise LabelError(f"cv={cv!r}: fold {i} is empty; use fewer folds.")
        model = estimator_factory()
        model.fit(X[train], y[train])
        p = np.asarray(model.predict(X[test])).astype(np.int64)
        pred[test] = p
        row: dict[str, Any] = {}
        if info["scheme"] == "spatial":
            held = np.unique(np.asarray(ts.groups)[test])
            row["held_out_groups"] = (
                [int(g) for g in held] if held.size <= 50 else f"{held.size} groups"
            )
        fold_rows.append(
            {
                "fold": i,
                "n_train": int(train.size),
                "n_test": int(test.size),
                "overall_accuracy": float(np.mean(p == y[test])),
                "classes_missing_in_train": int(
                    np.setdiff1d(np.unique(y[test]), np.unique(y[train])).size
                ),
                **row,
            }
        )
    tested = np.concatenate(folds)
    pooled = accuracy_report(y[tested], pred[tested], class_names=ts.class_names)
    oas = np.array([f["overall_accuracy"] for f in fold_rows])
    return {
        "kind": "cross_validation",
        **info,
        "n_folds": len(folds),
        "folds": fold_rows,
        "overall_accuracy_mean": float(oas.mean()),
        "overall_accuracy_std": float(oas.std(ddof=1)) if oas.size > 1 else None,
        "pooled": pooled,
    }


# ---------------------------------------------------------------------------- areas


def area_adjusted(
    map_counts_per_class: Any,
    y_ref: Any,
    y_map: Any,
    *,
    pixel_area: float,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Area and accuracy estimates from a map and a stratified reference sample.

    Good-practice estimators of Olofsson et al. (2014, Remote Sensing of Environment
    148: 42-57), for a stratified random sample whose strata are the map classes:
    ``W_i = N_i / N`` (map share of class i), ``p_ij = W_i n_ij / n_i.`` (estimated
    proportion of area, map i, reference j); area proportion ``p_.j = sum_i p_ij`` with
    ``SE = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1))``; overall, user's and
    producer's accuracy with their standard errors (eq. 5-7 of the paper). 95 % CIs are
    ``estimate +- 1.96 SE``.

    Parameters
    ----------
    map_counts_per_class : array-like of int
        Mapped pixel count ``N_i`` of each class ``i = 0..C-1``.
    y_ref, y_map : array-like of int
        Reference class and map class of each sample (ids ``0..C-1``).
    pixel_area : float
        Area of one pixel (e.g. 900 m² for 30 m pixels, 0.09 ha): areas are reported in
        this unit.
    class_names : sequence of str, optional
        Defaults to ``"0".."C-1"``.

    Returns
    -------
    dict
        ``error_matrix_proportions`` (rows map, columns reference), ``overall_accuracy``
        with ``_se``/``_ci95``, and ``per_class[name]`` with ``map_area``,
        ``area_proportion`` (+ ``_se``), ``area`` (+ ``_se``, ``_ci95``),
        ``users_accuracy`` / ``producers_accuracy`` (+ ``_se``, ``_ci95``) and
        ``sample_count``.
    """
    N = np.asarray(map_counts_per_class, dtype=np.float64)
    C = N.size
    if N.ndim != 1 or C == 0 or (N < 0).any():
        raise LabelError("map_counts_per_class must be a 1-D array of non-negative counts.")
    names = [str(c) for c in (class_names if class_names is not None else range(C))]
    if len(names) != C:
        raise LabelError(f"{len(names)} class names for {C} map classes.")
    ref = _as_ids(y_ref, C, "y_ref")
    mp = _as_ids(y_map, C, "y_map")
    if ref.shape != mp.shape:
        raise LabelError(f"y_ref has {ref.size} values but y_map has {mp.size}.")
    n = np.zeros((C, C), dtype=np.float64)  # rows: map class, columns: reference class
    np.add.at(n, (mp, ref), 1.0)
    n_i = n.sum(axis=1)
    empty = (n_i == 0) & (N > 0)
    if empty.any():
        raise LabelError(
            f"map classes {[names[i] for i in np.flatnonzero(empty)]} have mapped pixels but "
            "no reference sample; every stratum needs samples."
        )
    total_pixels = N.sum()
    W = N / total_pixels
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n_i[:, None] > 0, n / n_i[:, None], 0.0)  # n_ij / n_i.
        dof = np.where(n_i > 1, n_i - 1.0, np.nan)  # variance needs n_i >= 2
    p = W[:, None] * q
    p_col = p.sum(axis=0)
    var_p_col = np.nansum((W**2)[:, None] * q * (1 - q) / dof[:, None], axis=0)
    oa = float(np.trace(p))
    users = np.diag(q)
    var_users = users * (1 - users) / dof
    var_oa = float(np.nansum(W**2 * users * (1 - users) / dof))
    N_col = (N[:, None] * q).sum(axis=0)  # estimated reference pixels per class
    total_area = total_pixels * pixel_area
    per_class: dict[str, Any] = {}
    for j, name in enumerate(names):
        pa = p[j, j] / p_col[j] if p_col[j] > 0 else None
        var_pa = None
        if pa is not None and N_col[j] > 0:
            others = sum(
                N[i] ** 2 * q[i, j] * (1 - q[i, j]) / dof[i]
                for i in range(C)
                if i != j and n_i[i] > 0
            )
            term = N[j] ** 2 * (1 - pa) ** 2 * var_users[j] if n_i[j] > 0 else 0.0
            var_pa = float((term + pa**2 * others) / N_col[j] ** 2)
        se_area = math.sqrt(var_p_col[j]) * total_area
        area = float(p_col[j] * total_area)
        ua = float(users[j]) if n_i[j] > 0 else None
        se_ua = _sqrt(var_users[j]) if n_i[j] > 0 else None
        se_pa = _sqrt(var_pa)
        per_class[name] = {
            "map_pixels": _num(N[j]),
            "map_area": float(N[j] * pixel_area),
            "sample_count": _num(n_i[j]),
            "area_proportion": float(p_col[j]),
            "area_proportion_se": float(math.sqrt(var_p_col[j])),
            "area": area,
            "area_se": se_area,
            "area_ci95": [area - Z95 * se_area, area + Z95 * se_area],
            "users_accuracy": ua,
            "users_accuracy_se": se_ua,
            "users_accuracy_ci95": _ci(ua, se_ua),
            "producers_accuracy": None if pa is None else float(pa),
            "producers_accuracy_se": se_pa,
            "producers_accuracy_ci95": _ci(pa, se_pa),
        }
    se_oa = math.sqrt(var_oa)
    return {
        "kind": "area_adjusted",
        "method": "Olofsson et al. 2014 stratified estimators",
        "class_names": names,
        "n_samples": int(ref.size),
        "pixel_area": float(pixel_area),
        "total_area": float(total_area),
        "sample_counts": [[_num(v) for v in row] for row in n],
        "error_matrix_proportions": [[float(v) for v in row] for row in p],
        "error_matrix_axes": {"rows": "map", "columns": "reference"},
        "overall_accuracy": oa,
        "overall_accuracy_se": se_oa,
        "overall_accuracy_ci95": [oa - Z95 * se_oa, oa + Z95 * se_oa],
        "per_class": per_class,
    }


def _sqrt(v: float | None) -> float | None:
    if v is None or not np.isfinite(v):
        return None
    return float(math.sqrt(max(v, 0.0)))


def _ci(est: float | None, se: float | None) -> list[float] | None:
    if est is None or se is None:
        return None
    return [float(est - Z95 * se), float(est + Z95 * se)]


# ---------------------------------------------------------------------------- text


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, int | np.integer):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def _ci_text(ci: Any, digits: int = 3) -> str:
    return "-" if ci is None else f"[{_f(ci[0], digits)}, {_f(ci[1], digits)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))
    )
    out = [line, "-" * len(line)]
    for r in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    return out


def _format_accuracy(rep: dict[str, Any]) -> list[str]:
    names = rep["class_names"]
    lines = [
        f"samples: {_f(rep['n'])}",
        f"overall accuracy: {_f(rep['overall_accuracy'])} "
        f"(95% CI {_ci_text(rep['overall_accuracy_ci95'])})",
        f"kappa: {_f(rep['kappa'])} (95% CI {_ci_text(rep['kappa_ci95'])})",
        f"macro F1: {_f(rep['macro_f1'])}",
        "",
    ]
    rows = []
    for name in names:
        pc = rep["per_class"][name]
        rows.append(
            [
                name,
                _f(pc["support"]),
                _f(pc["producers_accuracy"]),
                _ci_text(pc["producers_accuracy_ci95"], 2),
                _f(pc["users_accuracy"]),
                _ci_text(pc["users_accuracy_ci95"], 2),
                _f(pc["f1"]),
            ]
        )
    lines += _table(["class", "support", "producer's", "95% CI", "user's", "95% CI", "F1"], rows)
    lines += ["", "confusion matrix (rows: reference, columns: predicted)"]
    short = [str(i) for i in range(len(names))]
    cm_rows = [
        [f"{i} {names[i]}", *(_f(v, 1) for v in row)]
        for i, row in enumerate(rep["confusion_matrix"])
    ]
    lines += _table(["", *short], cm_rows)
    return lines


def _format_cv(rep: dict[str, Any]) -> list[str]:
    lines = [
        f"cross-validation: {rep['cv']} (seed {rep['seed']}, {rep['n_folds']} folds)",
    ]
    if rep.get("note"):
        lines.append(f"note: {rep['note']}")
    rows = [
        [str(f["fold"]), str(f["n_train"]), str(f["n_test"]), _f(f["overall_accuracy"])]
        for f in rep["folds"]
    ]
    lines += _table(["fold", "train", "test", "OA"], rows)
    std = rep.get("overall_accuracy_std")
    lines.append(
        f"mean OA over folds: {_f(rep['overall_accuracy_mean'])}"
        + (f" +- {_f(std)} (std)" if std is not None else "")
    )
    lines += ["", "pooled held-out predictions:"]
    return lines + _format_accuracy(rep["pooled"])


def _format_area(rep: dict[str, Any]) -> list[str]:
    lines = [
        f"area-adjusted estimates ({rep['method']}), {rep['n_samples']} reference samples",
        f"overall accuracy: {_f(rep['overall_accuracy'])} +- "
        f"{_f(Z95 * rep['overall_accuracy_se'])} (95% CI)",
        "",
    ]
    rows = []
    for name in rep["class_names"]:
        pc = rep["per_class"][name]
        rows.append(
            [
                name,
                _f(pc["map_area"], 1),
                _f(pc["area"], 1),
                "+- " + _f(Z95 * pc["area_se"], 1),
                _f(pc["users_accuracy"]),
                "-"
                if pc["users_accuracy_se"] is None
                else "+- " + _f(Z95 * pc["users_accuracy_se"]),
                _f(pc["producers_accuracy"]),
                "-"
                if pc["producers_accuracy_se"] is None
                else "+- " + _f(Z95 * pc["producers_accuracy_se"]),
            ]
        )
    lines += _table(
        [
            "class",
            "map area",
            "adjusted area",
            "95% CI",
            "user's",
            "95% CI",
            "producer's",
            "95% CI",
        ],
        rows,
    )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """Render a report from this module as a readable text table.

    Accepts the dicts of :func:`accuracy_report`, :func:`cross_validate` and
    :func:`area_adjusted`, and a dict holding several of them under any keys (e.g.
    ``{"cross_validation": ..., "area": ...}``).
    """
    kind = report.get("kind")
    if kind == "accuracy":
        lines = _format_accuracy(report)
    elif kind == "cross_validation":
        lines = _format_cv(report)
    elif kind == "area_adjusted":
        lines = _format_area(report)
    else:
        parts = [
            f"== {key} ==\n{format_report(val)}"
            for key, val in report.items()
            if isinstance(val, dict)
            and val.get("kind") in ("accuracy", "cross_validation", "area_adjusted")
        ]
        if not parts:
            raise LabelError("format_report: not a report from geoembed.assess.")
        return "\n\n".join(parts)
    return "\n".join(lines)
