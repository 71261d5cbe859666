"""Apply a per-pixel function over an embedding field, block by block.

Shared by kNN, KMeans and scikit-learn estimators: each block of the field is reshaped
once to ``(pixels, band)``, rows holding NaN (nodata) are removed, the function sees
only valid vectors, and its results are scattered back with ``fill`` at nodata pixels.

Functions whose per-row result depends on the row's position in the batch (anything
built on a float32 GEMM that geoembed does not control, e.g. a scikit-learn MLP on an
AVX2 BLAS kernel) are applied with ``tile=(h, w)`` instead: every call then receives
exactly ``h * w`` rows, the pixels of one ``h x w`` tile of a grid anchored at the
field's origin, each at the position its global row and column give it (nodata and
pixels outside the block are zero filler). A pixel's result then depends on nothing
but its vector and its position on the global grid, whatever the chunking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed._aef_codes import AEF_NODATA, aef_codes_of, decode_codes
from geoembed.schema import check_embedding, map_like

__all__ = ["map_pixels", "valid_pixel_mask"]

PixelFunc = Callable[..., Any]  # (n, n_out) array, or (values, valid) when band-major


def valid_pixel_mask(block: np.ndarray) -> np.ndarray:
    """Boolean ``(y, x)`` mask of pixels whose vector has no NaN, for a ``(band, y, x)`` block."""
    return ~np.isnan(block).any(axis=0)


def _vectors(rows: np.ndarray, codes: bool) -> np.ndarray:
    """``rows`` as a C-contiguous float32 ``(n, band)`` array; int8 codes are decoded."""
    if codes:
        return decode_codes(rows, out=np.empty(rows.shape, np.float32))
    return np.ascontiguousarray(rows, dtype=np.float32)


def _apply_block(
    block: np.ndarray,
    *args: Any,
    pixel_func: PixelFunc,
    n_out: int,
    fill: float,
    out_dtype: np.dtype,
) -> np.ndarray:
    nb, ny, nx = block.shape
    flat = block.reshape(nb, ny * nx)
    codes = flat.dtype == np.int8  # AEF codes (map_pixels(aef_codes=True)): decoded here
    valid = ~(flat == AEF_NODATA).any(axis=0) if codes else ~np.isnan(flat).any(axis=0)
    out = np.full((n_out, ny * nx), fill, dtype=out_dtype)
    if valid.all():  # no nodata: one transposing copy instead of a mask + copy
        res = np.asarray(pixel_func(_vectors(flat.T, codes), *args))
        out[:] = (res[:, None] if res.ndim == 1 else res).T
    elif valid.any():
        vectors = _vectors(flat[:, valid].T, codes)
        res = np.asarray(pixel_func(vectors, *args))
        if res.ndim == 1:
            res = res[:, None]
        out[:, valid] = res.T.astype(out_dtype, copy=False)
    return out.reshape(n_out, ny, nx)


def _apply_block_bands(
    block: np.ndarray,
    *args: Any,
    pixel_func: PixelFunc,
    n_out: int,
    fill: float,
    out_dtype: np.dtype,
) -> np.ndarray:
    nb, ny, nx = block.shape
    res, valid = pixel_func(block.reshape(nb, ny * nx), *args)
    out = np.asarray(res).astype(out_dtype, copy=False)
    if not valid.all():
        out[:, ~valid] = fill
    return out.reshape(n_out, ny, nx)


def _apply_block_tiled(
    block: np.ndarray,
    *args: Any,
    pixel_func: PixelFunc,
    n_out: int,
    fill: float,
    out_dtype: np.dtype,
    tile: tuple[int, int],
    block_info: Any = None,
) -> np.ndarray:
    nb, ny, nx = block.shape
    (gy0, _), (gx0, _) = block_info[0]["array-location"][1:]
    th, tw = tile
    out = np.full((n_out, ny, nx), fill, dtype=out_dtype)
    codes = block.dtype == np.int8  # AEF codes (map_pixels(aef_codes=True)): decoded here
    valid = ~(block == AEF_NODATA).any(axis=0) if codes else ~np.isnan(block).any(axis=0)
    if not valid.any():
        return out
    batch = np.zeros((th, tw, nb), np.float32)
    for ty in range(gy0 // th * th, gy0 + ny, th):
        y0, y1 = max(ty, gy0), min(ty + th, gy0 + ny)
        for tx in range(gx0 // tw * tw, gx0 + nx, tw):
            x0, x1 = max(tx, gx0), min(tx + tw, gx0 + nx)
            ly, lx = slice(y0 - gy0, y1 - gy0), slice(x0 - gx0, x1 - gx0)
            v = valid[ly, lx]
            if not v.any():
                continue
            batch[:] = 0.0
            sub = batch[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
            if codes:  # decoded straight into the tile batch (cache-sized)
                decode_codes(np.moveaxis(block[:, ly, lx], 0, -1), out=sub)
            else:
                sub[...] = np.moveaxis(block[:, ly, lx], 0, -1)
            sub[~v] = 0.0
            res = np.asarray(pixel_func(batch.reshape(th * tw, nb), *args))
            res = res.reshape(th, tw, -1)[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
            dest = out[:, ly, lx]
            dest[:, v] = res[v].T.astype(out_dtype, copy=False)
    return out


def map_pixels(
    field: xr.DataArray,
    func: PixelFunc,
    *,
    n_out: int,
    args: Sequence[Any] = (),
    fill: float = np.nan,
    dtype: Any = np.float32,
    out_dim: str = "output",
    out_coords: Sequence[Any] | None = None,
    name: str = "output",
    tile: tuple[int, int] | None = None,
    band_major: bool = False,
    aef_codes: bool = False,
) -> xr.DataArray:
    """Apply ``func`` to the valid pixel vectors of every block, lazily.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field ``(band, y, x)``.
    func : callable
        ``func(vectors, *args) -> (n,)`` or ``(n, n_out)`` array, where ``vectors`` is a
        C-contiguous float32 ``(n, band)`` array of the block's valid pixels. It must be
        deterministic and must not depend on the other pixels of the block.
    n_out : int
        Number of values per pixel that ``func`` returns.
    args : sequence
        Extra arguments. Pass large ones (training matrices, models) as
        ``dask.delayed(obj)`` so that they are sent to each worker once rather than
        embedded in every task.
    fill : float
        Output value at nodata pixels.
    dtype : dtype
        Output dtype.
    out_dim, out_coords, name
        Name and coordinates of the leading output dimension, and the output's name.
    tile : (int, int), optional
        Call ``func`` on fixed ``h x w`` tiles of a global grid (``h * w`` rows per call,
        zero filler at nodata and outside the block) instead of on the block's valid
        pixels: for functions whose rounding depends on a row's batch position.
    band_major : bool, default False
        Call ``func(block, *args) -> (values, valid)`` once per block on the whole
        block as stored, ``(band, pixels)`` in the field's dtype (nodata included, no
        copy); it returns ``(n_out, pixels)`` values and the ``(pixels,)`` mask of
        valid pixels (``fill`` is written at the others). For kernels that read the
        bands in place and detect nodata themselves.
    aef_codes : bool, default False
        If the field is the lazy de-quantization of AEF int8 codes
        (:func:`geoembed._aef_codes.aef_codes_of`), the tasks read the int8 codes and
        decode them themselves, so the float32 field is never materialised as a Dask
        array: with ``band_major`` ``func`` receives the codes and decodes them; otherwise
        each block's valid pixels (or, with ``tile``, each tile) are decoded just before
        ``func`` is called, to the same float32 values as the field's.

    Returns
    -------
    xarray.DataArray
        Lazy ``(out_dim, y, x)`` array on the field's grid.
    """
    check_embedding(field, require_crs=False)
    data = field.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=(-1, 512, 512))
    dtype = np.dtype(dtype)
    extra: dict[str, Any] = {} if tile is None else {"tile": tuple(tile)}
    if tile is not None and band_major:
        raise ValueError("map_pixels: tile and band_major cannot be combined")
    kernel = _apply_block_bands if band_major else _apply_block
    if aef_codes:
        codes = aef_codes_of(data)
        data = data if codes is None else codes
    out = dsa.map_blocks(
        kernel if tile is None else _apply_block_tiled,
        data,
        *args,
        pixel_func=func,
        n_out=n_out,
        fill=fill,
        out_dtype=dtype,
        **extra,
        dtype=dtype,
        chunks=((n_out,), *data.chunks[1:]),
        meta=np.empty((0, 0, 0), dtype=dtype),
        token=f"geoembed-{name}",  # prefix; the key hashes the function, field and args
    )
    coords = list(out_coords) if out_coords is not None else list(range(n_out))
    return map_like(field, out, name=name, leading=(out_dim, coords))
