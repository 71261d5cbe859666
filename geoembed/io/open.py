"""``open_embeddings``: one entry point for every source of embedding fields."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed.errors import SchemaError
from geoembed.io._chunks import spatial_chunks
from geoembed.io._finalize import band_dim_of, finalize, find_crs, nodata_of, select_year
from geoembed.schema import _X_ALIASES, _Y_ALIASES, _find_dim

__all__ = ["from_xarray", "open_embeddings"]

log = logging.getLogger(__name__)


def open_embeddings(
    source: Any,
    *,
    chunks: Any = None,
    year: int | None = None,
    quantization: str | None = None,
    bands: int | Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
) -> xr.DataArray:
    """Open an embedding field lazily, as the canonical ``(band, y, x)`` float32 DataArray.

    Nothing is computed: only metadata are read, and every check runs on the client
    before any Dask task exists.

    Parameters
    ----------
    source : path, URL, list of paths, xarray.Dataset or xarray.DataArray
        * a Zarr store (v2 or v3; ``*.zarr`` or a directory with Zarr metadata; ``gs://``,
          ``s3://``, ``https://`` URLs need the ``cloud`` extra), holding either one array
          with a band dimension or one variable per band (Xee exports);
        * a GeoTIFF/COG (or any GDAL raster), or a list of them stacked on bands;
        * ``aef:YEAR:WEST,SOUTH,EAST,NORTH[?source=...&crs=...&resolution=...]``: the
          public AlphaEarth COGs of that area and year, read in place (see
          :func:`geoembed.io.aef_open.open_aef_field`);
        * an xarray object already in memory or opened lazily (e.g. from Xee).
    chunks : None, int, (int, int) or dict, optional
        Spatial chunk size. ``None`` (default) gives chunks made of whole storage blocks
        (tiles, Zarr chunks or shards) of about 64-128 MiB as float32; ``band`` is always
        in one chunk.
    year : int, optional
        Time step to select when the source has a time dimension (Xee / multi-year Zarr).
    quantization : {None, "aef"}, optional
        ``None`` auto-detects AlphaEarth int8 codes (dtype int8 with nodata -128);
        ``"aef"`` forces their decoding (mask -128 in any band -> whole pixel NaN, then
        ``sign(q) * (q / 127.5) ** 2``). int8 data without nodata metadata need it.
    bands : int or sequence of str, optional
        Expected band count or band names in order; a mismatch raises
        :class:`~geoembed.errors.BandMismatchError`.
    band_names : sequence of str, optional
        Names to give the bands instead of the stored ones.

    Returns
    -------
    xarray.DataArray
        Named ``"embedding"``, dims ``("band", "y", "x")``, float32 with NaN nodata, CRS in
        ``spatial_ref``, backed by Dask. ``attrs`` record ``source``, ``source_dtype`` and
        ``quantization``.

    Raises
    ------
    MissingInputError, CorruptInputError, MissingCRSError, QuantizationError,
    BandMismatchError, DimensionError, MissingDependencyError
        Always before any task runs, naming the input and the fix (a Zarr store with
        missing chunks is a ``CorruptInputError`` here, unless it declares itself sparse:
        see :mod:`geoembed.io.zarr`).
    CorruptInputError
        Later, in the Dask task that reads it, for a Zarr chunk that fails to decode or
        does not match the checksum geoembed recorded when writing it; the message names
        the store, the array and the chunk key.

    Examples
    --------
    >>> field = open_embeddings("wisconsin_2024_aef_int8.tif")  # doctest: +SKIP
    >>> field.sizes  # doctest: +SKIP
    Frozen({'band': 64, 'y': 97, 'x': 97})
    """
    kwargs: dict[str, Any] = {
        "chunks": chunks,
        "quantization": quantization,
        "bands": bands,
        "band_names": band_names,
    }
    if isinstance(source, xr.DataArray | xr.Dataset):
        return from_xarray(source, year=year, **kwargs)
    if isinstance(source, list | tuple):
        if len(source) == 1:
            source = source[0]
        else:
            from geoembed.io.geotiff import open_geotiff

            if any(_is_zarr(os.fspath(s)) for s in source):
                raise SchemaError(
                    "open_embeddings() stacks lists of GeoTIFFs only; open Zarr stores one at "
                    "a time (or combine them with xarray and pass the result)."
                )
            return open_geotiff(source, **kwargs)
    if not isinstance(source, str | os.PathLike):
        raise SchemaError(
            f"open_embeddings() cannot open a {type(source).__name__}; pass a path or URL, a "
            "list of GeoTIFFs, or an xarray object (for Earth Engine use "
            "geoembed.io.xee.open_xee)."
        )
    path = os.fspath(source)
    from geoembed.io.aef_open import is_aef_spec

    if is_aef_spec(path):  # aef:YEAR:W,S,E,N: the public AlphaEarth COGs, read in place
        from geoembed.io.aef_open import open_aef_spec

        field = open_aef_spec(path, chunks=chunks)
        if band_names is not None or bands is not None:
            field = from_xarray(field, bands=bands, band_names=band_names, source=path)
        return field
    if _is_zarr(path):
        from geoembed.io.zarr import open_zarr

        return open_zarr(path, year=year, **kwargs)
    from geoembed.io.geotiff import open_geotiff

    return open_geotiff(path, **kwargs)


def _is_zarr(path: str) -> bool:
    from geoembed.io.zarr import is_zarr

    return is_zarr(path)


def from_xarray(
    obj: xr.DataArray | xr.Dataset,
    *,
    year: int | None = None,
    chunks: Any = None,
    quantization: str | None = None,
    bands: int | Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
    source: str | None = None,
) -> xr.DataArray:
    """Make a canonical field from an xarray object (in memory, lazy, or from Xee).

    Dims are renamed/transposed as :func:`geoembed.schema.to_canonical` does, a
    one-variable-per-band Dataset is stacked, ``year`` selects a time step, int8 AEF codes
    are de-quantized, and the CRS is recovered from ``spatial_ref``/``grid_mapping`` or a
    ``crs`` attribute. NumPy-backed inputs are wrapped in Dask with default chunks unless
    ``chunks`` is given; Dask-backed inputs keep their chunks unless ``chunks`` is given.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
    year, chunks, quantization, bands, band_names
        See :func:`open_embeddings`.
    source : str, optional
        How to name the input in messages.

    Returns
    -------
    xarray.DataArray
    """
    what = source or (f"DataArray {obj.name!r}" if isinstance(obj, xr.DataArray) else "the Dataset")
    crs = find_crs(obj, source=what)
    obj = select_year(obj, year, source=what)
    if isinstance(obj, xr.Dataset):
        names = [str(v) for v in obj.data_vars if obj[v].ndim >= 2]
        if not names:
            raise SchemaError(f"{what} has no variables with y and x dimensions.")
        if "embedding" in names:
            names = ["embedding"]
        da = obj[names[0]] if len(names) == 1 else obj[names].to_dataarray("band")
        nodata = nodata_of(obj[names[0]])
    else:
        da = obj
        nodata = nodata_of(obj)
    if da.ndim == 2:
        da = da.expand_dims(band=[str(da.name or "F000")])
    ydim = _find_dim(da.dims, _Y_ALIASES)
    xdim = _find_dim(da.dims, _X_ALIASES)
    if ydim is not None and xdim is not None and da.ndim == 3:
        bdim = band_dim_of(da, source=what)
        if chunks is not None or not isinstance(da.data, dsa.Array):
            cy, cx = spatial_chunks(
                chunks,
                height=da.sizes[ydim],
                width=da.sizes[xdim],
                bands=da.sizes[bdim],
                block=_dask_block(da, ydim, xdim),
                source=what,
            )
            da = da.chunk({bdim: -1, ydim: cy, xdim: cx})
    elif not isinstance(da.data, dsa.Array):
        da = da.chunk()
    return finalize(
        da,
        source=what,
        quantization=quantization,
        nodata=nodata,
        crs=crs,
        bands=bands,
        band_names=band_names,
    )


def _dask_block(da: xr.DataArray, ydim: str, xdim: str) -> tuple[int, int]:
    if da.chunks is None:
        return (1, 1)
    return (int(np.max(da.chunksizes[ydim])), int(np.max(da.chunksizes[xdim])))
