"""``geoembed quicklook MAP -o map.png``: a map as a picture with legend, title and scale bar."""

from __future__ import annotations

from pathlib import Path

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
@click.option("--overwrite", is_flag=True, help="Replace an existing PNG.")
def quicklook(
    maps: tuple[str, ...], output: str, title: str | None, max_size: int, overwrite: bool
) -> None:
    """Draw class maps (or confidences, or fields) as a PNG with legend and scale bar.

    One MAP gives one panel; several give panels side by side (e.g. kNN and KMeans).
    Class names and colours come from the map itself (the COG's class_names tag and
    colour table written by geoembed classify).
    """
    from geoembed.errors import MissingInputError, OutputError
    from geoembed.viz.panel import map_png, panel_png

    for m in maps:
        if not Path(m).exists():
            raise MissingInputError(f"No map {m!r}: check the path.")
    out = Path(output)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it.")
    if len(maps) == 1:
        map_png(maps[0], out, title=title, max_size=max_size)
    else:
        panel_png([(Path(m).name, m) for m in maps], out, title=title, max_size=max_size)
    click.echo(str(out))
