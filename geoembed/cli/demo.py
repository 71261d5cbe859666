"""``geoembed demo``: the whole job on a built-in synthetic scene."""

from __future__ import annotations

import click

from geoembed.cli._options import echo_json, job_client, json_option, show_progress


@click.command()
@click.option(
    "--out",
    "out",
    default="demo-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder (created; a non-empty folder is reused only if an earlier demo made it).",
)
@click.option(
    "--size",
    type=click.IntRange(min=32),
    default=1024,
    show_default=True,
    help="Scene size in pixels (square).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of scene, labels and KMeans.")
@click.option(
    "--chunks",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Spatial chunk size.",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1, max=40),
    default=5,
    show_default=True,
    help="Neighbours for kNN (at most the 40 labelled points per class).",
)
@json_option
@click.pass_context
def demo(
    ctx: click.Context, out: str, size: int, seed: int, chunks: int, k: int, as_json: bool
) -> None:
    """Run the whole job on a built-in synthetic scene (no network, no data files).

    Generates a synthetic AlphaEarth-like scene (not real data), classifies it with kNN
    from sampled labels, clusters it with KMeans, writes COGs/Zarr and scores both maps
    against the scene's ground truth.
    """
    from geoembed.jobs.demo import run_demo

    with job_client(ctx):
        summary = run_demo(
            out, size=size, seed=seed, chunks=chunks, k=k, progress=show_progress(ctx, as_json)
        )
    if as_json:
        echo_json(summary)
        return
    knn, km = summary["knn"], summary["kmeans"]
    click.echo(f"synthetic scene {size} x {size} px (seed {seed}) -> {out}/")
    click.echo(
        f"kNN (k={knn['k']}, {knn['training_points']} labelled points): overall accuracy "
        f"{knn['overall_accuracy']:.3f}, kappa {knn['kappa']:.3f} against the ground truth"
    )
    click.echo(
        f"KMeans ({km['n_clusters']} clusters): adjusted Rand index "
        f"{km['adjusted_rand_index']:.3f} against the ground truth"
    )
    for key, path in summary["outputs"].items():
        click.echo(f"  {key:15s} {path}")
    click.echo(f"done in {summary['seconds']['total']:.1f} s")
