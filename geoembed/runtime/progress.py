"""Progress and stall deadlines of geoembed's computations (see :mod:`geoembed._compute`).

The implementation sits below the domain packages, so that the KMeans passes and
statistics run through the same deadline as the jobs without importing
:mod:`geoembed.runtime`; this module keeps the public names where they were.
"""

from __future__ import annotations

from geoembed._compute import LineProgress, compute, progress_bar

__all__ = ["LineProgress", "compute", "progress_bar"]
