"""The pixel grid of a field: CRS, affine transform and shape, as one frozen value.

:class:`Grid` is the only grid implementation in geoembed: labels map points and polygons
to pixels with it, training rasterises labels on it, ``viz`` and ``export`` take their
north-up transforms from it and inference builds its strided output coordinates with it.

Built on odc-geo's :class:`~odc.geo.geobox.GeoBox`
---------------------------------------------------
A ``Grid`` wraps a ``GeoBox`` (``grid.geobox``) rather than re-implementing one: the
GeoBox holds the CRS, the affine transform and the shape, and gives equality, cropping
(``grid[y0:y1, x0:x1]``), decimation (its ``zoom_out``) and bounds. It fits bottom-up
fields: it keeps the affine exactly as given (positive y-resolution stays positive, the
orientation as read), and cropping and decimation are exact affine products, the same
products the COG writer and the AEF reader computed before. It is wrapped, not used
bare, because geoembed needs pixel semantics of its own that must not change: the
half-open :meth:`Grid.index` of points, :meth:`Grid.centres`, :meth:`Grid.north_up` for
writers (GeoTIFFs and rasterisation are north-up, so a bottom-up grid is flipped there),
NumPy-style clipping and steps in slicing (GeoBox extends a crop past the edge and has no
steps), a token that does not depend on how the CRS was spelt, and point reprojection
with pyproj (``always_xy``).

The transform of a field is :meth:`Grid.of`: first coordinate and first step, as
:func:`geoembed.schema.resolution` defines the pixel size (what labels always used).
Where earlier code derived it otherwise (rioxarray's recalculated transform, spacing
``span / (n - 1)``, in the COG writer and strided inference outputs; the last row's
coordinate for training's bottom-up grids) results are bit-identical whenever the
coordinates are exactly spaced (grids on whole metres, every AEF file); otherwise the
transforms differ by the rounding of the coordinates, about one ulp of the origin per
pixel (``tests/test_grid.py`` pins both cases).

Nothing here reads pixels; the module depends only on the data-model layer
(:mod:`geoembed.schema` re-exports :class:`Grid`, and is imported lazily here).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

from geoembed.errors import DimensionError

__all__ = ["Grid"]


def _shape_of(field: xr.DataArray) -> tuple[int, int]:
    for dim in ("y", "x"):
        if dim not in field.dims:
            raise DimensionError(
                f"{field.name or 'the array'} has dims {tuple(field.dims)}; a grid needs "
                "'y' and 'x' dimensions (use geoembed.schema.to_canonical)."
            )
    return int(field.sizes["y"]), int(field.sizes["x"])


class Grid:
    """Pixel grid of a field: CRS, affine transform (as stored) and ``(height, width)``.

    Parameters
    ----------
    transform : affine.Affine
        Transform of pixel ``(col, row)`` edges, in the orientation the field stores its
        rows: ``e < 0`` for north-up, ``e > 0`` for bottom-up.
    shape : (int, int)
        ``(height, width)`` in pixels.
    crs : optional
        Any CRS odc-geo understands (rasterio or pyproj CRS, ``"EPSG:32616"``), or None.

    Notes
    -----
    Frozen: every operation returns a new grid. Two grids are equal (and tokenize the
    same) when CRS, transform and shape are equal.
    """

    __slots__ = ("_shape", "geobox")
    geobox: GeoBox
    _shape: tuple[int, int]

    def __init__(self, transform: Affine, shape: tuple[int, int], crs: Any = None) -> None:
        height, width = (int(n) for n in shape)
        object.__setattr__(self, "geobox", GeoBox((height, width), transform, crs))
        object.__setattr__(self, "_shape", (height, width))

    @classmethod
    def from_geobox(cls, geobox: GeoBox) -> Grid:
        """Grid of an odc-geo ``GeoBox``."""
        grid = cls.__new__(cls)
        object.__setattr__(grid, "geobox", geobox)
        object.__setattr__(grid, "_shape", (int(geobox.shape[0]), int(geobox.shape[1])))
        return grid

    @classmethod
    def of(cls, field: xr.DataArray) -> Grid:
        """Grid of ``field``: pixel-centre ``x``/``y`` coordinates and ``field.rio.crs``.

        The pixel size is :func:`geoembed.schema.resolution` (first step of the
        coordinates, signed as stored; the stored transform for a 1-pixel axis) and the
        origin is the first coordinate minus half a pixel. Regular spacing is assumed.
        """
        from geoembed.schema import resolution

        height, width = _shape_of(field)
        dx, dy = resolution(field)
        x0 = float(field["x"].values[0])
        y0 = float(field["y"].values[0])
        transform = Affine(dx, 0.0, x0 - dx / 2.0, 0.0, dy, y0 - dy / 2.0)
        return cls(transform, (height, width), field.rio.crs)

    # --- the value -------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Grid is frozen; cannot set {name!r}.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self.geobox == other.geobox

    def __hash__(self) -> int:
        return hash(self.__dask_tokenize__())

    def __repr__(self) -> str:
        t = self.transform
        crs = self.crs
        return (
            f"Grid(shape={self.shape}, transform=({t.a!r}, {t.b!r}, {t.c!r}, {t.d!r}, "
            f"{t.e!r}, {t.f!r}), crs={_crs_key(crs)!r})"
        )

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # GeoBox's own token uses str(crs), which is "EPSG:..." or a WKT depending on how
        # the CRS was given; the EPSG code (else the WKT) keeps equal grids' tokens equal
        return ("geoembed.grid.Grid", _crs_key(self.crs), *self.shape, *self.transform[:6])

    def __reduce__(self) -> tuple[Any, ...]:
        return (Grid.from_geobox, (self.geobox,))

    @property
    def transform(self) -> Affine:
        """Affine transform of pixel edges, in the stored row order."""
        return self.geobox.affine

    @property
    def crs(self) -> Any:
        """CRS (an odc-geo ``CRS``: ``.to_wkt()``, ``.epsg``, ``.proj``), or None."""
        return self.geobox.crs

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self._shape

    @property
    def height(self) -> int:
        """Number of rows."""
        return self._shape[0]

    @property
    def width(self) -> int:
        """Number of columns."""
        return self._shape[1]

    @property
    def dx(self) -> float:
        """Signed pixel width."""
        return float(self.transform.a)

    @property
    def dy(self) -> float:
        """Signed pixel height (negative when north-up)."""
        return float(self.transform.e)

    @property
    def left(self) -> float:
        """Outer edge of column 0 (``x`` of its left side when ``dx > 0``)."""
        return float(self.transform.c)

    @property
    def top(self) -> float:
        """Outer edge of row 0: northern when north-up, southern when bottom-up."""
        return float(self.transform.f)

    @property
    def bottom_up(self) -> bool:
        """Whether rows run south to north (positive y-resolution)."""
        return self.dy > 0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the pixel edges, in the grid's CRS."""
        b = self.geobox.boundingbox
        return float(b.left), float(b.bottom), float(b.right), float(b.top)

    # --- cropping and strides --------------------------------------------------------

    def __getitem__(self, roi: tuple[slice, slice]) -> Grid:
        """``grid[y0:y1, x0:x1]``: the grid of ``field[..., y0:y1, x0:x1]``.

        NumPy's slicing rules (negative indices count from the end, stops past the end are
        clipped). A positive step ``s`` then decimates: ``grid[a:b:s, c:d:s]`` is
        ``grid[a:b, c:d].decimate(s)`` (different steps per axis are allowed).
        """
        if not (isinstance(roi, tuple) and len(roi) == 2):
            raise TypeError("index a Grid with two slices: grid[y0:y1, x0:x1].")
        ys, xs = roi
        if not (isinstance(ys, slice) and isinstance(xs, slice)):
            raise TypeError("index a Grid with two slices: grid[y0:y1, x0:x1].")
        sy, sx = ys.step or 1, xs.step or 1
        if sy < 1 or sx < 1:
            raise ValueError(f"Grid slice steps must be positive, got {sy} and {sx}.")
        h, w = self.shape
        y0, y1, _ = ys.indices(h)
        x0, x1, _ = xs.indices(w)
        cropped = self.geobox[y0 : max(y0, y1), x0 : max(x0, x1)]
        grid = Grid.from_geobox(cropped)
        return grid if sy == sx == 1 else grid._strided(sy, sx)

    def _strided(self, sy: int, sx: int) -> Grid:
        if sy == sx:
            return Grid.from_geobox(self.geobox.zoom_out(sy))
        h, w = self.shape
        shape = (max(1, math.ceil(h / sy)), max(1, math.ceil(w / sx)))
        return Grid(self.transform * Affine.scale(sx, sy), shape, self.crs)

    def decimate(self, stride: int) -> Grid:
        """Grid of ``stride`` x ``stride`` pixel blocks from the corner of pixel ``(0, 0)``.

        The same origin, pixels ``stride`` times larger, ``ceil(n / stride)`` of them (the
        last block may hang over the far edge): the grid of an image decimated with
        ``field[..., ::s, ::s]`` (pixel ``i`` stands for source pixels ``s*i..s*i+s-1``)
        or of a model output with stride ``s``. Its pixel centres are the centres of the
        blocks, not the coordinates of the kept pixels.
        """
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}.")
        return self if int(stride) == 1 else self._strided(int(stride), int(stride))

    def with_shape(self, shape: tuple[int, int]) -> Grid:
        """Return a grid with the same CRS and transform and another ``(height, width)``."""
        return Grid(self.transform, shape, self.crs)

    # --- pixels and points -----------------------------------------------------------

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row and column of each point, and whether it falls inside the grid.

        Half-open pixels: a point on the edge shared by two pixels belongs to the one with
        the larger index, so a point exactly on the left edge of column 0 (or the top edge
        of row 0, i.e. its edge at ``top``) is inside, and a point exactly on the far edge
        (right of the last column, beyond the last row) is outside. Points are never
        snapped to the nearest pixel.
        """
        fc = (np.asarray(x, dtype=np.float64) - self.left) / self.dx
        fr = (np.asarray(y, dtype=np.float64) - self.top) / self.dy
        finite = np.isfinite(fc) & np.isfinite(fr)
        col = np.floor(np.where(finite, fc, -1.0))
        row = np.floor(np.where(finite, fr, -1.0))
        inside = finite & (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        return row.astype(np.int64), col.astype(np.int64), inside

    def centres(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """``(n, 2)`` float64 pixel-centre ``(x, y)`` coordinates of pixels ``(row, col)``."""
        xs = self.left + (np.asarray(col) + 0.5) * self.dx
        ys = self.top + (np.asarray(row) + 0.5) * self.dy
        return np.column_stack([xs, ys]).astype(np.float64)

    def coords(self) -> dict[str, np.ndarray]:
        """Pixel-centre ``{"y": ..., "x": ...}`` coordinates (float64), in the stored order."""
        t = self.transform
        xs = t.c + t.a * (np.arange(self.width) + 0.5)
        ys = t.f + t.e * (np.arange(self.height) + 0.5)
        return {"y": ys, "x": xs}

    def north_up(self) -> Affine:
        """North-up transform of the grid, for writers and rasterisation.

        The grid's own transform when it is north-up. For a bottom-up grid, the transform
        of its rows in reverse order (flip the rows of the data to match).
        """
        t = self.transform
        if t.e <= 0:
            return t
        return Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + self.height * t.e)

    def north_up_window_transform(self, row0: int, col0: int, nrows: int) -> Affine:
        """North-up transform of the window ``rows row0..row0+nrows`` from ``col0``.

        For a bottom-up grid the window's rows are then in reverse order (flip them).
        """
        x_left = self.left + col0 * self.dx
        if self.dy < 0:
            y_top = self.top + row0 * self.dy
        else:
            y_top = self.top + (row0 + nrows) * self.dy
        return Affine(self.dx, 0.0, x_left, 0.0, -abs(self.dy), y_top)

    def reproject_points(self, x: Any, y: Any, crs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Points given in ``crs``, as ``(x, y)`` float64 arrays in the grid's CRS.

        Axis order is always ``(x, y)`` = (easting, northing) or (longitude, latitude).
        """
        return _transform_points(x, y, crs, self._crs_or_raise())

    def points_to(self, x: Any, y: Any, crs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Points given in the grid's CRS, as ``(x, y)`` float64 arrays in ``crs``."""
        return _transform_points(x, y, self._crs_or_raise(), crs)

    def _crs_or_raise(self) -> Any:
        if self.crs is None:
            from geoembed.errors import MissingCRSError

            raise MissingCRSError(
                "The grid has no CRS, so points cannot be reprojected; write one on the field "
                "with da.rio.write_crs('EPSG:...')."
            )
        return self.crs


def _crs_key(crs: Any) -> str | None:
    if crs is None:
        return None
    epsg = crs.epsg
    return f"EPSG:{epsg}" if epsg is not None else str(crs.to_wkt())


def _transform_points(x: Any, y: Any, src: Any, dst: Any) -> tuple[np.ndarray, np.ndarray]:
    from odc.geo.crs import norm_crs_or_error

    src_crs, dst_crs = norm_crs_or_error(src), norm_crs_or_error(dst)
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if src_crs == dst_crs:
        return xs.copy(), ys.copy()
    from pyproj import Transformer

    tr = Transformer.from_crs(src_crs.proj, dst_crs.proj, always_xy=True)
    ox, oy = tr.transform(xs, ys)
    return np.asarray(ox, dtype=np.float64), np.asarray(oy, dtype=np.float64)
