"""``geoembed regress FIELD --training T.csv --target-column S1_VV -o v.tif``: kNN regression."""

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

__all__ = ["regress"]

_FILE = click.Path(dir_okay=False, path_type=Path)
_EXAMPLES = (
    "\b\nExamples:\n"
    "  geoembed regress field.tif --labels plots.gpkg --target-column height \\\n"
    "      -o height.tif --spread spread.tif --report report.json\n"
    "  geoembed regress field.tif --training samples.csv --target-column S1_VV -o vv.tif"
)


@click.command("regress", epilog=_EXAMPLES)
@click.argument("source")
@click.option(
    "--labels",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Points or polygons with a numeric target column; the field is sampled under them.",
)
@click.option(
    "--training",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Table of already-sampled embeddings (A00..A63) with the target column.",
)
@click.option("--target-column", required=True, help="Numeric column to predict.")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True
)
@click.option(
    "--weights",
    type=click.Choice(["uniform", "distance"]),
    default="uniform",
    show_default=True,
    help="Mean of the neighbours' targets, or their 1/distance weighted mean.",
)
@click.option("-o", "--output", type=_FILE, required=True, help="Prediction COG (float32).")
@click.option(
    "--spread", type=_FILE, default=None, help="Std of the neighbours' targets (float32 COG)."
)
@click.option("--report", type=_FILE, default=None, help="JSON report with CV RMSE, MAE, R², bias.")
@click.option(
    "--cv",
    default=None,
    help="random:5, spatial:5, spatial_blocks:5:SIZE, holdout:0.3 or none (default: "
    "spatial, from polygons or point coordinates).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the CV folds.")
@json_option
@overwrite_option
@resume_option
@click.pass_context
def regress(
    ctx: click.Context,
    source: str,
    labels: Path | None,
    training: Path | None,
    target_column: str,
    k: int,
    metric: str,
    weights: str,
    output: Path,
    spread: Path | None,
    report: Path | None,
    cv: str | None,
    seed: int,
    as_json: bool,
    overwrite: bool,
    resume: bool,
) -> None:
    """Predict a continuous target for every pixel with exact kNN regression."""
    from geoembed.errors import LabelError
    from geoembed.jobs.regress import RegressOutputs, RegressParams, run_regress

    if (labels is None) == (training is None):
        raise LabelError("give exactly one of --labels FILE or --training TABLE.")
    params = RegressParams(
        target_column,
        labels=labels,
        training=training,
        k=k,
        metric=metric,
        weights=weights,
        cv=cv,
        seed=seed,
    )
    with job_client(ctx):
        summary = run_regress(
            source,
            RegressOutputs(output, spread, report),
            params,
            overwrite=overwrite,
            resume=resume,
            progress=show_progress(ctx, as_json),
        )
    if as_json:
        echo_json(summary)
    elif not ctx.obj.get("quiet"):
        click.echo(f"training samples: {summary['training']['n_samples']} ({target_column})")
        cvr = summary.get("cross_validation")
        if cvr:
            p = cvr["pooled"]
            r2 = "-" if p["r2"] is None else f"{p['r2']:.3f}"
            click.echo(
                f"cross-validation ({cvr['cv']}): RMSE {p['rmse']:.4g}, MAE {p['mae']:.4g}, "
                f"R2 {r2}, bias {p['bias']:+.4g}"
            )
        for what, path in summary["outputs"].items():
            click.echo(f"wrote {what}: {path}")
