"""``geoembed info SOURCE``: what an embedding field is, read lazily from a small sample."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from geoembed.cli._options import echo_json, job_client, json_option

__all__ = ["info"]


def _client(ctx: click.Context) -> Any:
    """Return the job's client when --scheduler was given, else Dask's threads.

    ``info`` reads a few chunks at most, so starting worker processes would cost more than
    the work itself.
    """
    parent = ctx.find_root()
    source = parent.get_parameter_source("scheduler")
    if source is not None and source != click.core.ParameterSource.DEFAULT:
        return job_client(ctx)
    import dask

    return contextlib.nullcontext(dask.config.set(scheduler="threads"))


@click.command("info")
@click.argument("source", nargs=-1, required=True)
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=65_536,
    show_default=True,
    help="Pixels to read for the nodata fraction and vector lengths (0: metadata only).",
)
@click.option("--year", type=int, default=None, help="Time step to describe (multi-year sources).")
@click.option(
    "--quantization",
    type=click.Choice(["aef"]),
    default=None,
    help="Decode int8 codes as AlphaEarth (needed when the file declares no nodata).",
)
@json_option
@click.pass_context
def info(
    ctx: click.Context,
    source: tuple[str, ...],
    sample: int,
    year: int | None,
    quantization: str | None,
    as_json: bool,
) -> None:
    """Describe an embedding field: shape, bands, dtype, CRS, resolution, chunks, bounds.

    SOURCE is a Zarr store, a GeoTIFF/COG, or several GeoTIFFs stacked on bands. The
    nodata fraction and the vector-length range are estimated from a sample of pixels.
    """
    from geoembed.io import describe, format_description, open_embeddings

    src: Any = source[0] if len(source) == 1 else list(source)
    field = open_embeddings(src, year=year, quantization=quantization)
    with _client(ctx):
        summary = describe(field, sample=sample)
    if as_json:
        echo_json(summary)
    else:
        click.echo(format_description(summary))
