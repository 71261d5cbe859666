"""End-to-end clustering jobs: fit, predict, write, summarise (what the CLI and demo call)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import xarray as xr

from geoembed.cluster.kmeans import KMeans
from geoembed.cluster.model_io import class_names, parse_names, save_model
from geoembed.errors import ModelError

__all__ = ["ENGINES", "ClusterResult", "cluster_field", "cluster_to_cog"]

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
    _check_engine(engine, metric)
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
    labels.attrs["class_names"] = cnames
    return ClusterResult(
        model=model,
        labels=labels,
        distance=model.distance(field),
        class_names=cnames,
        fit_seconds=fit_seconds,
    )


def _check_engine(engine: str, metric: str) -> None:
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
    labels = apply_estimator(field, fitted, output="class").rename("cluster")
    labels.attrs.update(class_names=cnames, n_clusters=int(n_clusters), metric="euclidean")
    return ClusterResult(
        model=model,
        labels=labels,
        distance=model.distance(field),
        class_names=cnames,
        fit_seconds=fit_seconds,
        extra={"engine": "dask-ml", "estimator": fitted},
    )


def cluster_to_cog(
    field: xr.DataArray,
    output: str | os.PathLike[str],
    n_clusters: int,
    *,
    distance: str | os.PathLike[str] | None = None,
    save_model_dir: str | os.PathLike[str] | None = None,
    metric: str = "euclidean",
    mode: str = "lloyd",
    sample_size: int | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    names: str | dict[int, str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    inputs: Sequence[Any] = (),
    engine: str = "geoembed",
) -> dict[str, Any]:
    """Cluster a field and write the cluster map (and optionally distances, model) to disk.

    Every output path is checked before any pixel is read
    (:class:`geoembed.export.outputs.OutputSet`): an existing output is replaced only
    with ``overwrite`` and only when geoembed wrote it, and no output may be an input.
    The COGs (with the cluster names in their class metadata) and the model are built
    under temporary names and appear together once all are complete, or not at all.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field (with a CRS).
    output : path-like
        Cluster map COG (uint8, nodata 255).
    n_clusters : int
        Number of clusters.
    distance : path-like, optional
        Also write the distance-to-centre raster (float32 COG).
    save_model_dir : path-like, optional
        Also save the model (arrays + JSON, no pickle).
    metric, mode, sample_size, max_iter, seed, names
        See :func:`cluster_field`.
    overwrite : bool
        Replace existing outputs (that geoembed wrote).
    resume : bool
        Finish a killed run of the same job: COG chunks it had written are reused.
    progress : bool
        Progress bars while writing.
    inputs : sequence of path, optional
        The paths the field was read from, so that no output overwrites them.
    engine : {"geoembed", "dask-ml"}, default "geoembed"
        KMeans implementation; see :func:`cluster_field`.

    Returns
    -------
    dict
        JSON-ready summary: outputs, model summary, per-cluster pixels and area (km^2).
    """
    from geoembed.cluster.stats import cluster_stats
    from geoembed.export import write_cog
    from geoembed.export.outputs import OutputSet
    from geoembed.runtime import compute
    from geoembed.schema import check_embedding

    check_embedding(field)
    outputs = OutputSet(overwrite=overwrite, inputs=inputs, resume=resume)
    outputs.add("cluster map", output)
    outputs.add("distance raster", distance)
    outputs.add("model directory", save_model_dir, directory=True)
    parse_names(names, n_clusters)
    _check_engine(engine, metric)

    result = cluster_field(
        field,
        n_clusters,
        metric=metric,
        mode=mode,
        sample_size=sample_size,
        max_iter=max_iter,
        seed=seed,
        names=names,
        engine=engine,
    )
    import rioxarray

    with outputs:  # all outputs appear together at commit(), or none does
        t0 = time.perf_counter()
        writes = [
            write_cog(
                result.labels,
                outputs.stage("cluster map"),
                class_names=result.class_names,
                compute=False,
                resume=resume,
            )
        ]
        if distance is not None:
            stage = outputs.stage("distance raster")
            writes.append(write_cog(result.distance, stage, compute=False, resume=resume))
        compute(*writes, progress=progress, label="writing clusters")
        write_seconds = time.perf_counter() - t0
        model_path = None
        if save_model_dir is not None:
            save_model(result.model, outputs.stage("model directory"))
            model_path = str(outputs.target("model directory"))
        staged = outputs.stage("cluster map")
        if isinstance(staged, str) and "://" in staged:
            from geoembed._cloud import gdal_path

            staged = gdal_path(staged)
        written = rioxarray.open_rasterio(
            staged, chunks={"x": 1024, "y": 1024}, mask_and_scale=False
        )
        assert isinstance(written, xr.DataArray)  # one single-band GeoTIFF
        table = cluster_stats(
            written.isel(band=0, drop=True), n_clusters=n_clusters, names=result.class_names
        )
        written.close()
        outputs.commit()
    model = result.model
    return {
        "output": str(output),
        "distance": str(distance) if distance is not None else None,
        "model": model_path,
        "n_clusters": int(n_clusters),
        "metric": metric,
        "mode": mode if engine == "geoembed" else None,
        "engine": engine,
        "seed": int(seed),
        "inertia": model.inertia_,
        "n_iter": model.n_iter_,
        "converged": model.converged_,
        "sample_size": model.sample_size_,
        "fit_seconds": round(result.fit_seconds, 3),
        "write_seconds": round(write_seconds, 3),
        "clusters": [
            {
                "id": int(i),
                "name": row["name"],
                "pixels": int(row["pixels"]),
                "area_km2": float(row["area_km2"]),
            }
            for i, row in table.iterrows()
        ],
    }
