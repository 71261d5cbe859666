"""GeoTIFF / COG reader: one file, or several files stacked on bands (incl. AEF int8)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
import rioxarray
import xarray as xr
from rasterio.errors import RasterioIOError

from geoembed._cloud import OBJECT_SCHEMES, gdal_path, is_url, require_input, split_url
from geoembed.errors import BandMismatchError, CorruptInputError, MissingInputError, SchemaError
from geoembed.io._chunks import spatial_chunks
from geoembed.io._finalize import finalize
from geoembed.schema import aef_band_names, feature_band_names

__all__ = ["RasterInfo", "open_geotiff", "raster_info"]

log = logging.getLogger(__name__)

#: above this many storage blocks per band only a sample of block offsets is checked
_MAX_BLOCKS_CHECKED = 200_000


class RasterInfo:
    """Metadata of one raster file, read once on the client (no pixels)."""

    def __init__(self, path: str, src: Any) -> None:
        self.path = path
        self.count: int = src.count
        self.height: int = src.height
        self.width: int = src.width
        self.dtype = np.dtype(src.dtypes[0])
        self.dtypes = tuple(src.dtypes)
        self.nodata = src.nodata
        self.crs = src.crs
        self.transform = src.transform
        self.block: tuple[int, int] = tuple(src.block_shapes[0])  # type: ignore[assignment]
        self.descriptions = [d for d in src.descriptions]
        self.interleaving = src.interleaving


def _is_remote(path: str) -> bool:
    return "://" in path or path.startswith("/vsi")


def raster_info(path: str | os.PathLike[str], *, overview_level: int | None = None) -> RasterInfo:
    """Open ``path`` with rasterio, read its metadata and check that it is complete.

    ``overview_level`` (0 = the first overview) describes that overview instead of the
    full-resolution image.

    Raises
    ------
    MissingInputError
        When a local path does not exist.
    CorruptInputError
        When the file is not a readable raster or is truncated (a storage block lies
        past the end of the file).
    """
    path = os.fspath(path)
    if is_url(path) and split_url(path)[0] in OBJECT_SCHEMES:
        require_input(path, "raster")  # one clear line for a missing object
        path = gdal_path(path)
    if not _is_remote(path) and not os.path.exists(path):
        raise MissingInputError(
            f"{path} does not exist (looked from {os.getcwd()}). Check the path or URL."
        )
    opts = {} if overview_level is None else {"overview_level": int(overview_level)}
    try:
        with rasterio.open(path, **opts) as src:
            info = RasterInfo(path, src)
            if not _is_remote(path) and overview_level is None:
                _check_blocks_in_file(src, path)
    except RasterioIOError as exc:
        raise CorruptInputError(
            f"{path} cannot be read as a raster ({exc}). It may be truncated, still being "
            "written, or not a GeoTIFF: download or export it again."
        ) from exc
    if len(set(info.dtypes)) > 1:
        raise SchemaError(
            f"{path} mixes band dtypes {sorted(set(info.dtypes))}; embedding bands must share "
            "one dtype."
        )
    return info


def _check_blocks_in_file(src: Any, path: str) -> None:
    """Raise CorruptInputError when a tile/strip of band 1 or of the last band lies past EOF."""
    if src.driver != "GTiff":
        return
    size = os.path.getsize(path)
    by, bx = src.block_shapes[0]
    ny, nx = math.ceil(src.height / by), math.ceil(src.width / bx)
    bands = [1] if src.interleaving == rasterio.enums.Interleaving.pixel else [1, src.count]
    rows: Sequence[int] = range(ny)
    if ny * nx > _MAX_BLOCKS_CHECKED:
        rows = sorted({*range(0, ny, max(1, ny * nx // _MAX_BLOCKS_CHECKED)), ny - 1})
    for bidx in sorted(set(bands)):
        for j in rows:
            for i in range(nx):
                offset = src.get_tag_item(f"BLOCK_OFFSET_{i}_{j}", "TIFF", bidx=bidx)
                nbytes = src.get_tag_item(f"BLOCK_SIZE_{i}_{j}", "TIFF", bidx=bidx)
                if offset is None or nbytes is None:
                    return  # driver does not expose offsets: nothing to check
                end = int(offset) + int(nbytes)
                if int(offset) and end > size:
                    raise CorruptInputError(
                        f"{path} is truncated: block ({j}, {i}) of band {bidx} ends at byte "
                        f"{end} but the file has {size} bytes. Download or export it again."
                    )


def _band_names(infos: Sequence[RasterInfo], aef: bool) -> list[str]:
    descriptions = [d for info in infos for d in info.descriptions]
    total = len(descriptions)
    if all(descriptions):
        if len(set(descriptions)) != total:
            dup = sorted({d for d in descriptions if descriptions.count(d) > 1})
            raise BandMismatchError(
                f"band descriptions repeat across the inputs ({dup[:5]}); was a file given "
                "twice? Pass each band once, or pass band_names= to name them."
            )
        return [str(d) for d in descriptions]
    if aef and total == 64:
        return aef_band_names(64)
    return feature_band_names(total)


def open_geotiff(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    chunks: Any = None,
    quantization: str | None = None,
    bands: int | Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
    overview_level: int | None = None,
) -> xr.DataArray:
    """Open one GeoTIFF/COG, or several stacked on bands, as a lazy canonical field.

    Parameters
    ----------
    paths : path or URL, or a sequence of them
        Files to read (``https://``, ``gs://`` and ``s3://`` go through GDAL's virtual file
        systems). Several files must share one grid, CRS and dtype; their bands are
        stacked in the order given.
    chunks : optional
        See :func:`geoembed.io.open_embeddings`.
    quantization : {"aef", None}
        ``None`` auto-detects AEF int8 codes (int8 with nodata -128).
    bands : int or sequence of str, optional
        Expected band count or names, checked.
    band_names : sequence of str, optional
        Names for the bands; by default the band descriptions (e.g. ``A00``..``A63``), else
        ``A00``.. for 64-band AEF codes, else ``F000``...
    overview_level : int, optional
        Read this overview (0 = the first, half resolution for COGs) instead of the
        full-resolution image.

    Returns
    -------
    xarray.DataArray
    """
    many = not isinstance(paths, str | os.PathLike)
    items: Any = paths if many else [paths]
    path_list = [os.fspath(p) for p in items]
    if not path_list:
        raise SchemaError("open_embeddings() was given an empty list of files.")
    infos = [raster_info(p, overview_level=overview_level) for p in path_list]
    first = infos[0]
    source = first.path if len(infos) == 1 else f"{first.path} (+{len(infos) - 1} more files)"
    for info in infos[1:]:
        same = (
            (info.height, info.width) == (first.height, first.width)
            and info.transform.almost_equals(first.transform)
            and info.crs == first.crs
        )
        if not same:
            raise SchemaError(
                f"{info.path} is not on the grid of {first.path} (size {info.width} x "
                f"{info.height} vs {first.width} x {first.height}, transform or CRS differ); "
                "files stacked on bands must share one grid. Reproject them first."
            )
        if info.dtype != first.dtype or info.nodata != first.nodata:
            raise SchemaError(
                f"{info.path} has dtype {info.dtype} / nodata {info.nodata} but {first.path} "
                f"has {first.dtype} / {first.nodata}; stacked files must be encoded alike."
            )
    n_bands = sum(info.count for info in infos)
    cy, cx = spatial_chunks(
        chunks,
        height=first.height,
        width=first.width,
        bands=n_bands,
        block=first.block,
        source=source,
    )
    ovr: dict[str, Any] = {} if overview_level is None else {"overview_level": overview_level}
    parts = []
    for info in infos:
        try:
            part = rioxarray.open_rasterio(
                info.path,
                chunks={"band": -1, "y": cy, "x": cx},
                lock=False,
                mask_and_scale=False,
                parse_coordinates=True,
                **ovr,
            )
        except RasterioIOError as exc:
            raise CorruptInputError(f"{info.path} cannot be read as a raster ({exc}).") from exc
        if isinstance(part, list) or isinstance(part, xr.Dataset):
            raise SchemaError(
                f"{info.path} holds several subdatasets; open the one you need, e.g. "
                "'NETCDF:file.nc:embedding'."
            )
        parts.append(part)
    stacked = parts[0] if len(parts) == 1 else xr.concat(parts, dim="band", join="override")
    if len(parts) > 1:
        stacked = stacked.chunk({"band": -1})
    aef_guess = first.dtype == np.int8 and (
        quantization == "aef" or (first.nodata is not None and float(first.nodata) == -128)
    )
    names = list(band_names) if band_names is not None else _band_names(infos, aef_guess)
    stacked = stacked.assign_coords(band=names if len(names) == n_bands else range(n_bands))
    return finalize(
        stacked,
        source=source,
        quantization=quantization,
        nodata=first.nodata,
        crs=first.crs,
        bands=bands,
        band_names=band_names,
        extra_attrs={"storage_block": list(first.block)},
    )
