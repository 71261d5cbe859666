"""Deprecated: saving and loading kNN models moved to :mod:`geoembed.jobs.model_io`."""

from __future__ import annotations

from geoembed._deprecated import moved_attributes

__all__ = ["load_model", "save_estimator", "save_model"]  # noqa: F822 (module __getattr__)

__getattr__ = moved_attributes(
    __name__, {name: f"geoembed.jobs.model_io:{name}" for name in __all__}
)
