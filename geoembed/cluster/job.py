"""Deprecated: the clustering job moved to :mod:`geoembed.jobs.cluster`.

``cluster_field`` and ``ClusterResult`` live in :mod:`geoembed.cluster.fit`.
"""

from __future__ import annotations

import warnings

from geoembed.cluster.fit import ENGINES, ClusterResult, cluster_field

__all__ = [
    "ENGINES",
    "ClusterResult",
    "cluster_field",
    "cluster_to_cog",  # noqa: F822 (module __getattr__)
]


def __getattr__(name: str) -> object:
    if name == "cluster_to_cog":
        warnings.warn(
            "geoembed.cluster.job.cluster_to_cog moved to geoembed.jobs.cluster "
            "(cluster_to_cog, or run_cluster with ClusterParams); the old name goes in the "
            "next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from geoembed.jobs import cluster as job

        return job.cluster_to_cog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
