"""Print the ratio change per row between two ``bench-results/*.json`` files.

Usage: ``python tests/benchmarks/compare.py OLD.json NEW.json`` (``make bench-compare``
compares the two newest files in ``bench-results/``, or ``OLD=... NEW=...``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    doc = json.loads(Path(path).read_text())
    return {(r["bench"], r["row"]): r for r in doc["rows"]}


def compare(old: str, new: str) -> list[str]:
    """Lines of the per-row comparison (ratio old -> new, and new / old)."""
    a, b = _load(old), _load(new)
    lines = [f"{'bench':14s} {'row':52s} {'old':>8s} {'new':>8s} {'change':>8s}"]
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key, {}).get("ratio"), b.get(key, {}).get("ratio")
        if ra is None and rb is None:  # rows without a ratio: compare medians
            ra = a.get(key, {}).get("value", {}).get("median")
            rb = b.get(key, {}).get("value", {}).get("median")
        fa = f"{ra:8.3g}" if ra is not None else f"{'-':>8s}"
        fb = f"{rb:8.3g}" if rb is not None else f"{'-':>8s}"
        ch = f"{rb / ra:7.2f}x" if ra and rb is not None else f"{'-':>8s}"
        lines.append(f"{key[0]:14s} {key[1][:52]:52s} {fa} {fb} {ch}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(compare(*argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
