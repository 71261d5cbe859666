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
encoded in the worker's scratch directory (``$GEOEMBED_TMPDIR``, else ``$TMPDIR``) and
uploaded under a temporary key prefix next to the target; the final task reads the parts
in place through GDAL (``/vsigs/``, ``/vsis3/``; nothing is downloaded), builds the COG in
its scratch directory (disk bounded by the compressed COG, memory by the chunk size and
GDAL's block cache), validates it, uploads it in one upload (the object appears only
complete) and deletes the temporary prefix. Local and object-store targets get
byte-identical files.

Class names are stored as JSON (``{"0": "water", ...}``) in the ``class_names`` tag of
the dataset and of band 1; read them back with :func:`read_class_names`, or with
``json.loads(rasterio.open(path).tags(1)["class_names"])``. GeoTIFF colour tables hold
RGB only (alpha is not stored; the nodata entry reads back transparent).

The steps live in :mod:`geoembed.export.cog_checks` (1), :mod:`geoembed.export.cog_parts`
(2) and :mod:`geoembed.export.cog_assembly` (3).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

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
    SchemaError,
)
from geoembed.export.atomic import (
    check_output_path,
    is_remote,
    remove_path,
    scratch_dir,
    temp_sibling,
)
from geoembed.export.cog_assembly import _finalize
from geoembed.export.cog_checks import (
    _COMPRESS,
    _GDAL_TYPES,
    _RESAMPLING,
    _check_ids,
    _check_nodata,
    _default_nodata,
    _grid,
    _resolve_classes,
)
from geoembed.export.cog_parts import (
    _block_starts,
    _chunk_overviews,
    _part_names,
    _Plan,
    _prepare,
    _resumable,
    _to_dask,
    _write_part,
)
from geoembed.export.remote import (
    check_remote_output,
    remote_remove,
    remote_temp_sibling,
)

log = logging.getLogger(__name__)

__all__ = ["read_class_names", "write_cog"]


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
            "write each variable (ds['classes']) separately, or use write_zarr."
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
        from geoembed.export.remote_sweep import sweep_target

        sweep_target(target, keep_resumable=resume)
        tmpdir = remote_temp_sibling(target, "cog")
        scratch_dir()  # a bad $GEOEMBED_TMPDIR fails here, not in a task
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
