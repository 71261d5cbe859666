"""Area-adjusted estimates from a map and a stratified reference sample (Olofsson 2014)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from geoembed.assess.metrics import Z95, _as_ids, _num
from geoembed.errors import LabelError

__all__ = ["area_adjusted"]


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
