"""Earth Engine through Xee (optional ``ee`` extra): an explicit grid in, a canonical field out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import xarray as xr

from geoembed.errors import GeoembedError, require

__all__ = ["AEF_COLLECTION", "grid_for_bbox", "open_xee", "require_ee"]

log = logging.getLogger(__name__)

#: Earth Engine id of AlphaEarth Satellite Embedding V1 (annual, 64 bands, 10 m)
AEF_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"


def require_ee(feature: str) -> tuple[Any, Any]:
    """Import ``ee`` and ``xee`` or raise MissingDependencyError naming the ``ee`` extra."""
    ee = require("ee", extra="ee", feature=feature, package="earthengine-api")
    xee = require("xee", extra="ee", feature=feature, package="xee")
    return ee, xee


def grid_for_bbox(
    bbox: Sequence[float],
    *,
    crs: str,
    scale: float = 10.0,
    bbox_crs: str = "EPSG:4326",
) -> dict[str, Any]:
    """Explicit Xee grid parameters covering ``bbox`` at ``scale``, north-up.

    Parameters
    ----------
    bbox : (float, float, float, float)
        ``(west, south, east, north)`` in ``bbox_crs``.
    crs : str
        Output CRS (e.g. the UTM zone, ``"EPSG:32616"``).
    scale : float, default 10
        Pixel size in ``crs`` units.
    bbox_crs : str, default "EPSG:4326"
        CRS of ``bbox``.

    Returns
    -------
    dict
        ``crs``, ``crs_transform`` (6-tuple, GDAL/EE order ``a, b, c, d, e, f``) and
        ``shape_2d`` as Xee wants it: **(width, height)**.
    """
    import math

    from pyproj import Transformer

    west, south, east, north = (float(v) for v in bbox)
    if not (west < east and south < north):
        raise GeoembedError(
            f"bbox {tuple(bbox)} is not (west, south, east, north) with west < east and "
            "south < north."
        )
    tr = Transformer.from_crs(bbox_crs, crs, always_xy=True)
    xs, ys = tr.transform(
        [west, east, east, west, (west + east) / 2, (west + east) / 2],
        [south, south, north, north, south, north],
    )
    x0 = math.floor(min(xs) / scale) * scale
    y1 = math.ceil(max(ys) / scale) * scale
    width = math.ceil((max(xs) - x0) / scale)
    height = math.ceil((y1 - min(ys)) / scale)
    return {
        "crs": crs,
        "crs_transform": (scale, 0.0, x0, 0.0, -scale, y1),
        "shape_2d": (width, height),
    }


def open_xee(
    image: Any,
    *,
    crs: str,
    crs_transform: Sequence[float],
    shape_2d: tuple[int, int],
    year: int | None = None,
    chunks: Any = None,
    bands: int | Sequence[str] | None = None,
    ee_init_kwargs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Open an ``ee.Image`` / ``ee.ImageCollection`` (or asset id) lazily through Xee.

    The grid is always explicit: ``crs``, ``crs_transform`` and ``shape_2d``
    (**width, height**, Xee's order) as Xee >= 0.1 requires (see :func:`grid_for_bbox`).

    Parameters
    ----------
    image : ee.Image, ee.ImageCollection or str
        The source; a string is taken as an ImageCollection asset id.
    crs, crs_transform, shape_2d
        Output grid.
    year : int, optional
        Time step to keep (collections are opened along ``time``).
    chunks : optional
        Spatial chunking, see :func:`geoembed.io.open_embeddings`.
    bands : int or sequence of str, optional
        Expected band count or names.
    ee_init_kwargs : dict, optional
        Passed to Xee so that Dask workers can initialise Earth Engine.

    Returns
    -------
    xarray.DataArray
        The canonical field.
    """
    ee, _ = require_ee("Reading Earth Engine images")
    from geoembed.io.open import from_xarray

    collection = image
    if isinstance(image, str):
        collection = ee.ImageCollection(image)
    elif isinstance(image, ee.Image):
        collection = ee.ImageCollection([image])
    if year is not None:
        collection = collection.filterDate(f"{int(year)}-01-01", f"{int(year) + 1}-01-01")
    kwargs: dict[str, Any] = {}
    if ee_init_kwargs:
        kwargs.update(ee_init_kwargs=ee_init_kwargs, ee_init_if_necessary=True)
    ds = xr.open_dataset(
        collection,
        engine="ee",
        crs=crs,
        crs_transform=tuple(crs_transform),
        shape_2d=tuple(shape_2d),
        chunks={},
        **kwargs,
    )
    if "crs" not in ds.attrs:
        ds.attrs["crs"] = crs
    return from_xarray(
        ds,
        year=year,
        chunks=chunks,
        bands=bands,
        source=f"Earth Engine {image if isinstance(image, str) else type(image).__name__}",
    )
