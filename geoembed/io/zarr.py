"""Zarr (v2 and v3) reader: local paths and fsspec URLs, two layouts, CRS recovered.

Layouts:

* one array with a band dimension (what :func:`geoembed.export.write_zarr` writes);
* one 2-D (or time, y, x) variable per band, e.g. ``A00``..``A63`` (what Xee exports).

Integrity: a corrupt input chunk is an error, never data.

* A chunk that fails to decode (truncated, overwritten, or bit-flipped in a store whose
  codecs carry a checksum, as :func:`geoembed.export.write_zarr` writes them) raises
  :class:`~geoembed.errors.CorruptInputError` naming the store, the array and the chunk
  key, in the Dask task that reads it.
* Stores written by geoembed record each chunk's CRC-32 (group attribute
  ``geoembed:chunks``); decoded values that do not match (e.g. chunks swapped between
  positions) raise the same error.
* A missing chunk is an error too, found on the client before any task runs (the
  store's keys are listed once). Zarr reads an absent chunk as the fill value, which
  for an embedding field looks like nodata, and zarr-python 3 (so xarray's ``to_zarr``)
  leaves out chunks that are entirely fill value by default
  (``write_empty_chunks=False``). geoembed's writer stores every chunk; a foreign store
  whose chunks were left out on purpose says so with the group (or array) attribute
  ``geoembed:sparse = true``, and its absent chunks are then read as the fill value.
  (Or open it with xarray and pass the Dataset to ``open_embeddings``.)
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import xarray as xr

from geoembed._cloud import OBJECT_SCHEMES, require_input
from geoembed._zarr_chunks import has_checksum
from geoembed.errors import CorruptInputError, MissingInputError, SchemaError, require
from geoembed.io._chunks import spatial_chunks
from geoembed.io._finalize import band_dim_of, finalize, find_crs, nodata_of, select_year
from geoembed.io._zarr_checked import (
    check_complete,
    check_small_arrays,
    checked_dask_array,
    locate_corruption,
)
from geoembed.schema import _X_ALIASES, _Y_ALIASES, _find_dim

__all__ = ["is_zarr", "open_zarr"]

log = logging.getLogger(__name__)

#: URL scheme -> (module, pip package) needed by fsspec
_FSSPEC_BACKENDS = {
    "gs": ("gcsfs", "gcsfs"),
    "gcs": ("gcsfs", "gcsfs"),
    "s3": ("s3fs", "s3fs"),
    "http": ("aiohttp", "aiohttp"),
    "https": ("aiohttp", "aiohttp"),
}
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata")


def is_zarr(source: str) -> bool:
    """Whether ``source`` looks like a Zarr store (by name, or by its marker files)."""
    stripped = source.rstrip("/")
    if stripped.endswith((".zarr", ".zarr.zip")) or source.startswith("zarr:"):
        return True
    if "://" not in source and os.path.isdir(source):
        return any(os.path.exists(os.path.join(source, m)) for m in _ZARR_MARKERS)
    return False


def _check_reachable(source: str) -> None:
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in _FSSPEC_BACKENDS:
        module, package = _FSSPEC_BACKENDS[scheme]
        require(
            module,
            extra="cloud",
            feature=f"Reading Zarr from {scheme}:// URLs",
            package=package,
        )
        if scheme in OBJECT_SCHEMES and scheme not in ("http", "https"):
            require_input(source, "Zarr store")
    elif not scheme and not os.path.exists(source):
        raise MissingInputError(
            f"{source} does not exist (looked from {os.getcwd()}). Check the path or URL."
        )


def _open(source: str) -> xr.Dataset:
    """Open the store's metadata (arrays stay unread; coordinates are loaded)."""
    try:
        with warnings.catch_warnings():
            # stores without consolidated metadata are fine; say nothing about them
            warnings.filterwarnings("ignore", message=".*consolidated.*", category=RuntimeWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="zarr.*")
            # string band names: readable, but flagged as lacking a Zarr v3 specification
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            return xr.open_dataset(
                source,
                engine="zarr",
                chunks=None,
                decode_coords="all",
                mask_and_scale=False,
                consolidated=None,
            )
    except FileNotFoundError as exc:
        raise MissingInputError(f"{source}: no Zarr store found there ({exc}).") from exc
    except Exception as exc:
        located = locate_corruption(source)  # a coordinate chunk that does not decode
        if located is not None:
            raise located from exc
        if not isinstance(exc, ValueError | KeyError | OSError):
            raise
        raise CorruptInputError(
            f"{source} cannot be opened as a Zarr store ({type(exc).__name__}: {exc}). Check "
            "that the write finished (zarr.json or .zgroup present) and that this is the "
            "store's root."
        ) from exc


