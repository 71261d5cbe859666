"""Spatial chunk sizes: aligned to storage blocks, about 64-128 MiB of float32 per chunk."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from geoembed.errors import ChunkingError

__all__ = ["TARGET_CHUNK_BYTES", "default_chunks", "spatial_chunks"]

log = logging.getLogger(__name__)

#: upper bound of a default chunk (float32, all bands): 96 MiB, i.e. 512 x 768 x 64
TARGET_CHUNK_BYTES = 96 * 2**20


def default_chunks(
    height: int,
    width: int,
    bands: int,
    block: tuple[int, int],
    *,
    itemsize: int = 4,
    target_bytes: int = TARGET_CHUNK_BYTES,
) -> tuple[int, int]:
    """Largest near-square ``(y, x)`` chunk made of whole storage blocks within the budget.

    Parameters
    ----------
    height, width : int
        Raster size in pixels.
    bands : int
        Number of bands (all in one chunk).
    block : (int, int)
        Storage block (tile, Zarr chunk or shard) size ``(y, x)``.
    itemsize : int, default 4
        Bytes per value in memory (float32 after decoding).
    target_bytes : int
        Budget per chunk; at least one storage block is always used.

    Returns
    -------
    (int, int)
        Chunk size ``(y, x)``, clipped to the raster.
    """
    by, bx = max(1, int(block[0])), max(1, int(block[1]))
    pixels = max(1, target_bytes // max(1, bands * itemsize))
    side = int(math.sqrt(pixels))
    cy = min(height, max(by, side // by * by))
    cx = min(width, max(bx, (pixels // max(cy, 1)) // bx * bx))
    if cx >= width and cy < height:
        # full rows: spend the rest of the budget on more rows
        cy = min(height, max(cy, (pixels // max(width, 1)) // by * by))
    return max(1, cy), max(1, cx)


def spatial_chunks(
    chunks: Any,
    *,
    height: int,
    width: int,
    bands: int,
    block: tuple[int, int],
    source: str,
) -> tuple[int, int]:
    """Turn the user's ``chunks=`` into a ``(y, x)`` chunk size.

    Parameters
    ----------
    chunks : None, "auto", int, (int, int) or dict
        ``None``/``"auto"``: :func:`default_chunks`; an int: square chunks; a pair:
        ``(y, x)``; a dict with ``"y"``/``"x"`` keys (``-1`` = whole axis; a ``"band"`` key
        must be ``-1`` or the band count, as bands always stay in one chunk).
    height, width, bands : int
        Raster size.
    block : (int, int)
        Storage block size, for alignment.
    source : str
        How to name the input in messages.

    Returns
    -------
    (int, int)
    """
    if chunks is None or chunks == "auto" or chunks is True:
        return default_chunks(height, width, bands, block)
    if isinstance(chunks, Mapping):
        band = chunks.get("band", -1)
        if band not in (-1, None, bands):
            raise ChunkingError(
                f"chunks={dict(chunks)} for {source} splits 'band'; every pixel's vector must be "
                "in one chunk: leave 'band' out of chunks= (or use -1)."
            )
        dy, dx = default_chunks(height, width, bands, block)
        cy, cx = chunks.get("y", dy), chunks.get("x", dx)
    elif isinstance(chunks, int):
        cy = cx = chunks
    elif isinstance(chunks, tuple | list) and len(chunks) == 2:
        cy, cx = chunks
    else:
        raise ChunkingError(
            f"chunks={chunks!r} for {source} is not understood; use an int, (y, x), "
            "{'y': ..., 'x': ...} or None for storage-aligned chunks of about 64-128 MiB."
        )
    cy = height if cy in (-1, None) else int(cy)
    cx = width if cx in (-1, None) else int(cx)
    if cy <= 0 or cx <= 0:
        raise ChunkingError(f"chunks={chunks!r} for {source}: sizes must be positive (or -1).")
    cy, cx = min(cy, height), min(cx, width)
    by, bx = block
    if (cy % by and cy != height) or (cx % bx and cx != width):
        log.warning(
            "chunks (%d, %d) for %s are not multiples of its storage blocks (%d, %d); "
            "each task will read parts of several blocks (slower). Leave chunks=None for "
            "aligned chunks.",
            cy,
            cx,
            source,
            by,
            bx,
        )
    return cy, cx
