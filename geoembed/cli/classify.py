"""``geoembed classify SOURCE --training T.csv --label-column C -o map.tif``: kNN maps."""

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
from geoembed.cli._urls import ClassTablePath, InputPath, OutputPath
from geoembed.errors import LabelError

__all__ = ["classify"]

_FILE = OutputPath()


_EXAMPLES = (
    "\b\nExamples:\n"
    "  geoembed classify field.zarr --training samples.csv --label-column dw_label \\\n"
    "      -k 5 -o map.tif --report report.json\n"
    "  geoembed classify field.zarr --labels polygons.gpkg --label-column class \\\n"
    "      -o map.tif --confidence conf.tif --save-model model/\n"
    "  geoembed classify other.zarr --model model/ -o map2.tif"
)


@click.command("classify", epilog=_EXAMPLES)
@click.argument("source")
@click.option(
    "--labels",
    type=InputPath(),
    default=None,
    help="Labelled points or polygons (GeoPackage, GeoJSON, GeoParquet, Shapefile, "
    "CSV with lon/lat or WKT); the field is sampled under them.",
)
@click.option(
    "--training",
    type=InputPath(dir_okay=False),
    default=None,
    help="Table of already-sampled embeddings with band columns "
    "(A00..A63), e.g. an Earth Engine sampleRegions CSV export.",
)
@click.option("--label-column", default=None, help="Column holding the class labels.")
@click.option(
    "--class-table",
    type=ClassTablePath(),
    default=None,
    help="Class table (id, name, colour) for the labels: a CSV/JSON file, or a built-in "
    "name (dynamic_world).",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Number of neighbours.",
)
@click.option(
    "--metric",
    type=click.Choice(["cosine", "euclidean"]),
    default="cosine",
    show_default=True,
    help="cosine suits unit-length embeddings (AlphaEarth).",
)
@click.option(
    "--weights",
    type=click.Choice(["uniform", "distance"]),
    default="uniform",
    show_default=True,
    help="Equal votes, or votes weighted by 1/distance.",
)
@click.option(
    "-o",
    "--output",
    type=_FILE,
    required=True,
    help="Class map to write (COG, uint8, nodata 255, class names and colours).",
)
@click.option(
    "--confidence",
    type=_FILE,
    default=None,
    help="Also write the winning vote share (float32 COG).",
)
@click.option(
    "--probabilities",
    type=_FILE,
    default=None,
    help="Also write per-class vote shares (float32 COG, one band per class).",
)
@click.option(
    "--report",
    type=_FILE,
    default=None,
    help="Write a JSON report (training data, cross-validated accuracy, model).",
)
@click.option(
    "--cv",
    default=None,
    help="Cross-validation for the report: random:5, spatial:5, "
    "spatial_blocks:5:SIZE, holdout:0.3, or none (default: spatial, from polygons "
    "or from point coordinates).",
)
@click.option(
    "--save-model",
    type=OutputPath(file_okay=False, dir_okay=True),
    default=None,
    help="Save the fitted model to this directory (arrays + JSON, no pickle).",
)
@click.option(
    "--model",
    type=InputPath(),
    default=None,
    help="Use a saved model instead of labels (a directory from --save-model).",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Allow --model to load a pickle/joblib scikit-learn estimator. Pickles can "
    "run code when loaded: only for files you trust.",
)
@click.option(
    "--approximate",
    type=click.Choice(["ivf", "hnsw"]),
    default=None,
    help="Approximate faiss index for very large label sets (reports recall@k).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the CV folds.")
@click.option(
    "--allow-single-class",
    is_flag=True,
    help="Accept training labels of one class only (the map is then constant).",
)
@json_option
@overwrite_option
@resume_option
@click.pass_context
def classify(
    ctx: click.Context,
    source: str,
    labels: Path | None,
    training: Path | None,
    label_column: str | None,
    class_table: Path | str | None,
    k: int,
    metric: str,
    weights: str,
    output: Path,
    confidence: Path | None,
    probabilities: Path | None,
    report: Path | None,
    cv: str | None,
    save_model: Path | None,
    model: Path | None,
    allow_pickle: bool,
    approximate: str | None,
    seed: int,
    allow_single_class: bool,
    as_json: bool,
    overwrite: bool,
    resume: bool,
) -> None:
    """Classify an embedding field with exact kNN (or a saved model) into a COG map."""
    from geoembed.jobs.classify import ClassifyOutputs, ClassifyParams, run_classify

    given = [
        flag
        for flag, value in (("--labels", labels), ("--training", training), ("--model", model))
        if value is not None
    ]
    if len(given) != 1:
        raise LabelError(
            "give exactly one of --labels FILE, --training TABLE or --model DIR "
            f"(got {', '.join(given) or 'none'})."
        )
    if model is None and not label_column:
        raise LabelError("--label-column is required with --labels / --training.")
    if model is not None and (cv not in (None, "none") or save_model is not None):
        raise LabelError("--cv and --save-model need training labels, not --model.")
    params = ClassifyParams(
        labels=labels,
        training=training,
        label_column=label_column,
        class_table=class_table,
        model=model,
        allow_pickle=allow_pickle,
        k=k,
        metric=metric,
        weights=weights,
        approximate=approximate or False,
        cv=cv,
        seed=seed,
        allow_single_class=allow_single_class,
    )
    out = ClassifyOutputs(output, confidence, probabilities, report, save_model)
    progress = show_progress(ctx, as_json)
    with job_client(ctx):
        summary = run_classify(
            source, out, params, overwrite=overwrite, resume=resume, progress=progress
        )
    if as_json:
        echo_json(summary)
        return
    if not ctx.obj.get("quiet"):
        _print_summary(summary)


def _print_summary(summary: dict) -> None:
    train = summary.get("training")
    if train:
        counts = ", ".join(f"{n}: {c}" for n, c in train["class_counts"].items())
        click.echo(f"training samples: {train['n_samples']} ({counts})")
    model = summary.get("model", {})
    if "k" in model:
        click.echo(
            f"model: kNN k={model['k']} metric={model['metric']} "
            f"weights={model['weights']}"
            + (f" recall@k={model['recall']:.3f}" if model.get("recall") else "")
        )
    cvr = summary.get("cross_validation")
    if cvr:
        from geoembed.assess import format_report

        click.echo(f"cross-validation ({cvr.get('cv')}):")
        click.echo(format_report(cvr))
    for what, path in summary.get("outputs", {}).items():
        click.echo(f"wrote {what}: {path}")
