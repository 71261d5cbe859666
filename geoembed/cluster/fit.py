"""Fit KMeans on a field and get its lazy cluster and distance maps (no I/O here)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import xarray as xr

from geoembed.cluster.kmeans import KMeans
from geoembed.cluster.names import class_names, parse_names
from geoembed.errors import ModelError
from geoembed.output_schema import cluster_map, legend_attrs

__all__ = ["ENGINES", "ClusterResult", "check_engine", "cluster_field"]

#: KMeans implementations a job can fit with: geoembed's own (default) or dask-ml's
ENGINES = ("geoembed", "dask-ml")


@dataclass
class ClusterResult:
    """A fitted model and its lazy outputs on the field's grid.

    Attributes
    ----------
    model : KMeans
        The fitted estimator.
    labels : xarray.DataArray
        Lazy ``(y, x)`` cluster map (uint8, nodata 255), with ``class_names`` in attrs.
    distance : xarray.DataArray
        Lazy ``(y, x)`` float32 distance of each pixel to its centre (NaN at nodata).
    class_names : list of str
        One name per cluster.
    fit_seconds : float
        Wall time of the fit.
    """

    model: KMeans
    labels: xr.DataArray
    distance: xr.DataArray
    class_names: list[str]
    fit_seconds: float = 0.0
    extra: dict[str, Any] = dc_field(default_factory=dict)


def cluster_field(
    field: xr.DataArray,
    n_clusters: int,
    *,
    metric: str = "euclidean",
    mode: str = "lloyd",
    sample_size: int | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    names: str | dict[int, str] | None = None,
    engine: str = "geoembed",
) -> ClusterResult:
    """Fit KMeans on a field and return the model with its lazy cluster and distance maps.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field.
    n_clusters : int
        Number of clusters.
    metric, mode, sample_size, max_iter, seed
        See :class:`~geoembed.cluster.KMeans` (``seed`` is ``random_state``).
    names : str or dict, optional
        Cluster names, ``"0=water,3=forest"``; unnamed clusters are ``cluster_<id>``.
    engine : {"geoembed", "dask-ml"}, default "geoembed"
        ``"dask-ml"`` fits ``dask_ml.cluster.KMeans`` (k-means||, Euclidean; ``mode``
        and ``sample_size`` do not apply) and maps every pixel with dask-ml's own
        ``predict``, for parity with an existing dask-ml pipeline; the model is
        kept as a geoembed :class:`KMeans` with dask-ml's centres, and its inertia is
        the sum of squared distances (one extra pass), as for geoembed's engine.

    Returns
    -------
    ClusterResult
    """
    named = parse_names(names, n_clusters)
    check_engine(engine, metric)
    if engine == "dask-ml":
        return _cluster_dask_ml(field, n_clusters, max_iter=max_iter, seed=seed, named=named)
    model = KMeans(
        n_clusters,
        metric=metric,
        mode=mode,
        sample_size=sample_size,
        max_iter=max_iter,
        random_state=seed,
    )
    t0 = time.perf_counter()
    model.fit(field)
    fit_seconds = time.perf_counter() - t0
    model.cluster_names_ = named
    cnames = class_names(n_clusters, named)
    labels = model.predict(field)
    labels.attrs.update(legend_attrs(cnames))
    return ClusterResult(
        model=model,
        labels=labels,
        distance=model.distance(field),
        class_names=cnames,
        fit_seconds=fit_seconds,
    )


def check_engine(engine: str, metric: str) -> None:
    """Refuse an unknown KMeans engine, or dask-ml with a metric other than Euclidean."""
    if engine not in ENGINES:
        raise ModelError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if engine == "dask-ml" and metric != "euclidean":
        raise ModelError(
            f"dask-ml's KMeans is Euclidean only; metric={metric!r} needs engine='geoembed' "
            "(or use metric='euclidean' with engine='dask-ml')."
        )


def _cluster_dask_ml(
    field: xr.DataArray,
    n_clusters: int,
    *,
    max_iter: int | None,
    seed: int,
    named: dict[int, str],
) -> ClusterResult:
    from geoembed.classify.estimator import apply_estimator
    from geoembed.cluster._dask_ml import fit_dask_ml_kmeans

    t0 = time.perf_counter()
    fitted = fit_dask_ml_kmeans(field, n_clusters, max_iter=max_iter, seed=seed)
    fit_seconds = time.perf_counter() - t0
    model = KMeans.from_dask_ml(fitted, feature_names=[str(b) for b in field["band"].values])
    model.set_params(random_state=seed)
    model.inertia_ = -model.score(field)  # sum of squared distances, as geoembed reports it
    model.cluster_names_ = named
    cnames = class_names(n_clusters, named)
    labels = cluster_map(
        field,
        apply_estimator(field, fitted, output="class"),
        n_clusters=int(n_clusters),
        class_names=cnames,
        attrs={"metric": "euclidean"},
    )
    return ClusterResult(
        model=model,
        labels=labels,
        distance=model.distance(field),
        class_names=cnames,
        fit_seconds=fit_seconds,
        extra={"engine": "dask-ml", "estimator": fitted},
    )
