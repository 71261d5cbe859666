"""Deprecated: the classification job moved to :mod:`geoembed.jobs.classify`."""

from __future__ import annotations

import warnings

__all__ = ["classify_job", "default_cv"]  # noqa: F822 (module __getattr__)


def __getattr__(name: str) -> object:
    if name in __all__:
        warnings.warn(
            f"geoembed.classify.job.{name} moved to geoembed.jobs.classify (see run_classify "
            "with ClassifyParams); the old name goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from geoembed.jobs import classify as job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
