"""Deprecated: the clustering job moved to :mod:`geoembed.jobs.cluster`.

``cluster_field`` and ``ClusterResult`` live in :mod:`geoembed.cluster.fit`.
"""

from __future__ import annotations

from geoembed._deprecated import moved_attributes
from geoembed.cluster.fit import ENGINES, ClusterResult, cluster_field

__all__ = [
    "ENGINES",
    "ClusterResult",
    "cluster_field",
    "cluster_to_cog",  # noqa: F822 (module __getattr__)
]

__getattr__ = moved_attributes(__name__, {"cluster_to_cog": "geoembed.jobs.cluster:cluster_to_cog"})
