"""``geoembed infer SOURCE --model m.onnx -o classes.tif``: run an ONNX CNN over a field."""

from __future__ import annotations

from typing import Any

import click

from geoembed.cli._options import (
    check_tile_memory,
    echo_json,
    job_client,
    json_option,
    overwrite_option,
    resume_option,
    show_progress,
)

__all__ = ["infer"]


@click.command("infer")
@click.argument("source", nargs=-1, required=True)
@click.option("--model", "model", required=True, help="ONNX model file.")
@click.option(
    "--model-config",
    default=None,
    help="Sidecar JSON (bands, mean/std, classes...; default: MODEL with .json if present).",
)
@click.option("--tile", type=click.IntRange(min=1), default=None, help="Tile size [256].")
@click.option(
    "--overlap", type=click.IntRange(min=0), default=None, help="Halo per tile side [32]."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--step",
    type=click.IntRange(min=1),
    default=None,
    help="Tile spacing for --blend linear/cosine [tile - 2 x overlap].",
)
@click.option(
    "--chunks", type=click.IntRange(min=1), default=None, help="Spatial chunk (block) size."
)
@click.option(
    "--blend",
    type=click.Choice(["none", "linear", "cosine"]),
    default="none",
    show_default=True,
    help="Combine overlapping tiles (for models that are not translation-exact).",
)
@click.option("--band", "bands", multiple=True, help="Field band to feed, in model order.")
@click.option(
    "--providers",
    default=None,
    help="ONNX Runtime execution providers, comma-separated, in order of preference: "
    "cpu (default), cuda, tensorrt ... (unknown names are an error).",
)
@click.option("-o", "--output", "out", default=None, help="Class map COG (classes.tif).")
@click.option("--confidence", default=None, help="Confidence COG (float32).")
@click.option("--probabilities", default=None, help="Class probabilities COG (class, y, x).")
@click.option(
    "--uint8-probabilities",
    is_flag=True,
    help="Store probabilities as uint8 0..254 (scale 1/254, nodata 255).",
)
@click.option("--features", default=None, help="Feature map Zarr (an embedding field).")
@json_option
@overwrite_option
@resume_option
@click.pass_context
def infer(
    ctx: click.Context,
    source: tuple[str, ...],
    model: str,
    model_config: str | None,
    tile: int | None,
    overlap: int | None,
    batch_size: int,
    step: int | None,
    chunks: int | None,
    blend: str,
    bands: tuple[str, ...],
    providers: str | None,
    out: str | None,
    confidence: str | None,
    probabilities: str | None,
    uint8_probabilities: bool,
    features: str | None,
    as_json: bool,
    overwrite: bool,
    resume: bool,
) -> None:
    """Run a CNN (ONNX) over SOURCE with overlapping tiles; write classes/probabilities/features.

    The model is checked against the field before anything runs. Outputs are written
    atomically; all of them come from one model run per block.
    """
    from geoembed.jobs.infer import InferOutputs, InferParams, run_infer

    if not any((out, confidence, probabilities, features)):
        raise click.UsageError("give at least one output: -o, --probabilities or --features.")
    params = InferParams(
        model,
        model_config=model_config,
        tile=tile,
        overlap=overlap,
        step=step,
        blend=blend,
        batch_size=batch_size,
        bands=list(bands) or None,
        providers=providers,
        chunks=chunks,
        uint8_probabilities=uint8_probabilities,
    )

    def fits_in_memory(field: Any) -> None:
        check_tile_memory(tile, overlap, len(bands) or int(field.sizes["band"]), batch_size)

    with job_client(ctx):
        summary = run_infer(
            list(source),
            InferOutputs(out, confidence, probabilities, features),
            params,
            overwrite=overwrite,
            resume=resume,
            progress=show_progress(ctx, as_json),
            check_field=fits_in_memory,
        )
    if as_json:
        echo_json(summary)
    else:
        for kind, path in summary["outputs"].items():
            click.echo(f"wrote {kind}: {path}")
        shape = summary["shape"]
        click.echo(f"{shape['y']} x {shape['x']} pixels in {summary['seconds']:.1f} s")
