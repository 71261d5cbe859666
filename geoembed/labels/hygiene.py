"""Checks on training samples: conflicting duplicates, tiny classes, valid fraction."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from geoembed.errors import LabelError

__all__ = [
    "MAX_IDS_IN_REPORT",
    "apply_conflicts",
    "check_class_sizes",
    "check_valid_fraction",
    "conflict_message",
    "find_duplicates",
    "id_list",
    "imbalance_note",
    "log_rejected",
]

log = logging.getLogger(__name__)

#: At most this many row ids per reason are listed in a report (the counts are exact).
MAX_IDS_IN_REPORT = 10_000


def id_list(ids: np.ndarray, limit: int = MAX_IDS_IN_REPORT) -> list[int]:
    """Sorted unique row ids as plain ints, at most ``limit`` of them."""
    uniq = np.unique(np.asarray(ids, dtype=np.int64))
    return [int(i) for i in uniq[:limit]]


def _short(ids: list[int], n: int = 20) -> str:
    text = ", ".join(str(i) for i in ids[:n])
    return text + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def _row_hashes(rows: np.ndarray, block: int = 65536) -> np.ndarray:
    """64-bit hash of each row's bytes (a fixed random linear hash, wrapping)."""
    u = rows.view(np.uint32)
    mult = np.random.default_rng(0x6E0E).integers(1, 2**63, size=u.shape[1], dtype=np.uint64)
    out = np.empty(u.shape[0], dtype=np.uint64)
    for start in range(0, u.shape[0], block):
        out[start : start + block] = u[start : start + block].astype(np.uint64) @ (mult | 1)
    return out


def find_duplicates(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Find identical vectors (bit-exact, with -0.0 equal to 0.0).

    Rows are hashed first; only rows whose hash repeats are compared exactly, so the
    check costs one pass plus a sort of 64-bit keys.

    Returns
    -------
    conflicting : numpy.ndarray
        Boolean ``(n,)`` mask of samples whose vector also occurs with another label.
    n_duplicates : int
        Number of samples that repeat an identical vector with the same label (beyond
        the first of each).
    """
    n = X.shape[0]
    conflicting = np.zeros(n, dtype=bool)
    if n < 2:
        return conflicting, 0
    rows = np.ascontiguousarray(X, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    h = _row_hashes(rows)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    same = hs[1:] == hs[:-1]
    in_run = np.zeros(n, dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    cand = order[in_run]
    if cand.size == 0:
        return conflicting, 0
    keys = rows[cand].view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.ravel()
    pair = np.unique(np.column_stack([inverse, np.asarray(y)[cand]]), axis=0)
    labels_per_vector = np.bincount(pair[:, 0], minlength=int(inverse.max()) + 1)
    conflicting[cand] = labels_per_vector[inverse] > 1
    return conflicting, int(cand.size - len(pair))


def check_class_sizes(
    y: np.ndarray,
    ids: np.ndarray,
    class_names: list[str],
    *,
    min_per_class: int,
    where: str,
) -> dict[str, int]:
    """Raise :class:`LabelError` when a class has fewer than ``min_per_class`` samples."""
    if y.size == 0:
        raise LabelError(
            f"{where}: no usable sample is left (see the rejected counts in the report); "
            "check that the labels overlap the field's valid pixels."
        )
    counts = np.bincount(y, minlength=len(class_names))
    small = [i for i, c in enumerate(counts) if c < min_per_class]
    if small:
        parts = []
        for i in small:
            rows = id_list(ids[y == i])
            parts.append(
                f"{class_names[i]!r}: {int(counts[i])} sample(s) from rows [{_short(rows)}]"
            )
        raise LabelError(
            f"{where}: {len(small)} class(es) have fewer than {min_per_class} samples (k of the "
            f"classifier): {'; '.join(parts)}. Add labels for these classes, lower k, or drop the "
            "classes from the labels."
        )
    return {name: int(c) for name, c in zip(class_names, counts)}


#: a note is added when the largest class has this many times the samples of the smallest
IMBALANCE_RATIO = 10.0


def imbalance_note(class_counts: dict[str, int], notes: list[str]) -> None:
    """Append a note when classes are strongly imbalanced (largest / smallest >= 10)."""
    counts = [c for c in class_counts.values() if c > 0]
    if len(counts) > 1 and max(counts) >= IMBALANCE_RATIO * min(counts):
        big = max(class_counts, key=lambda k: class_counts[k])
        small = min(class_counts, key=lambda k: class_counts[k])
        notes.append(
            f"class imbalance: {big!r} has {class_counts[big]} samples, {small!r} only "
            f"{class_counts[small]}; kNN votes favour large classes (consider "
            "samples_per_class=)"
        )


def check_valid_fraction(
    n_valid: int,
    n_input: int,
    rejected: dict[str, int],
    *,
    min_valid_fraction: float,
    where: str,
    unit: str = "rows",
) -> float:
    """Raise :class:`LabelError` when fewer than ``min_valid_fraction`` of the inputs are usable."""
    fraction = n_valid / n_input if n_input else 0.0
    if n_input == 0 or fraction < min_valid_fraction:
        reasons = ", ".join(f"{k}: {v}" for k, v in rejected.items() if v) or "none"
        raise LabelError(
            f"{where}: only {n_valid} of {n_input} {unit} ({fraction:.1%}) are usable, below "
            f"the minimum of {min_valid_fraction:.0%}. Rejected {unit} by reason: {reasons}. "
            "Check that the labels cover the field (same area, CRS declared correctly) and "
            "avoid nodata, or lower min_valid_fraction."
        )
    return fraction


def log_rejected(where: str, n_input: int, rejected: dict[str, int], unit: str = "rows") -> int:
    """Say on the log (a warning, so the CLI shows it) how many inputs were dropped and why.

    Returns
    -------
    int
        The number of dropped inputs.
    """
    n_dropped = sum(int(v) for v in rejected.values())
    if n_dropped:
        reasons = ", ".join(f"{k}: {v}" for k, v in rejected.items() if v)
        log.warning(
            "%s: dropped %d of %d %s (%s); their ids are listed in the report",
            where,
            n_dropped,
            n_input,
            unit,
            reasons,
        )
    return n_dropped


def conflict_message(where: str, ids: list[int]) -> str:
    """Message for identical vectors with conflicting labels."""
    return (
        f"{where}: identical embedding vectors carry different labels in rows [{_short(ids)}] "
        "(overlapping polygons, duplicated points, or quantised embeddings). Fix the labels, or "
        "pass on_conflict='drop' to drop these samples."
    )


def apply_conflicts(
    conflicting: np.ndarray,
    ids: np.ndarray,
    *,
    on_conflict: str,
    where: str,
    report: dict[str, Any],
) -> np.ndarray:
    """Handle conflicting duplicates: raise, drop (returning a keep mask) or keep."""
    keep = np.ones(conflicting.shape, dtype=bool)
    if not conflicting.any():
        return keep
    rows = id_list(ids[conflicting])
    report["conflicting_duplicates"] = {"samples": int(conflicting.sum()), "ids": rows}
    if on_conflict == "raise":
        raise LabelError(conflict_message(where, rows))
    if on_conflict == "drop":
        report["rejected_samples"]["conflicting_label"] = int(conflicting.sum())
        report["notes"].append(
            f"dropped {int(conflicting.sum())} samples whose identical vectors carry different "
            f"labels (rows {_short(rows, 10)})"
        )
        return ~conflicting
    report["notes"].append(
        f"kept {int(conflicting.sum())} samples whose identical vectors carry different labels"
    )
    return keep
