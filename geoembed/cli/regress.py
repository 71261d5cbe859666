"""``geoembed regress FIELD --training T.csv --target-column S1_VV -o v.tif``: kNN regression."""

from __future__ import annotations

from pathlib import Path

import click

from geoembed.cli._options import (
    echo_json,
    job_client,
    json_option,
    overwrite_option,
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
) -> None:
    """Predict a continuous target for every pixel with exact kNN regression."""
    from geoembed.cli._analysis_io import check_outputs, write_json
    from geoembed.errors import LabelError

    if (labels is None) == (training is None):
        raise LabelError("give exactly one of --labels FILE or --training TABLE.")
    outputs = check_outputs(
        {"prediction raster": output, "spread raster": spread, "report": report}, overwrite
    )
    from geoembed import regress as rg
    from geoembed.classify.job import default_cv
    from geoembed.export import write_cog
    from geoembed.io import open_embeddings
    from geoembed.runtime import compute

    field = open_embeddings(source)
    if labels is not None:
        targets = rg.targets_from_geometries(field, labels, target_column=target_column)
    else:
        targets = rg.targets_from_table(training, field, target_column=target_column)
    model = rg.KNNRegressor.from_targets(targets, k, metric=metric, weights=weights)
    summary: dict = {
        "source": source,
        "training": {"n_samples": len(targets), "report": targets.report},
        "model": {"type": "KNNRegressor", **model.params()},
    }
    if cv != "none" and (report is not None or cv is not None):
        spec = cv or default_cv(targets)
        summary["cross_validation"] = rg.cross_validate_regression(
            lambda: rg.KNNRegressor(min(k, len(targets) - 1), metric=metric, weights=weights),
            targets,
            cv=spec,
            seed=seed,
        )
    ds = rg.predict_regression(model, field, source=source)
    jobs = [
        write_cog(ds["value"], outputs["prediction raster"], overwrite=overwrite, compute=False)
    ]
    if spread is not None:
        jobs.append(
            write_cog(ds["spread"], outputs["spread raster"], overwrite=overwrite, compute=False)
        )
    with job_client(ctx):
        compute(*jobs, progress=show_progress(ctx, as_json), label="regressing")
    summary["outputs"] = {"prediction": str(outputs["prediction raster"])}
    if spread is not None:
        summary["outputs"]["spread"] = str(outputs["spread raster"])
    if report is not None:
        write_json(summary, outputs["report"])
        summary["outputs"]["report"] = str(outputs["report"])
    if as_json:
        echo_json(summary)
    elif not ctx.obj.get("quiet"):
        click.echo(f"training samples: {len(targets)} ({target_column})")
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
