"""``geoembed fetch-aef --bbox W S E N --year Y -o field.zarr``: AEF COGs -> a Zarr field."""

from __future__ import annotations

import click

from geoembed.cli._options import (
    echo_json,
    job_client,
    json_option,
    overwrite_option,
    show_progress,
)
from geoembed.cli._urls import OutputPath

__all__ = ["fetch_aef"]

_EXAMPLES = (
    "\b\nExamples:\n"
    "  geoembed fetch-aef --bbox -88.78 44.29 -88.76 44.30 --year 2024 -o field.zarr\n"
    "  geoembed fetch-aef --bbox -88.78 44.29 -88.76 44.30 --year 2024 \\\n"
    "      --source source-coop --dequantize -o gs://bucket/field.zarr\n"
    "  geoembed fetch-aef --bbox 358410 4905630 359380 4906600 --bbox-crs EPSG:32616 \\\n"
    "      --year 2024 --source ./aef-mirror --resolution 40 -o quicklook.zarr"
)


@click.command("fetch-aef", epilog=_EXAMPLES)
@click.option(
    "--bbox",
    nargs=4,
    type=float,
    required=True,
    metavar="W S E N",
    help="Area: west south east north, in degrees unless --bbox-crs says otherwise.",
)
@click.option("--year", type=click.IntRange(2017, 2100), required=True, help="Annual release year.")
@click.option(
    "--source",
    default="gcs",
    show_default=True,
    help="gcs (Google's bucket), source-coop (Source Cooperative copy) or the path/URL of "
    "a mirror with aef_index.parquet at its root.",
)
@click.option("--bbox-crs", default=None, help="CRS of --bbox (default EPSG:4326).")
@click.option(
    "--crs",
    default=None,
    help="Output CRS (default: the UTM zone of the area, or of its centre when it spans "
    "several zones; other zones are resampled nearest-neighbour).",
)
@click.option(
    "--resolution",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Pixel size in metres; coarser than 10 reads the COGs' overviews (quick looks).",
)
@click.option(
    "--dequantize",
    is_flag=True,
    help="Store float32 values instead of the int8 codes (4x larger).",
)
@click.option(
    "-o",
    "--output",
    type=OutputPath(file_okay=False, dir_okay=True),
    required=True,
    help="Zarr store to write (path, gs:// or s3://). An interrupted fetch to the same "
    "path resumes.",
)
@overwrite_option
@json_option
@click.pass_context
def fetch_aef(
    ctx: click.Context,
    bbox: tuple[float, float, float, float],
    year: int,
    source: str,
    bbox_crs: str | None,
    crs: str | None,
    resolution: float | None,
    dequantize: bool,
    output: str,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Copy the AlphaEarth embeddings of an area and year into a Zarr store (int8 codes).

    Only the COG blocks under the area are read (windowed reads, no whole-file
    downloads). "The AlphaEarth Foundations Satellite Embedding dataset is produced by
    Google and Google DeepMind." (CC-BY-4.0)
    """
    from geoembed.io.aef_fetch import fetch_aef as run

    with job_client(ctx):
        summary = run(
            bbox,
            year,
            output,
            source=source,
            crs=crs,
            resolution=resolution,
            bbox_crs=bbox_crs,
            dequantize=dequantize,
            overwrite=overwrite,
            progress=show_progress(ctx, as_json),
        )
    if as_json:
        echo_json(summary)
    elif not ctx.obj.get("quiet"):
        shape = " x ".join(str(n) for n in summary["shape"])
        resumed = " (resumed)" if summary["resumed"] else ""
        click.echo(
            f"wrote {summary['output']}{resumed}: {shape} {summary['dtype']}, {summary['crs']}",
            err=True,
        )
