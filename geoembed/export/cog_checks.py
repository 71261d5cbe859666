"""Checks of a COG write that need no pixels: dtype, nodata, class ids, the grid.

Used by :func:`geoembed.export.cog.write_cog` before any Dask task runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from geoembed.errors import DimensionError, DTypeError, SchemaError
from geoembed.grid import Grid
from geoembed.schema import CLASS_NODATA

__all__: list[str] = []

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}
_COMPRESS = ("deflate", "zstd", "lzw", "none")
_RESAMPLING = ("mode", "average", "nearest", "bilinear", "cubic", "max", "min", "med", "rms")


def _check_ids(ids: Sequence[int], dtype: np.dtype, nodata: Any, what: str) -> None:
    info = np.iinfo(dtype)
    bad = [i for i in ids if i < info.min or i > info.max]
    if bad:
        raise SchemaError(f"{what} has class ids {bad[:5]} that a {dtype} map cannot hold.")
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        if int(nodata) in ids:
            raise SchemaError(
                f"{what} gives class id {int(nodata)}, which is the nodata value of the map. "
                "Class ids run from 0 to nodata - 1; pass another nodata= or renumber classes."
            )


def _default_nodata(da: xr.DataArray, dtype: np.dtype) -> float | int | None:
    for value in (da.rio.nodata, da.rio.encoded_nodata):
        if value is not None and not (
            np.issubdtype(dtype, np.integer) and isinstance(value, float) and math.isnan(value)
        ):
            return value.item() if isinstance(value, np.generic) else value
    if np.issubdtype(dtype, np.floating):
        return float("nan")
    return CLASS_NODATA.get(dtype.name)


def _check_nodata(nodata: Any, dtype: np.dtype, name: str) -> float | int | None:
    if nodata is None:
        return None
    value = float(nodata)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if math.isnan(value) or value != int(value) or not info.min <= value <= info.max:
            raise DTypeError(
                f"nodata={nodata!r} cannot be stored in the {dtype} raster {name}; use an "
                f"integer in {info.min}..{info.max} (class maps use "
                f"{CLASS_NODATA.get(dtype.name, info.max)})."
            )
        return int(value)
    return value


def _grid(da: xr.DataArray, name: str) -> tuple[Any, bool]:
    """North-up affine transform of the output and whether the input runs bottom-up.

    Checks that ``da`` lies on a regular, unrotated x/y grid, then takes the transform
    from :class:`geoembed.grid.Grid`.
    """
    for dim in ("y", "x"):
        if dim not in da.coords:
            raise DimensionError(
                f"{name} has no {dim!r} coordinate; outputs must be on a georeferenced grid "
                "(build them with geoembed.schema.map_like(field, data, name=...))."
            )
    try:
        t = da.rio.transform(recalc=True)
    except Exception as exc:  # rioxarray raises several types for odd grids
        raise DimensionError(
            f"{name} has no regular x/y grid ({exc}); build it with geoembed.schema.map_like."
        ) from exc
    if t.b != 0 or t.d != 0:
        raise DimensionError(f"{name} has a rotated grid, which write_cog does not support.")
    for dim in ("x", "y"):
        coord = np.asarray(da[dim].values, dtype=np.float64)
        if coord.size > 2:
            step = np.diff(coord)
            if not np.allclose(step, step[0], rtol=1e-6, atol=0):
                raise DimensionError(
                    f"{name} has an irregular {dim!r} coordinate; GeoTIFFs need a regular grid. "
                    "Reproject or resample it first (e.g. with rioxarray's rio.reproject)."
                )
    grid = Grid.of(da)
    return grid.north_up(), grid.bottom_up


def _resolve_classes(
    da: xr.DataArray,
    class_names: Mapping[Any, str] | Sequence[str] | None,
    colors: Mapping[Any, Any] | Sequence[Any] | None,
) -> tuple[Any, Any]:
    if class_names is None:
        class_names = da.attrs.get("class_names")
    if colors is None:
        colors = da.attrs.get("colors", da.attrs.get("class_colors"))
    return class_names, colors
