"""Write class maps and continuous rasters as validated Cloud-Optimized GeoTIFFs.

How a write works (memory bounded by the chunk size, never by the scene size):

1. Everything that can be checked without pixels is checked first (dims, dtype, CRS,
   nodata, colours, class names, the output path); errors name the input and the fix.
2. One Dask task per chunk writes that chunk as a small tiled GeoTIFF ("part") into a
   hidden temporary directory next to the target, plus the chunk's overview levels
   (MODE for class maps, AVERAGE for continuous rasters; see
   :mod:`geoembed.export.overviews`) when the chunks line up with the overview grid.
   Each part has exactly one writer, so no lock is needed and chunks are encoded in
   parallel on all workers; parts are written to a temporary name and renamed, so a task
   that Dask re-runs rewrites the same file.
3. One final task mosaics the parts through VRTs and makes the COG with GDAL's COG driver
   (which builds the overviews itself when the chunks do not line up), validates it with
   ``rio_cogeo.cogeo.cog_validate`` (through :mod:`geoembed.export.cog_layout`) and
   against the expected metadata, then moves it to the target with :func:`os.replace`.
   The temporary directory is removed whether the write succeeds or fails, so a failure
   leaves nothing at the target.

For a ``gs://`` or ``s3://`` target the workers share no disk (GKE pods): each part is
encoded in the worker's own temporary directory and uploaded under a temporary key prefix
next to the target; the final task downloads the parts one by one (memory bounded by the
chunk size, disk by the output size), builds and validates the same COG, uploads it in one
upload (the object appears only complete) and deletes the temporary prefix. Local and
object-store targets get byte-identical files.

Class names are stored as JSON (``{"0": "water", ...}``) in the ``class_names`` tag of
the dataset and of band 1; read them back with :func:`read_class_names`, or with
``json.loads(rasterio.open(path).tags(1)["class_names"])``. GeoTIFF colour tables hold
RGB only (alpha is not stored; the nodata entry reads back transparent).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed._cloud import filesystem
from geoembed._threads import gdal_threads
from geoembed._version import __version__
from geoembed.colors import (
    decode_class_colors,
    decode_class_names,
    encode_class_colors,
    encode_class_names,
)
from geoembed.errors import (
    DimensionError,
    DTypeError,
    MissingCRSError,
    OutputError,
    OutputValidationError,
    SchemaError,
)
from geoembed.export.atomic import (
    check_output_path,
    disk_full_error,
    is_remote,
    remove_path,
    replace_path,
    temp_sibling,
)
from geoembed.export.remote import (
    check_remote_output,
    remote_exists,
    remote_remove,
    remote_temp_sibling,
)
from geoembed.schema import CLASS_NODATA

log = logging.getLogger(__name__)

__all__ = ["read_class_names", "write_cog"]

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
_DEFAULT_CHUNK = 2048
#: parts are temporary and read once by the COG build: small pixels (class maps) are
#: stored raw (fastest); wider ones with fast ZSTD to bound the temporary disk space
_PART_RAW_MAX_BYTES = 2
_PART_OPTIONS: dict[str, Any] = {"compress": "zstd", "zstd_level": 1}


@dataclass(frozen=True)
class _Plan:
    """Everything the write tasks need: plain values only, so it pickles to workers."""

    target: str
    tmpdir: str
    height: int
    width: int
    count: int
    dtype: str
    crs_wkt: str
    transform: tuple[float, ...]
    nodata: float | int | None
    resampling: str
    blocksize: int
    compress: str
    predictor: bool
    overwrite: bool
    scale: float | None = None
    offset: float | None = None
    descriptions: tuple[str, ...] | None = None
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    class_names: dict[int, str] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    blocks: tuple[tuple[int, int, int, int], ...] = ()
    #: overview factors computed chunk by chunk; empty: GDAL builds the overviews
    factors: tuple[int, ...] = ()


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
    """North-up affine transform of the output and whether the input runs bottom-up."""
    from affine import Affine

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
    bottom_up = t.e > 0
    if bottom_up:
        t = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * da.sizes["y"])
    return t, bottom_up


def _to_dask(da: xr.DataArray, blocksize: int) -> dsa.Array:
    """Dask array of the output, with chunks no smaller than a COG tile.

    Chunks smaller than the tile size (which would make many tiny parts) are merged into
    chunks of ``_DEFAULT_CHUNK`` rounded to whole tiles; the leading axis is one chunk.
    """
    data = da.data
    if not isinstance(data, dsa.Array):
        chunks = (-1,) * (da.ndim - 2) + (_DEFAULT_CHUNK, _DEFAULT_CHUNK)
        data = dsa.from_array(np.asarray(data), chunks=chunks)
    target = max(blocksize, (_DEFAULT_CHUNK // blocksize) * blocksize)
    new: dict[int, int] = {}
    if data.ndim == 3 and len(data.chunks[0]) > 1:
        new[0] = -1
    for axis in (data.ndim - 2, data.ndim - 1):
        sizes = data.chunks[axis]
        if len(sizes) > 1 and min(sizes[:-1]) < blocksize:
            new[axis] = target
    return data.rechunk(new) if new else data


def _chunk_overviews(
    chunks: tuple[tuple[int, ...], ...], height: int, width: int, blocksize: int, resampling: str
) -> tuple[int, ...]:
    """Overview factors to compute chunk by chunk, or () to let GDAL build them."""
    from geoembed.export.overviews import chunks_aligned, overview_factors

    factors = overview_factors(height, width, blocksize)
    if not factors or resampling not in ("mode", "average", "nearest"):
        return ()
    return factors if chunks_aligned(chunks, factors[-1]) else ()


def _block_starts(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[int, int, int, int]]:
    ys = np.cumsum((0, *chunks[-2]))
    xs = np.cumsum((0, *chunks[-1]))
    return [
        (int(ys[i]), int(xs[j]), int(chunks[-2][i]), int(chunks[-1][j]))
        for i in range(len(chunks[-2]))
        for j in range(len(chunks[-1]))
    ]


def _part_name(row: int, col: int, factor: int = 1) -> str:
    level = f"-o{factor}" if factor > 1 else ""
    return f"part-r{row}-c{col}{level}.tif"


def _prepare(plan: _Plan) -> str:
    """Create the temporary directory (the first task of the write; none for a URL)."""
    if not is_remote(plan.tmpdir):
        os.makedirs(plan.tmpdir, exist_ok=True)
    return plan.tmpdir


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if is_remote(base) else os.path.join(base, name)


def _write_tif(path: str, data: np.ndarray, plan: _Plan, transform: Any) -> None:
    """Write a (count, h, w) array as a tiled GeoTIFF under a temporary name, then rename.

    A URL ``path`` is encoded in this process's temporary directory and uploaded (a
    re-run task uploads the same bytes to the same key).
    """
    import rasterio

    if is_remote(path):
        local = tempfile.mkdtemp(prefix="geoembed-part-")
        try:
            part = os.path.join(local, path.rpartition("/")[2])
            _write_tif(part, data, plan, transform)
            filesystem(path).put_file(part, path)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": plan.dtype,
        "crs": plan.crs_wkt,
        "transform": transform,
        "nodata": plan.nodata,
        "interleave": "band",
    }
    if data.shape[0] * np.dtype(plan.dtype).itemsize > _PART_RAW_MAX_BYTES:
        profile.update(_PART_OPTIONS)
    if min(data.shape[1:]) >= plan.blocksize:
        profile.update(tiled=True, blockxsize=plan.blocksize, blockysize=plan.blocksize)
    try:
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.ascontiguousarray(data, dtype=plan.dtype))
        os.replace(tmp, path)
    except BaseException as exc:
        full = disk_full_error(os.path.dirname(path), exc)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full is not None:
            raise full from exc
        raise


def _write_part(block: np.ndarray, ready: str, plan: _Plan, row: int, col: int) -> tuple[str, ...]:
    """Write one chunk (and its overview levels) as small GeoTIFFs; return their names.

    Each file is written under a temporary name and renamed, so a task that Dask runs
    twice rewrites the same files.
    """
    from affine import Affine

    from geoembed.export.overviews import pyramid

    data = block if block.ndim == 3 else block[np.newaxis]
    base = Affine(*plan.transform[:6])
    names = _part_names(plan, row, col)
    levels = pyramid(data, plan.factors, plan.resampling, plan.nodata)
    for f, name, level in zip(plan.factors, names[1:], levels):
        t = base * Affine.translation(col, row) * Affine.scale(f)
        _write_tif(_join(ready, name), level, plan, t)
    # the full-resolution part last: a resumed write reuses a chunk only when all are there
    _write_tif(_join(ready, names[0]), data, plan, base * Affine.translation(col, row))
    return names


def _part_names(plan: _Plan, row: int, col: int) -> tuple[str, ...]:
    """Names of the parts of the chunk at ``(row, col)``: full resolution, then overviews."""
    return (_part_name(row, col), *(_part_name(row, col, f) for f in plan.factors))


def _resumable(plan: _Plan, data: dsa.Array) -> tuple[_Plan, set[str]]:
    """Return the plan with its resumable parts directory, and the parts already there."""
    from dask.base import tokenize

    from geoembed.export.resume import listing, resume_sibling

    settings = dataclasses.replace(plan, target="", tmpdir="", overwrite=False)
    token = tokenize(data.name, settings)[:16]
    tmpdir = resume_sibling(plan.target, f"cog-{token}")
    return dataclasses.replace(plan, tmpdir=tmpdir), listing(tmpdir)


def _fmt(value: float | int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)


def _vrt_xml(plan: _Plan, factor: int = 1, overviews: Sequence[str] = ()) -> str:
    """VRT mosaic of the parts of one level (``factor`` 1 = full resolution)."""
    width, height = math.ceil(plan.width / factor), math.ceil(plan.height / factor)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = plan.crs_wkt
    t = plan.transform
    gdal_gt = (t[2], t[0] * factor, t[1], t[5], t[3], t[4] * factor)
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in gdal_gt)
    if plan.tags and factor == 1:
        md = ET.SubElement(root, "Metadata")
        for k, v in plan.tags.items():
            ET.SubElement(md, "MDI", key=k).text = v
    for band in range(1, plan.count + 1):
        rb = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[plan.dtype], band=str(band))
        if plan.descriptions is not None:
            ET.SubElement(rb, "Description").text = plan.descriptions[band - 1]
        if plan.nodata is not None:
            ET.SubElement(rb, "NoDataValue").text = _fmt(plan.nodata)
        if plan.scale is not None:
            ET.SubElement(rb, "Scale").text = repr(float(plan.scale))
            ET.SubElement(rb, "Offset").text = repr(float(plan.offset or 0.0))
        if band == 1 and plan.class_names and factor == 1:
            md = ET.SubElement(rb, "Metadata")
            ET.SubElement(md, "MDI", key="class_names").text = plan.tags["class_names"]
        if band == 1 and plan.colormap:
            ET.SubElement(rb, "ColorInterp").text = "Palette"
            ct = ET.SubElement(rb, "ColorTable")
            top = max(plan.colormap)
            if plan.nodata is not None and 0 <= plan.nodata < 65536:
                top = max(top, int(plan.nodata))
            for i in range(top + 1):
                c = plan.colormap.get(i, (0, 0, 0, 0))
                ET.SubElement(ct, "Entry", c1=str(c[0]), c2=str(c[1]), c3=str(c[2]), c4=str(c[3]))
        for row, col, h, w in plan.blocks:
            src = ET.SubElement(rb, "SimpleSource")
            ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = _part_name(
                row, col, factor
            )
            ET.SubElement(src, "SourceBand").text = str(band)
            h, w = math.ceil(h / factor), math.ceil(w / factor)
            y, x = row // factor, col // factor
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
            ET.SubElement(src, "DstRect", xOff=str(x), yOff=str(y), xSize=str(w), ySize=str(h))
        for name in overviews:
            ov = ET.SubElement(rb, "Overview")
            ET.SubElement(ov, "SourceFilename", relativeToVRT="1").text = name
            ET.SubElement(ov, "SourceBand").text = str(band)
    return ET.tostring(root, encoding="unicode")


def _same_nodata(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(float(a)) or math.isnan(float(b)):
        return math.isnan(float(a)) and math.isnan(float(b))
    return float(a) == float(b)


def _validate(path: str, plan: _Plan) -> None:
    """Check COG layout and that the metadata are what was asked for."""
    import rasterio
    from rasterio.crs import CRS

    from geoembed.export.cog_layout import cog_check

    valid, errors, _warnings = cog_check(path)
    if not valid:
        raise OutputValidationError(
            f"The COG built for {plan.target!r} failed validation: {'; '.join(errors)}."
        )
    problems = []
    with rasterio.open(path) as src:
        if (src.height, src.width, src.count) != (plan.height, plan.width, plan.count):
            problems.append(f"shape {(src.count, src.height, src.width)}")
        if src.dtypes[0] != plan.dtype:
            problems.append(f"dtype {src.dtypes[0]}")
        if src.crs is None or src.crs != CRS.from_wkt(plan.crs_wkt):
            problems.append(f"CRS {src.crs}")
        if not np.allclose(tuple(src.transform)[:6], plan.transform[:6], rtol=0, atol=1e-6):
            problems.append(f"transform {tuple(src.transform)[:6]}")
        if not _same_nodata(src.nodata, plan.nodata):
            problems.append(f"nodata {src.nodata}")
        if plan.colormap:
            try:
                cmap = src.colormap(1)
            except ValueError:
                cmap = {}
            # TIFF colour maps hold RGB only (GDAL reports alpha 255, 0 for nodata)
            if any(tuple(cmap.get(k, ()))[:3] != v[:3] for k, v in plan.colormap.items()):
                problems.append("colour table")
        if plan.class_names and "class_names" not in src.tags(1):
            problems.append("class names")
        # read the last full-resolution block: catches a truncated file cheaply
        h, w = src.block_shapes[0]
        r0 = ((src.height - 1) // h) * h
        c0 = ((src.width - 1) // w) * w
        src.read(1, window=((r0, src.height), (c0, src.width)))
    if problems:
        raise OutputValidationError(
            f"The COG built for {plan.target!r} does not match its input: {', '.join(problems)}."
        )


def _missing_parts(parts: Sequence[Sequence[str]], plan: _Plan, present: set[str]) -> None:
    names = [n for p in parts for n in p]
    missing = [n for n in names if n not in present]
    if len(parts) != len(plan.blocks) or missing:
        raise OutputValidationError(
            f"Writing {plan.target!r}: {len(missing)} chunk parts are missing; run the write again."
        )


def _finalize_remote(parts: Sequence[Sequence[str]], plan: _Plan) -> str:
    """Build the COG of an object-store target from parts under a temporary prefix."""
    fs = filesystem(plan.tmpdir)
    local = Path(tempfile.mkdtemp(prefix="geoembed-cog-"))
    try:
        fs.invalidate_cache()
        present = {k.rpartition("/")[2] for k in fs.ls(plan.tmpdir, detail=False)}
        _missing_parts(parts, plan, present)
        for name in (n for p in parts for n in p):  # one part at a time: bounded memory
            fs.get_file(f"{plan.tmpdir}/{name}", str(local / name))
        built = local / plan.target.rpartition("/")[2]
        _build(local, built, plan)
        if not plan.overwrite and remote_exists(plan.target):
            raise OutputError(
                f"The COG {plan.target!r} appeared while it was being written. Pass "
                "overwrite=True to replace it, or choose another URL."
            )
        fs.put_file(str(built), plan.target)  # one upload: the object appears complete
    finally:
        shutil.rmtree(local, ignore_errors=True)
        remote_remove(plan.tmpdir)
    return plan.target


def _finalize(parts: Sequence[Sequence[str]], plan: _Plan) -> str:
    """Mosaic the parts into a COG, validate it and move it to the target."""
    if is_remote(plan.target):
        return _finalize_remote(parts, plan)
    tmpdir = Path(plan.tmpdir)
    target = Path(plan.target)
    try:
        present = {p.name for p in tmpdir.iterdir() if p.is_file()}
        _missing_parts(parts, plan, present)
        built = tmpdir / target.name
        _build(tmpdir, built, plan)
        replace_path(built, target, overwrite=plan.overwrite, what="COG")
    except Exception as exc:
        full = disk_full_error(tmpdir, exc)
        if full is not None:
            raise full from exc
        raise
    finally:
        remove_path(tmpdir)
    return str(target)


def _build(tmpdir: Path, built: Path, plan: _Plan) -> None:
    """Mosaic the parts in ``tmpdir`` into the COG ``built`` and validate it."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    overviews = [f"overview-{f}.vrt" for f in plan.factors]
    for f, name in zip(plan.factors, overviews):
        (tmpdir / name).write_text(_vrt_xml(plan, f))
    vrt = tmpdir / "mosaic.vrt"
    vrt.write_text(_vrt_xml(plan, 1, overviews))
    options: dict[str, Any] = {
        "BLOCKSIZE": plan.blocksize,
        "COMPRESS": plan.compress.upper(),
        "OVERVIEW_RESAMPLING": plan.resampling.upper(),
        "NUM_THREADS": gdal_threads(),  # 1 on a pinned worker (one thread per task)
        "BIGTIFF": "IF_SAFER",
    }
    if plan.predictor:
        options["PREDICTOR"] = "YES"
    if plan.factors:
        options["OVERVIEWS"] = "FORCE_USE_EXISTING"
    with rasterio.Env(GDAL_PAM_ENABLED="NO", CPL_TMPDIR=str(tmpdir)):
        rio_copy(str(vrt), str(built), driver="COG", **options)
    _validate(str(built), plan)


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


