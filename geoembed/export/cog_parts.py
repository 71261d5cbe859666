"""Parts of a COG write: the plan, the chunking, and one small GeoTIFF per chunk.

Each Dask task of :func:`geoembed.export.cog.write_cog` writes one chunk (and its
overview levels) as a tiled GeoTIFF into the temporary directory (or under the temporary
prefix of a URL target); :mod:`geoembed.export.cog_assembly` mosaics them into the COG.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed._cloud import filesystem
from geoembed._rio_env import local_env
from geoembed.export.atomic import disk_full_error, is_remote, scratch_dir

__all__: list[str] = []

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

    A URL ``path`` is encoded in this process's scratch directory
    (:func:`~geoembed.export.atomic.scratch_dir`) and uploaded (a re-run task uploads the
    same bytes to the same key).
    """
    import rasterio

    if is_remote(path):
        local = tempfile.mkdtemp(prefix="geoembed-part-", dir=scratch_dir())
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
        with local_env(GDAL_PAM_ENABLED="NO"), rasterio.open(tmp, "w", **profile) as dst:
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
    from geoembed.grid import Grid

    data = block if block.ndim == 3 else block[np.newaxis]
    full = Grid(Affine(*plan.transform[:6]), (plan.height, plan.width))
    part = full[row : row + data.shape[-2], col : col + data.shape[-1]]
    names = _part_names(plan, row, col)
    levels = pyramid(data, plan.factors, plan.resampling, plan.nodata)
    for f, name, level in zip(plan.factors, names[1:], levels):
        _write_tif(_join(ready, name), level, plan, part.decimate(f).transform)
    # the full-resolution part last: a resumed write reuses a chunk only when all are there
    _write_tif(_join(ready, names[0]), data, plan, part.transform)
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
