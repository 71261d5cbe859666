"""Per-cluster statistics of a cluster map, and agreement with a reference map.

Both functions make one blockwise pass and reduce small per-block tables; nothing of
the size of the field is held in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr

from geoembed._compute import compute
from geoembed.schema import CLASS_NODATA, check_embedding

__all__ = [
    "adjusted_rand_index",
    "cluster_stats",
    "contingency_table",
    "pixel_area_km2",
    "stats_table",
    "stats_totals",
]

_WGS84_AUTHALIC_RADIUS_M = 6371007.181


def pixel_area_km2(da: xr.DataArray) -> np.ndarray:
    """Area of one pixel of each row, in km^2, from the CRS units.

    Projected CRS: ``|dx * dy|`` times the squared linear unit. Geographic CRS: the
    area of the cell on the sphere of equal area (varies with latitude).

    Returns
    -------
    numpy.ndarray
        ``(y,)`` float64; NaN when the grid has no CRS or fewer than 2 pixels per axis.
    """
    ny = da.sizes["y"]
    x = np.asarray(da["x"].values, dtype=np.float64)
    y = np.asarray(da["y"].values, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        try:
            rx, ry = da.rio.resolution()
        except Exception:
            return np.full(ny, np.nan)
    else:
        rx, ry = x[1] - x[0], y[1] - y[0]
    crs = da.rio.crs
    if crs is None:
        return np.full(ny, np.nan)
    if crs.is_geographic:
        lat0 = np.radians(np.clip(y - abs(ry) / 2, -90, 90))
        lat1 = np.radians(np.clip(y + abs(ry) / 2, -90, 90))
        r = _WGS84_AUTHALIC_RADIUS_M
        return r * r * np.radians(abs(rx)) * np.abs(np.sin(lat1) - np.sin(lat0)) / 1e6
    factor = float(crs.linear_units_factor[1]) if crs.linear_units_factor else 1.0
    return np.full(ny, abs(rx * ry) * factor * factor / 1e6)


def _stats_block(
    labels: np.ndarray,
    block: np.ndarray | None,
    areas_y: np.ndarray,
    *,
    k: int,
    nodata: int,
) -> np.ndarray:
    lab = np.asarray(labels)
    nx = lab.shape[1]
    areas = np.repeat(np.asarray(areas_y, dtype=np.float64), nx)
    flat = lab.ravel().astype(np.int64)
    ok = (flat != nodata) & (flat >= 0) & (flat < k)
    d = 0 if block is None else block.shape[0]
    out = np.zeros((k * (2 + d), 1, 1), dtype=np.float64)
    if ok.any():
        idx = flat[ok]
        out[:k, 0, 0] = np.bincount(idx, minlength=k)[:k]
        out[k : 2 * k, 0, 0] = np.bincount(idx, weights=areas[ok], minlength=k)[:k]
        if block is not None:
            vec = np.asarray(block).reshape(d, -1)[:, ok].T.astype(np.float64)
            good = ~np.isnan(vec).any(axis=1)
            sums = np.zeros((k, d))
            np.add.at(sums, idx[good], vec[good])
            out[2 * k :, 0, 0] = sums.ravel()
    return out


def _stats_labels_only(
    labels: np.ndarray, areas_y: np.ndarray, *, k: int, nodata: int
) -> np.ndarray:
    return _stats_block(labels, None, areas_y, k=k, nodata=nodata)


def _as_dask(da: xr.DataArray) -> dsa.Array:
    return da.data if isinstance(da.data, dsa.Array) else dsa.from_array(da.data, chunks=512)


def cluster_stats(
    labels: xr.DataArray,
    field: xr.DataArray | None = None,
    *,
    n_clusters: int | None = None,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pixel counts, areas (km^2) and mean embeddings per cluster, as a table.

    Parameters
    ----------
    labels : xarray.DataArray
        ``(y, x)`` cluster map (e.g. from ``KMeans.predict``), nodata 255/65535.
    field : xarray.DataArray, optional
        The embedding field; when given, the table has one column per band holding the
        mean embedding of the cluster's pixels.
    n_clusters : int, optional
        Number of clusters (default: ``labels.attrs["n_clusters"]``).
    names : sequence of str, optional
        Cluster names (default ``cluster_<id>``).

    Returns
    -------
    pandas.DataFrame
        Indexed by cluster id, columns ``name``, ``pixels``, ``fraction``, ``area_km2``
        and the band names.
    """
    k = int(n_clusters if n_clusters is not None else labels.attrs["n_clusters"])
    if field is None:
        (total,) = compute(stats_totals(labels, n_clusters=k))
        return stats_table(total, n_clusters=k, names=names)
    check_embedding(field, require_crs=False)
    nodata = CLASS_NODATA.get(str(labels.dtype), -1)
    lab = _as_dask(labels)
    areas = dsa.from_array(pixel_area_km2(labels), chunks=(lab.chunks[0],))
    data = _as_dask(field).rechunk((-1, lab.chunks[0], lab.chunks[1]))
    bands = [str(b) for b in field["band"].values]
    parts = dsa.blockwise(
        functools.partial(_stats_block, k=k, nodata=nodata),
        "zij",
        lab,
        "ij",
        data,
        "bij",
        areas,
        "i",
        concatenate=True,
        new_axes={"z": k * (2 + len(bands))},
        adjust_chunks={"i": 1, "j": 1},
        dtype=np.float64,
        meta=np.empty((0, 0, 0)),
    )
    (total,) = compute(parts.sum(axis=(1, 2)))
    return stats_table(total, n_clusters=k, names=names, bands=bands)