def write_cog(
    da: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    class_names: Mapping[Any, str] | Sequence[str] | None = None,
    colors: Mapping[Any, Any] | Sequence[Any] | None = None,
    nodata: float | int | None = None,
    overwrite: bool = False,
    compute: bool = True,
    overview_resampling: str | None = None,
    blocksize: int = 512,
    compress: str = "deflate",
    scale: float | None = None,
    offset: float | None = None,
    progress: bool = False,
    resume: bool = False,
) -> Path | str | Any:
    """Write a class map or a continuous raster as a validated Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    da : xarray.DataArray
        ``(y, x)`` class map (uint8/uint16/int16 class ids), ``(y, x)`` continuous raster
        (e.g. float32 confidence) or ``(n, y, x)`` multi-band raster (e.g. probabilities,
        float32 or scaled uint8; band descriptions come from the leading coordinate). It
        must carry a CRS (``da.rio.crs``) and regular ``x``/``y`` coordinates; bottom-up
        inputs (increasing ``y``) are written north-up with the same map coordinates.
        NumPy- or Dask-backed; Dask arrays are written chunk by chunk.
    path : str or path-like
        Output file: a local path (its directory must exist) or a ``gs://`` / ``s3://``
        URL (its bucket must exist); see the module notes for how parts travel.
    class_names : list of str or dict, optional
        Names of the class ids (list index = id, or ``{id: name}``); stored as JSON in the
        ``class_names`` tag of the dataset and of band 1 (see :func:`read_class_names`).
        Defaults to ``da.attrs["class_names"]`` when present.
    colors : list or dict, optional
        Colour of each class id, ``"#rrggbb"`` or ``(r, g, b[, a])``; written as the
        embedded colour table (single-band unsigned integer maps only). Defaults to
        ``da.attrs["colors"]`` when present.
    nodata : int or float, optional
        Nodata value. Default: ``da.rio.nodata``, else 255 / 65535 / -1 for
        uint8 / uint16 / int16 class maps (:data:`geoembed.schema.CLASS_NODATA`) and NaN
        for floats.
    overwrite : bool, default False
        Replace an existing file (only once the new one is complete and valid).
    compute : bool, default True
        Write now; with False return a :class:`dask.delayed.Delayed` that writes (and
        returns the path as a string) when computed.
    overview_resampling : str, optional
        Default ``"mode"`` for integer single-band maps, ``"average"`` otherwise.
    blocksize : int, default 512
        COG tile size (a multiple of 16).
    compress : {"deflate", "zstd", "lzw", "none"}
        Compression of the COG (a predictor is used for floating-point data).
    scale, offset : float, optional
        Stored as band scale/offset, e.g. ``scale=1/254`` for probabilities stored as uint8
        0..254 (read back decoded with ``rioxarray.open_rasterio(mask_and_scale=True)``).
    progress : bool, default False
        Show a progress bar while computing.
    resume : bool, default False
        Make the write resumable: chunk parts go under a name derived from ``path`` and
        a hash of the raster's Dask graph and of these settings (see
        :mod:`geoembed.export.resume`), and parts that an earlier, interrupted write of the
        same raster left there are reused instead of being computed again.

    Returns
    -------
    pathlib.Path or str or dask.delayed.Delayed
        The written path (the URL for object storage), or the Delayed write when
        ``compute=False``.

    Raises
    ------
    DimensionError, DTypeError, MissingCRSError, SchemaError, OutputError
        Before any Dask task runs, naming the problem and the fix; nothing is written.
    OutputValidationError
        When the COG built fails validation (nothing is left at ``path``).
    """
    if not isinstance(da, xr.DataArray):
        raise SchemaError(
            f"write_cog needs an xarray.DataArray, got a {type(da).__name__}; for a Dataset "
            "write each variable (ds['class']) separately, or use write_zarr."
        )
    name = f"DataArray {da.name!r}" if da.name is not None else "the raster"
    if da.ndim not in (2, 3) or tuple(da.dims[-2:]) != ("y", "x"):
        raise DimensionError(
            f"{name} has dims {tuple(da.dims)}; write_cog needs ('y', 'x') or (n, 'y', 'x'). "
            "Use da.transpose(..., 'y', 'x')."
        )
    dtype = np.dtype(da.dtype)
    if da.ndim == 3 and da.shape[0] == 1 and np.issubdtype(dtype, np.integer):
        da = da.isel({da.dims[0]: 0}, drop=True)  # a one-band class map, as read by rioxarray
    if dtype.name not in _GDAL_TYPES:
        raise DTypeError(
            f"{name} has dtype {dtype}, which GeoTIFF cannot store; cast it, e.g. "
            "da.astype('float32') or da.astype('uint8')."
        )
    crs = da.rio.crs
    if crs is None:
        raise MissingCRSError(
            f"{name} has no CRS. Outputs keep the field's CRS: build them with "
            "geoembed.schema.map_like(field, ...) or set it with da.rio.write_crs(...)."
        )
    compress = compress.lower()
    if compress not in _COMPRESS:
        raise SchemaError(f"compress={compress!r} is not one of {_COMPRESS}.")
    if blocksize < 16 or blocksize % 16:
        raise SchemaError(f"blocksize={blocksize} must be a positive multiple of 16 (e.g. 512).")
    is_class_map = da.ndim == 2 and np.issubdtype(dtype, np.integer)
    resampling = (overview_resampling or ("mode" if is_class_map else "average")).lower()
    if resampling not in _RESAMPLING:
        raise SchemaError(f"overview_resampling={resampling!r} is not one of {_RESAMPLING}.")
    nodata_value = _check_nodata(
        nodata if nodata is not None else _default_nodata(da, dtype), dtype, name
    )
    if is_class_map:  # attrs of non-class outputs (confidence...) may describe their classes
        class_names, colors = _resolve_classes(da, class_names, colors)
    names_map: dict[int, str] | None = None
    cmap: dict[int, tuple[int, int, int, int]] | None = None
    if class_names is not None or colors is not None:
        if not is_class_map:
            raise SchemaError(
                f"{name} is not a class map ({da.ndim}-D {dtype}); class names and colours "
                "apply to (y, x) integer class maps only."
            )
    if class_names is not None:
        names_map = decode_class_names(class_names)
        _check_ids(list(names_map), dtype, nodata_value, "class_names")
    if colors is not None:
        if dtype.name not in ("uint8", "uint16"):
            raise DTypeError(
                f"{name} is {dtype}; GeoTIFF colour tables need uint8 or uint16 class maps. "
                "Cast with da.astype(geoembed.schema.class_dtype(n_classes))."
            )
        cmap = decode_class_colors(colors)
        _check_ids(list(cmap), dtype, nodata_value, "colors")
    transform, bottom_up = _grid(da, name)
    target: Path | str
    if is_remote(path):
        target = check_remote_output(str(path), overwrite=overwrite, what="COG")
        tmpdir = remote_temp_sibling(target, "cog")
    else:
        target = check_output_path(path, overwrite=overwrite, what="COG")
        tmpdir = str(temp_sibling(target, "cog"))

    data = _to_dask(da, blocksize)
    if bottom_up:
        data = data[..., ::-1, :]
    descriptions = None
    if da.ndim == 3:
        lead = da.dims[0]
        if lead in da.coords:
            descriptions = tuple(str(v) for v in da[lead].values)
    tags = {
        "geoembed_version": __version__,
        "geoembed_kind": "class_map" if is_class_map else "continuous",
    }
    if names_map is not None:
        tags["class_names"] = encode_class_names(names_map)
    if cmap is not None:
        tags["class_colors"] = encode_class_colors(cmap)
    plan = _Plan(
        target=str(target),
        tmpdir=tmpdir,
        height=int(da.sizes["y"]),
        width=int(da.sizes["x"]),
        count=1 if da.ndim == 2 else int(da.shape[0]),
        dtype=dtype.name,
        crs_wkt=crs.to_wkt(),
        transform=tuple(transform)[:6],
        nodata=nodata_value,
        resampling=resampling,
        blocksize=int(blocksize),
        compress=compress,
        predictor=bool(np.issubdtype(dtype, np.floating) and compress != "none"),
        overwrite=overwrite,
        scale=scale,
        offset=offset,
        descriptions=descriptions,
        colormap=cmap,
        class_names=names_map,
        tags=tags,
        blocks=tuple(_block_starts(data.chunks)),
        factors=_chunk_overviews(data.chunks, da.sizes["y"], da.sizes["x"], blocksize, resampling),
    )
    done: set[str] = set()
    if resume:
        plan, done = _resumable(plan, data)
    ready = dask.delayed(_prepare, pure=False)(plan)
    blocks = data.to_delayed().reshape(-1)
    parts: list[Any] = []
    for blk, b in zip(blocks, plan.blocks):
        names = _part_names(plan, b[0], b[1])
        if resume and done.issuperset(names):  # written by an interrupted run
            parts.append(names)
        else:
            parts.append(dask.delayed(_write_part, pure=False)(blk, ready, plan, b[0], b[1]))
    if resume:
        from geoembed.export.resume import shown_name

        reused = sum(isinstance(p, tuple) for p in parts)
        log.info(
            "resuming %s: %d of %d chunks were written by an earlier run",
            shown_name(target),
            reused,
            len(parts),
        )
    job = dask.delayed(_finalize, pure=False)(parts, plan)
    if not compute:
        return job
    from geoembed.runtime import compute as run

    try:
        run(job, progress=progress, label=f"writing {str(target).rpartition('/')[2]}")
    except BaseException:
        if isinstance(target, str):
            remote_remove(plan.tmpdir)
        else:
            remove_path(Path(plan.tmpdir))
        raise
    return target


def read_class_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Class names stored by :func:`write_cog` (``{class_id: name}``; empty if none)."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            raw = src.tags(1).get("class_names") or src.tags().get("class_names")
    except rasterio.errors.RasterioIOError as exc:
        raise OutputError(f"Cannot open {str(path)!r}: {exc}") from exc
    if not raw:
        return {}
    return decode_class_names(raw)
