"""``geoembed export-ee``: an Earth Engine embedding image -> a local (or cloud) Zarr field."""

from __future__ import annotations

from typing import Any

import click

from geoembed.cli._options import (
    echo_json,
    job_client,
    json_option,
    overwrite_option,
    show_progress,
)

__all__ = ["export_ee", "utm_crs_for"]


def utm_crs_for(bbox: tuple[float, float, float, float]) -> str:
    """WGS 84 / UTM zone (as ``EPSG:326nn`` / ``EPSG:327nn``) of a lon/lat bbox's centre."""
    from geoembed.io.aef_open import utm_crs_of

    return utm_crs_of(bbox)


def _parse_bbox(_ctx: click.Context, _param: Any, value: str) -> tuple[float, float, float, float]:
    try:
        parts = tuple(float(v) for v in value.replace(",", " ").split())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not four numbers") from exc
    if len(parts) != 4:
        raise click.BadParameter("give four numbers: WEST,SOUTH,EAST,NORTH (degrees)")
    return parts  # type: ignore[return-value]


@click.command("export-ee")
@click.option(
    "--collection",
    default="GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL",
    show_default=True,
    help="Earth Engine ImageCollection (or Image) asset id.",
)
@click.option(
    "--bbox",
    required=True,
    callback=_parse_bbox,
    help="WEST,SOUTH,EAST,NORTH in degrees (EPSG:4326).",
)
@click.option("--year", type=int, required=True, help="Year of the annual image to export.")
@click.option("--crs", default=None, help="Output CRS (default: the UTM zone of the bbox).")
@click.option(
    "--scale", type=float, default=10.0, show_default=True, help="Pixel size (CRS units)."
)
@click.option(
    "--bands",
    default=None,
    help="Comma-separated bands to export (required for collections other than AlphaEarth's).",
)
@click.option("--project", default=None, help="Google Cloud project for Earth Engine.")
@click.option("-o", "--output", required=True, help="Output Zarr store (path or gs:// URL).")
@overwrite_option
@json_option
@click.pass_context
def export_ee(
    ctx: click.Context,
    collection: str,
    bbox: tuple[float, float, float, float],
    year: int,
    crs: str | None,
    scale: float,
    bands: str | None,
    project: str | None,
    output: str,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Export an Earth Engine embedding field over a bbox to Zarr.

    Needs the "ee" extra (pip install "geoembed[ee]": earthengine-api, xee) and Earth
    Engine credentials (Application Default Credentials, Workload Identity or a service
    account; initialised on each Dask worker). The grid is explicit: the bbox is snapped
    outwards to whole pixels of SCALE in CRS, north-up; each chunk is one request, retried
    with backoff on 429 / quota / transient errors.
    """
    from geoembed.io.xee import require_ee
    from geoembed.jobs.export_ee import run_export_ee

    require_ee("geoembed export-ee")  # before a cluster is started for nothing
    with job_client(ctx):
        summary = run_export_ee(
            output,
            bbox=bbox,
            year=year,
            collection=collection,
            crs=crs or utm_crs_for(bbox),
            scale=scale,
            band_names=[b.strip() for b in bands.split(",") if b.strip()] if bands else None,
            project=project,
            overwrite=overwrite,
            progress=show_progress(ctx, as_json),
        )
    if as_json:
        echo_json(summary)
    else:
        click.echo(
            f"wrote {output}: {summary['width']} x {summary['height']} px, "
            f"{summary['bands']} bands, {summary['crs']}, year {year}"
        )
