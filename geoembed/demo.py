"""Deprecated: the demo job moved to :mod:`geoembed.jobs.demo` (:func:`run_demo`)."""

from __future__ import annotations

import warnings

__all__ = ["run_demo"]  # noqa: F822 (module __getattr__)


def __getattr__(name: str) -> object:
    if name == "run_demo":
        warnings.warn(
            "geoembed.demo.run_demo moved to geoembed.jobs.demo.run_demo; the old name goes "
            "in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from geoembed.jobs.demo import run_demo

        return run_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
