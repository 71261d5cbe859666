"""STAC Items that describe one geoembed output each (COG, Zarr store, report, model).

An output ``NAME`` gets its Item at ``NAME.stac.json`` beside it (:func:`item_path`):
``map.tif`` → ``map.tif.stac.json``, ``store.zarr`` → ``store.zarr.stac.json``,
``model/`` → ``model.stac.json``. Appending keeps one rule for files and directories,
never collides with another output's Item, and sorts the Item next to its output.

The Item's assets point at the output by a relative href (``./map.tif``), so the pair can
be moved or uploaded together. A raster asset carries the projection extension (EPSG code
or WKT2, transform, shape, native bbox), the raster extension (one entry per band: data
type, nodata, resolution) and, for a class map, the classification extension (class
values, names, titles and colours from the COG's class metadata and colour table). Files
carry the file extension (``file:size``, ``file:checksum`` as a SHA-256 multihash). The
Item's geometry is the output's footprint in WGS84; reports and models have none.
Provenance is in the ``geoembed:*`` properties (:class:`~geoembed.stac.Provenance`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "ITEM_SUFFIX",
    "MEDIA_TYPES",
    "build_item",
    "class_name_token",
    "item_path",
    "multihash_sha256",
    "read_item",
    "write_item",
]

#: what is appended to an output's name to name its Item
ITEM_SUFFIX = ".stac.json"
#: media types of the assets, by file suffix
MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".tiff": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
    ".geoparquet": "application/vnd.apache.parquet",
    ".skops": "application/zip",
    ".onnx": "application/octet-stream",
    ".npz": "application/octet-stream",
    ".npy": "application/octet-stream",
    ".csv": "text/csv",
}
ZARR_MEDIA_TYPE = "application/vnd+zarr"
#: footprint vertices per edge (a reprojected edge is curved)
_DENSIFY = 21
_CLASS_NAME = re.compile(r"[^0-9A-Za-z_-]")
_HASH_BLOCK = 1 << 20


def item_path(target: Path | str) -> Path | str:
    """Return the Item's path (or URL) for ``target``: ``target`` + ``.stac.json``."""
    if isinstance(target, Path):
        return target.with_name(target.name + ITEM_SUFFIX)
    return str(target).rstrip("/") + ITEM_SUFFIX


def multihash_sha256(hexdigest: str) -> str:
    """Return a SHA-256 hex digest as a multihash (the file extension's checksum)."""
    return "1220" + hexdigest


def _open(location: Path | str) -> Any:
    if isinstance(location, str) and "://" in location:
        from geoembed._cloud import filesystem

        return filesystem(location).open(location, "rb")
    return open(location, "rb")


def _file_fields(location: Path | str) -> dict[str, Any]:
    """``file:size`` and ``file:checksum`` (SHA-256 multihash) of one file or object.

    An object in a bucket larger than :data:`~geoembed.stac.provenance.HASH_LIMIT` gets
    its size only: hashing it would download it again.
    """
    import hashlib

    if isinstance(location, str) and "://" in location:
        from geoembed._cloud import filesystem
        from geoembed.stac.provenance import HASH_LIMIT

        fs = filesystem(location)
        fs.invalidate_cache()
        size = int(fs.size(location))
        if size > HASH_LIMIT:
            return {"file:size": size}
    digest, size = hashlib.sha256(), 0
    with _open(location) as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return {"file:size": size, "file:checksum": multihash_sha256(digest.hexdigest())}


def _exists(location: Path | str) -> bool:
    if isinstance(location, str) and "://" in location:
        from geoembed.export.remote import remote_exists

        return remote_exists(location)
    return Path(location).exists()


def _join(location: Path | str, name: str) -> Path | str:
    if isinstance(location, Path):
        return location / name
    return f"{location.rstrip('/')}/{name}"


def _is_zarr(location: Path | str) -> bool:
    return any(_exists(_join(location, n)) for n in ("zarr.json", ".zgroup", ".zarray"))


def _crs_fields(crs: Any) -> dict[str, Any]:
    epsg = crs.to_epsg()
    if epsg:
        return {"proj:code": f"EPSG:{epsg}"}
    return {"proj:code": None, "proj:wkt2": crs.to_wkt()}


