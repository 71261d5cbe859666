"""``geoembed cluster SOURCE -k 12 -o clusters.tif``: KMeans over a whole field."""

from __future__ import annotations

from pathlib import Path

import click

from geoembed.cli._options import (
    echo_json,
    job_client,
    json_option,
    overwrite_option,
    resume_option,
    show_progress,
)
from geoembed.cli._urls import OutputPath

__all__ = ["cluster"]


@click.command("cluster")
@click.argument("source", nargs=-1, required=True)
@click.option(
    "-k",
    "--clusters",
    "n_clusters",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Number of clusters.",
)
@click.option(
    "-o",
    "--output",
    type=OutputPath(),
    required=True,
    help="Cluster map to write (COG, uint8, nodata 255).",
)
@click.option(
    "--distance",
    type=OutputPath(),
    default=None,
    help="Also write the distance of each pixel to its centre (float32 COG).",
)
@click.option(
    "--sample",
    "sample_size",
    type=click.IntRange(min=1),
    default=None,
    help="Pixels sampled for seeding (default max(256 k, 50 000)).",
)
@click.option(
    "--max-iter",
    type=click.IntRange(min=1),
    default=None,
    help="Lloyd passes over the field (default 20; sample mode: iterations, 100).",
)
@click.option(
    "--metric",
    type=click.Choice(["euclidean", "cosine"]),
    default="euclidean",
    show_default=True,
    help="euclidean (as geoembed.cluster.KMeans and dask-ml), or cosine = spherical "
    "k-means, for unit-length embeddings.",
)
@click.option(
    "--engine",
    type=click.Choice(["geoembed", "dask-ml"]),
    default="geoembed",
    show_default=True,
    help="KMeans implementation. dask-ml: dask_ml.cluster.KMeans (k-means||, Euclidean) "
    "for parity with an existing dask-ml pipeline; same outputs and report.",
)
@click.option(
    "--mode",
    type=click.Choice(["lloyd", "minibatch", "sample"]),
    default="lloyd",
    show_default=True,
    help="lloyd: exact passes over all pixels; minibatch; sample: fit on the sample only.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--save-model",
    "save_model_dir",
    type=OutputPath(file_okay=False, dir_okay=True),
    default=None,
    help="Save the model (arrays + JSON, no pickle) to this directory or gs:// / s3:// URL.",
)
@click.option("--names", default=None, help="Cluster names, e.g. 0=water,3=forest (COG metadata).")
@click.option("--year", type=int, default=None, help="Time step (multi-year sources).")
@click.option(
    "--quantization",
    type=click.Choice(["aef"]),
    default=None,
    help="Decode int8 codes as AlphaEarth (when the file declares no nodata).",
)
@json_option
@overwrite_option
@resume_option
@click.pass_context
def cluster(
    ctx: click.Context,
    source: tuple[str, ...],
    n_clusters: int,
    output: Path,
    distance: Path | None,
    sample_size: int | None,
    max_iter: int | None,
    metric: str,
    engine: str,
    mode: str,
    seed: int,
    save_model_dir: str | None,
    names: str | None,
    year: int | None,
    quantization: str | None,
    as_json: bool,
    overwrite: bool,
    resume: bool,
) -> None:
    """Cluster an embedding field with KMeans and write the cluster map as a COG.

    SOURCE is a Zarr store, a GeoTIFF/COG (AlphaEarth int8 is de-quantized), or several
    GeoTIFFs. Seeding reads a random sample of pixels; refinement makes exact passes over
    every pixel. Same --seed, same map, whatever the chunking or --workers.
    """
    from geoembed.jobs.cluster import ClusterOutputs, ClusterParams, run_cluster

    params = ClusterParams(
        n_clusters,
        metric=metric,
        mode=mode,
        sample_size=sample_size,
        max_iter=max_iter,
        seed=seed,
        names=names,
        engine=engine,
    )
    with job_client(ctx):
        summary = run_cluster(
            list(source),
            ClusterOutputs(output, distance, save_model_dir),
            params,
            overwrite=overwrite,
            resume=resume,
            progress=show_progress(ctx, as_json),
            year=year,
            quantization=quantization,
        )
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"wrote {summary['output']}: {n_clusters} clusters "
        f"({metric}, {mode if engine == 'geoembed' else 'dask-ml'}), inertia "
        f"{summary['inertia']:.6g}, {summary['n_iter']} iteration(s), "
        f"fit {summary['fit_seconds']} s"
    )
    for c in summary["clusters"]:
        click.echo(f"  {c['id']:>3}  {c['name']:<20} {c['pixels']:>12} px  {c['area_km2']:.4f} km2")
    if summary["distance"]:
        click.echo(f"wrote {summary['distance']}")
    if summary["model"]:
        click.echo(f"saved model to {summary['model']}")
