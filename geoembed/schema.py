"""The embedding-field data model.

An *embedding field* is an :class:`xarray.DataArray` named ``"embedding"`` with

* dims exactly ``("band", "y", "x")``;
* a string ``band`` coordinate (``A00``..``A63`` for AlphaEarth, ``F000``.. for generic
  feature maps);
* float32 values, NaN marking nodata;
* the CRS in rioxarray's ``spatial_ref`` coordinate (``da.rio.crs``);
* ``band`` in a single Dask chunk.

Nothing in this module reads pixel data: every check uses metadata only.

The outputs' data model (class maps, confidences, probabilities ``(class, y, x)``,
clusters, distances, features) lives in :mod:`geoembed.output_schema` and is re-exported
here.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from geoembed.errors import (
    BandMismatchError,
    ChunkingError,
    DimensionError,
    DTypeError,
    MissingCRSError,
    SchemaError,
)
from geoembed.grid import Grid as Grid  # the grid of a field (see geoembed.grid)
from geoembed.output_schema import *  # noqa: F403  (the output schema, re-exported)
from geoembed.output_schema import __all__ as _output_all

__all__ = [
    "DIMS",
    "NAME",
    "aef_band_names",
    "check_embedding",
    "feature_band_names",
    "resolution",
    "to_canonical",
    *_output_all,
]

log = logging.getLogger(__name__)

NAME = "embedding"
DIMS: tuple[str, str, str] = ("band", "y", "x")

_Y_ALIASES = ("y", "lat", "latitude", "northing", "row")
_X_ALIASES = ("x", "lon", "longitude", "easting", "col")
_BAND_ALIASES = ("band", "bands", "channel", "variable", "feature")


def aef_band_names(n: int = 64) -> list[str]:
    """Band names of AlphaEarth Satellite Embedding V1: ``A00``..``A63``."""
    return [f"A{i:02d}" for i in range(n)]


def feature_band_names(n: int) -> list[str]:
    """Band names of a generic feature map: ``F000``, ``F001``, ..."""
    return [f"F{i:03d}" for i in range(n)]


def _describe(da: xr.DataArray, source: str | None) -> str:
    name = source or (f"DataArray {da.name!r}" if da.name is not None else "the embedding field")
    return name


def check_embedding(
    da: Any,
    *,
    bands: int | Sequence[str] | None = None,
    source: str | None = None,
    require_crs: bool = True,
) -> None:
    """Check that ``da`` is a canonical embedding field, without reading pixels.

    Parameters
    ----------
    da : xarray.DataArray
        The field to check.
    bands : int or sequence of str, optional
        Expected band count, or expected band names in order.
    source : str, optional
        How to name the input in error messages (e.g. its path).
    require_crs : bool, default True
        Raise :class:`MissingCRSError` when the field has no CRS.

    Raises
    ------
    DimensionError, BandMismatchError, DTypeError, ChunkingError, MissingCRSError
        With a message naming the input and the fix.
    """
    if not isinstance(da, xr.DataArray):
        raise SchemaError(
            f"{source or 'The input'} is a {type(da).__name__}, not an xarray.DataArray. "
            "Open it with geoembed.open_embeddings(), which returns a canonical field."
        )
    what = _describe(da, source)
    if tuple(da.dims) != DIMS:
        if set(da.dims) == set(DIMS):
            fix = f"use da.transpose{DIMS} or geoembed.schema.to_canonical(da)"
        else:
            fix = "rename the dimensions or use geoembed.schema.to_canonical(da)"
        raise DimensionError(f"{what} has dims {tuple(da.dims)}; expected exactly {DIMS}: {fix}.")
    if "band" not in da.coords:
        raise BandMismatchError(
            f"{what} has no 'band' coordinate; assign band names, e.g. "
            "da.assign_coords(band=geoembed.schema.aef_band_names(64))."
        )
    names = [str(b) for b in da["band"].values]
    if bands is not None:
        if isinstance(bands, int):
            if len(names) != bands:
                raise BandMismatchError(
                    f"{what} has {len(names)} bands; expected {bands}. "
                    "Check that you opened the right file and selected all embedding bands."
                )
        else:
            expected = [str(b) for b in bands]
            if names != expected:
                if sorted(names) == sorted(expected):
                    raise BandMismatchError(
                        f"{what} has the expected bands in a different order "
                        f"({names[:3]}... vs {expected[:3]}...); reorder with "
                        "da.sel(band=expected_names)."
                    )
                missing = [b for b in expected if b not in names]
                extra = [b for b in names if b not in expected]
                raise BandMismatchError(
                    f"{what} has {len(names)} bands, expected {len(expected)}; "
                    f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}. "
                    "Use the field the model or labels were made from."
                )
    if not np.issubdtype(da.dtype, np.floating):
        raise DTypeError(
            f"{what} has dtype {da.dtype}; embedding fields are float32 with NaN for nodata. "
            "Open raw AlphaEarth int8 codes with geoembed.open_embeddings(), which de-quantizes "
            "them, or convert with geoembed.schema.to_canonical(da)."
        )
    if da.dtype != np.float32:
        raise DTypeError(
            f"{what} has dtype {da.dtype}; expected float32 (half the memory of float64). "
            "Use geoembed.schema.to_canonical(da) or da.astype('float32')."
        )
    chunks = da.chunks
    if chunks is not None and len(chunks[0]) > 1:
        raise ChunkingError(
            f"{what} splits 'band' over {len(chunks[0])} chunks; every pixel's vector must be "
            "in one chunk: use da.chunk({'band': -1}) or geoembed.schema.to_canonical(da)."
        )
    for dim in ("y", "x"):
        if dim not in da.coords:
            raise DimensionError(
                f"{what} has no {dim!r} coordinate; georeferenced fields need x/y coordinates "
                "(open the file with geoembed.open_embeddings())."
            )
        idx = da.indexes[dim]
        if len(idx) > 1 and not (idx.is_monotonic_increasing or idx.is_monotonic_decreasing):
            raise DimensionError(
                f"{what} has a non-monotonic {dim!r} coordinate; sort it with da.sortby({dim!r})."
            )
    if require_crs and da.rio.crs is None:
        raise MissingCRSError(
            f"{what} has no CRS. Set it with da.rio.write_crs('EPSG:32616') (your CRS), or open "
            "the source with geoembed.open_embeddings(), which keeps the CRS."
        )


def _find_dim(dims: Sequence[Hashable], aliases: Sequence[str]) -> str | None:
    lower = {str(d).lower(): str(d) for d in dims}
    for alias in aliases:
        if alias in lower:
            return lower[alias]
    return None


def to_canonical(
    obj: xr.DataArray | xr.Dataset,
    *,
    band_dim: str | None = None,
    source: str | None = None,
    report: list[str] | None = None,
) -> xr.DataArray:
    """Fix what can be fixed to make ``obj`` a canonical embedding field.

    Renames ``lat``/``lon``-style dims to ``y``/``x``, stacks a one-variable-per-band
    Dataset (the layout Xee exports) into a ``band`` dimension, transposes to
    ``("band", "y", "x")``, casts to float32, gives unnamed bands ``F000``.. names and
    puts ``band`` in a single chunk. Every change is logged and appended to ``report``.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        The input. A Dataset must hold one variable per band, all with the same dims.
    band_dim : str, optional
        Name of the band dimension when it is not one of the usual names.
    source : str, optional
        How to name the input in messages.
    report : list of str, optional
        Receives one line per change made.

    Returns
    -------
    xarray.DataArray
        The canonical field (still lazy). Its CRS is not invented: call
        :func:`check_embedding` afterwards.
    """
    fixes: list[str] = [] if report is None else report

    def note(msg: str) -> None:
        fixes.append(msg)
        log.info("%s: %s", source or "embedding field", msg)

    if isinstance(obj, xr.Dataset):
        data_vars = [v for v in obj.data_vars if obj[v].ndim >= 2]
        if not data_vars:
            raise SchemaError(f"{source or 'The dataset'} has no 2-D data variables.")
        crs = obj.rio.crs
        if len(data_vars) == 1:
            da = obj[data_vars[0]]
        else:
            da = obj[data_vars].to_dataarray("band")
            note(f"stacked {len(data_vars)} variables into a 'band' dimension")
        if crs is not None and da.rio.crs is None:
            da = da.rio.write_crs(crs)
    elif isinstance(obj, xr.DataArray):
        da = obj
    else:
        raise SchemaError(
            f"{source or 'The input'} is a {type(obj).__name__}; expected an xarray DataArray "
            "or Dataset."
        )

    ydim = _find_dim(da.dims, _Y_ALIASES)
    xdim = _find_dim(da.dims, _X_ALIASES)
    if ydim is None or xdim is None:
        raise DimensionError(
            f"{_describe(da, source)} has dims {tuple(da.dims)}; cannot tell which are y and x. "
            "Rename them, e.g. da.rename({'lat': 'y', 'lon': 'x'})."
        )
    bdim = band_dim or _find_dim([d for d in da.dims if d not in (ydim, xdim)], _BAND_ALIASES)
    others = [d for d in da.dims if d not in (ydim, xdim, bdim)]
    for d in others:
        if da.sizes[d] == 1:
            da = da.isel({d: 0}, drop=True)
            note(f"dropped length-1 dimension {d!r}")
        else:
            raise DimensionError(
                f"{_describe(da, source)} has an extra dimension {d!r} of length {da.sizes[d]}; "
                f"select one element first, e.g. da.isel({d}=0) (or year= in open_embeddings)."
            )
    if bdim is None:
        if len(others) == 0 and da.ndim == 2:
            da = da.expand_dims("band")
            bdim = "band"
            note("added a 'band' dimension of length 1")
        else:
            raise DimensionError(
                f"{_describe(da, source)}: cannot find the band dimension among {tuple(da.dims)}; "
                "pass band_dim='...'."
            )
    renames = {k: v for k, v in {bdim: "band", ydim: "y", xdim: "x"}.items() if k != v}
    if renames:
        da = da.rename(renames)
        note(f"renamed dims {renames}")
    if tuple(da.dims) != DIMS:
        note(f"transposed {tuple(da.dims)} -> {DIMS}")
        da = da.transpose(*DIMS)
    if "band" not in da.coords or np.issubdtype(da["band"].dtype, np.number):
        da = da.assign_coords(band=feature_band_names(da.sizes["band"]))
        note(f"named bands F000..F{da.sizes['band'] - 1:03d}")
    elif da["band"].dtype.kind != "U":
        da = da.assign_coords(band=[str(b) for b in da["band"].values])
    if not np.issubdtype(da.dtype, np.floating) or da.dtype != np.float32:
        if np.issubdtype(da.dtype, np.integer) and da.dtype.itemsize == 1:
            from geoembed.errors import QuantizationError

            raise QuantizationError(
                f"{_describe(da, source)} holds {da.dtype} codes; they cannot be cast to float "
                "as they are. Open AlphaEarth int8 files with geoembed.open_embeddings(..., "
                "quantization='aef'), which masks -128 and de-quantizes."
            )
        note(f"cast {da.dtype} -> float32")
        da = da.astype(np.float32)
    if da.chunks is not None and len(da.chunks[0]) > 1:
        da = da.chunk({"band": -1})
        note("put 'band' in a single chunk")
    for dim in ("y", "x"):
        if dim in da.indexes:
            idx = da.indexes[dim]
            if len(idx) > 1 and not (idx.is_monotonic_increasing or idx.is_monotonic_decreasing):
                da = da.sortby(dim)
                note(f"sorted the {dim!r} coordinate")
    if da.name != NAME:
        da = da.rename(NAME)
    return da


def resolution(da: xr.DataArray) -> tuple[float, float]:
    """Pixel size ``(x, y)`` in CRS units, signed as stored (y negative when north-up)."""
    x = da["x"].values
    y = da["y"].values
    if len(x) < 2 or len(y) < 2:
        res = da.rio.resolution()
        return float(res[0]), float(res[1])
    return float(x[1] - x[0]), float(y[1] - y[0])
