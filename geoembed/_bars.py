"""Progress bars with their total from the first frame: tqdm on a terminal, log lines else.

Low in the layering (no Dask, no runtime): domain code such as the KMeans passes may show
a bar without importing :mod:`geoembed.runtime`; :mod:`geoembed.runtime.progress` builds
its Dask-aware bars on these.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

__all__ = ["LineProgress", "progress_bar"]

log = logging.getLogger("geoembed.progress")


class LineProgress:
    """A progress "bar" for logs: one line at each tenth of the total (no TTY control codes).

    It has the part of tqdm's interface that geoembed uses (``n``, ``total``,
    ``update``, ``refresh``, a context manager), so callers need not care which they got.
    """

    def __init__(self, total: int | None, label: str, unit: str = "it", initial: int = 0) -> None:
        self.total = total
        self.n = initial
        self.label = label
        self.unit = unit
        self._t0 = time.monotonic()
        self._shown = 0  # the "started" line stands for 0 %
        log.info("%s: started (%s %s)", label, total if total is not None else "?", unit)

    def update(self, k: int = 1) -> None:
        """Advance by ``k``."""
        self.n += k
        self.refresh()

    def refresh(self) -> None:
        """Log a line when a new tenth of the total is reached."""
        if not self.total:
            return
        tenth = min(10, int(10 * self.n / self.total))
        if tenth > self._shown and tenth < 10:
            self._shown = tenth
            log.info(
                "%s: %d%% (%d/%d %s, %.1f s)",
                self.label,
                10 * tenth,
                self.n,
                self.total,
                self.unit,
                time.monotonic() - self._t0,
            )

    def close(self) -> None:
        """Log the end."""
        log.info(
            "%s: done (%d %s in %.1f s)",
            self.label,
            self.n,
            self.unit,
            time.monotonic() - self._t0,
        )

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int | None, label: str, *, unit: str = "it", initial: int = 0) -> Any:
    """One progress bar with its total from the first frame: tqdm on a TTY, log lines else.

    Parameters
    ----------
    total : int
        Steps in all (tasks, passes...).
    label : str
        Text in front of the bar.
    unit : str
        Name of a step.
    initial : int
        Steps already done.

    Returns
    -------
    tqdm.tqdm or LineProgress
        A context manager with ``update(k)``, ``n``, ``total`` and ``refresh()``.
    """
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(
            total=total, initial=initial, desc=label, unit=unit, file=sys.stderr, leave=False
        )
    return LineProgress(total, label, unit=unit, initial=initial)
