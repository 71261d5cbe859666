"""The quicklook job: class maps (or confidences, or fields) drawn as one PNG.

The PNG goes through the output set like every other output: its path is checked before
anything is drawn, ``overwrite`` replaces only a figure geoembed drew (the PNG's
``Software`` text), and it appears complete, with its STAC Item, or not at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from geoembed.errors import MissingInputError
from geoembed.jobs._outputs import plan_outputs

__all__ = ["run_quicklook"]


def run_quicklook(
    maps: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    title: str | None = None,
    max_size: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Draw ``maps`` as a PNG with legends, titles and a scale bar.

    Parameters
    ----------
    maps : sequence of path
        COGs written by geoembed (class maps with their names and colours, confidences)
        or any single-band raster; one gives one panel, several are drawn side by side.
    output : path
        The PNG to write; its folder must exist.
    title : str, optional
        Figure title (default: the file name of a single map).
    max_size : int
        Longest side each map is rendered at (only a decimated version is read).
    overwrite : bool
        Replace an existing PNG that geoembed drew (never another file).

    Returns
    -------
    pathlib.Path
        The PNG.

    Raises
    ------
    MissingInputError
        When a map does not exist (before anything is drawn).
    OutputError
        When ``output`` exists and is not replaceable (see ``overwrite``).
    """
    from geoembed.viz.panel import map_png, panel_png

    for m in maps:
        if not Path(m).exists():
            raise MissingInputError(f"No map {str(m)!r}: check the path.")
    out = Path(output)
    outputs = plan_outputs({"quicklook": out}, overwrite=overwrite, inputs=list(maps))
    with outputs:
        stage = Path(outputs.stage("quicklook"))
        if len(maps) == 1:
            map_png(maps[0], stage, title=title, max_size=max_size)
        else:
            panel_png([(Path(m).name, m) for m in maps], stage, title=title, max_size=max_size)
        outputs.commit()
    return out
