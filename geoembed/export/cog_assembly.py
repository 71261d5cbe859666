"""Assembly of a COG write: mosaic the parts through VRTs, build, validate, move.

The final task of :func:`geoembed.export.cog.write_cog` (:func:`_finalize`) checks that
every part is there, builds the COG with GDAL's COG driver, validates it with
``rio_cogeo`` and against the plan, and moves (or uploads) it to the target.

For an object-store target the parts are not downloaded: the VRT mosaics point at them
where they are (``/vsigs/``, ``/vsis3/``, with the retries of :func:`geoembed._cloud.gdal_env`)
and GDAL reads them tile by tile while it writes the COG. GDAL's GeoTIFF writer needs a
seekable file (it fills in the tile offsets last), which ``/vsigs/`` and ``/vsis3/`` are
not, so the COG itself is written to the assembling worker's scratch directory
(:func:`geoembed.export.atomic.scratch_dir`: ``$GEOEMBED_TMPDIR``, else ``$TMPDIR``),
validated there and uploaded in one upload. The assembling worker's scratch disk holds
the compressed COG only (plus x 1/3 for GDAL's temporary overviews when the chunks do not
line up with the overview grid), and its memory is bounded by GDAL's block cache
(:data:`_GDAL_CACHE_BYTES`, or ``$GDAL_CACHEMAX`` when set) and the decoder state of the
parts kept open (:data:`_GDAL_POOL_SIZE`), whatever the size of the scene.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoembed._cloud import filesystem, gdal_path
from geoembed._rio_env import local_env
from geoembed._threads import gdal_threads
from geoembed.errors import OutputError, OutputValidationError
from geoembed.export.atomic import (
    disk_full_as_enospc,
    is_remote,
    remove_path,
    replace_path,
    scratch_dir,
)
from geoembed.export.cog_checks import _GDAL_TYPES
from geoembed.export.cog_parts import _part_name, _Plan
from geoembed.export.remote import remote_exists, remote_remove

__all__: list[str] = []

#: GDAL's block cache while a COG is built (GDAL's own default is 5 % of the machine's
#: memory, which a pod's memory limit does not bound); ``$GDAL_CACHEMAX`` overrides it
_GDAL_CACHE_BYTES = 32 << 20
#: parts the VRT mosaics keep open at once (GDAL's default, 100, costs about 0.6 MiB of
#: decoder state each); ``$GDAL_MAX_DATASET_POOL_SIZE`` overrides it
_GDAL_POOL_SIZE = 16


def _fmt(value: float | int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)


def _vrt_xml(
    plan: _Plan, factor: int = 1, overviews: Sequence[str] = (), parts: str | None = None
) -> str:
    """VRT mosaic of the parts of one level (``factor`` 1 = full resolution).

    The parts are next to the VRT, or under the GDAL path ``parts`` (``/vsigs/...``).
    """
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
            name = _part_name(row, col, factor)
            if parts is None:
                ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = name
            else:
                ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = f"{parts}/{name}"
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
    with local_env(), rasterio.open(path) as src:
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
    """Build the COG of an object-store target from the parts under its temporary prefix.

    The parts are read in place through GDAL; only the COG is written to local disk (see
    the module notes), then uploaded in one upload so the object appears complete.
    """
    fs = filesystem(plan.tmpdir)
    local = Path(tempfile.mkdtemp(prefix="geoembed-cog-", dir=scratch_dir()))
    try:
        fs.invalidate_cache()
        present = {k.rpartition("/")[2] for k in fs.ls(plan.tmpdir, detail=False)}
        _missing_parts(parts, plan, present)
        built = local / plan.target.rpartition("/")[2]
        with disk_full_as_enospc(local):
            _build(local, built, plan, parts=gdal_path(plan.tmpdir))
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
        with disk_full_as_enospc(tmpdir):
            present = {p.name for p in tmpdir.iterdir() if p.is_file()}
            _missing_parts(parts, plan, present)
            built = tmpdir / target.name
            _build(tmpdir, built, plan)
            replace_path(built, target, overwrite=plan.overwrite, what="COG")
    finally:
        remove_path(tmpdir)
    return str(target)


def _build(tmpdir: Path, built: Path, plan: _Plan, parts: str | None = None) -> None:
    """Mosaic the parts into the COG ``built`` and validate it.

    The VRTs are written to ``tmpdir``; the parts are there too, or under the GDAL path
    ``parts`` (an object-store prefix, read in place).
    """
    import rasterio
    from rasterio.shutil import copy as rio_copy

    overviews = [f"overview-{f}.vrt" for f in plan.factors]
    for f, name in zip(plan.factors, overviews):
        (tmpdir / name).write_text(_vrt_xml(plan, f, parts=parts))
    vrt = tmpdir / "mosaic.vrt"
    vrt.write_text(_vrt_xml(plan, 1, overviews, parts=parts))
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
    env: dict[str, Any] = {"GDAL_PAM_ENABLED": "NO", "CPL_TMPDIR": str(tmpdir)}
    if not os.environ.get("GDAL_CACHEMAX"):
        env["GDAL_CACHEMAX"] = _GDAL_CACHE_BYTES  # bytes (rasterio sets it on the cache)
    if not os.environ.get("GDAL_MAX_DATASET_POOL_SIZE"):
        env["GDAL_MAX_DATASET_POOL_SIZE"] = str(_GDAL_POOL_SIZE)
    if parts is not None:
        # a part has no sidecar files: open each without listing the prefix
        env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    with rasterio.Env(**env):
        rio_copy(str(vrt), str(built), driver="COG", **options)
    _validate(str(built), plan)
