"""``geoembed quicklook MAP -o map.png``: a map as a picture with legend, title and scale bar."""

from __future__ import annotations

import click

__all__ = ["quicklook"]


@click.command("quicklook")
@click.argument("maps", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="PNG to write (its folder must exist).",
)
@click.option("--title", default=None, help="Figure title (default: the file name).")
@click.option(
    "--max-size",
    type=click.IntRange(min=16),
    default=1024,
    show_default=True,
    help="Longest side each map is rendered at (only a decimated version is read).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing PNG that geoembed drew (never another file).",
)
def quicklook(
    maps: tuple[str, ...], output: str, title: str | None, max_size: int, overwrite: bool
) -> None:
    """Draw class maps (or confidences, or fields) as a PNG with legend and scale bar.

    One MAP gives one panel; several give panels side by side (e.g. kNN and KMeans).
    Class names and colours come from the map itself (the COG's class_names tag and
    colour table written by geoembed classify).
    """
    from geoembed.jobs.quicklook import run_quicklook

    out = run_quicklook(maps, output, title=title, max_size=max_size, overwrite=overwrite)
    click.echo(str(out))
