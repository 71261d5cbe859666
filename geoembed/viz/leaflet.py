"""Interactive maps in notebooks with ipyleaflet (optional extra ``viz``)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geoembed.errors import MissingCRSError, require
from geoembed.viz._render import Rendered, render

__all__ = ["overlay_image", "show_map"]

_WEB_MERCATOR = "EPSG:3857"
_WORLD_M = 2 * math.pi * 6378137.0


def _png_data_url(rgba: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _to_web_mercator(img: Rendered) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Warp the RGBA image to EPSG:3857 (nearest neighbour); return it and its bounds."""
    from rasterio.crs import CRS
    from rasterio.transform import from_bounds
    from rasterio.warp import (
        Resampling,
        calculate_default_transform,
        reproject,
        transform_bounds,
    )

    src_crs = CRS.from_user_input(img.crs)
    dst_crs = CRS.from_user_input(_WEB_MERCATOR)
    rows, cols = img.rgba.shape[:2]
    if src_crs == dst_crs:
        return img.rgba, img.bounds
    _, w, h = calculate_default_transform(src_crs, dst_crs, cols, rows, *img.bounds)
    # the exact (densified) footprint, so that the overlay encloses the data
    dst_bounds = transform_bounds(src_crs, dst_crs, *img.bounds, densify_pts=21)
    transform = from_bounds(*dst_bounds, int(w), int(h))
    out = np.zeros((4, int(h), int(w)), dtype=np.uint8)
    reproject(
        np.moveaxis(img.rgba, -1, 0),
        out,
        src_transform=img.transform,
        src_crs=src_crs,
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
        src_nodata=None,
        dst_nodata=0,
    )
    left, top = transform * (0, 0)
    right, bottom = transform * (int(w), int(h))
    return np.ascontiguousarray(np.moveaxis(out, 0, -1)), (left, bottom, right, top)


def overlay_image(
    da: Any,
    *,
    method: str = "pca",
    bands: Sequence[Any] | None = None,
    max_size: int = 1024,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    colors: Sequence[Any] | Mapping[int, Any] | None = None,
) -> tuple[str, tuple[tuple[float, float], tuple[float, float]], dict[str, str] | None]:
    """Render ``da`` as a Web-Mercator PNG data URL with its lat/lon bounds.

    Returns
    -------
    url : str
        ``data:image/png;base64,...``.
    bounds : ((south, west), (north, east))
        In degrees (EPSG:4326).
    legend : dict or None
        ``{class name: "#rrggbb"}`` for class maps.
    """
    from pyproj import Transformer

    img = render(
        da, method=method, bands=bands, max_size=max_size, class_names=class_names, colors=colors
    )
    if img.crs is None:
        raise MissingCRSError(
            "The array has no CRS, so it cannot be placed on a map; set it with "
            "da.rio.write_crs('EPSG:...')."
        )
    rgba, (left, bottom, right, top) = _to_web_mercator(img)
    to_ll = Transformer.from_crs(_WEB_MERCATOR, "EPSG:4326", always_xy=True)
    west, south = to_ll.transform(left, bottom)
    east, north = to_ll.transform(right, top)
    return _png_data_url(rgba), ((south, west), (north, east)), img.legend


def _zoom_for(bounds: tuple[tuple[float, float], tuple[float, float]], px: int = 800) -> int:
    (south, west), (north, east) = bounds
    lat = math.radians((south + north) / 2.0)
    span = max((east - west) / 360.0 * _WORLD_M * math.cos(lat), 1.0)
    span = max(span, (north - south) / 360.0 * _WORLD_M)
    return int(np.clip(math.floor(math.log2(px * _WORLD_M * math.cos(lat) / (256 * span))), 1, 18))


def show_map(
    da: Any,
    *,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    colors: Sequence[Any] | Mapping[int, Any] | None = None,
    opacity: float = 0.8,
    method: str = "pca",
    bands: Sequence[Any] | None = None,
    max_size: int = 1024,
    name: str | None = None,
    m: Any = None,
) -> Any:
    """Show a field or a map on an interactive ipyleaflet map.

    A decimated rendering (see :func:`geoembed.viz.quicklook_png`) is reprojected to Web
    Mercator and overlaid as a PNG image; class maps get a legend. Needs the ``viz`` extra
    (``pip install "geoembed[viz]"``).

    Parameters
    ----------
    da : xarray.DataArray
        ``(band, y, x)`` embedding field (PCA or band RGB), ``(y, x)`` class map, or
        ``(y, x)`` float map. It must have a CRS.
    class_names, colors : optional
        Class names and colours by id (lists in id order, or dicts) for class maps.
    opacity : float
        Opacity of the overlay.
    method, bands, max_size
        As in :func:`geoembed.viz.quicklook_png`.
    name : str, optional
        Layer name (default: the array's name).
    m : ipyleaflet.Map, optional
        Add the layer to this map instead of creating one.

    Returns
    -------
    ipyleaflet.Map
        The map, centred on the data, with the overlay (and a legend for class maps).
    """
    ipyleaflet = require("ipyleaflet", extra="viz", feature="show_map")
    url, bounds, legend = overlay_image(
        da, method=method, bands=bands, max_size=max_size, class_names=class_names, colors=colors
    )
    (south, west), (north, east) = bounds
    if m is None:
        m = ipyleaflet.Map(
            center=((south + north) / 2.0, (west + east) / 2.0),
            zoom=_zoom_for(bounds),
            scroll_wheel_zoom=True,
        )
        m.add(ipyleaflet.LayersControl(position="topright"))
    layer_name = name or str(getattr(da, "name", None) or "layer")
    m.add(
        ipyleaflet.ImageOverlay(
            url=url,
            bounds=((south, west), (north, east)),
            opacity=float(opacity),
            name=layer_name,
        )
    )
    if legend:
        m.add(
            ipyleaflet.LegendControl(
                legend, title=layer_name if name else "classes", position="bottomright"
            )
        )
    return m
