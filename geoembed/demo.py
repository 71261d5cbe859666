"""The whole geoembed job on a built-in synthetic scene (no network, no data files).

:func:`run_demo` generates a synthetic AlphaEarth-like scene (NOT real data), writes the
field as Zarr and its ground truth as a COG, draws a quicklook, classifies the field with
kNN from labelled points sampled on the scene, clusters it with KMeans, writes both maps as
COGs, and scores them against the ground truth (overall accuracy and kappa for kNN, the
adjusted Rand index for KMeans). Everything runs on whatever Dask scheduler is active.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

__all__ = ["adjusted_rand_index", "map_contingency", "run_demo"]

log = logging.getLogger(__name__)


def _block_counts(a: np.ndarray, b: np.ndarray, *, na: int, nb: int, nodata: tuple[int, int]):
    a = a.ravel().astype(np.int64)
    b = b.ravel().astype(np.int64)
    keep = (a != nodata[0]) & (b != nodata[1])
    counts = np.bincount(a[keep] * nb + b[keep], minlength=na * nb)
    return counts.reshape(1, 1, na, nb)


def map_contingency(
    a: xr.DataArray,
    b: xr.DataArray,
    *,
    na: int,
    nb: int,
    nodata: tuple[int, int] = (255, 255),
) -> dsa.Array:
    """Lazy ``(na, nb)`` contingency table of two ``(y, x)`` class maps on the same grid.

    Pixels where either map holds its nodata value are left out. Memory is bounded by the
    chunk size: counts are made per block and summed.
    """
    da_, db_ = a.data, b.data
    if not isinstance(da_, dsa.Array):
        da_ = dsa.from_array(da_, chunks=512)
    if not isinstance(db_, dsa.Array):
        db_ = dsa.from_array(db_, chunks=da_.chunks)
    db_ = db_.rechunk(da_.chunks)
    parts = dsa.map_blocks(
        _block_counts,
        da_,
        db_,
        na=na,
        nb=nb,
        nodata=nodata,
        new_axis=[2, 3],
        chunks=((1,) * da_.numblocks[0], (1,) * da_.numblocks[1], (na,), (nb,)),
        dtype=np.int64,
    )
    return parts.sum(axis=(0, 1))


def adjusted_rand_index(table: np.ndarray) -> float:
    """Adjusted Rand index (Hubert and Arabie, 1985) from a contingency table."""
    table = np.asarray(table, dtype=np.float64)
    n = table.sum()

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    a = pairs(table.sum(axis=1))
    b = pairs(table.sum(axis=0))
    expected = a * b / (n * (n - 1) / 2) if n > 1 else 0.0
    maximum = (a + b) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)