def stats_totals(labels: xr.DataArray, *, n_clusters: int) -> dsa.Array:
    """Lazy per-cluster pixel counts and areas of ``labels``, for :func:`stats_table`.

    Computed together with the writes of the same cluster map, the labels are predicted
    once for both.
    """
    nodata = CLASS_NODATA.get(str(labels.dtype), -1)
    lab = _as_dask(labels)
    areas = dsa.from_array(pixel_area_km2(labels), chunks=(lab.chunks[0],))
    k = int(n_clusters)
    parts = dsa.blockwise(
        functools.partial(_stats_labels_only, k=k, nodata=nodata),
        "zij",
        lab,
        "ij",
        areas,
        "i",
        new_axes={"z": 2 * k},
        adjust_chunks={"i": 1, "j": 1},
        dtype=np.float64,
        meta=np.empty((0, 0, 0)),
    )
    return parts.sum(axis=(1, 2))


def stats_table(
    total: np.ndarray,
    *,
    n_clusters: int,
    names: Sequence[str] | None = None,
    bands: Sequence[str] = (),
) -> pd.DataFrame:
    """Build the table of :func:`cluster_stats` from its totals (see :func:`stats_totals`)."""
    k = int(n_clusters)
    counts = total[:k]
    table = pd.DataFrame(
        {
            "name": list(names) if names is not None else [f"cluster_{i}" for i in range(k)],
            "pixels": counts.astype(np.int64),
            "fraction": counts / max(counts.sum(), 1),
            "area_km2": total[k : 2 * k],
        },
        index=pd.RangeIndex(k, name="cluster"),
    )
    if bands:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = total[2 * k :].reshape(k, len(bands)) / counts[:, None]
        table = pd.concat([table, pd.DataFrame(means, columns=bands, index=table.index)], axis=1)
    return table


def _pair_block(
    a: np.ndarray, b: np.ndarray, *, na: int, nb: int, nod_a: int, nod_b: int
) -> np.ndarray:
    fa = np.asarray(a).ravel().astype(np.int64)
    fb = np.asarray(b).ravel().astype(np.int64)
    ok = (fa != nod_a) & (fb != nod_b) & (fa >= 0) & (fa < na) & (fb >= 0) & (fb < nb)
    table = np.bincount(fa[ok] * nb + fb[ok], minlength=na * nb).astype(np.int64)
    return table.reshape(na * nb, 1, 1)


def contingency_table(a: xr.DataArray, b: xr.DataArray, *, n_a: int, n_b: int) -> np.ndarray:
    """``(n_a, n_b)`` pixel counts of label pairs where neither map is nodata."""
    da_ = _as_dask(a)
    db_ = _as_dask(b).rechunk(da_.chunks)
    parts = dsa.blockwise(
        functools.partial(
            _pair_block,
            na=n_a,
            nb=n_b,
            nod_a=CLASS_NODATA.get(str(a.dtype), -1),
            nod_b=CLASS_NODATA.get(str(b.dtype), -1),
        ),
        "zij",
        da_,
        "ij",
        db_,
        "ij",
        new_axes={"z": n_a * n_b},
        adjust_chunks={"i": 1, "j": 1},
        dtype=np.int64,
        meta=np.empty((0, 0, 0), dtype=np.int64),
    )
    (total,) = compute(parts.sum(axis=(1, 2)))
    return np.asarray(total).reshape(n_a, n_b)


def adjusted_rand_index(
    pred: xr.DataArray,
    truth: xr.DataArray,
    *,
    n_pred: int | None = None,
    n_truth: int | None = None,
) -> float:
    """Compute the adjusted Rand index between two ``(y, x)`` class maps (nodata pixels ignored).

    Computed from a contingency table reduced blockwise, so it works on maps larger
    than memory. Equals ``sklearn.metrics.adjusted_rand_score`` on the valid pixels.

    Parameters
    ----------
    pred, truth : xarray.DataArray
        Class maps on the same grid (uint8 with nodata 255, or uint16/int16).
    n_pred, n_truth : int, optional
        Number of classes of each (default: ``attrs["n_clusters"]`` or the dtype's
        nodata value).

    Returns
    -------
    float
    """

    def size(da: xr.DataArray, n: int | None) -> int:
        if n is not None:
            return int(n)
        if "n_clusters" in da.attrs:
            return int(da.attrs["n_clusters"])
        nod = CLASS_NODATA.get(str(da.dtype))
        if nod is None or nod > 255:
            raise ValueError(f"give the number of classes of the {da.dtype} map explicitly")
        return int(nod)

    table = contingency_table(pred, truth, n_a=size(pred, n_pred), n_b=size(truth, n_truth))
    return ari_from_table(table)


def ari_from_table(table: np.ndarray) -> float:
    """Compute the adjusted Rand index from a contingency table (Hubert and Arabie)."""
    t = table.astype(np.float64)
    n = t.sum()
    if n < 2:
        return 1.0
    comb = lambda v: v * (v - 1) / 2.0  # noqa: E731
    sum_ij = comb(t).sum()
    sum_a = comb(t.sum(axis=1)).sum()
    sum_b = comb(t.sum(axis=0)).sum()
    expected = sum_a * sum_b / comb(n)
    top = (sum_a + sum_b) / 2.0
    if top == expected:
        return 1.0
    return float((sum_ij - expected) / (top - expected))
