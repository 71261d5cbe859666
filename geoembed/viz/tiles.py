"""A local tile server for COGs: class maps, confidences and RGB previews as map tiles.

Tiles are cut by rio-tiler (``viz`` extra) from the COG itself, at full resolution, with
the COG's own overviews when zoomed out, so a map of any size stays light in the
browser. The server is a :class:`http.server.ThreadingHTTPServer` bound to 127.0.0.1 on a
free port, in a daemon thread of the notebook's kernel; one per process, started on first
use (:func:`tile_server`). URLs are ``http://127.0.0.1:PORT/tiles/LAYER/{z}/{x}/{y}.png``.

Class maps are drawn with the COG's colour table (written by :func:`geoembed.export.write_cog`
with the ``class_colors`` tag); continuous maps (confidence...) are stretched over their
range with a colour map; three-band byte COGs (RGB previews) are shown as they are.
"""

from __future__ import annotations

import atexit
import http.server
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoembed.colors import decode_class_colors, decode_class_names, default_color, to_hex
from geoembed.errors import CorruptInputError, GeoembedError, MissingInputError, require

__all__ = ["MapStyle", "TileServer", "map_style", "tile_server"]

_TILE_PATH = re.compile(r"^/tiles/([0-9a-f]{32})/(\d+)/(\d+)/(\d+)\.png$")
#: a fully transparent 1x1 PNG for tiles outside a layer
_EMPTY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
#: colour map of continuous layers (rio-tiler's name)
_CONTINUOUS_CMAP = "viridis"


@dataclass(frozen=True)
class MapStyle:
    """How a COG is drawn: its kind, class names and colours, value range.

    Attributes
    ----------
    kind : str
        ``"classes"`` (integer band with class ids), ``"continuous"`` (one float band)
        or ``"rgb"`` (three bands shown as they are).
    names : dict of int to str
        Class names by id (classes only; ``class i`` when the COG names none).
    colors : dict of int to tuple
        ``(r, g, b, a)`` by class id, from the colour table or the ``class_colors`` tag.
    value_range : tuple of float or None
        ``(low, high)`` stretch of continuous layers.
    nodata : float or None
        The band's nodata value.
    """

    kind: str
    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    value_range: tuple[float, float] | None = None
    nodata: float | None = None

    @property
    def legend(self) -> dict[str, str]:
        """``{class name: "#rrggbb"}`` of a class map (empty for other kinds)."""
        return {self.names[i]: to_hex(self.colors[i]) for i in sorted(self.names)}


def map_style(path: str | Path) -> MapStyle:
    """Read how to draw a COG from its metadata (colour table, tags, overview statistics).

    Parameters
    ----------
    path : str or path-like
        A GeoTIFF/COG.

    Returns
    -------
    MapStyle
    """
    import rasterio

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise CorruptInputError(f"Cannot open {str(path)!r} as a raster map: {exc}") from exc
    with src:
        tags = {**src.tags(), **src.tags(1)}
        dtype = np.dtype(src.dtypes[0])
        nodata = src.nodata
        if src.count >= 3 and dtype == np.uint8:
            return MapStyle(kind="rgb", nodata=nodata)
        if np.issubdtype(dtype, np.integer):
            try:
                table = {int(k): tuple(int(c) for c in v) for k, v in src.colormap(1).items()}
            except ValueError:  # no colour table
                table = {}
            colors = decode_class_colors(tags.get("class_colors"))
            names = decode_class_names(tags.get("class_names"))
            ids = set(names) | set(colors)
            if not ids:
                ids = set(_present_ids(src, nodata))
            style_colors: dict[int, tuple[int, int, int, int]] = {}
            for i in sorted(ids):
                c = colors.get(i) or table.get(i)
                style_colors[i] = (int(c[0]), int(c[1]), int(c[2]), 255) if c else default_color(i)
                names.setdefault(i, f"class {i}")
            return MapStyle("classes", names, style_colors, nodata=nodata)
        low, high = _value_range(src, nodata)
        return MapStyle("continuous", value_range=(low, high), nodata=nodata)


