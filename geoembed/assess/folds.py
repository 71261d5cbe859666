"""Cross-validation: random, spatial (whole groups) and spatial-block folds, hold-out."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from geoembed.assess.metrics import accuracy_report
from geoembed.errors import LabelError

__all__ = ["cross_validate", "make_folds"]


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
