"""The clustering job behind ``geoembed cluster``: fit, predict, write, summarise.

The cluster map, the distance raster and the per-cluster pixel counts and areas are
computed in one pass over the field (the labels are predicted once for the COG and the
table), and the outputs are committed together.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import xarray as xr

from geoembed.cluster.fit import ENGINES, ClusterResult, check_engine, cluster_field
from geoembed.cluster.names import parse_names
from geoembed.jobs._outputs import compute_all, plan_outputs

__all__ = [
    "ENGINES",
    "ClusterOutputs",
    "ClusterParams",
    "ClusterResult",
    "cluster_field",
    "cluster_to_cog",
    "run_cluster",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ClusterParams:
    """KMeans settings of the clustering job (see :func:`cluster_field`).

    Attributes
    ----------
    n_clusters : int
        Number of clusters.
    metric : {"euclidean", "cosine"}
        Distance (the default of :class:`~geoembed.cluster.KMeans` and of the CLI).
    mode, sample_size, max_iter, seed
        See :class:`~geoembed.cluster.KMeans` (``seed`` is ``random_state``).
    names : str or dict, optional
        Cluster names, ``"0=water,3=forest"``; unnamed clusters are ``cluster_<id>``.
    engine : {"geoembed", "dask-ml"}
        KMeans implementation.
    """

    n_clusters: int = 10
    metric: str = "euclidean"
    mode: str = "lloyd"
    sample_size: int | None = None
    max_iter: int | None = None
    seed: int = 0
    names: str | dict[int, str] | None = None
    engine: str = "geoembed"


@dataclass(frozen=True)
class ClusterOutputs:
    """Where the clustering job writes (None: not written)."""

    cluster_map: PathLike
    distance: PathLike | None = None
    model_dir: PathLike | None = None


def run_cluster(
    source: xr.DataArray | PathLike | Sequence[PathLike],
    out: ClusterOutputs,
    params: ClusterParams,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    inputs: Sequence[Any] = (),
    year: int | None = None,
    quantization: str | None = None,
) -> dict[str, Any]:
    """Cluster a field and write the cluster map (and optionally distances, model).

    Every output path is checked before any pixel is read
    (:class:`geoembed.export.outputs.OutputSet`): an existing output is replaced only
    with ``overwrite`` and only when geoembed wrote it, and no output may be an input.
    The COGs (with the cluster names in their class metadata) and the model are built
    under temporary names and appear together once all are complete, or not at all.

    Parameters
    ----------
    source : xarray.DataArray, path or sequence of paths
        Canonical embedding field (with a CRS), or what
        :func:`geoembed.io.open_embeddings` opens (several GeoTIFFs: a sequence).
    out : ClusterOutputs
        Output paths.
    params : ClusterParams
        KMeans settings.
    overwrite : bool
        Replace existing outputs (that geoembed wrote).
    resume : bool
        Finish a killed run of the same job: the COG chunks (and Zarr chunks) it had
        written are reused (:mod:`geoembed.export.resume`).
    progress : bool
        Progress bars while writing.
    inputs : sequence of path, optional
        The paths the field was read from, so that no output overwrites them (the
        ``source`` paths are always inputs).
    year, quantization
        Passed to :func:`geoembed.io.open_embeddings` when ``source`` is a path.

    Returns
    -------
    dict
        JSON-ready summary: outputs, model summary, per-cluster pixels and area (km^2).
    """
    from geoembed.cluster.stats import stats_table, stats_totals
    from geoembed.export import write_cog
    from geoembed.schema import check_embedding

    if isinstance(source, xr.DataArray):
        field = source
    else:
        from geoembed.io import open_embeddings

        paths = [source] if isinstance(source, str | os.PathLike) else list(source)
        inputs = [*paths, *inputs]
        opened = paths[0] if len(paths) == 1 else paths
        field = open_embeddings(opened, year=year, quantization=quantization)
    check_embedding(field)
    outputs = plan_outputs(
        {
            "cluster map": out.cluster_map,
            "distance raster": out.distance,
            "model directory": out.model_dir,
        },
        overwrite=overwrite,
        resume=resume,
        inputs=inputs,
        directories={"model directory"},
    )
    parse_names(params.names, params.n_clusters)
    check_engine(params.engine, params.metric)

    with dask.config.set({"geoembed.progress": bool(progress)}):  # the KMeans passes' bar
        result = cluster_field(
            field,
            params.n_clusters,
            metric=params.metric,
            mode=params.mode,
            sample_size=params.sample_size,
            max_iter=params.max_iter,
            seed=params.seed,
            names=params.names,
            engine=params.engine,
        )
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
        if "distance raster" in outputs:
            writes.append(
                write_cog(
                    result.distance, outputs.stage("distance raster"), compute=False, resume=resume
                )
            )
        totals = stats_totals(result.labels, n_clusters=params.n_clusters)
        *_, total = compute_all(*writes, totals, progress=progress, label="writing clusters")
        write_seconds = time.perf_counter() - t0
        model_path = None
        if "model directory" in outputs:
            from geoembed.jobs.model_io import save_kmeans

            save_kmeans(result.model, outputs.stage("model directory"))
            model_path = str(outputs.target("model directory"))
        table = stats_table(total, n_clusters=params.n_clusters, names=result.class_names)
        outputs.commit()
    model = result.model
    return {
        "output": str(out.cluster_map),
        "distance": str(out.distance) if out.distance is not None else None,
        "model": model_path,
        "n_clusters": int(params.n_clusters),
        "metric": params.metric,
        "mode": params.mode if params.engine == "geoembed" else None,
        "engine": params.engine,
        "seed": int(params.seed),
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


def cluster_to_cog(
    field: xr.DataArray,
    output: PathLike,
    n_clusters: int,
    *,
    distance: PathLike | None = None,
    save_model_dir: PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    inputs: Sequence[Any] = (),
    **params: Any,
) -> dict[str, Any]:
    """:func:`run_cluster` with keyword arguments (``params``: fields of :class:`ClusterParams`)."""
    return run_cluster(
        field,
        ClusterOutputs(output, distance, save_model_dir),
        ClusterParams(n_clusters, **params),
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        inputs=inputs,
    )
