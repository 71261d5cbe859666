"""Similarity search: find the places that look like a set of reference places.

* :func:`reference_vectors` samples the field under reference points or polygons.
* :func:`similarity` builds a lazy ``(y, x)`` float32 similarity field: cosine or dot
  product with the references' mean, or the maximum over every reference.
* :func:`top_similar` finds the ``N`` most similar pixels of a field of any size with a
  Dask tree reduction of per-block top-``N`` lists (never a full sort).
* :func:`choose_threshold` / :func:`similarity_mask` turn the field into a mask and say
  which threshold was used and why.

Every similarity value is an order-fixed float64 dot product (:mod:`geoembed._exact`)
rounded to float32, so a pixel's value depends only on its vector and the references:
the same bytes whatever the chunking, the worker count or the CPU's BLAS kernel. The
``reduce="max"`` cosine search picks the best reference with the exact kNN search of
:mod:`geoembed.classify.knn` (ties: lowest reference row) and re-scores it exactly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from geoembed._blockwise import map_pixels
from geoembed._exact import row_dots, unit_rows
from geoembed._threads import single_thread_blas
from geoembed.errors import BandMismatchError, LabelError, SchemaError
from geoembed.output_schema import similarity_map, threshold_mask
from geoembed.schema import check_embedding

__all__ = [
    "METRICS",
    "REDUCTIONS",
    "SimilarityScorer",
    "choose_threshold",
    "reference_vectors",
    "similarity",
    "similarity_mask",
    "top_similar",
]

METRICS = ("cosine", "dot")
REDUCTIONS = ("mean", "max")
#: mask values: 1 similar, 0 not similar, 255 nodata
MASK_NODATA = 255
_REF_COLUMN = "__geoembed_reference__"
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


class SimilarityScorer:
    """Similarity of vectors to a set of references (picklable, tokenizable).

    Parameters
    ----------
    references : array-like (n, d)
        Reference vectors (finite).
    metric : {"cosine", "dot"}
        Cosine similarity (vectors and references scaled to unit length) or plain dot
        product.
    reduce : {"mean", "max"}
        Compare with the mean of the references (for cosine: the mean of the unit
        references, scaled to unit length), or take the maximum over the references.
    """

    def __init__(self, references: Any, *, metric: str = "cosine", reduce: str = "mean") -> None:
        if metric not in METRICS:
            raise LabelError(f"metric {metric!r} is not supported; use one of {METRICS}.")
        if reduce not in REDUCTIONS:
            raise LabelError(f"reduce {reduce!r} is not supported; use one of {REDUCTIONS}.")
        refs = np.asarray(references, dtype=np.float32)
        if refs.ndim == 1:
            refs = refs[None, :]
        if refs.ndim != 2 or len(refs) == 0:
            raise LabelError(
                f"references must be a non-empty (n, bands) array; got shape {refs.shape}."
            )
        if not np.isfinite(refs).all():
            raise LabelError("reference vectors hold NaN or inf; drop nodata samples first.")
        self.metric = metric
        self.reduce = reduce
        self.references = np.ascontiguousarray(refs)
        self._index: Any = None
        if metric == "cosine":
            units = unit_rows(refs)
            if not (row_dots(units, units) > 0).all():
                raise LabelError("a reference vector is all zeros; cosine is undefined for it.")
            self.table = units
        else:
            self.table = self.references
        if reduce == "mean":
            mean = self.table.astype(np.float64).mean(axis=0)
            self.table = unit_rows(mean[None]) if metric == "cosine" else mean[None]
            self.table = np.ascontiguousarray(self.table, dtype=np.float32)

    @property
    def n_features(self) -> int:
        """Length of the vectors."""
        return int(self.references.shape[1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_index"] = None  # rebuilt on the worker
        return state

    def __dask_tokenize__(self) -> str:
        h = hashlib.sha1(usedforsecurity=False)
        h.update(self.references.tobytes())
        h.update(repr((self.references.shape, self.metric, self.reduce)).encode())
        return h.hexdigest()

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """Float32 similarity of each row of ``vectors`` ``(n, d)``."""
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.metric == "cosine":
            q = unit_rows(q)
        if self.reduce == "mean":
            return row_dots(q, self.table[0]).astype(np.float32)
        if self.metric == "cosine":
            if self._index is None:
                from geoembed.classify.search import ExactIndex

                self._index = ExactIndex(self.table, "cosine")
            _, ind = self._index.search(q, 1)
            return row_dots(q, self.table[ind[:, 0]]).astype(np.float32)
        best = np.full(len(q), -np.inf)
        for ref in self.table:  # dot products have no index: one exact pass per reference
            np.maximum(best, row_dots(q, ref), out=best)
        return best.astype(np.float32)


def _read_geometries(source: Any) -> Any:
    """Points/polygons from a path or (Geo)DataFrame, with a constant reference column."""
    import geopandas as gpd

    from geoembed.labels import load_labels

    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        path = Path(source)
        if not path.exists():
            raise LabelError(f"reference geometries {str(path)!r} do not exist; check the path.")
        suffix = path.suffix.lower()
        if suffix in _TABLE_SUFFIXES:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".geoparquet"):
            try:
                frame = gpd.read_parquet(path)
            except (ValueError, KeyError):
                frame = pd.read_parquet(path)
        else:
            try:
                frame = gpd.read_file(path)
            except Exception as exc:
                raise LabelError(
                    f"reference geometries {str(path)!r} cannot be read ({exc}); use GeoJSON, "
                    "GeoPackage, GeoParquet, Shapefile or a CSV with coordinate columns."
                ) from exc
    frame[_REF_COLUMN] = 1
    return load_labels(frame, label_column=_REF_COLUMN)


def reference_vectors(
    field: xr.DataArray, geometries: Any, *, all_touched: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the field's vectors under reference points or polygons.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field with a CRS.
    geometries : path or GeoDataFrame
        Points or polygons (any CRS, reprojected explicitly); a polygon gives every pixel
        whose centre is inside it. Other columns are ignored.
    all_touched : bool
        Polygons take every pixel they touch.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(n, band)`` float32 vectors and ``(n,)`` group ids (the source row: the
        polygon or point each vector came from), for grouped hold-out.

    Raises
    ------
    LabelError
        Geometries outside the field or on nodata (counted per reason, see
        :func:`geoembed.labels.training_from_geometries`).
    """
    from geoembed.labels import training_from_geometries

    gdf = _read_geometries(geometries)
    ts = training_from_geometries(
        field, gdf, label_column=_REF_COLUMN, all_touched=all_touched, on_conflict="keep"
    )
    return ts.X, ts.groups


