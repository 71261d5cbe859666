"""Readable text tables of the reports of :mod:`geoembed.assess`."""

from __future__ import annotations

from typing import Any

import numpy as np

from geoembed.assess.metrics import Z95
from geoembed.errors import LabelError

__all__ = ["format_report"]


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
