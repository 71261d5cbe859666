"""``geoembed similar FIELD --like refs.gpkg -o sim.tif``: find places like the references."""

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

__all__ = ["similar"]

_FILE = click.Path(dir_okay=False, path_type=Path)
_EXAMPLES = (
    "\b\nExamples:\n"
    "  geoembed similar field.tif --like wetlands.gpkg -o sim.tif\n"
    "  geoembed similar field.tif --like wetlands.gpkg --unlike other.gpkg \\\n"
    "      -o sim.tif --mask mask.tif --precision 0.9 --top 100 --top-out top.parquet"
)


@click.command("similar", epilog=_EXAMPLES)
@click.argument("source")
@click.option(
    "--like",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Reference points or polygons (any vector format or a CSV with lon/lat).",
)
@click.option(
    "--unlike",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Places that are NOT like the references: the mask threshold then reaches "
    "--precision on held-out references.",
)
@click.option("--metric", type=click.Choice(["cosine", "dot"]), default="cosine", show_default=True)
@click.option(
    "--reduce",
    type=click.Choice(["mean", "max"]),
    default="mean",
    show_default=True,
    help="Similarity to the references' mean, or the best over every reference.",
)
@click.option("-o", "--output", type=_FILE, required=True, help="Similarity COG (float32).")
@click.option("--mask", type=_FILE, default=None, help="Also write a 0/1 mask COG (uint8).")
@click.option("--threshold", type=float, default=None, help="Fixed mask threshold.")
@click.option(
    "--precision",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.9,
    show_default=True,
    help="Precision target of the threshold (with --unlike).",
)
@click.option(
    "--quantile",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.05,
    show_default=True,
    help="Without --unlike: the threshold is this quantile of the held-out references' "
    "similarities (about 1 - QUANTILE of places like them pass).",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=None, help="Find the N most similar pixels."
)
@click.option("--top-out", type=_FILE, default=None, help="GeoParquet of the --top pixels.")
@click.option("--report", type=_FILE, default=None, help="JSON report.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the hold-out folds.")
@json_option
@overwrite_option
@resume_option
@click.pass_context
def similar(
    ctx: click.Context,
    source: str,
    like: Path,
    unlike: Path | None,
    metric: str,
    reduce: str,
    output: Path,
    mask: Path | None,
    threshold: float | None,
    precision: float,
    quantile: float,
    top: int | None,
    top_out: Path | None,
    report: Path | None,
    seed: int,
    as_json: bool,
    overwrite: bool,
    resume: bool,
) -> None:
    """Map how similar every pixel is to reference places (float32 COG)."""
    from geoembed.errors import LabelError
    from geoembed.jobs.similar import SimilarOutputs, SimilarParams, run_similar

    if (top is None) != (top_out is None):
        raise LabelError("--top N and --top-out FILE go together.")
    if unlike is not None and (mask is None or threshold is not None):
        raise LabelError("--unlike only chooses the --mask threshold; drop it or add --mask.")
    params = SimilarParams(
        like,
        unlike=unlike,
        metric=metric,
        reduce=reduce,
        threshold=threshold,
        precision=precision,
        quantile=quantile,
        top=top,
        seed=seed,
    )
    with job_client(ctx):
        summary = run_similar(
            source,
            SimilarOutputs(output, mask, top_out, report),
            params,
            overwrite=overwrite,
            resume=resume,
            progress=show_progress(ctx, as_json),
        )
    if as_json:
        echo_json(summary)
    elif not ctx.obj.get("quiet"):
        click.echo(f"references: {summary['references']['vectors']} vectors from {like}")
        if "threshold" in summary:
            t = summary["threshold"]
            click.echo(f"mask threshold {t['threshold']:.4f} ({t['method']})")
        for what, path in summary["outputs"].items():
            click.echo(f"wrote {what}: {path}")