def _footprint(crs: Any, bounds: tuple[float, float, float, float]) -> dict[str, Any]:
    """Return the bounds as a WGS84 polygon, edges densified to follow the grid."""
    from rasterio.warp import transform as warp

    left, bottom, right, top = bounds
    t = [i / (_DENSIFY - 1) for i in range(_DENSIFY - 1)]  # each corner once
    xs = (
        [left + (right - left) * f for f in t]
        + [right] * len(t)
        + [right - (right - left) * f for f in t]
        + [left] * len(t)
    )
    ys = (
        [bottom] * len(t)
        + [bottom + (top - bottom) * f for f in t]
        + [top] * len(t)
        + [top - (top - bottom) * f for f in t]
    )
    lon, lat = warp(crs, "EPSG:4326", xs, ys)
    ring = [[round(x, 9), round(y, 9)] for x, y in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _bbox(geometry: Mapping[str, Any] | None) -> list[float] | None:
    if geometry is None:
        return None
    ring = geometry["coordinates"][0]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return [min(lons), min(lats), max(lons), max(lats)]


def _nodata(value: Any) -> Any:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return int(value) if value.is_integer() else value


def class_name_token(name: str) -> str:
    """Return a class name as the classification ``name`` (letters, digits, -, _)."""
    return _CLASS_NAME.sub("_", name) or "class"


def _classes(src: Any) -> list[dict[str, Any]]:
    """Classes of a class map: names from its tags; colours as geoembed's maps show them.

    A colour is the COG's colour table entry, else its ``class_colors`` tag, else
    :func:`geoembed.colors.default_color` (the order :mod:`geoembed.viz` follows).
    """
    from geoembed.colors import decode_class_colors, decode_class_names, default_color

    tags = {**src.tags(), **src.tags(1)}
    if not tags.get("class_names"):
        return []
    names = decode_class_names(tags["class_names"])
    try:
        cmap = {int(k): tuple(v) for k, v in src.colormap(1).items()}
    except ValueError:  # no colour table
        cmap = {}
    tagged = decode_class_colors(tags["class_colors"]) if tags.get("class_colors") else {}
    classes = []
    for value, name in sorted(names.items()):
        r, g, b = (cmap.get(value) or tagged.get(value) or default_color(value))[:3]
        classes.append(
            {
                "value": int(value),
                "name": class_name_token(name),
                "title": name,
                "color_hint": f"{r:02X}{g:02X}{b:02X}",
            }
        )
    return classes


def _raster_asset(location: Path | str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """Asset fields of a GeoTIFF (projection, raster, classification), and its footprint."""
    import rasterio

    from geoembed._cloud import gdal_path

    remote = isinstance(location, str) and "://" in location
    path = gdal_path(str(location)) if remote else str(location)
    # no listing of a bucket "directory" on open: GDAL would cache one that lacks the
    # outputs about to be committed beside this temporary, and later not find them
    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"} if remote else {}
    try:
        with rasterio.Env(GDAL_PAM_ENABLED="NO", **env), rasterio.open(path) as src:
            fields: dict[str, Any] = {}
            geometry = None
            if src.crs is not None:
                fields.update(_crs_fields(src.crs))
                fields["proj:bbox"] = list(src.bounds)
                geometry = _footprint(src.crs, tuple(src.bounds))
            fields["proj:shape"] = [src.height, src.width]
            fields["proj:transform"] = list(src.transform)[:6]
            res = abs(src.transform.a)
            fields["raster:bands"] = [
                {
                    "data_type": src.dtypes[b],
                    **({"nodata": _nodata(src.nodata)} if src.nodata is not None else {}),
                    "spatial_resolution": res,
                    **({"name": src.descriptions[b]} if src.descriptions[b] else {}),
                }
                for b in range(src.count)
            ]
            classes = _classes(src)
            if classes:
                fields["classification:classes"] = classes
            return fields, geometry
    except rasterio.errors.RasterioError:
        return None


def _zarr_asset(location: Path | str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Asset fields of a Zarr store: projection of its grid, one raster band per variable."""
    import xarray as xr

    store: Any = str(location)
    if isinstance(location, str) and "://" in location:
        from geoembed._cloud import filesystem

        store = filesystem(location).get_mapper(location)
    ds = xr.open_zarr(store, decode_coords="all", consolidated=None)
    try:
        fields: dict[str, Any] = {}
        geometry = None
        spatial = [v for v in ds.data_vars if {"y", "x"} <= set(ds[v].dims)]
        if spatial:
            grid = ds[spatial[0]]
            crs = grid.rio.crs
            fields["proj:shape"] = [int(grid.sizes["y"]), int(grid.sizes["x"])]
            fields["proj:transform"] = list(grid.rio.transform())[:6]
            if crs is not None:
                fields.update(_crs_fields(crs))
                bounds = grid.rio.bounds()
                fields["proj:bbox"] = list(bounds)
                geometry = _footprint(crs, bounds)
        fields["raster:bands"] = [
            {
                "name": str(v),
                "data_type": str(ds[v].dtype),
                **(
                    {"nodata": _nodata(ds[v].encoding["_FillValue"])}
                    if ds[v].encoding.get("_FillValue") is not None
                    else {}
                ),
            }
            for v in ds.data_vars
        ]
        fields["geoembed:variables"] = {
            str(v): {"dims": list(ds[v].dims), "shape": list(ds[v].shape)} for v in ds.data_vars
        }
        return fields, geometry
    finally:
        ds.close()


def _directory_files(location: Path | str) -> list[str]:
    """Relative paths of the files in a (small) directory output, sorted."""
    if isinstance(location, str) and "://" in location:
        from geoembed._cloud import filesystem

        fs = filesystem(location)
        fs.invalidate_cache()
        root = fs._strip_protocol(location).rstrip("/") + "/"
        return sorted(k[len(root) :] for k in fs.find(location))
    base = Path(location)
    return sorted(str(p.relative_to(base).as_posix()) for p in base.rglob("*") if p.is_file())


def _roles(what: str, kind: str) -> list[str]:
    if kind == "report":
        return ["metadata"]
    return ["data"]


def _asset(href: str, media_type: str | None, roles: list[str], title: str, fields: Any) -> Any:
    import pystac

    return pystac.Asset(
        href=href, media_type=media_type, roles=roles, title=title, extra_fields=dict(fields)
    )


def build_item(
    location: Path | str,
    *,
    name: str,
    what: str,
    directory: bool,
    properties: Mapping[str, Any],
    created: datetime | None = None,
) -> dict[str, Any]:
    """Build the STAC Item (as a dict) of one finished output.

    Parameters
    ----------
    location : pathlib.Path or str
        Where the output's bytes are now: the staged temporary (path or object URL).
    name : str
        The output's final file or directory name; the assets' hrefs are relative to
        the Item, which lies beside the output (``./NAME``).
    what : str
        What the output is ("class map", "report"...), the asset's title.
    directory : bool
        Whether the output is a directory (Zarr store, model directory).
    properties : mapping
        Extra Item properties (provenance, ``geoembed:*``).
    created : datetime, optional
        The Item's ``datetime`` and ``created`` (default: now, UTC).

    Returns
    -------
    dict
        The Item, as written to ``NAME.stac.json``.
    """
    import pystac

    from geoembed.stac.validate import EXTENSIONS

    when = created or datetime.now(UTC)
    geometry: dict[str, Any] | None = None
    assets: dict[str, Any] = {}
    used: set[str] = set()
    suffix = PurePosixPath(name).suffix.lower()
    if directory and _is_zarr(location):
        fields, geometry = _zarr_asset(location)
        used.update(("proj", "raster"))
        assets["data"] = _asset(f"./{name}", ZARR_MEDIA_TYPE, ["data"], what, fields)
    elif directory:
        for rel in _directory_files(location):
            fields = _file_fields(_join(location, rel))
            media = MEDIA_TYPES.get(PurePosixPath(rel).suffix.lower(), "application/octet-stream")
            assets[rel] = _asset(f"./{name}/{rel}", media, ["data"], f"{what}: {rel}", fields)
            used.add("file")
    else:
        fields = _file_fields(location)
        used.add("file")
        kind = "report" if suffix == ".json" else "data"
        raster = _raster_asset(location) if suffix in (".tif", ".tiff") else None
        media = MEDIA_TYPES.get(suffix, "application/octet-stream")
        if raster is not None:
            extra, geometry = raster
            fields.update(extra)
            used.update(("proj", "raster"))
            if "classification:classes" in extra:
                used.add("classification")
        elif suffix in (".tif", ".tiff"):
            media = "image/tiff"
        assets["data"] = _asset(f"./{name}", media, _roles(what, kind), what, fields)
    item = pystac.Item(
        id=name,
        geometry=geometry,
        bbox=_bbox(geometry),
        datetime=when,
        properties={
            "title": f"geoembed {what}: {name}",
            "created": when.isoformat().replace("+00:00", "Z"),
            "geoembed:output": what,
            **dict(properties),
        },
        stac_extensions=[EXTENSIONS[e] for e in sorted(used)],
    )
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def write_item(item: Mapping[str, Any], location: Path | str) -> None:
    """Write an Item as JSON to a path or an object-store URL (one upload)."""
    text = json.dumps(item, indent=2)
    if isinstance(location, str) and "://" in location:
        from geoembed.export.remote import write_remote_text

        write_remote_text(location, text)
    else:
        Path(location).write_text(text)


def read_item(location: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an Item written by :func:`write_item` (any JSON object)."""
    payload = json.loads(Path(location).read_text())
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    return payload
