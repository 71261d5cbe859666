"""Nearest-neighbour resampling of a lazy ``(band, y, x)`` field onto another grid.

The graph follows odc-geo's chunked reprojection (each output block is warped from
the source blocks whose footprint it intersects, found by
:meth:`odc.geo.geobox.GeoboxTiles.grid_intersect`), with two differences that matter
on real fields:

- every output block is warped by **one** GDAL call for all its bands, where
  ``odc.geo.xr_reproject`` makes one call per band (64 for AlphaEarth);
- the call runs inside one ``rasterio.Env`` without a credential session. Warping
  arrays in memory reads nothing, yet with ``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY`` set every rasterio ``Env`` builds a boto3 session (about
  30 ms): rasterio's warp opens four of its own per call, and one more when no ``Env``
  is active, so the per-band calls cost 64 x 5 sessions (~10 s) per block and this one
  call four.

With nearest-neighbour resampling every band takes the value of the same source pixel,
so the multi-band call gives the values of the per-band calls (tests compare).
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoembed._rio_env import local_env

__all__ = ["reproject_nearest"]


def _warp_block(
    tiles: list[tuple[int, int]],
    src_tiles: Any,
    dst_gbox: Any,
    *blocks: np.ndarray,
) -> np.ndarray:
    """Warp the source ``blocks`` (at ``tiles`` of ``src_tiles``) onto ``dst_gbox``, NaN fill."""
    import rasterio.warp

    sub, where = src_tiles.clip(tiles)
    ys = np.cumsum((0, *sub.chunks[0]))
    xs = np.cumsum((0, *sub.chunks[1]))
    src = np.full((blocks[0].shape[0], int(ys[-1]), int(xs[-1])), np.nan, dtype=np.float32)
    for (iy, ix), block in zip(where, blocks):
        src[:, ys[iy] : ys[iy + 1], xs[ix] : xs[ix + 1]] = block
    dst = np.full((src.shape[0], *dst_gbox.shape.yx), np.nan, dtype=np.float32)
    src_gbox = sub.base
    with local_env():
        rasterio.warp.reproject(
            src,
            dst,
            src_transform=src_gbox.transform,
            src_crs=str(src_gbox.crs),
            dst_transform=dst_gbox.transform,
            dst_crs=str(dst_gbox.crs),
            resampling=rasterio.warp.Resampling.nearest,
            src_nodata=np.nan,
            dst_nodata=np.nan,
            XSCALE=1,
            YSCALE=1,
        )
    return dst


def reproject_nearest(field: xr.DataArray, geobox: Any) -> xr.DataArray:
    """Resample a lazy float32 ``(band, y, x)`` field onto ``geobox``, nearest neighbour.

    Parameters
    ----------
    field : xarray.DataArray
        Dask-backed, float32, dims ``(band, y, x)`` with a CRS and transform (NaN = nodata).
    geobox : odc.geo.geobox.GeoBox
        The output grid; output blocks have the field's spatial chunk size.

    Returns
    -------
    xarray.DataArray
        Float32 ``(band, y, x)`` on ``geobox`` (NaN outside the field), with the field's
        ``band`` coordinate; CRS, attributes and name are left to the caller.
    """
    import odc.geo.xr  # noqa: F401  (the .odc accessor)
    from odc.geo.geobox import GeoboxTiles

    src = field.transpose("band", "y", "x").data.astype(np.float32)
    src_gbox = field.odc.geobox
    src_tiles = GeoboxTiles(src_gbox, src.chunks[1:])
    dst_tiles = GeoboxTiles(geobox, (int(src.chunksize[1]), int(src.chunksize[2])))
    sources = dst_tiles.grid_intersect(src_tiles)
    name = "regrid-nearest-" + tokenize(src, str(src_gbox), str(geobox))
    keys = src.__dask_keys__()
    graph: dict[Any, Any] = {}
    for b in range(len(src.chunks[0])):
        bands = src.chunks[0][b]
        for iy, ix in np.ndindex(dst_tiles.shape.yx):
            tiles = sources.get((iy, ix), [])
            if tiles:
                deps = [keys[b][sy][sx] for sy, sx in tiles]
                graph[(name, b, iy, ix)] = (
                    _warp_block,
                    list(tiles),
                    src_tiles,
                    dst_tiles[iy, ix],
                    *deps,
                )
            else:
                shape = (bands, *dst_tiles[iy, ix].shape.yx)
                graph[(name, b, iy, ix)] = (np.full, shape, np.nan, np.float32)
    hlg = HighLevelGraph.from_collections(name, graph, dependencies=[src])
    chunks = (src.chunks[0], *dst_tiles.chunks)
    out = da.Array(hlg, name, chunks=chunks, dtype=np.float32)
    y, x = geobox.coordinates.values()
    return xr.DataArray(
        out,
        dims=("band", "y", "x"),
        coords={"band": field["band"].values, "y": y.values, "x": x.values},
    )