def _coarse(src: Any) -> np.ma.MaskedArray:
    """Band 1 read at most 512 px on a side (from overviews when the COG has them)."""
    scale = max(1, int(np.ceil(max(src.width, src.height) / 512)))
    shape = (max(1, src.height // scale), max(1, src.width // scale))
    return src.read(1, out_shape=shape, masked=True)


def _present_ids(src: Any, nodata: float | None) -> list[int]:
    values = _coarse(src).compressed()
    return [int(v) for v in np.unique(values)]


def _value_range(src: Any, nodata: float | None) -> tuple[float, float]:
    values = _coarse(src).compressed().astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [2.0, 98.0])
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


@dataclass
class _Layer:
    path: Path
    style: MapStyle


def _render_tile(layer: _Layer, x: int, y: int, z: int) -> bytes:
    from rio_tiler.colormap import cmap as cmaps
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    style = layer.style
    with Reader(str(layer.path)) as src:
        if not src.tile_exists(x, y, z):
            return _EMPTY_PNG
        try:
            if style.kind == "rgb":
                img = src.tile(x, y, z, indexes=(1, 2, 3), resampling_method="bilinear")
                return bytes(img.render(img_format="PNG"))
            if style.kind == "classes":
                img = src.tile(x, y, z, indexes=1, resampling_method="nearest")
                table = {int(i): tuple(c) for i, c in style.colors.items()}
                return bytes(img.render(img_format="PNG", colormap=table))
            img = src.tile(x, y, z, indexes=1, resampling_method="bilinear")
        except TileOutsideBounds:
            return _EMPTY_PNG
        low, high = style.value_range or (0.0, 1.0)
        img.rescale(in_range=((low, high),))
        return bytes(img.render(img_format="PNG", colormap=cmaps.get(_CONTINUOUS_CMAP)))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:
        match = _TILE_PATH.match(self.path.split("?", 1)[0])
        layer = self.server.layers.get(match.group(1)) if match else None
        if match is None or layer is None:
            self.send_error(404, "no such tile layer")
            return
        z, x, y = (int(v) for v in match.groups()[1:])
        try:
            body = _render_tile(layer, x, y, z)
        except Exception as exc:  # a broken tile must not stop the server
            self.send_error(500, f"tile {z}/{x}/{y}: {exc}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet (tile requests would flood the notebook's stderr)."""


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    layers: dict[str, _Layer]


class TileServer:
    """Serve COGs as XYZ map tiles from 127.0.0.1 (a daemon thread of this process).

    Parameters
    ----------
    port : int
        Port on 127.0.0.1; 0 picks a free one.

    Examples
    --------
    >>> server = tile_server()                          # doctest: +SKIP
    >>> url = server.add("knn_classes.tif")             # doctest: +SKIP
    """

    def __init__(self, port: int = 0) -> None:
        require("rio_tiler", extra="viz", feature="map tiles")
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.layers = {}
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="geoembed-tiles", daemon=True
        )
        self._thread.start()
        self._tmp = Path(tempfile.mkdtemp(prefix="geoembed-tiles-"))
        self._closed = False

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def scratch(self) -> Path:
        """A folder for COGs this server made itself (removed by :meth:`close`)."""
        return self._tmp

    def add(self, path: str | Path, style: MapStyle | None = None) -> tuple[str, MapStyle]:
        """Serve one COG; return its tile URL template and how it is drawn.

        Parameters
        ----------
        path : str or path-like
            The COG (read at each request, so a rewritten file shows its new content).
        style : MapStyle, optional
            Default: read with :func:`map_style`.

        Returns
        -------
        (str, MapStyle)
            ``http://127.0.0.1:PORT/tiles/ID/{z}/{x}/{y}.png`` and the style.
        """
        if self._closed:
            raise GeoembedError("The tile server is closed; call geoembed.viz.tile_server() again.")
        p = Path(path)
        if not p.is_file():
            raise MissingInputError(f"Cannot serve {str(p)!r} as tiles: no such file.")
        style = style or map_style(p)
        key = uuid.uuid4().hex
        self._httpd.layers[key] = _Layer(p, style)
        return f"http://127.0.0.1:{self.port}/tiles/{key}/{{z}}/{{x}}/{{y}}.png", style

    def layers(self) -> Mapping[str, Path]:
        """Return the served files by layer id."""
        return {k: v.path for k, v in self._httpd.layers.items()}

    def close(self) -> None:
        """Stop serving and remove the COGs this server made."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
        shutil.rmtree(self._tmp, ignore_errors=True)


_SERVER: TileServer | None = None
_LOCK = threading.Lock()


def tile_server() -> TileServer:
    """Return this process's tile server, starting it on first use (closed at exit)."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or _SERVER._closed:
            _SERVER = TileServer()
            atexit.register(_SERVER.close)
        return _SERVER
