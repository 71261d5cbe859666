"""Interactive maps in notebooks with ipyleaflet (optional extra ``viz``).

Maps are served as tiles by the local tile server (:mod:`geoembed.viz.tiles`), cut from
the COG at full resolution; colours and the legend come from the COG's colour table and
``class_names`` tag. ``show_map(..., tiles=False)`` keeps the single reprojected PNG
overlay (no server; decimated to ``max_size``).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoembed.errors import MissingCRSError, require
from geoembed.viz._render import Rendered, render
from geoembed.viz.tiles import MapStyle, tile_server

__all__ = ["compare_maps", "map_layer", "overlay_image", "show_map"]

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


def _source_file(da: Any) -> Path | None:
    """Return the GeoTIFF a DataArray was opened from, when it is one and unmodified."""
    src = getattr(da, "encoding", {}).get("source")
    if src and str(src).lower().endswith((".tif", ".tiff")) and Path(str(src)).is_file():
        return Path(str(src))
    return None


def _as_cog(
    obj: Any,
    *,
    class_names: Sequence[str] | Mapping[int, str] | None,
    colors: Sequence[Any] | Mapping[int, Any] | None,
    method: str,
    bands: Sequence[Any] | None,
    max_size: int,
) -> Path:
    """Return a COG of ``obj``: the file itself, or one written to the server's scratch."""
    import uuid

    import xarray as xr

    from geoembed.export import write_cog

    if isinstance(obj, str | Path):
        return Path(obj)
    da = obj
    if not isinstance(da, xr.DataArray):
        da = getattr(obj, "field", None)
    if not isinstance(da, xr.DataArray):
        raise MissingCRSError(
            f"Cannot map a {type(obj).__name__}; pass a COG path or an xarray.DataArray."
        )
    src = _source_file(da)
    if src is not None and class_names is None and colors is None and da.ndim == 2:
        return src
    if da.rio.crs is None:
        raise MissingCRSError(
            "The array has no CRS, so it cannot be placed on a map; set it with "
            "da.rio.write_crs('EPSG:...')."
        )
    out = tile_server().scratch / f"{uuid.uuid4().hex}.tif"
    if da.ndim == 3:  # an embedding field: an RGB preview (PCA or bands)
        img = render(da, method=method, bands=bands, max_size=max_size)
        rows, cols = img.rgba.shape[:2]
        t = img.transform
        rgb = xr.DataArray(
            np.moveaxis(img.rgba, -1, 0),
            dims=("band", "y", "x"),
            coords={
                "band": ["red", "green", "blue", "alpha"],
                "y": t.f + t.e * (np.arange(rows) + 0.5),
                "x": t.c + t.a * (np.arange(cols) + 0.5),
            },
        ).rio.write_crs(img.crs)
        write_cog(rgb, out, nodata=0)
    else:
        write_cog(da, out, class_names=class_names, colors=colors)
    return out


def map_layer(
    obj: Any,
    *,
    name: str | None = None,
    opacity: float = 0.8,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    colors: Sequence[Any] | Mapping[int, Any] | None = None,
    method: str = "pca",
    bands: Sequence[Any] | None = None,
    max_size: int = 4096,
) -> tuple[Any, MapStyle, tuple[tuple[float, float], tuple[float, float]]]:
    """Make a tile layer of a COG or DataArray, with its style and lat/lon bounds.

    Parameters
    ----------
    obj : str, path or xarray.DataArray
        A COG (class map, confidence, RGB preview), or an array (written to a temporary
        COG that the tile server removes when it closes). Fields ``(band, y, x)`` become
        an RGB preview of at most ``max_size`` pixels a side.
    name, opacity, class_names, colors, method, bands, max_size
        As in :func:`show_map`.

    Returns
    -------
    (ipyleaflet.TileLayer, MapStyle, ((south, west), (north, east)))
    """
    import rasterio
    from rasterio.warp import transform_bounds

    ipyleaflet = require("ipyleaflet", extra="viz", feature="map_layer")
    path = _as_cog(
        obj, class_names=class_names, colors=colors, method=method, bands=bands, max_size=max_size
    )
    url, style = tile_server().add(path)
    with rasterio.open(path) as src:
        if src.crs is None:
            raise MissingCRSError(f"{str(path)!r} has no CRS, so it cannot be placed on a map.")
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        # the zoom at which one map pixel is about one screen pixel; deeper zooms upsample
        native = _zoom_for(((south, west), (north, east)), max(src.width, src.height)) + 1
    layer_name = name or str(getattr(obj, "name", None) or Path(str(path)).stem)
    layer = ipyleaflet.TileLayer(
        url=url,
        name=layer_name,
        opacity=float(opacity),
        max_zoom=24,
        max_native_zoom=native,
        bounds=((south, west), (north, east)),
        attribution="geoembed",
    )
    return layer, style, ((south, west), (north, east))


def _new_map(bounds: tuple[tuple[float, float], tuple[float, float]], basemap: bool) -> Any:
    import ipyleaflet

    (south, west), (north, east) = bounds
    m = ipyleaflet.Map(
        center=((south + north) / 2.0, (west + east) / 2.0),
        zoom=_zoom_for(bounds, 400),  # the whole map in the default 400 px high view
        scroll_wheel_zoom=True,
        max_zoom=24,
    )
    if not basemap:  # offline (tests, CI): no OpenStreetMap layer
        m.layers = ()
    m.add(ipyleaflet.LayersControl(position="topright"))
    m.add(ipyleaflet.ScaleControl(position="bottomleft", imperial=False))
    return m


