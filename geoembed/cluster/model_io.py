"""Deprecated: saving and loading KMeans models moved to :mod:`geoembed.jobs.model_io`.

Cluster names are parsed by :mod:`geoembed.cluster.names`.
"""

from __future__ import annotations

from geoembed._deprecated import moved_attributes

__all__ = ["load_model", "save_model"]  # noqa: F822 (module __getattr__)

__getattr__ = moved_attributes(
    __name__,
    {
        "load_model": "geoembed.jobs.model_io:load_kmeans",
        "save_model": "geoembed.jobs.model_io:save_kmeans",
    },
)
