"""``geoembed train-cnn SOURCE``: train a compact CNN and export ONNX + sidecar JSON."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from geoembed.cli._options import echo_json, job_client, json_option, overwrite_option
from geoembed.errors import LabelError

__all__ = ["train_cnn"]


def _client(ctx: click.Context) -> Any:
    """Open the job's client when --scheduler was given; else use Dask's threads.

    Training runs in this process; Dask only reads the sampled windows, so starting worker
    processes by default would cost more than it saves.
    """
    source = ctx.find_root().get_parameter_source("scheduler")
    if source is not None and source != click.core.ParameterSource.DEFAULT:
        return job_client(ctx)
    import dask

    return contextlib.nullcontext(dask.config.set(scheduler="threads"))


@click.command("train-cnn")
@click.argument("source")
@click.option("--labels", "labels", default=None, help="Labelled polygons (GeoPackage, ...).")
@click.option("--label-column", default=None, help="Class column of --labels.")
@click.option("--name-column", default=None, help="Column of --labels with class names.")
@click.option(
    "--labels-raster", default=None, help="One-band class raster on the field grid (GeoTIFF)."
)
@click.option("--label-nodata", type=float, default=None, help="Label value meaning unlabelled.")
@click.option("-o", "--output", required=True, help="Model file to write (.onnx; + .json).")
@click.option(
    "--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Maximum epochs."
)
@click.option(
    "--patch", type=click.IntRange(min=8), default=64, show_default=True, help="Patch size (px)."
)
@click.option(
    "--batch-size", type=click.IntRange(min=2), default=16, show_default=True, help="Patches/step."
)
@click.option(
    "--patches",
    "n_patches",
    type=click.IntRange(min=2),
    default=256,
    show_default=True,
    help="Training windows to draw.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.25,
    show_default=True,
    help="Share of labelled pixels held out as whole blocks.",
)
@click.option(
    "--block",
    type=int,
    default=None,
    help="Validation block size [2 x patch, at most half the field].",
)
@click.option(
    "--width", type=click.IntRange(min=1), default=32, show_default=True, help="Hidden channels."
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Stop after this many epochs without a lower validation loss (0: never).",
)
@click.option(
    "--class-weighting",
    type=click.Choice(["sqrt", "inverse", "none"]),
    default="sqrt",
    show_default=True,
    help="Loss weight per class from its frequency f: sqrt(1/f), 1/f or equal.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Split, patches, weights, augmentation."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="PyTorch threads.")
@overwrite_option
@json_option
@click.pass_context
def train_cnn(
    ctx: click.Context,
    source: str,
    labels: str | None,
    label_column: str | None,
    name_column: str | None,
    labels_raster: str | None,
    label_nodata: float | None,
    output: str,
    epochs: int,
    patch: int,
    batch_size: int,
    n_patches: int,
    val_fraction: float,
    block: int | None,
    width: int,
    patience: int,
    class_weighting: str,
    seed: int,
    threads: int | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Train a compact fully convolutional network on SOURCE and labels; write ONNX + JSON.

    Labels are either polygons (--labels with --label-column) or a label raster on the
    field grid (--labels-raster). Whole blocks are held out for validation; the summary
    compares the CNN with a per-pixel kNN on the same pixels. Run the model with
    ``geoembed infer SOURCE --model OUTPUT``.
    """
    from geoembed.jobs.train import train_cnn as run

    if (labels is None) == (labels_raster is None):
        raise LabelError("Pass either --labels (with --label-column) or --labels-raster.")
    quiet = ctx.obj.get("quiet", False)
    with _client(ctx):
        result = run(
            source,
            output,
            labels=labels,
            label_column=label_column,
            name_column=name_column,
            labels_raster=labels_raster,
            label_nodata=label_nodata,
            epochs=epochs,
            patch=patch,
            batch_size=batch_size,
            n_patches=n_patches,
            val_fraction=val_fraction,
            block=block,
            width=width,
            patience=patience,
            class_weighting=class_weighting,
            seed=seed,
            threads=threads,
            progress=not quiet,
            overwrite=overwrite,
        )
    if as_json:
        echo_json(result.summary())
        return
    if quiet:
        return
    cnn = result.metrics["cnn"]
    click.echo(f"wrote {result.model_path} and {result.config_path}")
    click.echo(
        f"validation ({cnn['pixels']} held-out pixels): CNN accuracy {cnn['accuracy']:.3f}, "
        f"balanced {cnn['balanced_accuracy']:.3f}, kappa {cnn['kappa']:.3f}"
    )
    knn = result.metrics.get("knn")
    if knn:
        click.echo(
            f"  per-pixel kNN (k={knn['k']}) on the same split: accuracy {knn['accuracy']:.3f}, "
            f"balanced {knn['balanced_accuracy']:.3f}, kappa {knn['kappa']:.3f}"
        )
    for note in result.report.get("notes", []):
        click.echo(f"note: {note}")
