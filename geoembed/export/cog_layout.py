"""COG layout check: rio-cogeo's validator, without its false "not tiled" errors.

``rio_cogeo.cogeo.cog_validate`` decides that an image level is striped when its block
width equals its width (rasterio reports a strip as a block of the full width). A tiled
level whose width is exactly one tile, e.g. the 512-pixel-wide first overview of a
2048 x 1024 raster with 512-pixel tiles, is reported as "not tiled" although its IFD
holds ``TileWidth``/``TileLength`` tags (GDAL's own COG validator only flags blocks
wider than 1024 pixels). :func:`cog_check` runs rio-cogeo and drops those two errors only
when every IFD of the file is tiled, read from the TIFF header itself.
"""

from __future__ import annotations

import os
import struct
from typing import IO

__all__ = ["cog_check", "ifds_tiled"]

_TILE_WIDTH = 322
_NOT_TILED = ("but is not tiled", "is not tiled")
#: at most this many IFDs are walked (a COG has one per level and mask)
_MAX_IFDS = 256


def ifds_tiled(f: IO[bytes]) -> list[bool]:
    """Whether each IFD of a TIFF (classic or BigTIFF) carries a ``TileWidth`` tag.

    Parameters
    ----------
    f : binary file object
        Open, seekable; only the header and the IFDs are read.

    Returns
    -------
    list of bool
        One entry per IFD of the main chain (full resolution, overviews, masks).

    Raises
    ------
    ValueError
        When ``f`` is not a TIFF.
    """
    head = f.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        raise ValueError("not a TIFF file")
    (version,) = struct.unpack(order + "H", head[2:4])
    if version == 42:
        offset_fmt, count_fmt, entry_size = "I", "H", 12
        (offset,) = struct.unpack(order + "I", head[4:8])
    elif version == 43:
        offset_fmt, count_fmt, entry_size = "Q", "Q", 20
        (offset,) = struct.unpack(order + "Q", head[8:16])
    else:
        raise ValueError(f"not a TIFF file (version {version})")
    count_size = struct.calcsize(count_fmt)
    offset_size = struct.calcsize(offset_fmt)
    tiled: list[bool] = []
    while offset and len(tiled) < _MAX_IFDS:
        f.seek(offset)
        (n,) = struct.unpack(order + count_fmt, f.read(count_size))
        entries = f.read(n * entry_size)
        tags = {
            struct.unpack(order + "H", entries[i * entry_size : i * entry_size + 2])[0]
            for i in range(n)
        }
        tiled.append(_TILE_WIDTH in tags)
        (offset,) = struct.unpack(order + offset_fmt, f.read(offset_size))
    return tiled


def _open(path: str) -> IO[bytes]:
    from geoembed._cloud import filesystem, is_url

    if is_url(path):
        return filesystem(path).open(path, "rb", block_size=64 * 1024)  # type: ignore[no-any-return]
    return open(path, "rb")


def cog_check(path: str | os.PathLike[str]) -> tuple[bool, list[str], list[str]]:
    """Validate a COG's layout: ``(valid, errors, warnings)`` as rio-cogeo returns them.

    rio-cogeo's "not tiled" errors are dropped when the TIFF's IFDs are all tiled (see
    the module notes); every other error stands.

    Parameters
    ----------
    path : str or path-like
        Local path or ``gs://`` / ``s3://`` / ``https://`` URL (read through GDAL's
        virtual file systems by rio-cogeo, and through fsspec for the IFDs).
    """
    from rio_cogeo.cogeo import cog_validate

    from geoembed._cloud import gdal_path

    name = str(path)
    valid, errors, warnings = cog_validate(gdal_path(name), quiet=True)
    flagged = [e for e in errors if e.endswith(_NOT_TILED)]
    if flagged:
        try:
            with _open(name) as f:
                all_tiled = all(ifds_tiled(f))
        except (OSError, ValueError, struct.error):
            all_tiled = False
        if all_tiled:
            errors = [e for e in errors if e not in flagged]
            valid = not errors
    return bool(valid), list(errors), list(warnings)