def _score_block(vectors: np.ndarray, scorer: SimilarityScorer) -> np.ndarray:
    with single_thread_blas():
        return scorer(vectors)


def similarity(
    field: xr.DataArray,
    references: Any,
    *,
    metric: str = "cosine",
    reduce: str = "mean",
    source: str | None = None,
) -> xr.DataArray:
    """Lazy similarity of every pixel of ``field`` to the references.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field ``(band, y, x)``.
    references : array-like (n, band) or (band,), or SimilarityScorer
        Reference vectors (e.g. from :func:`reference_vectors`), one embedding vector, or
        a prepared scorer.
    metric, reduce
        See :class:`SimilarityScorer`.
    source : str, optional
        How to name the field in error messages.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` float32 similarity named ``similarity`` (cosine: -1..1), NaN at nodata.
        Nothing is computed.

    Raises
    ------
    BandMismatchError
        References of another length than the field's band count.
    """
    check_embedding(field, source=source, require_crs=False)
    scorer = (
        references
        if isinstance(references, SimilarityScorer)
        else SimilarityScorer(references, metric=metric, reduce=reduce)
    )
    n_bands = field.sizes["band"]
    if scorer.n_features != n_bands:
        raise BandMismatchError(
            f"{source or 'the embedding field'} has {n_bands} bands but the reference vectors "
            f"have {scorer.n_features}; take the references from the same embedding product."
        )
    out = map_pixels(
        field,
        _score_block,
        n_out=1,
        args=(dask.delayed(scorer, pure=True),),
        fill=np.nan,
        dtype=np.float32,
        name="similarity",
    ).isel(output=0, drop=True)
    attrs = {
        "metric": scorer.metric,
        "reduce": scorer.reduce,
        "n_references": len(scorer.references),
        "long_name": f"{scorer.metric} similarity to the references ({scorer.reduce})",
    }
    return similarity_map(field, out, attrs=attrs)


