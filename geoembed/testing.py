"""Helpers for tests of geoembed and of code built on it.

* :func:`make_field` builds tiny, awkward embedding fields (non-square, ragged last chunk,
  projected CRS with a non-zero origin, a nodata patch, optionally bottom-up).
* :func:`raise_if_dask_computes` turns any unwanted compute into an error.
* :class:`InaccessibleArray` raises when its values are read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed.schema import NAME, aef_band_names

__all__ = ["InaccessibleArray", "UnexpectedDataAccess", "make_field", "raise_if_dask_computes"]


class UnexpectedDataAccess(Exception):
    """Raised when pixel data were read that should not have been."""


class InaccessibleArray(xr.core.indexing.ExplicitlyIndexed):
    """A lazily indexed array whose values cannot be read (shape and dtype only)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)

    def get_duck_array(self) -> Any:
        """Refuse to return the data."""
        raise UnexpectedDataAccess("tried to read pixel data")

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise UnexpectedDataAccess("tried to read pixel data")

    def __getitem__(self, key: Any) -> Any:
        raise UnexpectedDataAccess("tried to read pixel data")


class _CountingScheduler:
    def __init__(self, max_computes: int) -> None:
        self.total = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.total += 1
        if self.total > self.max_computes:
            raise RuntimeError(
                f"Too many computes: {self.total} > {self.max_computes} (an unwanted compute)"
            )
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[_CountingScheduler]:
    """Fail when Dask computes more than ``max_computes`` times inside the block."""
    scheduler = _CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


def make_field(
    height: int = 37,
    width: int = 53,
    *,
    bands: int = 64,
    chunks: int | tuple[int, int] | None = 16,
    crs: str = "EPSG:32616",
    origin: tuple[float, float] = (358410.0, 4906600.0),
    res: float = 10.0,
    bottom_up: bool = False,
    nodata_patch: bool = True,
    n_classes: int = 4,
    seed: int = 0,
    band_names: list[str] | None = None,
) -> xr.DataArray:
    """Build a small canonical embedding field with a few well-separated classes.

    The field is made of ``n_classes`` vertical stripes, each a noisy copy of a random
    unit-length prototype; values are unit-length float32. A 3 x 4 nodata (NaN) patch
    sits near the top-left corner when ``nodata_patch`` is true.

    Parameters
    ----------
    height, width : int
        Size in pixels; the defaults are non-square and give ragged chunks.
    bands : int
        Number of bands (64 for AlphaEarth).
    chunks : int or (int, int) or None
        Spatial chunk size; ``None`` gives a NumPy-backed array.
    crs : str
        Projected CRS.
    origin : (float, float)
        Upper-left corner (x, y) when north-up; lower-left when ``bottom_up``.
    res : float
        Pixel size.
    bottom_up : bool
        Positive y-resolution (rows run south to north).
    nodata_patch : bool
        Put NaN in a small patch.
    n_classes : int
        Number of stripes.
    seed : int
        Random seed.
    band_names : list of str, optional
        Defaults to ``A00``.. for 64 bands, else ``F000``...

    Returns
    -------
    xarray.DataArray
    """
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(n_classes, bands)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    stripe = (np.arange(width) * n_classes) // width
    vec = protos[stripe][None, :, :].repeat(height, axis=0)
    vec = vec + 0.15 * rng.normal(size=vec.shape).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=2, keepdims=True)
    data = np.ascontiguousarray(vec.transpose(2, 0, 1)).astype(np.float32)
    if nodata_patch:
        data[:, 2:5, 3:7] = np.nan
    x0, y0 = origin
    xs = x0 + res * (np.arange(width) + 0.5)
    if bottom_up:
        ys = y0 + res * (np.arange(height) + 0.5)
    else:
        ys = y0 - res * (np.arange(height) + 0.5)
    if band_names is None:
        band_names = aef_band_names(bands) if bands == 64 else [f"F{i:03d}" for i in range(bands)]
    arr: Any = data
    if chunks is not None:
        cy, cx = (chunks, chunks) if isinstance(chunks, int) else chunks
        arr = dsa.from_array(data, chunks=(bands, cy, cx))
    da = xr.DataArray(
        arr,
        dims=("band", "y", "x"),
        coords={"band": band_names, "y": ys, "x": xs},
        name=NAME,
    )
    return da.rio.write_crs(crs).rio.write_transform(da.rio.transform(recalc=True))
