"""Unsupervised classification: KMeans over embedding fields larger than memory.

>>> from geoembed.cluster import KMeans
>>> model = KMeans(n_clusters=10, metric="cosine", random_state=0).fit(field)
>>> clusters = model.predict(field)          # lazy (y, x) uint8 map, 255 = nodata

A fitted ``dask_ml.cluster.KMeans`` is kept with ``KMeans.from_dask_ml(km)`` (its centres;
same map as its own ``predict``), or bare centres with ``KMeans.from_centers(c)``.
"""

from geoembed._deprecated import moved_attributes
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


# moved to geoembed.jobs (the jobs and model I/O write through geoembed.export)
__getattr__ = moved_attributes(
    __name__,
    {
        "cluster_to_cog": "geoembed.jobs.cluster:cluster_to_cog",
        "load_model": "geoembed.jobs.model_io:load_kmeans",
        "save_model": "geoembed.jobs.model_io:save_kmeans",
    },
)
