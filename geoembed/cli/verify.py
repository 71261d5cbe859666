"""``geoembed verify OUTPUT``: completeness and validity of a finished output."""

from __future__ import annotations

import sys

import click

from geoembed.cli._options import echo_json, json_option


@click.command()
@click.argument("output")
@click.option(
    "--full",
    is_flag=True,
    help="Decode all the data (slower): every block and overview level of a COG, every "
    "chunk of a Zarr store checked against its checksums. Finds corrupt, truncated and "
    "swapped chunks and tiles; without it only metadata and the list of chunks are read.",
)
@click.option(
    "--stac",
    is_flag=True,
    help="Require the STAC Item beside OUTPUT (OUTPUT.stac.json). An Item that is there is "
    "always checked against the file; without --stac a missing one is only reported.",
)
@json_option
def verify(output: str, full: bool, stac: bool, as_json: bool) -> None:
    """Check that OUTPUT (a COG or a Zarr store) is complete and valid.

    OUTPUT is a local path or a gs://, s3:// or https:// URL (read in place; checking a
    STAC Item at a URL copies the output it describes to a temporary directory).

    OUTPUT may also be a STAC Item written beside an output (NAME.stac.json): it is then
    validated (offline) and checked against the output it describes (size, checksum,
    grid, CRS, data type, classes). Or a directory of outputs: it is then checked for
    temporaries left by killed geoembed runs (the next run writing there removes them).
    Exits with status 1 when something is wrong, printing one line per problem.
    """
    from geoembed.errors import OutputError
    from geoembed.export import verify as run_verify

    try:
        report = run_verify(output, full=full, stac=stac)
    except OutputError as exc:
        raise click.BadParameter(str(exc), param_hint="OUTPUT") from exc
    if as_json:
        echo_json(report)
    else:
        status = "valid" if report["valid"] else "INVALID"
        click.echo(f"{output}: {status} {report['format']}")
        if report["format"] == "STAC Item":
            click.echo(f"  assets: {', '.join(report.get('assets', {}).values()) or 'none'}")
            if report.get("extensions_unavailable"):
                click.echo(
                    "  extension schemas not available offline (fields checked against the "
                    f"file only): {len(report['extensions_unavailable'])}"
                )
        elif report["format"] == "directory":
            click.echo(f"  geoembed outputs: {', '.join(report['geoembed_outputs']) or 'none'}")
            click.echo(f"  stale temporaries: {len(report['stale_temporaries'])}")
        elif report["format"] == "GeoTIFF":
            click.echo(
                f"  COG layout: {'yes' if report.get('is_cog') else 'no'}; "
                f"{report.get('count')} band(s) {report.get('dtype')} "
                f"{report.get('height')} x {report.get('width')}; CRS {report.get('crs')}; "
                f"nodata {report.get('nodata')}; overviews {report.get('overviews')}"
            )
            if report.get("class_names"):
                click.echo(f"  classes: {report['class_names']}")
        else:
            for name, info in report.get("arrays", {}).items():
                click.echo(
                    f"  {name}: {info['dtype']} {tuple(info['shape'])}, {info['n_chunks']} chunks"
                )
            line = f"  CRS {report.get('crs')}; missing chunks: {report['n_missing_chunks']}"
            if "n_corrupt_chunks" in report:
                line += f"; corrupt chunks: {report['n_corrupt_chunks']}"
            click.echo(line)
        if report["format"] in ("GeoTIFF", "Zarr"):
            item = report.get("stac_item")
            shown = "none" if item is None else ("valid" if item["valid"] else "INVALID")
            click.echo(f"  STAC Item: {shown}")
        for problem in report["problems"]:
            click.echo(f"  problem: {problem}", err=True)
    if not report["valid"]:
        sys.exit(1)
