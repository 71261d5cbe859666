"""``geoembed infer SOURCE --model m.onnx -o classes.tif``: run an ONNX CNN over a field."""

from __future__ import annotations

import time
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
    from geoembed.export import write_cog, write_zarr
    from geoembed.infer import predict
    from geoembed.io import open_embeddings
    from geoembed.runtime import compute

    if not any((out, confidence, probabilities, features)):
        raise click.UsageError("give at least one output: -o, --probabilities or --features.")
    from geoembed.export.outputs import OutputSet

    # every output checked before anything runs; built aside, made visible together
    outputs = OutputSet(overwrite=overwrite, inputs=[*source, model, model_config], resume=resume)
    outputs.add("class map", out)
    outputs.add("confidence raster", confidence)
    outputs.add("probability raster", probabilities)
    outputs.add("feature map", features, directory=True)
    src: Any = source[0] if len(source) == 1 else list(source)
    field = open_embeddings(src, chunks=chunks)
    check_tile_memory(tile, overlap, len(bands) or int(field.sizes["band"]), batch_size)
    wanted = []
    if out or confidence:
        wanted.append("classes")
    if probabilities:
        wanted.append("probabilities")
    if features:
        wanted.append("features")
    start = time.perf_counter()
    with job_client(ctx):
        res = predict(
            field,
            model,
            model_config=model_config,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            output=wanted,
            bands=list(bands) or None,
            blend=blend,
            step=step,
            providers=providers,
            probabilities_dtype="uint8" if uint8_probabilities else "float32",
        )
        with outputs:
            jobs = []
            if out:
                stage = outputs.stage("class map")
                jobs.append(write_cog(res["classes"], stage, compute=False, resume=resume))
            if confidence:
                stage = outputs.stage("confidence raster")
                jobs.append(write_cog(res["confidence"], stage, compute=False, resume=resume))
            if probabilities:
                scale = 1 / 254 if uint8_probabilities else None
                jobs.append(
                    write_cog(
                        res["probabilities"],
                        outputs.stage("probability raster"),
                        compute=False,
                        scale=scale,
                        resume=resume,
                    )
                )
            if features:
                jobs.append(
                    write_zarr(
                        res["features"].rename("embedding"),  # a canonical embedding field
                        outputs.stage("feature map"),
                        compute=False,
                        resume=resume,
                    )
                )
            compute(*jobs, progress=show_progress(ctx, as_json), label="infer")
            outputs.commit()
    elapsed = time.perf_counter() - start
    written = {
        k: v
        for k, v in {
            "classes": out,
            "confidence": confidence,
            "probabilities": probabilities,
            "features": features,
        }.items()
        if v
    }
    first = next(iter(res.data_vars.values()))
    summary = {
        "source": str(src),
        "model": model,
        "model_sha256": first.attrs.get("model_sha256"),
        "tiling": {k: first.attrs.get(k) for k in ("tile", "overlap", "output_stride", "blend")},
        "outputs": written,
        "shape": {"y": int(res.sizes["y"]), "x": int(res.sizes["x"])},
        "seconds": round(elapsed, 3),
    }
    if as_json:
        echo_json(summary)
    else:
        for kind, path in written.items():
            click.echo(f"wrote {kind}: {path}")
        click.echo(f"{res.sizes['y']} x {res.sizes['x']} pixels in {elapsed:.1f} s")
