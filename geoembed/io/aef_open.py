"""``open_aef``: the public AlphaEarth COGs by bounding box and year, lazily, across UTM zones.

The files are opened with the GeoTIFF reader of :mod:`geoembed.io.geotiff` (windowed reads
through GDAL's virtual file systems: ``/vsigs/``, ``/vsis3/``, ``/vsicurl/`` or a local path),
so only the storage blocks under the requested area are ever read, on the Dask workers,
and the AEF codes are decoded by :mod:`geoembed.io.aef` (``-128`` in any band masks the
pixel; ``sign(q) * (q / 127.5) ** 2``). Bottom-up files (the Source Cooperative copy) give
north-up fields like the others.

Why nearest-neighbour only: an AEF pixel is a unit-length 64-d vector, not a physical
quantity. Bilinear or cubic resampling averages the vectors of neighbouring land covers
into one that belongs to none of them (and is no longer unit length), and spreads masked
pixels; nearest-neighbour keeps every output pixel an embedding the model produced.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from functools import reduce
from itertools import pairwise
from typing import Any

import numpy as np
import xarray as xr

from geoembed._cloud import gdal_path, is_url
from geoembed.errors import DataRequestError, SchemaError
from geoembed.grid import Grid
from geoembed.io.aef_index import AefFile, resolve_source, select_files

__all__ = [
    "BASE_RESOLUTION",
    "is_aef_spec",
    "lonlat_bounds",
    "open_aef",
    "open_aef_field",
    "open_aef_spec",
    "overview_level",
    "parse_aef_spec",
    "utm_crs_of",
]

log = logging.getLogger(__name__)

#: pixel size of the AEF release, in metres
BASE_RESOLUTION = 10.0

Bounds = tuple[float, float, float, float]


def lonlat_bounds(area: Any, *, bbox_crs: Any = None) -> Bounds:
    """Longitude/latitude bounds ``(west, south, east, north)`` of a bbox or geometry.

    Parameters
    ----------
    area : (west, south, east, north), shapely geometry, GeoSeries or GeoDataFrame
        A bbox or geometry; a GeoSeries/GeoDataFrame carries its CRS, anything else is in
        ``bbox_crs``.
    bbox_crs : optional
        CRS of ``area`` (default longitude/latitude, EPSG:4326).

    Raises
    ------
    SchemaError
        For a bbox that is not four numbers with west < east and south < north, or that
        lies outside -180..180 / -90..90 degrees.
    """
    from pyproj import CRS

    if hasattr(area, "to_crs") and hasattr(area, "total_bounds"):
        if area.crs is None:
            raise SchemaError(
                "the geometry given to open_aef() has no CRS; set it, e.g. gdf.set_crs(4326)."
            )
        bbox_crs, bounds = area.crs, tuple(float(v) for v in area.total_bounds)
    elif hasattr(area, "bounds") and hasattr(area, "geom_type"):
        bounds = tuple(float(v) for v in area.bounds)
    else:
        try:
            bounds = tuple(float(v) for v in area)
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"bbox {area!r} is not four numbers (west, south, east, north) or a geometry."
            ) from exc
    if len(bounds) != 4 or not all(math.isfinite(v) for v in bounds):
        raise SchemaError(f"bbox {area!r} must be four finite numbers (west, south, east, north).")
    west, south, east, north = bounds
    if not (west < east and south < north):
        raise SchemaError(
            f"bbox {bounds} is empty or in the wrong order; give west, south, east, north "
            "(west < east, south < north)."
        )
    crs = CRS.from_user_input(bbox_crs) if bbox_crs is not None else None
    if crs is not None and not crs.equals(CRS.from_epsg(4326)):
        from pyproj import Transformer

        tr = Transformer.from_crs(crs, 4326, always_xy=True)
        west, south, east, north = tr.transform_bounds(west, south, east, north, densify_pts=21)
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise SchemaError(
            f"bbox {(west, south, east, north)} is outside longitude -180..180 / latitude "
            "-90..90; is it in another CRS? Say which with bbox_crs=."
        )
    return (west, south, east, north)


def overview_level(path: str, resolution: float | None) -> tuple[int | None, float]:
    """Find the coarsest overview of ``path`` that is no coarser than ``resolution``.

    Returns
    -------
    (level or None, pixel size)
        ``None`` for the full-resolution image.
    """
    import rasterio

    base_path = gdal_path(path) if is_url(path) else path
    with rasterio.open(base_path) as ds:
        res = abs(ds.transform.a)
        if resolution is None or resolution <= res:
            return None, res
        sizes: list[float] = []  # pixel size of each overview, as stored
        for i in range(len(ds.overviews(1))):
            with rasterio.open(base_path, overview_level=i) as ovr:
                sizes.append(abs(ovr.transform.a))
    level, size = None, res
    for i, s in enumerate(sizes):
        if s <= resolution * (1 + 1e-9):
            level, size = i, s
    return level, size


def _window(field: Any, bounds: Bounds, margin: float) -> tuple[slice, slice] | None:
    """Row and column slices of the pixels of ``field`` that touch ``bounds`` (same CRS).

    ``margin`` is in pixels around the bounds, measured from pixel centres (0.5: every
    pixel that intersects them). ``None`` when no pixel does.
    """
    rx, ry = (abs(float(v)) * margin for v in field.rio.resolution())
    x0, y0, x1, y1 = bounds[0] - rx, bounds[1] - ry, bounds[2] + rx, bounds[3] + ry
    xs, ys = field["x"].values, field["y"].values
    ix = np.nonzero((xs >= x0) & (xs <= x1))[0]
    iy = np.nonzero((ys >= y0) & (ys <= y1))[0]
    if ix.size == 0 or iy.size == 0:
        return None
    return slice(int(iy[0]), int(iy[-1]) + 1), slice(int(ix[0]), int(ix[-1]) + 1)


def _aligned(window: slice, step: int) -> tuple[int, ...]:
    """Chunk sizes over ``window`` whose boundaries fall on multiples of ``step``."""
    start, stop = int(window.start), int(window.stop)
    edges = [start, *range((start // step + 1) * step, stop, step), stop]
    return tuple(b - a for a, b in pairwise(edges))


def _open_window(
    path: str,
    bounds: Bounds,
    *,
    margin: float,
    level: int | None,
    chunks: Any,
) -> xr.DataArray | None:
    """Open the pixels of one AEF file under ``bounds`` as a lazy, north-up, decoded field.

    The window is cut from the lazily indexed file before chunking, so each Dask task
    reads only its own window (chunk edges on the file's storage blocks), and the codes
    are decoded by the shared readers' :func:`~geoembed.io._finalize.finalize`.
    """
    import rioxarray

    from geoembed.io._chunks import spatial_chunks
    from geoembed.io._finalize import finalize
    from geoembed.io.geotiff import raster_info
    from geoembed.schema import aef_band_names, feature_band_names

    info = raster_info(path, overview_level=level)
    opts: dict[str, Any] = {} if level is None else {"overview_level": level}
    raw = rioxarray.open_rasterio(
        info.path, lock=False, mask_and_scale=False, cache=False, parse_coordinates=True, **opts
    )
    assert isinstance(raw, xr.DataArray)
    window = _window(raw, bounds, margin)
    if window is None:
        return None
    sy, sx = window
    cy, cx = spatial_chunks(
        chunks,
        height=info.height,
        width=info.width,
        bands=info.count,
        block=info.block,
        source=path,
    )
    part = raw.isel(y=sy, x=sx).chunk({"band": -1, "y": _aligned(sy, cy), "x": _aligned(sx, cx)})
    if part.sizes["y"] > 1 and float(part["y"][0]) < float(part["y"][-1]):
        part = part.isel(y=slice(None, None, -1))  # bottom-up file -> north-up field
    # the window of the file's own grid, north-up (the rows were flipped above)
    grid = Grid(raw.rio.transform(), (raw.sizes["y"], raw.sizes["x"]), info.crs)[sy, sx]
    part = part.rio.write_transform(grid.north_up())
    part.attrs.pop("long_name", None)
    names = info.descriptions
    if not all(names) or len(set(names)) != info.count:
        names = aef_band_names(info.count) if info.count == 64 else feature_band_names(info.count)
    return finalize(
        part,
        source=path,
        quantization="aef",
        nodata=info.nodata,
        crs=info.crs,
        band_names=[str(n) for n in names],
        extra_attrs={"storage_block": list(info.block)},
    )


def _mosaic(parts: Sequence[xr.DataArray], *, what: str) -> xr.DataArray:
    """Put crops of files on one zone's 10 m grid into one lazy field (first file wins)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    rx, ry = (abs(float(v)) for v in first.rio.resolution())
    x_min = min(float(p["x"].min()) for p in parts)
    x_max = max(float(p["x"].max()) for p in parts)
    y_min = min(float(p["y"].min()) for p in parts)
    y_max = max(float(p["y"].max()) for p in parts)
    for p in parts[1:]:
        dx = (float(p["x"][0]) - x_min) / rx
        dy = (y_max - float(p["y"][0])) / ry
        if abs(dx - round(dx)) > 0.01 or abs(dy - round(dy)) > 0.01:
            raise SchemaError(
                f"the AEF files of {what} are not on one pixel grid ({p.attrs.get('source')} is "
                "offset by a fraction of a pixel); pass crs= and resolution= to resample them "
                "onto one grid."
            )
    xs = x_min + rx * np.arange(round((x_max - x_min) / rx) + 1)
    ys = y_max - ry * np.arange(round((y_max - y_min) / ry) + 1)
    cy = max(max(p.chunksizes["y"]) for p in parts)
    cx = max(max(p.chunksizes["x"]) for p in parts)
    aligned = [p.reindex(x=xs, y=ys, method="nearest", tolerance=min(rx, ry) / 4) for p in parts]
    out = reduce(lambda a, b: a.combine_first(b), aligned)
    out = out.chunk({"band": -1, "y": cy, "x": cx})
    out.attrs = dict(first.attrs)
    return out.rio.write_crs(first.rio.crs).rio.write_nodata(np.nan, encoded=False)


def _bounds_in(bounds: Bounds, crs: Any, given: tuple[Any, Bounds] | None) -> Bounds:
    """``bounds`` (lon/lat) in ``crs``; the caller's own bounds when given in that CRS."""
    from pyproj import CRS, Transformer

    target = CRS.from_user_input(crs)
    if given is not None and CRS.from_user_input(given[0]).equals(target):
        return given[1]
    tr = Transformer.from_crs(4326, target, always_xy=True)
    return tr.transform_bounds(*bounds, densify_pts=21)


def _zone_field(
    files: Sequence[AefFile],
    bounds: Bounds,
    *,
    resolution: float | None,
    chunks: Any,
    what: str,
    margin: float = 0.5,
    given: tuple[Any, Bounds] | None = None,
) -> tuple[xr.DataArray | None, float]:
    crs = files[0].crs
    local = _bounds_in(bounds, crs, given)
    parts, size = [], BASE_RESOLUTION
    for f in files:
        level, size = overview_level(f.path, resolution)
        part = _open_window(f.path, local, margin=margin, level=level, chunks=chunks)
        if part is not None:
            parts.append(part)
    if not parts:
        return None, size
    return _mosaic(parts, what=what), size


def _to_grid(
    fields: Sequence[xr.DataArray],
    bounds: Bounds,
    crs: Any,
    resolution: float,
    given: tuple[Any, Bounds] | None = None,
) -> xr.DataArray:
    """Resample fields of several zones onto one grid, nearest-neighbour (see module doc)."""
    from odc.geo.geobox import GeoBox
    from pyproj import CRS

    from geoembed.io.regrid import reproject_nearest

    target = CRS.from_user_input(crs)
    local = _bounds_in(bounds, target, given)
    geobox = GeoBox.from_bbox(local, crs=target.to_wkt(), resolution=resolution)
    # where zones overlap, the one already in the target CRS wins (no resampling there)
    fields = sorted(fields, key=lambda f: not target.equals(f.rio.crs))
    outs = []
    for f in fields:
        outs.append(reproject_nearest(f, geobox))
    out = reduce(lambda a, b: a.combine_first(b), outs) if len(outs) > 1 else outs[0]
    out = out.drop_vars([c for c in out.coords if c not in ("band", "y", "x")])
    out.attrs = dict(fields[0].attrs)
    out = out.rio.write_crs(target).rio.write_nodata(np.nan, encoded=False)
    return out.rename("embedding").transpose("band", "y", "x")


def open_aef(
    area: Any,
    year: int,
    *,
    source: str | os.PathLike[str] = "gcs",
    crs: Any = None,
    resolution: float | None = None,
    bbox_crs: Any = None,
    chunks: Any = None,
) -> Mapping[str, xr.DataArray] | xr.DataArray:
    """Open the AlphaEarth Satellite Embedding COGs of an area and a year, lazily.

    The release's index is read once (only the columns needed; remote indexes are cached
    in ``~/.cache/geoembed/aef``, or ``$GEOEMBED_CACHE/aef``), the files that intersect the
    area are selected and opened with windowed reads: nothing but metadata is read here,
    and each Dask task reads the blocks of its chunk.

    Parameters
    ----------
    area : (west, south, east, north) or geometry
        Bounding box in longitude/latitude (unless ``bbox_crs`` says otherwise), or a
        shapely geometry / GeoSeries / GeoDataFrame (its bounds are used).
    year : int
        Year of the annual embeddings (2017-2025).
    source : {"gcs", "source-coop"} or path or URL, default "gcs"
        The Google bucket, the Source Cooperative copy (bottom-up COGs, read anonymously
        over HTTPS), or a mirror (a directory or ``gs://``/``s3://``/``https://`` prefix laid
        out like the release below ``satellite_embedding/v1/annual/``, with
        ``aef_index.parquet`` at its root; index paths under the public prefix or relative
        ones are resolved against the mirror).
    crs : optional
        Return one field on a grid in this CRS (e.g. ``"EPSG:32616"``), the zones resampled
        with nearest-neighbour (never interpolated: see the module documentation).
    resolution : float, optional
        Pixel size in metres (of ``crs``'s units with ``crs``). Coarser than 10 m reads the
        coarsest overview that is no coarser (a quick look), resampled nearest-neighbour to
        exactly ``resolution`` when it is not a power-of-two multiple of 10 m.
    bbox_crs : optional
        CRS of a bbox ``area`` (default EPSG:4326).
    chunks : optional
        Spatial chunks, as :func:`geoembed.io.open_embeddings` takes them.

    Returns
    -------
    dict of str to xarray.DataArray, or xarray.DataArray
        Without ``crs``: one canonical field per UTM zone (keys like ``"16N"``), each on
        its zone's grid, north-up. With ``crs``: one field on that grid.

    Raises
    ------
    SchemaError, DataRequestError, MissingInputError
        Before any task runs: a bad bbox, a year or area without files, a missing mirror.

    Examples
    --------
    >>> fields = open_aef((-88.78, 44.29, -88.76, 44.30), 2024)  # doctest: +SKIP
    >>> fields["16N"].sizes  # doctest: +SKIP
    Frozen({'band': 64, 'y': 112, 'x': 160})
    """
    bounds = lonlat_bounds(area, bbox_crs=bbox_crs)
    given: tuple[Any, Bounds] | None = None
    if bbox_crs is not None and not hasattr(area, "geom_type") and not hasattr(area, "crs"):
        w, s, e, n = (float(v) for v in area)
        given = (bbox_crs, (w, s, e, n))
    if resolution is not None and not (float(resolution) > 0):
        raise SchemaError(f"resolution={resolution!r} must be a positive pixel size.")
    src = resolve_source(source)
    files = select_files(src, int(year), bounds)
    zones: dict[str, list[AefFile]] = {}
    for f in files:
        zones.setdefault(f.zone, []).append(f)
    what = f"aef:{int(year)}:{','.join(f'{v:g}' for v in bounds)}"
    fields: dict[str, xr.DataArray] = {}
    for zone, zone_files in zones.items():
        field, size = _zone_field(
            zone_files,
            bounds,
            resolution=None if crs is not None and resolution is None else resolution,
            chunks=chunks,
            what=f"zone {zone}",
            # resampled later: a pixel more, so that edge pixels have their nearest source
            margin=0.5 if crs is None and resolution is None else 1.5,
            given=given,
        )
        if field is None:
            continue
        field.attrs.update({"source": f"{what} (zone {zone})", "aef_year": int(year)})
        if crs is None and resolution is not None and not math.isclose(size, resolution):
            field = _to_grid([field], bounds, field.rio.crs, float(resolution), given)
        fields[zone] = field
    if not fields:
        raise DataRequestError(
            f"The AEF files of {year} that {src.name!r} lists for {bounds} hold no pixel "
            "centre inside the bbox; enlarge it."
        )
    if crs is None:
        return fields
    out = _to_grid(list(fields.values()), bounds, crs, float(resolution or BASE_RESOLUTION), given)
    out.attrs["source"] = what
    return out


def utm_crs_of(bounds: Bounds) -> str:
    """Return the WGS84 / UTM CRS (``EPSG:326zz`` / ``EPSG:327zz``) of the bbox's centre."""
    lon = (bounds[0] + bounds[2]) / 2
    lat = (bounds[1] + bounds[3]) / 2
    zone = min(60, int((lon + 180) // 6) + 1)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def open_aef_field(
    area: Any,
    year: int,
    *,
    source: str | os.PathLike[str] = "gcs",
    crs: Any = None,
    resolution: float | None = None,
    bbox_crs: Any = None,
    chunks: Any = None,
) -> xr.DataArray:
    """Open an AEF area as one field (what the command line and ``aef:`` inputs use).

    Like :func:`open_aef`, but always one field: the zone's own grid when the area lies in
    one UTM zone, else (without ``crs``) the UTM zone of the area's centre, the other zones
    resampled nearest-neighbour onto it.
    """
    kwargs: dict[str, Any] = {"source": source, "bbox_crs": bbox_crs, "chunks": chunks}
    if crs is not None:
        out = open_aef(area, year, crs=crs, resolution=resolution, **kwargs)
        assert isinstance(out, xr.DataArray)
        return out
    fields = open_aef(area, year, resolution=resolution, **kwargs)
    assert not isinstance(fields, xr.DataArray)
    if len(fields) == 1:
        return next(iter(fields.values()))
    target = utm_crs_of(lonlat_bounds(area, bbox_crs=bbox_crs))
    log.info("the area spans the UTM zones %s; resampling them onto %s", sorted(fields), target)
    out = open_aef(area, year, crs=target, resolution=resolution, **kwargs)
    assert isinstance(out, xr.DataArray)
    return out


#: spelling of an AEF input: ``aef:YEAR:W,S,E,N`` with optional ``?source=...&crs=...``
SPEC_PREFIX = "aef:"
_SPEC_KEYS = ("source", "crs", "resolution", "bbox_crs")


def is_aef_spec(source: Any) -> bool:
    """Whether ``source`` is an ``aef:YEAR:W,S,E,N[?...]`` input."""
    return isinstance(source, str) and source.lower().startswith(SPEC_PREFIX)


def parse_aef_spec(spec: str) -> tuple[int, Bounds, dict[str, Any]]:
    """Parse ``aef:YEAR:W,S,E,N[?source=S&crs=C&resolution=R&bbox_crs=B]``.

    ``source`` defaults to ``$GEOEMBED_AEF_SOURCE``, else ``"gcs"``.

    Returns
    -------
    (year, (west, south, east, north), options for :func:`open_aef_field`)

    Raises
    ------
    SchemaError
        Naming the part that cannot be read and the expected spelling.
    """
    from urllib.parse import parse_qsl

    usage = (
        f"{spec!r} is not an AEF input; write aef:YEAR:WEST,SOUTH,EAST,NORTH (degrees), "
        "optionally followed by ?source=gcs|source-coop|MIRROR&crs=EPSG:....&resolution=M, "
        "e.g. aef:2024:-88.78,44.29,-88.76,44.30"
    )
    body, _, query = spec[len(SPEC_PREFIX) :].partition("?")
    year_text, _, bbox_text = body.partition(":")
    try:
        year = int(year_text)
        bounds = tuple(float(v) for v in bbox_text.split(","))
    except ValueError as exc:
        raise SchemaError(usage) from exc
    if len(bounds) != 4:
        raise SchemaError(usage)
    options: dict[str, Any] = {"source": os.environ.get("GEOEMBED_AEF_SOURCE") or "gcs"}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _SPEC_KEYS:
            raise SchemaError(f"{usage} ({key!r} is not one of {', '.join(_SPEC_KEYS)})")
        options[key] = float(value) if key == "resolution" else value
    return year, (bounds[0], bounds[1], bounds[2], bounds[3]), options


def open_aef_spec(spec: str, *, chunks: Any = None) -> xr.DataArray:
    """Open an ``aef:YEAR:W,S,E,N[?...]`` input as one field (see :func:`parse_aef_spec`)."""
    year, bounds, options = parse_aef_spec(spec)
    field = open_aef_field(bounds, year, chunks=chunks, **options)
    field.attrs["source"] = spec
    return field