def _opacity_control(layer: Any) -> Any:
    import ipyleaflet
    import ipywidgets

    slider = ipywidgets.FloatSlider(
        value=layer.opacity,
        min=0.0,
        max=1.0,
        step=0.05,
        description="opacity",
        readout_format=".2f",
        layout=ipywidgets.Layout(width="220px"),
    )
    ipywidgets.jslink((slider, "value"), (layer, "opacity"))
    return ipyleaflet.WidgetControl(widget=slider, position="topright")


def _legend(style: MapStyle, title: str) -> Any:
    import ipyleaflet

    return ipyleaflet.LegendControl(style.legend, title=title, position="bottomright")


def show_map(
    da: Any,
    *,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    colors: Sequence[Any] | Mapping[int, Any] | None = None,
    opacity: float = 0.8,
    method: str = "pca",
    bands: Sequence[Any] | None = None,
    max_size: int | None = None,
    name: str | None = None,
    m: Any = None,
    tiles: bool = True,
    basemap: bool = False,
    opacity_control: bool = True,
) -> Any:
    """Show a COG, a field or a map on an interactive ipyleaflet map.

    By default the map is served as tiles from the COG (full resolution at every zoom,
    see :mod:`geoembed.viz.tiles`); class maps get a legend with the COG's own class
    names and colours, and the layer an opacity slider. Needs the ``viz`` extra
    (``pip install "geoembed[viz]"``).

    Parameters
    ----------
    da : str, path or xarray.DataArray
        A COG written by geoembed (class map, confidence), ``(band, y, x)`` embedding
        field (PCA or band RGB preview), ``(y, x)`` class map, or ``(y, x)`` float map.
        Arrays must have a CRS.
    class_names, colors : optional
        Class names and colours by id (lists in id order, or dicts) for class maps;
        default: the map's own (COG tags and colour table).
    opacity : float
        Opacity of the layer.
    method, bands
        As in :func:`geoembed.viz.quicklook_png`, for fields.
    max_size : int, optional
        Longest side of a field's RGB preview (default 4096 with tiles, 1024 without).
    name : str, optional
        Layer name (default: the array's name or the file's).
    m : ipyleaflet.Map, optional
        Add the layer to this map instead of creating one.
    tiles : bool, default True
        Serve tiles; with False, overlay one decimated PNG (no server).
    basemap : bool, default False
        Add OpenStreetMap under the layers (needs the internet in the browser).
    opacity_control : bool, default True
        Add an opacity slider for the layer.

    Returns
    -------
    ipyleaflet.Map
        The map, centred on the data, with the layer (and a legend for class maps).
    """
    require("ipyleaflet", extra="viz", feature="show_map")
    if not tiles:
        return _show_overlay(
            da,
            class_names=class_names,
            colors=colors,
            opacity=opacity,
            method=method,
            bands=bands,
            max_size=max_size or 1024,
            name=name,
            m=m,
        )
    layer, style, bounds = map_layer(
        da,
        name=name,
        opacity=opacity,
        class_names=class_names,
        colors=colors,
        method=method,
        bands=bands,
        max_size=max_size or 4096,
    )
    if m is None:
        m = _new_map(bounds, basemap)
    m.add(layer)
    if opacity_control:
        m.add(_opacity_control(layer))
    if style.kind == "classes":
        m.add(_legend(style, layer.name if name else "classes"))
    return m


def compare_maps(
    left: Any,
    right: Any,
    *,
    left_name: str | None = None,
    right_name: str | None = None,
    opacity: float = 1.0,
    basemap: bool = False,
) -> Any:
    """Compare two maps with a split view (a slider between left and right layer).

    Parameters
    ----------
    left, right : str, path or xarray.DataArray
        Maps as for :func:`show_map` (e.g. the kNN and the KMeans COG, or two years).
    left_name, right_name : str, optional
        Layer names (also the legend titles).
    opacity : float
        Opacity of both layers.
    basemap : bool
        Add OpenStreetMap under the layers.

    Returns
    -------
    ipyleaflet.Map
        With a ``SplitMapControl`` and one legend per class map.
    """
    ipyleaflet = require("ipyleaflet", extra="viz", feature="compare_maps")
    lay_l, style_l, bounds = map_layer(left, name=left_name, opacity=opacity)
    lay_r, style_r, _ = map_layer(right, name=right_name, opacity=opacity)
    m = _new_map(bounds, basemap)
    m.add(ipyleaflet.SplitMapControl(left_layer=lay_l, right_layer=lay_r))
    if style_l.kind == "classes":
        legend = _legend(style_l, lay_l.name)
        legend.position = "bottomleft"
        m.add(legend)
    if style_r.kind == "classes":
        m.add(_legend(style_r, lay_r.name))
    return m


def _show_overlay(
    da: Any,
    *,
    class_names: Sequence[str] | Mapping[int, str] | None,
    colors: Sequence[Any] | Mapping[int, Any] | None,
    opacity: float,
    method: str,
    bands: Sequence[Any] | None,
    max_size: int,
    name: str | None,
    m: Any,
) -> Any:
    """Show one reprojected PNG overlay (``show_map(..., tiles=False)``)."""
    import ipyleaflet

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
