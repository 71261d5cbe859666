"""Benchmark results: repeated measurements, ratios, a JSON file per run, the issue's table.

Every benchmark row is measured ``REPEATS`` times (``GEOEMBED_BENCH_REPEATS``, at least
3) with its baseline side by side in the same run, and recorded with :func:`record`:
median, min and max of the candidate and of the baseline, and the ratio of the medians.
At the end of the session ``conftest.py`` writes every recorded row to
``bench-results/<UTC time>.json`` (and ``bench-results/latest.json``) and prints the
summary table: each row of the performance issue's table with the new figure beside its
target. ``python tests/benchmarks/compare.py OLD.json NEW.json`` (``make bench-compare``)
prints the ratio change per row between two such files.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPEATS = max(3, int(os.environ.get("GEOEMBED_BENCH_REPEATS", "3")))
RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench-results"

#: the rows of the performance issue's table: key -> (workload, target text)
SUMMARY_ROWS: dict[str, tuple[str, str]] = {
    "knn300_vs_faiss": ("kNN k=5, 300 labels, end to end per core vs raw faiss", ">= 0.8 x"),
    "knn3000_vs_faiss": ("kNN k=5, 3 000 labels, end to end per core vs raw faiss", ">= 0.9 x"),
    "aef_decode_vs_raw": ("read + de-quantize AEF int8 vs raw int8 read", ">= 0.6 x"),
    "kmeans_fit_vs_daskml": ("KMeans fit vs dask-ml KMeans (speed-up), >= 5e5 px", ">= 20 x"),
    "kmeans_predict_vs_sklearn": ("KMeans predict vs sklearn in-memory, per core", ">= 1.0 x"),
    "rss_growth": ("peak RSS growth 1e6 px -> large case", "< +20 %"),
    "cnn_overlap_vs_theory": ("CNN overlap overhead minus theory (points)", "<= +10"),
}

_ROWS: list[dict[str, Any]] = []


def stats(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "n": len(values),
    }


def repeat(fn: Callable[[], Any], n: int = REPEATS) -> tuple[list[float], Any]:
    """Wall seconds of ``n`` calls of ``fn`` and the last call's result."""
    times, res = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return times, res


def interleaved(fns: dict[str, Callable[[], Any]], n: int = REPEATS) -> dict[str, list[float]]:
    """Wall seconds of ``n`` rounds, each calling every function once (A B A B ...).

    Interleaving keeps a candidate and its baseline under the same background load.
    """
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def record(
    bench: str,
    row: str,
    *,
    value: Sequence[float],
    baseline: Sequence[float] | None = None,
    unit: str = "s",
    higher_is_better: bool = False,
    ratio: float | None = None,
    summary: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    """Record one row; returns it.

    ``value`` and ``baseline`` are the repeated measurements (seconds unless ``unit``
    says otherwise). The ratio is ``baseline / value`` for times (how many times faster
    the candidate is) and ``value / baseline`` when ``higher_is_better`` (rates); pass
    ``ratio`` to record a figure computed otherwise. ``summary`` names the issue-table
    row (a key of :data:`SUMMARY_ROWS`) that this row's ratio answers.
    """
    r: dict[str, Any] = {"bench": bench, "row": row, "unit": unit, "value": stats(value)}
    if baseline is not None:
        r["baseline"] = stats(baseline)
        if ratio is None:
            a, b = r["value"]["median"], r["baseline"]["median"]
            ratio = a / b if higher_is_better else b / a
            r["ratio_of"] = "value/baseline" if higher_is_better else "baseline/value"
    if ratio is not None:
        r["ratio"] = float(ratio)
    if summary is not None:
        if summary not in SUMMARY_ROWS:
            raise KeyError(summary)
        r["summary"] = summary
    if note:
        r["note"] = note
    _ROWS.append(r)
    return r


def rows() -> list[dict[str, Any]]:
    """Every row recorded in this session."""
    return list(_ROWS)


def write(directory: Path = RESULTS_DIR) -> Path | None:
    """Write the session's rows to ``directory/<UTC time>.json`` and ``latest.json``."""
    if not _ROWS:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    doc = {
        "created": stamp,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "scale": os.environ.get("GEOEMBED_BENCH_SCALE", "default"),
        "repeats": REPEATS,
        "rows": _ROWS,
    }
    path = directory / f"{stamp}.json"
    text = json.dumps(doc, indent=1)
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def summary_lines(rows_: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's table: every row with the figures measured in this session."""
    lines = [f"{'workload':58s} {'target':>9s}  {'now (median [min, max] of runs)'}"]
    for key, (workload, target) in SUMMARY_ROWS.items():
        got = [r for r in rows_ if r.get("summary") == key]
        if not got:
            lines.append(f"{workload:58s} {target:>9s}  not run in this session")
            continue
        figs = "; ".join(_fig(r) for r in got)
        lines.append(f"{workload:58s} {target:>9s}  {figs}")
    return lines


def _fig(r: dict[str, Any]) -> str:
    if "ratio" not in r:
        v = r["value"]
        return f"{r['row']}: {v['median']:.3g} {r['unit']}"
    spread = ""
    if "ratio_of" in r:
        lo, hi = ratio_range(r)
        spread = f" [{lo:.2f}, {hi:.2f}]"
    return f"{r['row']}: {r['ratio']:.2f}{spread}"


def ratio_range(r: dict[str, Any]) -> tuple[float, float]:
    """Worst and best ratio that the runs' min/max allow (candidate vs baseline)."""
    v, b = r["value"], r["baseline"]
    if r["ratio_of"] == "value/baseline":
        return v["min"] / b["max"], v["max"] / b["min"]
    return b["min"] / v["max"], b["max"] / v["min"]
