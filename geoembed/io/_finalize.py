"""Steps shared by every reader: year selection, decoding, canonical form, checks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from geoembed.errors import BandMismatchError, DimensionError, MissingCRSError, SchemaError
from geoembed.io.aef import dequantize_aef, resolve_quantization
from geoembed.schema import (
    _BAND_ALIASES,
    _X_ALIASES,
    _Y_ALIASES,
    _find_dim,
    check_embedding,
    to_canonical,
)

__all__ = ["band_dim_of", "finalize", "find_crs", "nodata_of", "select_year"]

log = logging.getLogger(__name__)

_TIME_ALIASES = ("time", "year", "years", "t", "date")
#: attributes that may hold a CRS, in the order they are tried
_CRS_ATTRS = (
    "crs",
    "crs_wkt",
    "spatial_ref",
    "proj:wkt2",
    "proj:projjson",
    "proj:code",
    "proj:epsg",
    "epsg",
)


def _time_dim(obj: xr.DataArray | xr.Dataset) -> str | None:
    return _find_dim([str(d) for d in obj.dims], _TIME_ALIASES)


def select_year(
    obj: xr.DataArray | xr.Dataset, year: int | None, *, source: str
) -> xr.DataArray | xr.Dataset:
    """Select the time step of ``year`` (and drop the time dimension).

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Input with an optional ``time``-like dimension (datetime, cftime, or integer years).
    year : int, optional
        Year to keep. Without it a time dimension of length 1 is dropped later by
        :func:`geoembed.schema.to_canonical`; a longer one is an error there.
    source : str
        How to name the input in messages.

    Returns
    -------
    same type as ``obj``
    """
    if year is None:
        return obj
    tdim = _time_dim(obj)
    if tdim is None:
        log.info("%s has no time dimension; year=%s is taken as describing it.", source, year)
        return obj
    years = _years_of(obj, tdim)
    hits = [i for i, y in enumerate(years) if y == int(year)]
    if len(hits) != 1:
        what = "no time step" if not hits else f"{len(hits)} time steps"
        raise SchemaError(
            f"{source} has {what} in year {year} along {tdim!r} (years present: "
            f"{sorted(set(years))[:20]}); pass one of those as year=."
        )
    return obj.isel({tdim: hits[0]}, drop=True)


def _years_of(obj: xr.DataArray | xr.Dataset, tdim: str) -> list[int]:
    if tdim not in obj.coords:
        raise SchemaError(
            f"the {tdim!r} dimension has no coordinate, so year= cannot be matched; select "
            f"the step yourself, e.g. obj.isel({tdim}=0)."
        )
    coord = obj[tdim]
    if np.issubdtype(coord.dtype, np.datetime64) or coord.dtype == object:
        try:
            return [int(y) for y in coord.dt.year.values]
        except (AttributeError, TypeError):
            pass
    values = coord.values
    try:
        return [int(str(v)[:4]) for v in values]
    except ValueError as exc:
        raise SchemaError(
            f"cannot read years from the {tdim!r} coordinate ({values[:3]}...); select the "
            f"time step yourself, e.g. obj.isel({tdim}=0)."
        ) from exc


def band_dim_of(da: xr.DataArray, *, source: str) -> str:
    """Name of the band dimension of a (band, y, x)-like DataArray."""
    ydim = _find_dim(da.dims, _Y_ALIASES)
    xdim = _find_dim(da.dims, _X_ALIASES)
    rest = [str(d) for d in da.dims if d not in (ydim, xdim)]
    bdim = _find_dim(rest, _BAND_ALIASES)
    if bdim is None and len(rest) == 1:
        bdim = rest[0]
    if ydim is None or xdim is None or bdim is None:
        raise DimensionError(
            f"{source} has dims {tuple(da.dims)}; cannot tell band, y and x apart. Rename them "
            "to ('band', 'y', 'x'), e.g. da.rename({'lat': 'y', 'lon': 'x'})."
        )
    return bdim


def nodata_of(obj: xr.DataArray) -> Any:
    """Nodata value declared in a DataArray's attributes or encoding (None when absent)."""
    for key in ("_FillValue", "missing_value", "nodata"):
        for mapping in (obj.attrs, obj.encoding):
            if key in mapping and mapping[key] is not None:
                value = mapping[key]
                if isinstance(value, list | tuple | np.ndarray):
                    value = np.asarray(value).ravel()[0] if np.size(value) else None
                return value
    try:
        return obj.rio.nodata
    except Exception:  # rioxarray may fail on odd attributes; treat as no nodata
        return None


def _parse_crs(value: Any) -> Any:
    from pyproj import CRS

    if isinstance(value, int | np.integer):
        return CRS.from_epsg(int(value))
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.strip().isdigit():
        return CRS.from_epsg(int(value))
    return CRS.from_user_input(value)