# ---------------------------------------------------------------------------- top N


def _select(values: np.ndarray, index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``n`` best candidates (value descending, then pixel index ascending)."""
    ok = ~np.isnan(values)
    values, index = values[ok], index[ok]
    if len(values) > n:
        # every value tied with the n-th best stays a candidate: ties go to the lower index
        kth = np.partition(values, len(values) - n)[len(values) - n]
        keep = values >= kth
        values, index = values[keep], index[keep]
    order = np.lexsort((index, -values.astype(np.float64)))[:n]
    return values[order], index[order]


def _block_top(
    block: np.ndarray, row0: int, col0: int, width: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices(block.shape)
    index = (rows + row0).astype(np.int64) * width + (cols + col0)
    return _select(block.ravel(), index.ravel(), n)


def _merge_top(parts: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.concatenate([p[0] for p in parts])
    index = np.concatenate([p[1] for p in parts])
    return _select(values, index, n)


def _top_frame(
    part: tuple[np.ndarray, np.ndarray], xs: np.ndarray, ys: np.ndarray, width: int
) -> pd.DataFrame:
    values, index = part
    rows, cols = np.divmod(index, width)
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(values) + 1, dtype=np.int64),
            "similarity": values.astype(np.float32),
            "row": rows.astype(np.int64),
            "col": cols.astype(np.int64),
            "x": xs[cols],
            "y": ys[rows],
        }
    )


def top_similar(sim: xr.DataArray, n: int, *, split_every: int = 8) -> Any:
    """Find the ``n`` most similar pixels of a similarity field, as a lazy table.

    Each block yields its own best ``n`` (value, then global pixel index), and the lists
    are merged ``split_every`` at a time in a tree, so memory holds at most
    ``split_every * n`` candidates besides one block: fields larger than memory work.
    Ties are broken by the pixel index (row-major over the whole field): the result does
    not depend on the chunking. NaN (nodata) pixels never appear.

    Parameters
    ----------
    sim : xarray.DataArray
        ``(y, x)`` similarity field (e.g. from :func:`similarity`).
    n : int
        Number of pixels.
    split_every : int
        Fan-in of the tree reduction.

    Returns
    -------
    dask.delayed.Delayed
        Computes to a :class:`pandas.DataFrame` with ``rank`` (1 = most similar),
        ``similarity``, ``row``, ``col`` and the pixel centre ``x``, ``y`` in the field's
        CRS (fewer than ``n`` rows when the field has fewer valid pixels).
    """
    import dask.array as dsa

    if sim.dims != ("y", "x"):
        raise SchemaError(f"top_similar needs a (y, x) field, got dims {sim.dims}.")
    if not isinstance(n, int | np.integer) or n < 1:
        raise LabelError(f"the number of top pixels must be a positive integer, got {n!r}.")
    if split_every < 2:
        raise LabelError("split_every must be at least 2.")
    data = sim.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(np.asarray(data), chunks=(512, 512))
    width = int(data.shape[1])
    row_starts = np.concatenate([[0], np.cumsum(data.chunks[0])[:-1]])
    col_starts = np.concatenate([[0], np.cumsum(data.chunks[1])[:-1]])
    blocks = data.to_delayed(optimize_graph=False)
    top = dask.delayed(_block_top, pure=True)
    merge = dask.delayed(_merge_top, pure=True)
    level = [
        top(blocks[i, j], int(row_starts[i]), int(col_starts[j]), width, int(n))
        for i in range(blocks.shape[0])
        for j in range(blocks.shape[1])
    ]
    while len(level) > 1:
        level = [
            merge(level[i : i + split_every], int(n)) for i in range(0, len(level), split_every)
        ]
    xs = np.asarray(sim["x"].values, dtype=np.float64)
    ys = np.asarray(sim["y"].values, dtype=np.float64)
    return dask.delayed(_top_frame, pure=True)(level[0], xs, ys, width)


# ---------------------------------------------------------------------------- threshold


def _folds(groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Held-out folds of whole groups (polygons/points) with the classifier CV's logic."""
    from types import SimpleNamespace

    from geoembed.assess import make_folds

    n_groups = len(np.unique(groups))
    k = min(k, n_groups)
    ts = SimpleNamespace(y=np.zeros(len(groups), np.int64), groups=groups, xy=None)
    folds, _ = make_folds(ts, f"spatial:{k}", seed=seed)
    return folds


def choose_threshold(
    references: Any,
    *,
    negatives: Any = None,
    groups: Any = None,
    metric: str = "cosine",
    reduce: str = "mean",
    precision: float = 0.9,
    quantile: float = 0.05,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Choose a similarity threshold from held-out references (and negatives).

    The references are split into ``folds`` folds of whole groups (polygons or points,
    :func:`geoembed.assess.make_folds`); each reference is scored against the references
    of the other folds (out-of-fold), as an unseen place like them would be scored by the
    map. Negatives are scored against all references, as the map scores them.

    * With ``negatives``: the lowest threshold whose precision, counted over the held-out
      references and the negatives as given, reaches ``precision`` (so the highest
      recall at that precision). If no threshold reaches it, the one with the best
      precision is taken and ``reached`` is false.
    * Without: the ``quantile`` of the out-of-fold reference scores (default 0.05: about
      95 % of places like the references pass; nothing is said about precision).

    Parameters
    ----------
    references : array-like (n, d)
        Reference vectors (at least 2 groups).
    negatives : array-like (m, d), optional
        Vectors of places that are *not* like the references.
    groups : array-like (n,), optional
        Group of each reference (default: each its own).
    metric, reduce
        As for :func:`similarity`.
    precision : float
        Precision target (with negatives).
    quantile : float
        Quantile of the reference scores (without negatives).
    folds : int
        Number of folds (at most the number of groups).
    seed : int
        Seed of the folds.

    Returns
    -------
    dict
        ``threshold``, ``method``, ``precision`` and ``recall`` on the held-out data
        (precision only with negatives), ``n_references``, ``n_negatives`` and the target.
    """
    refs = np.asarray(references, dtype=np.float32)
    groups = np.arange(len(refs)) if groups is None else np.asarray(groups)
    if len(refs) < 2 or len(np.unique(groups)) < 2:
        raise LabelError(
            "choosing a threshold needs at least two reference places (points or polygons) "
            "to hold one out; add references or give the threshold explicitly."
        )
    oof = np.empty(len(refs), np.float32)
    for test in _folds(groups, folds, seed):
        train = np.setdiff1d(np.arange(len(refs)), test)
        oof[test] = SimilarityScorer(refs[train], metric=metric, reduce=reduce)(refs[test])
    info: dict[str, Any] = {"n_references": len(refs), "metric": metric, "reduce": reduce}
    if negatives is None or len(negatives) == 0:
        if not 0.0 <= quantile < 1.0:
            raise LabelError(f"quantile={quantile} must lie in [0, 1).")
        t = float(np.quantile(oof.astype(np.float64), quantile, method="lower"))
        return {
            **info,
            "threshold": t,
            "method": f"quantile {quantile:g} of the out-of-fold reference similarities",
            "recall": float(np.mean(oof >= t)),
            "precision": None,
            "n_negatives": 0,
        }
    if not 0.0 < precision <= 1.0:
        raise LabelError(f"precision={precision} must lie in (0, 1].")
    neg = SimilarityScorer(refs, metric=metric, reduce=reduce)(np.asarray(negatives, np.float32))
    cand = np.unique(np.concatenate([oof, neg]))
    pos_sorted, neg_sorted = np.sort(oof), np.sort(neg)
    tp = len(oof) - np.searchsorted(pos_sorted, cand, side="left")
    fp = len(neg) - np.searchsorted(neg_sorted, cand, side="left")
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    ok = np.flatnonzero(prec >= precision)
    reached = bool(len(ok))
    i = int(ok[0]) if reached else int(np.argmax(prec))
    return {
        **info,
        "threshold": float(cand[i]),
        "method": f"lowest threshold reaching precision {precision:g} on held-out references "
        "and negatives",
        "precision_target": precision,
        "reached": reached,
        "precision": float(prec[i]),
        "recall": float(tp[i] / len(oof)),
        "n_negatives": len(neg),
    }


def similarity_mask(sim: xr.DataArray, threshold: float) -> xr.DataArray:
    """Lazy uint8 mask: 1 where ``sim >= threshold``, 0 elsewhere, 255 at nodata."""
    return threshold_mask(sim, threshold, class_names=["not similar", "similar"], name="similar")
