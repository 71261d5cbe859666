"""Build AEF mirrors laid out like the public release, cut from the real Wisconsin tile.

The tile (EPSG:32616, 97 x 97, origin 358410, 4906600) is cut into:

* two zone-16N COGs: its eastern 48 columns and first 96 rows, split at row 48 (on the
  tile's own grid, so their pixels equal the tile's codes);
* one zone-15N COG: its western 49 columns warped to EPSG:32615 at 10 m with nearest
  neighbour (every pixel holds one of the tile's vectors, or -128 outside);

each int8, nodata -128, a multiple of 16 pixels a side (so that overviews are exactly 20
and 40 m, as the release's 8192-pixel files have), 16 x 16 blocks with overviews, below
``{year}/{zone}/`` with an ``aef_index.parquet`` of the published schema at the root.
A block of pixels is masked (-128 in all bands) in the codes first. ``bottom_up=True``
stores every file bottom-up (positive y resolution) like the Source Cooperative copy, and
writes relative index paths; otherwise index paths carry the public
``gs://alphaearth_foundations/...`` prefix, as in a copy of the public index.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds

#: masked block (rows, cols) of the tile, in the eastern half so that it lands in zone 16
MASK_ROWS = slice(40, 44)
MASK_COLS = slice(60, 63)
#: first column of the eastern (zone 16) part
SPLIT_COL = 49
SPLIT_ROW = 48
PUBLIC = "gs://alphaearth_foundations/satellite_embedding/v1/annual/"


@dataclass
class Mirror:
    root: Path
    codes: np.ndarray  # the tile's codes after masking, (64, 97, 97), north-up
    transform: Affine  # the tile's transform
    zone15: Path  # the warped western file
    files: list[Path]


def tile_codes(tile: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(tile) as ds:
        codes, prof = ds.read(), dict(ds.profile)
    codes = codes.copy()
    codes[:, MASK_ROWS, MASK_COLS] = -128
    return codes, prof


def _write_cog(dst: Path, data: np.ndarray, crs: str, transform: Affine, bottom_up: bool) -> None:
    tmp = dst.with_suffix(".tmp.tif")
    if bottom_up:
        h = data.shape[1]
        transform = Affine(
            transform.a, 0.0, transform.c, 0.0, -transform.e, transform.f + transform.e * h
        )
        data = data[:, ::-1, :]
    prof = {
        "driver": "GTiff",
        "dtype": "int8",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "crs": crs,
        "transform": transform,
        "nodata": -128,
    }
    with rasterio.open(tmp, "w", **prof) as ds:
        ds.write(data)
        ds.descriptions = tuple(f"A{i:02d}" for i in range(data.shape[0]))
    rasterio.shutil.copy(
        tmp, dst, driver="COG", BLOCKSIZE=16, OVERVIEW_RESAMPLING="AVERAGE", COMPRESS="DEFLATE"
    )
    tmp.unlink()


def build_mirror(tile: Path, root: Path, *, year: int = 2024, bottom_up: bool = False) -> Mirror:
    import geopandas as gpd
    from shapely.geometry import box

    codes, prof = tile_codes(tile)
    t: Affine = prof["transform"]
    rows = []
    files = []

    def add(zone: str, crs: str, name: str, data: np.ndarray, transform: Affine) -> Path:
        rel = f"{year}/{zone}/{name}.tiff"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_cog(path, data, crs, transform, bottom_up)
        with rasterio.open(path) as ds:
            b = ds.bounds
        w, s, e, n = transform_bounds(crs, "EPSG:4326", *b, densify_pts=21)
        rows.append(
            {
                "path": rel if bottom_up else PUBLIC + rel,
                "year": year,
                "crs": crs,
                "utm_zone": zone,
                "wgs84_west": w,
                "wgs84_south": s,
                "wgs84_east": e,
                "wgs84_north": n,
                "utm_west": b.left,
                "utm_south": b.bottom,
                "utm_east": b.right,
                "utm_north": b.top,
                "fid": len(rows),
                "geometry": box(w, s, e, n),
            }
        )
        files.append(path)
        return path

    east = codes[:, :96, SPLIT_COL:]
    t_east = t * Affine.translation(SPLIT_COL, 0)
    add("16N", "EPSG:32616", "xwis0000000000-0000000000", east[:, :SPLIT_ROW], t_east)
    add(
        "16N",
        "EPSG:32616",
        "xwis0000000000-0000000001",
        east[:, SPLIT_ROW:],
        t_east * Affine.translation(0, SPLIT_ROW),
    )
    west = codes[:, :, :SPLIT_COL]
    h, w = west.shape[1:]
    left, top = t.c, t.f
    bounds = (left, top + t.e * h, left + t.a * w, top)
    dst_t, dw, dh = calculate_default_transform(
        "EPSG:32616", "EPSG:32615", w, h, *bounds, resolution=10.0
    )
    # snap the origin onto the 10 m grid, as the release's zone grids are
    dst_t = Affine(10.0, 0.0, np.floor(dst_t.c / 10) * 10, 0.0, -10.0, np.ceil(dst_t.f / 10) * 10)
    warped = np.full((64, -(-(dh + 1) // 16) * 16, -(-(dw + 1) // 16) * 16), -128, dtype=np.int8)
    reproject(
        west,
        warped,
        src_transform=t,
        src_crs="EPSG:32616",
        src_nodata=-128,
        dst_transform=dst_t,
        dst_crs="EPSG:32615",
        dst_nodata=-128,
        resampling=Resampling.nearest,
    )
    z15 = add("15N", "EPSG:32615", "xwis0000000000-0000000000", warped, dst_t)
    # a file of another year over the same area: must never be selected for `year`
    other = dict(rows[0], year=year - 1, fid=len(rows))
    rows.append(other)
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    gdf.to_parquet(root / "aef_index.parquet")
    return Mirror(root=root, codes=codes, transform=t, zone15=z15, files=files)


def copy_mirror(mirror: Mirror, dst: Path) -> Path:
    shutil.copytree(mirror.root, dst)
    return dst


def bbox_of(m: Mirror, rows: slice, cols: slice) -> tuple[float, float, float, float]:
    """Lon/lat bounds of a window of the tile's pixels (rows, cols of the north-up tile)."""
    from pyproj import Transformer

    t = m.transform
    tr = Transformer.from_crs(32616, 4326, always_xy=True)
    x0, x1 = t.c + t.a * cols.start, t.c + t.a * cols.stop
    y0, y1 = t.f + t.e * rows.stop, t.f + t.e * rows.start
    return tr.transform_bounds(x0, y0, x1, y1)


def codes_at(m: Mirror, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The tile's (masked) int8 codes at UTM 16N pixel centres x, y."""
    t = m.transform
    cols = np.round((x - t.c) / t.a - 0.5).astype(int)
    rows = np.round((y - t.f) / t.e - 0.5).astype(int)
    assert cols.min() >= 0 and rows.min() >= 0
    assert cols.max() < m.codes.shape[2] and rows.max() < m.codes.shape[1]
    return m.codes[:, rows][:, :, cols]