def find_crs(obj: xr.DataArray | xr.Dataset, *, source: str) -> Any:
    """Recover a CRS from every place it may hide; ``None`` when there is none.

    Looks at rioxarray's grid mapping (``spatial_ref`` or the ``grid_mapping`` variable,
    as decoded with ``decode_coords="all"``), then at ``crs``-like attributes of the object,
    of its data variables and of a ``spatial_ref``/``crs`` variable.

    Raises
    ------
    MissingCRSError
        When an attribute names a CRS that cannot be parsed.
    """
    crs = obj.rio.crs
    if crs is not None:
        return crs
    holders: list[Any] = [obj]
    if isinstance(obj, xr.Dataset):
        holders += [obj[v] for v in obj.data_vars]
    known = obj.variables if isinstance(obj, xr.Dataset) else obj.coords
    holders += [obj[c] for c in ("spatial_ref", "crs") if c in known]
    for holder in holders:
        if holder is not obj and holder.rio.crs is not None:
            return holder.rio.crs
        for key in _CRS_ATTRS:
            if key in holder.attrs and holder.attrs[key] not in (None, ""):
                try:
                    return _parse_crs(holder.attrs[key])
                except Exception as exc:
                    raise MissingCRSError(
                        f"{source} has a {key!r} attribute ({str(holder.attrs[key])[:80]!r}) "
                        f"that is not a valid CRS ({exc}). Fix the attribute, or open the data "
                        "with xarray, set the CRS with .rio.write_crs('EPSG:....') and pass "
                        "the object to open_embeddings()."
                    ) from exc
    return None


def finalize(
    da: xr.DataArray,
    *,
    source: str,
    quantization: str | None,
    nodata: Any = None,
    crs: Any = None,
    bands: int | Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
    extra_attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Decode, canonicalize and check a field read by one of the readers.

    Parameters
    ----------
    da : xarray.DataArray
        Stored values with a band, a y and an x dimension (any order), lazy.
    source : str
        How to name the input in messages and in ``attrs["source"]``.
    quantization : {"aef", None}
        Requested quantization (``None`` auto-detects from dtype and ``nodata``).
    nodata : number, optional
        Declared nodata value of the stored values.
    crs : optional
        CRS recovered by the reader (else looked up on ``da``).
    bands : int or sequence of str, optional
        Expected band count or names.
    band_names : sequence of str, optional
        Names to give the bands (replacing stored or generated ones).
    extra_attrs : dict, optional
        More attributes for the field.

    Returns
    -------
    xarray.DataArray
        The canonical embedding field.
    """
    da = da.copy(deep=False)  # never touch the caller's attrs/encoding
    da.attrs = dict(da.attrs)
    source_dtype = str(da.dtype)
    quant = resolve_quantization(da.dtype, nodata, quantization, source=source)
    crs = crs if crs is not None else find_crs(da, source=source)
    if quant == "aef":
        da = dequantize_aef(da, band_dim=band_dim_of(da, source=source))
    elif nodata is not None and np.issubdtype(da.dtype, np.number) and not np.isnan(nodata):
        # generic rasters: the declared nodata value becomes NaN, value by value
        attrs = dict(da.attrs)
        da = da.astype(np.float32)
        da = da.where(da != np.float32(nodata))
        da.attrs = attrs
    for key in ("_FillValue", "missing_value", "scale_factor", "add_offset", "nodata"):
        da.attrs.pop(key, None)
    da.encoding = {}
    field = to_canonical(da, source=source)
    if crs is not None and field.rio.crs is None:
        field = field.rio.write_crs(crs)
    if band_names is not None:
        names = [str(b) for b in band_names]
        if len(names) != field.sizes["band"]:
            raise BandMismatchError(
                f"band_names has {len(names)} names but {source} has {field.sizes['band']} "
                "bands; give one name per band."
            )
        field = field.assign_coords(band=names)
    if field.rio.crs is None:
        raise MissingCRSError(
            f"{source} has no CRS (no spatial_ref/grid_mapping variable and no 'crs' "
            "attribute). geoembed never guesses one: write it into the source (e.g. "
            "ds.rio.write_crs('EPSG:32616') before saving), or open the data with xarray, set "
            "the CRS with .rio.write_crs(...) and pass the object to open_embeddings()."
        )
    field = field.rio.write_nodata(np.nan, encoded=False)
    field.attrs.update(
        {
            "source": source,
            "source_dtype": source_dtype,
            "quantization": quant or "none",
            **(extra_attrs or {}),
        }
    )
    field.attrs.pop("long_name", None)
    check_embedding(field, bands=bands, source=source)
    return field
