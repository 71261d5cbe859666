"""Benchmark session hooks: write ``bench-results/*.json`` and print the summary table."""

from __future__ import annotations

from typing import Any

import _results


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = _results.rows()
    if not rows:
        return
    path = _results.write()
    tr = terminalreporter
    tr.write_sep("=", "geoembed benchmark summary (performance issue's table)")
    for line in _results.summary_lines(rows):
        tr.write_line(line)
    tr.write_line(f"all {len(rows)} rows written to {path}")
