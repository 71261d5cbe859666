"""A picklable fake of the Earth Engine call layer that keeps its log in a directory.

Used on worker processes: every ``initialize`` leaves ``init-<pid>``, every attempt
``attempt-<request>-<n>``; attempt ``n`` of a request answers ``schedule[n]`` ("429",
"timeout") or, past the schedule, the pixels of :func:`truth`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def truth(x: np.ndarray, y: np.ndarray, bands: int) -> np.ndarray:
    """What the fake serves at pixel centres x, y: a function of place and band."""
    b = np.arange(bands, dtype=np.float64)[:, None, None]
    v = np.sin(x[None, None, :] / 97.0 + b) * np.cos(y[None, :, None] / 89.0)
    return v.astype(np.float32)


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@dataclass(frozen=True)
class DiskFakeEarthEngine:
    log_dir: str
    schedule: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.log_dir

    def initialize(self) -> None:
        Path(self.log_dir, f"init-{os.getpid()}").touch()

    def fetch(self, request: dict[str, Any]) -> np.ndarray:
        grid = request["grid"]
        a, _, c, _, e, f = grid["crs_transform"]
        w, h = grid["shape_2d"]
        name = f"{c:.0f}_{f:.0f}_{w}x{h}"
        n = 0
        while True:  # claim the next attempt number atomically
            try:
                fd = os.open(Path(self.log_dir, f"attempt-{name}-{n}"), os.O_CREAT | os.O_EXCL)
                os.close(fd)
                break
            except FileExistsError:
                n += 1
        what = self.schedule[n] if n < len(self.schedule) else "ok"
        if what == "429":
            raise HttpError(429, "Too Many Requests")
        if what == "timeout":
            raise TimeoutError("Computation timed out.")
        x = c + a * (np.arange(w) + 0.5)
        y = f + e * (np.arange(h) + 0.5)
        return truth(x, y, len(request["bands"]))
