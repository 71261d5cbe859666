"""TESSERA tiles in geotessera's format, opened lazily as canonical fields.

geotessera stores each 0.1-degree tile as three files:

* ``grid_{lon}_{lat}.npy``: int8 codes, ``(height, width, 128)``;
* ``grid_{lon}_{lat}_scales.npy``: float32 per-pixel scales, ``(height, width)`` (or with
  a trailing axis of 1, or one scale per band ``(height, width, 128)``);
* a landmask GeoTIFF ``grid_{lon}_{lat}.tiff`` on the same grid, which carries the tile's
  native UTM CRS and transform.

The value of band ``b`` at a pixel is ``codes[..., b] * scales[...]``; a pixel whose scale
is 0 or not finite holds no embedding and becomes NaN in every band. The ``.npy`` files
are memory-mapped: each Dask task reads its own rows and columns only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed.errors import CorruptInputError, MissingInputError, SchemaError

__all__ = ["TESSERA_BANDS", "dequantize_tessera_block", "open_tessera", "tessera_band_names"]

#: channels of a TESSERA embedding
TESSERA_BANDS = 128


def tessera_band_names(n: int = TESSERA_BANDS) -> list[str]:
    """Band names of TESSERA fields: ``T000``..``T127``."""
    return [f"T{i:03d}" for i in range(n)]


def dequantize_tessera_block(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """De-quantize one block: ``(h, w, bands)`` int8 and its scales -> ``(bands, h, w)``.

    ``scales`` is ``(h, w)``, ``(h, w, 1)`` or ``(h, w, bands)``; pixels whose scale is 0
    or not finite (in any band) are NaN in every band.
    """
    return np.moveaxis(_dequantize_hwb(codes, scales), -1, 0)


def _dequantize_hwb(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    s = np.asarray(scales, dtype=np.float32)
    if s.ndim == 2:
        s = s[..., None]
    v = np.asarray(codes).astype(np.float32) * s
    bad = ~np.isfinite(s).all(axis=-1) | (s == 0).all(axis=-1)
    v[bad] = np.nan
    return v


def _load(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise MissingInputError(
            f"The TESSERA {what} {str(path)!r} does not exist; geotessera writes it next to "
            "the tile (download the tile again, or pass its path)."
        )
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorruptInputError(
            f"The TESSERA {what} {str(path)!r} is not a readable .npy array ({exc}); "
            "download it again."
        ) from exc


def open_tessera(
    tile: str | os.PathLike[str],
    *,
    landmask: str | os.PathLike[str],
    scales: str | os.PathLike[str] | None = None,
    chunks: Any = None,
) -> xr.DataArray:
    """Open one geotessera tile as a lazy canonical field.

    Parameters
    ----------
    tile : path
        The int8 embedding array ``grid_{lon}_{lat}.npy`` ``(height, width, 128)``.
    landmask : path
        The tile's landmask GeoTIFF (its CRS and transform are the field's).
    scales : path, optional
        The scales array (default ``<tile stem>_scales.npy`` beside ``tile``).
    chunks : optional
        Spatial chunks, as :func:`geoembed.io.open_embeddings` takes them.

    Returns
    -------
    xarray.DataArray
        Canonical ``(band, y, x)`` float32 field, bands ``T000``..``T127``, NaN where the
        scale is 0; ``attrs["quantization"] = "tessera"``.

    Raises
    ------
    MissingInputError, CorruptInputError, SchemaError
        Before any task runs: missing files, arrays of the wrong dtype or shape, a
        landmask on another grid.
    """
    import rasterio

    from geoembed.io._chunks import spatial_chunks
    from geoembed.io.open import from_xarray

    tile_path = Path(tile)
    scales_path = (
        Path(scales) if scales is not None else tile_path.with_name(tile_path.stem + "_scales.npy")
    )
    codes = _load(tile_path, "tile")
    scale = _load(scales_path, "scales array")
    if codes.dtype != np.int8 or codes.ndim != 3:
        raise SchemaError(
            f"{tile_path} holds {codes.dtype} {codes.shape}; a TESSERA tile is int8 "
            "(height, width, bands)."
        )
    height, width, bands = codes.shape
    if (
        scale.ndim not in (2, 3)
        or scale.shape[:2] != (height, width)
        or (scale.ndim == 3 and scale.shape[2] not in (1, bands))
    ):
        raise SchemaError(
            f"{scales_path} has shape {scale.shape}; the scales of {tile_path.name} must be "
            f"({height}, {width}) (or with a last axis of 1 or {bands})."
        )
    landmask_path = Path(landmask)
    if not landmask_path.exists():
        raise MissingInputError(f"The TESSERA landmask {str(landmask_path)!r} does not exist.")
    with rasterio.open(landmask_path) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    if shape != (height, width):
        raise SchemaError(
            f"the landmask {landmask_path.name} is {shape[1]} x {shape[0]} px but the tile "
            f"{tile_path.name} is {width} x {height}; pass the landmask of this tile."
        )
    if crs is None:
        raise SchemaError(f"the landmask {landmask_path} has no CRS; it cannot place the tile.")
    cy, cx = spatial_chunks(
        chunks, height=height, width=width, bands=bands, block=(256, 256), source=str(tile_path)
    )
    q = dsa.from_array(codes, chunks=(cy, cx, bands), name=f"tessera-{tile_path}", lock=False)
    s_chunks = (cy, cx) if scale.ndim == 2 else (cy, cx, scale.shape[2])
    s = dsa.from_array(scale, chunks=s_chunks, name=f"tessera-scales-{scales_path}", lock=False)
    data = dsa.map_blocks(
        _dequantize_hwb,
        q,
        s if scale.ndim == 3 else s[..., None],
        dtype=np.float32,
        chunks=q.chunks,
        meta=np.empty((0, 0, 0), dtype=np.float32),
    ).transpose(2, 0, 1)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={"band": tessera_band_names(bands), "y": ys, "x": xs},
        name="embedding",
    ).rio.write_crs(crs)
    field = from_xarray(da, source=str(tile_path))
    field.attrs.update({"quantization": "tessera", "source_dtype": "int8"})
    return field
