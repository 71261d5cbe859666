"""A small georeferenced float32 raster, the same in every test and every process."""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr


def utm_raster(n: int, seed: int, chunks: int = 128) -> xr.DataArray:
    """An ``n`` x ``n`` random field on a 10 m UTM 33N grid, chunked ``chunks`` square.

    Parameters
    ----------
    n : int
        Pixels per side.
    seed : int
        Seed of the values, so separate processes build identical rasters.
    chunks : int, default 128
        Dask chunk side.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` float32 named ``confidence`` with its CRS written.
    """
    data = np.random.default_rng(seed).random((n, n), dtype=np.float32)
    da = xr.DataArray(
        dsa.from_array(data, chunks=chunks),
        dims=("y", "x"),
        coords={"y": 5_100_000 - 10 * np.arange(n) - 5, "x": 500_000 + 10 * np.arange(n) + 5},
        name="confidence",
    )
    return da.rio.write_crs("EPSG:32633")
