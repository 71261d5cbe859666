"""Deprecated: the demo job moved to :mod:`geoembed.jobs.demo` (:func:`run_demo`)."""

from __future__ import annotations

from geoembed._deprecated import moved_attributes

__all__ = ["run_demo"]  # noqa: F822 (module __getattr__)

__getattr__ = moved_attributes(__name__, {"run_demo": "geoembed.jobs.demo:run_demo"})
