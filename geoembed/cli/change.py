"""``geoembed change A B -o change.tif``: change magnitude, mask and class transitions."""

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
from geoembed.cli._urls import ClassTablePath

__all__ = ["change"]

_FILE = click.Path(dir_okay=False, path_type=Path)
_EXAMPLES = (
    "\b\nExamples:\n"
    "  geoembed change field_2020.tif field_2024.tif -o change.tif --mask changed.tif\n"
    "  geoembed change f2020.zarr f2024.zarr -o change.tif --training samples.csv \\\n"
    "      --label-column dw_label --transitions transitions.json"
)


def _threshold(value: str) -> float | str:
    if value == "otsu":
        return value
    try:
        return float(value)
    except ValueError as exc:
        raise click.BadParameter("give a number (1 - cosine) or 'otsu'.") from exc


@click.command("change", epilog=_EXAMPLES)
@click.argument("first")
@click.argument("second")
@click.option("-o", "--output", type=_FILE, required=True, help="Change magnitude COG (float32).")
@click.option("--mask", type=_FILE, default=None, help="Also write a 0/1 change mask (uint8).")
@click.option(
    "--threshold",
    default="otsu",
    show_default=True,
    help="Mask threshold on 1 - cosine: a number, or 'otsu' (Otsu on a sample, never below 0.1).",
)
@click.option(
    "--training",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Sampled embedding table (A00..A63 + labels) for from -> to transitions.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Labelled points/polygons, sampled from the FIRST field, for transitions.",
)
@click.option("--label-column", default=None, help="Label column of --training / --labels.")
@click.option(
    "--class-table",
    type=ClassTablePath(),
    default=None,
    help="Class table (file, or 'dynamic_world') naming the label values.",
)
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--transitions", type=_FILE, default=None, help="JSON transition matrix (ha).")
@click.option("--report", type=_FILE, default=None, help="JSON report.")
@json_option
@overwrite_option
@resume_option
@click.pass_context
def change(
    ctx: click.Context,
    first: str,
    second: str,
    output: Path,
    mask: Path | None,
    threshold: str,
    training: Path | None,
    labels: Path | None,
    label_column: str | None,
    class_table: str | None,
    k: int,
    transitions: Path | None,
    report: Path | None,
    as_json: bool,
    overwrite: bool,
    resume: bool,
) -> None:
    """Map the change between two years of embeddings (FIRST, SECOND on one grid)."""
    from geoembed.errors import LabelError
    from geoembed.jobs.change import ChangeOutputs, ChangeParams, run_change

    thr = _threshold(threshold)
    given = [n for n, v in (("--training", training), ("--labels", labels)) if v is not None]
    if (transitions is not None) != bool(given) or len(given) > 1:
        raise LabelError(
            "--transitions needs exactly one of --training TABLE or --labels FILE (and the "
            "other way round)."
        )
    if given and not label_column:
        raise LabelError(f"{given[0]} needs --label-column.")
    params = ChangeParams(
        threshold=thr,
        training=training,
        labels=labels,
        label_column=label_column,
        class_table=class_table,
        k=k,
    )
    with job_client(ctx):
        summary = run_change(
            first,
            second,
            ChangeOutputs(output, mask, transitions, report),
            params,
            overwrite=overwrite,
            resume=resume,
            progress=show_progress(ctx, as_json),
        )
    if as_json:
        echo_json(summary)
    elif not ctx.obj.get("quiet"):
        if "threshold" in summary:
            t = summary["threshold"]
            click.echo(f"change threshold {t['threshold']:.4f} ({t['method']})")
        for row in summary.get("top_changes", []):
            ha = f" {row['hectares']:.2f} ha" if "hectares" in row else ""
            click.echo(f"  {row['from']} -> {row['to']}: {row['pixels']} px{ha}")
        for what, path in summary["outputs"].items():
            click.echo(f"wrote {what}: {path}")
