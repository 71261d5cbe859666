"""Deprecated: the classification job moved to :mod:`geoembed.jobs.classify`."""

from __future__ import annotations

from geoembed._deprecated import moved_attributes

__all__ = ["classify_job", "default_cv"]  # noqa: F822 (module __getattr__)

__getattr__ = moved_attributes(
    __name__,
    {
        "classify_job": "geoembed.jobs.classify:classify_job",
        "default_cv": "geoembed.jobs.classify:default_cv",
    },
)