def _embedding_vars(ds: xr.Dataset, source: str) -> list[str]:
    vars_2d = [str(v) for v in ds.data_vars if ds[v].ndim >= 2]
    if not vars_2d:
        raise SchemaError(f"{source} has no array with y and x dimensions.")
    if "embedding" in vars_2d:
        return ["embedding"]
    if len(vars_2d) > 1:
        shapes = {v: ds[v].dims for v in vars_2d}
        if len(set(shapes.values())) > 1:
            raise SchemaError(
                f"{source} holds variables with different dimensions "
                f"({dict(list(shapes.items())[:4])}); cannot stack them as bands. Open it with "
                "xarray, keep the embedding variables and pass the Dataset to open_embeddings()."
            )
    # stores list their arrays in no meaningful order (Zarr v3): A2 < A10 by natural sort
    return sorted(vars_2d, key=_natural_key)


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _storage_block(var: xr.DataArray, ydim: str, xdim: str) -> tuple[int, int]:
    enc = var.encoding
    shards = enc.get("shards")
    chunk = shards or enc.get("chunks") or enc.get("preferred_chunks")
    if isinstance(chunk, dict):
        return int(chunk.get(ydim, var.sizes[ydim])), int(chunk.get(xdim, var.sizes[xdim]))
    if chunk:
        dims = list(var.dims)
        return int(chunk[dims.index(ydim)]), int(chunk[dims.index(xdim)])
    return var.sizes[ydim], var.sizes[xdim]


def _checked(
    meta: xr.Dataset, source: str, names: list[str], dask_chunks: dict[str, int]
) -> xr.Dataset:
    """``meta`` with the arrays ``names`` backed by integrity-checked Dask reads."""
    import zarr

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            group = zarr.open_group(source, mode="r")
    except Exception as exc:  # xarray opened it, so this is a damaged or odd store
        raise CorruptInputError(
            f"{source} cannot be opened as a Zarr group ({type(exc).__name__}: {exc})."
        ) from exc
    check_complete(source, group, names)
    check_small_arrays(source, group, names)
    unchecked = [n for n in names if not has_checksum(group[n])]
    if unchecked:
        log.info(
            "%s: array(s) %s have no checksum codec; a damaged chunk that still decodes "
            "cannot be detected (geoembed.export.write_zarr writes checksummed chunks).",
            source,
            unchecked[:4],
        )
    ds = meta.copy()
    for name in names:
        var = meta[name]
        data = checked_dask_array(source, group, name, dask_chunks, tuple(map(str, var.dims)))
        ds[name] = var.copy(data=data)
    return ds


def open_zarr(
    source: str | os.PathLike[str],
    *,
    chunks: Any = None,
    year: int | None = None,
    quantization: str | None = None,
    bands: int | Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
) -> xr.DataArray:
    """Open a Zarr v2/v3 store as a lazy canonical field.

    One-variable-per-band stores are stacked in the natural order of the variable names
    (``A00``..``A63``; ``b2`` before ``b10``), or in the order of ``bands`` when that is a
    list of the same names.

    Parameters
    ----------
    source : path or URL
        Local path, or ``gs://``, ``s3://``, ``https://`` URL (needs gcsfs / s3fs / aiohttp,
        the ``cloud`` extra).
    chunks, year, quantization, bands, band_names
        See :func:`geoembed.io.open_embeddings`.

    Returns
    -------
    xarray.DataArray
    """
    source = os.fspath(source)
    _check_reachable(source)
    meta = _open(source)
    names = _embedding_vars(meta, source)
    if len(names) > 1 and not isinstance(bands, int | None) and set(map(str, bands)) == set(names):
        names = [str(b) for b in bands]
    var = meta[names[0]]
    ydim = _find_dim(var.dims, _Y_ALIASES)
    xdim = _find_dim(var.dims, _X_ALIASES)
    if ydim is None or xdim is None:
        raise SchemaError(
            f"{source}: variable {names[0]!r} has dims {var.dims}; cannot tell y and x apart. "
            "Open it with xarray, rename the dims to y/x and pass it to open_embeddings()."
        )
    if len(names) > 1:
        n_bands = len(names)
        band_dim = None
    else:
        band_dim = band_dim_of(var, source=source) if var.ndim >= 3 else None
        n_bands = var.sizes[band_dim] if band_dim else 1
    cy, cx = spatial_chunks(
        chunks,
        height=var.sizes[ydim],
        width=var.sizes[xdim],
        bands=n_bands,
        block=_storage_block(var, ydim, xdim),
        source=source,
    )
    dask_chunks: dict[str, int] = {ydim: cy, xdim: cx}
    if band_dim:
        dask_chunks[band_dim] = -1
    ds = _checked(meta, source, names, dask_chunks)
    crs = find_crs(ds, source=source)
    ds = select_year(ds[names], year, source=source)  # type: ignore[assignment]
    if len(names) == 1:
        da = ds[names[0]]
        if band_dim is None:
            da = da.expand_dims(band=[names[0]])
    else:
        da = ds.to_dataarray("band")
    nodata = nodata_of(ds[names[0]])
    return finalize(
        da,
        source=source,
        quantization=quantization,
        nodata=nodata,
        crs=crs,
        bands=bands,
        band_names=band_names,
        extra_attrs={"storage_block": list(_storage_block(var, ydim, xdim))},
    )
