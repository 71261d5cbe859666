"""Quicklook PNGs of embedding fields and maps (NumPy + Pillow only)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geoembed.errors import OutputError
from geoembed.viz._render import render

__all__ = ["quicklook_png"]


def quicklook_png(
    field_or_map: Any,
    path: str | os.PathLike[str],
    *,
    method: str = "pca",
    bands: Sequence[Any] | None = None,
    max_size: int = 1024,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    colors: Sequence[Any] | Mapping[int, Any] | None = None,
) -> Path:
    """Write a small RGBA PNG preview of a field or a map.

    Only a decimated version is read (every ``s``-th pixel, with ``s`` chosen so that the
    longest side is at most ``max_size``), so memory stays bounded for any scene size.
    Nodata is transparent. The image is north-up, also for bottom-up inputs.

    Parameters
    ----------
    field_or_map : xarray.DataArray
        A ``(band, y, x)`` embedding field, a ``(y, x)`` integer class map, or a ``(y, x)``
        float map (shown in grey levels).
    path : str or path-like
        Output PNG path (its folder must exist).
    method : {"pca", "bands"}
        For fields: the first three principal components (fitted on a sample of valid
        pixels) or three bands, each stretched to its 2-98 % range.
    bands : sequence of str or int, optional
        The three bands for ``method="bands"`` (default ``A01, A16, A09`` for AlphaEarth).
    max_size : int
        Longest side of the PNG in pixels.
    class_names, colors : optional
        Class names and colours by class id (lists in id order, or dicts) for class maps;
        colours as ``"#rrggbb"`` or ``(r, g, b)``. Unlisted classes get a default palette.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    OutputError
        When the folder of ``path`` does not exist or is not writable.
    """
    from PIL import Image

    out = Path(path)
    if not out.parent.is_dir():
        raise OutputError(
            f"Cannot write the quicklook {out}: folder {out.parent} does not exist; create it "
            "first."
        )
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"Cannot write the quicklook {out}: folder {out.parent} is read-only.")
    img = render(
        field_or_map,
        method=method,
        bands=bands,
        max_size=max_size,
        class_names=class_names,
        colors=colors,
    )
    tmp = out.with_name(f".{out.name}.partial")
    try:
        Image.fromarray(img.rgba, mode="RGBA").save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
