"""Fit ``dask_ml.cluster.KMeans`` on an embedding field (``geoembed cluster --engine dask-ml``).

For users who need exact parity with an existing dask-ml pipeline: the valid pixel
vectors of every block become one ``(pixels, band)`` Dask array, dask-ml fits on it
(k-means|| seeding, Lloyd passes), and the fitted model then goes through geoembed's
blockwise prediction, writers and report like geoembed's own KMeans.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed.cluster.kmeans import ClusterCountError
from geoembed.errors import require
from geoembed.schema import check_embedding

__all__ = ["fit_dask_ml_kmeans", "valid_pixel_matrix"]


def _valid_rows(block: np.ndarray) -> np.ndarray:
    nb = block.shape[0]
    flat = block.reshape(nb, -1).T
    return np.ascontiguousarray(flat[~np.isnan(flat).any(axis=1)], dtype=np.float32)


def valid_pixel_matrix(field: xr.DataArray) -> dsa.Array:
    """Return the valid pixel vectors as a lazy ``(pixels, band)`` array, a chunk per block.

    Row order is block by block (row-major inside a block). Chunk sizes are measured
    with one pass over the field (dask-ml refuses unknown chunk sizes).
    """
    check_embedding(field, require_crs=False)
    data = field.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=(-1, 512, 512))
    nb = int(data.shape[0])
    parts = [
        dsa.from_delayed(dask.delayed(_valid_rows)(blk), shape=(np.nan, nb), dtype=np.float32)
        for blk in data.to_delayed().ravel()
    ]
    matrix = dsa.concatenate(parts, axis=0)
    matrix.compute_chunk_sizes()
    return matrix


def fit_dask_ml_kmeans(
    field: xr.DataArray,
    n_clusters: int,
    *,
    max_iter: int | None = None,
    seed: int = 0,
) -> Any:
    """Fit ``dask_ml.cluster.KMeans`` (k-means||, Euclidean) on every valid pixel.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field.
    n_clusters : int
        Number of clusters.
    max_iter : int, optional
        Lloyd iterations (dask-ml's default, 300, when not given).
    seed : int
        ``random_state``.

    Returns
    -------
    dask_ml.cluster.KMeans
        The fitted dask-ml estimator (its lazy ``labels_`` are not computed).
    """
    dask_ml_cluster = require(
        "dask_ml.cluster", extra="ml", feature="--engine dask-ml", package="dask-ml"
    )
    n_pixels = int(field.sizes["y"]) * int(field.sizes["x"])
    if n_clusters > n_pixels:
        raise ClusterCountError(
            f"n_clusters={n_clusters} is larger than the number of pixels in the field "
            f"({n_pixels}); choose fewer clusters."
        )
    matrix = valid_pixel_matrix(field)
    if matrix.shape[0] < n_clusters:
        raise ClusterCountError(
            f"n_clusters={n_clusters} but the field has only {matrix.shape[0]} valid pixels; "
            "choose fewer clusters."
        )
    kwargs: dict[str, Any] = {"n_clusters": int(n_clusters), "random_state": int(seed)}
    if max_iter is not None:
        kwargs["max_iter"] = int(max_iter)
    return dask_ml_cluster.KMeans(**kwargs).fit(matrix)
