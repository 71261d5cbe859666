"""Unsupervised classification: KMeans over embedding fields larger than memory.

>>> from geoembed.cluster import KMeans
>>> model = KMeans(n_clusters=10, metric="cosine", random_state=0).fit(field)
>>> clusters = model.predict(field)          # lazy (y, x) uint8 map, 255 = nodata

A fitted ``dask_ml.cluster.KMeans`` is kept with ``KMeans.from_dask_ml(km)`` (its centres;
same map as its own ``predict``), or bare centres with ``KMeans.from_centers(c)``.
"""

from geoembed.cluster.fit import ClusterResult, cluster_field
from geoembed.cluster.kmeans import ClusterCountError, KMeans
from geoembed.cluster.names import class_names, parse_names
from geoembed.cluster.stats import adjusted_rand_index, cluster_stats, pixel_area_km2

__all__ = [
    "ClusterCountError",
    "ClusterResult",
    "KMeans",
    "adjusted_rand_index",
    "class_names",
    "cluster_field",
    "cluster_stats",
    "parse_names",
    "pixel_area_km2",
]


def __getattr__(name: str) -> object:
    if name == "cluster_to_cog":  # the job moved to geoembed.jobs.cluster
        from geoembed.cluster import job

        return getattr(job, name)
    if name in ("load_model", "save_model"):  # moved to geoembed.jobs.model_io
        from geoembed.cluster import model_io

        return getattr(model_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
