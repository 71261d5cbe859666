"""Deprecated: saving and loading kNN models moved to :mod:`geoembed.jobs.model_io`."""

from __future__ import annotations

import warnings

__all__ = ["load_model", "save_estimator", "save_model"]  # noqa: F822 (module __getattr__)

_NEW = {"load_model": "load_model", "save_estimator": "save_estimator", "save_model": "save_model"}


def __getattr__(name: str) -> object:
    if name in _NEW:
        warnings.warn(
            f"{__name__}.{name} moved to geoembed.jobs.model_io.{_NEW[name]}; the old "
            "name goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from geoembed.jobs import model_io

        return getattr(model_io, _NEW[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
