"""Apply a kNN model over a lazy embedding field, block by block."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import xarray as xr

from geoembed._aef_codes import decode_codes
from geoembed._blockwise import map_pixels
from geoembed._threads import single_thread_blas
from geoembed.errors import BandMismatchError, LabelError, ModelError
from geoembed.output_schema import (
    CLASSES,
    CONFIDENCE,
    PROBABILITIES,
    class_map,
    confidence_map,
    probability_map,
)
from geoembed.schema import check_embedding

__all__ = ["check_model_bands", "classify_knn", "fit_model", "predict_field"]


def check_model_bands(model: Any, field: xr.DataArray, *, source: str | None = None) -> None:
    """Check that ``field`` has the bands (count, names, order) the model was trained on.

    Raises
    ------
    BandMismatchError
        With the differing names and the fix.
    """
    what = source or "the embedding field"
    names = [str(b) for b in field["band"].values]
    n_features = getattr(model, "n_features", None)
    if n_features is not None and len(names) != n_features:
        raise BandMismatchError(
            f"{what} has {len(names)} bands but the model was trained on vectors of length "
            f"{n_features}; use the field (or embedding product) the labels were sampled from."
        )
    expected = getattr(model, "band_names", None)
    if expected and list(expected) != names:
        if sorted(expected) == sorted(names):
            raise BandMismatchError(
                f"{what} has the model's bands in a different order; reorder with "
                "field.sel(band=model.band_names)."
            )
        missing = [b for b in expected if b not in names][:5]
        raise BandMismatchError(
            f"{what} lacks bands the model was trained on (e.g. {missing}); its bands are "
            f"{names[:3]}... Use the field the labels were sampled from."
        )


def _knn_block(vectors: np.ndarray, model: Any, probabilities: bool) -> np.ndarray:
    with single_thread_blas():  # Dask runs one task per core
        return model.pixel_outputs(vectors, probabilities=probabilities)


def _knn_block_bands(
    block: np.ndarray, model: Any, probabilities: bool
) -> tuple[np.ndarray, np.ndarray]:
    with single_thread_blas():
        if block.dtype == np.int8:  # AEF codes: decoded one query tile at a time
            return model.block_outputs(block, probabilities=probabilities, decode=decode_codes)
        return model.block_outputs(np.asarray(block, np.float32), probabilities=probabilities)


def predict_field(
    model: Any,
    field: xr.DataArray,
    *,
    probabilities: bool = False,
    source: str | None = None,
) -> xr.Dataset:
    """Classify every pixel of ``field`` with a fitted kNN model, lazily.

    The model (its training matrix) is wrapped in :func:`dask.delayed`, so it is sent
    to each worker once rather than embedded in every task.

    Parameters
    ----------
    model : KNNClassifier or ApproximateKNNClassifier
        A fitted model.
    field : xarray.DataArray
        Canonical embedding field ``(band, y, x)``.
    probabilities : bool, default False
        Also return per-class vote shares.
    source : str, optional
        How to name the field in error messages.

    Returns
    -------
    xarray.Dataset
        The outputs of :mod:`geoembed.output_schema`: ``classes`` (y, x) class ids,
        uint8/uint16 with nodata 255/65535 (class names in ``attrs["class_names"]``,
        colours in ``attrs["colors"]`` when the model has them), ``confidence`` (y, x)
        float32 (winning vote share, NaN at nodata) and, if asked, ``probabilities``
        (class, y, x) float32 whose ``class`` coordinate holds the class names. Nothing
        is computed.
    """
    check_embedding(field, source=source, require_crs=False)
    if not hasattr(model, "pixel_outputs"):
        raise ModelError(
            f"{type(model).__name__} is not a geoembed kNN model; run scikit-learn "
            "estimators with geoembed.classify.apply_estimator()."
        )
    model._check_fitted()
    check_model_bands(model, field, source=source)
    n_classes = model.n_classes
    n_out = 2 + (n_classes if probabilities else 0)
    band_major = hasattr(model, "block_outputs")  # reads blocks in place
    out = map_pixels(
        field,
        _knn_block_bands if band_major else _knn_block,
        n_out=n_out,
        band_major=band_major,
        aef_codes=True,
        args=(dask.delayed(model, pure=True), probabilities),
        fill=np.nan,
        dtype=np.float32,
        out_dim="output",
        name="knn",
    )
    names = list(model.class_names)
    attrs = {
        "class_names": names,
        "k": model.k,
        "metric": model.metric,
        "weights": model.weights,
        "model": getattr(model, "kind", "exact"),
    }
    cls = class_map(
        field,
        out.isel(output=0, drop=True),
        class_names=names,
        colors=getattr(model, "colors", None),
        n_classes=n_classes,
        attrs=attrs,
    )
    conf = confidence_map(
        field,
        out.isel(output=1, drop=True),
        attrs=dict(attrs, long_name="winning vote share"),
    )
    data = {CLASSES: cls, CONFIDENCE: conf}
    if probabilities:
        data[PROBABILITIES] = probability_map(
            field,
            out.isel(output=slice(2, None)),
            class_names=names,
            attrs=dict(attrs, long_name="vote share per class"),
        )
    return xr.Dataset(data)


def classify_knn(
    field: xr.DataArray,
    training: Any,
    *,
    k: int = 5,
    metric: str = "cosine",
    weights: str = "uniform",
    probabilities: bool = False,
    approximate: bool | str = False,
    source: str | None = None,
) -> xr.Dataset:
    """Fit a kNN model on ``training`` and classify ``field`` with it, lazily.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field.
    training : TrainingSet, (X, y) tuple, or fitted model
        A :class:`geoembed.labels.TrainingSet`, a pair of arrays ``(X, y)`` with class
        ids ``0..C-1``, or an already fitted :class:`KNNClassifier`.
    k, metric, weights
        See :class:`KNNClassifier` (ignored when ``training`` is a fitted model).
    probabilities : bool, default False
        Also return per-class vote shares.
    approximate : bool or {"ivf", "hnsw"}, default False
        Use an approximate faiss index (for label sets far beyond 1e5 rows); its
        recall@k is measured at fit and stored in the outputs' attributes.
    source : str, optional
        How to name the field in error messages.

    Returns
    -------
    xarray.Dataset
        See :func:`predict_field`.

    Raises
    ------
    LabelError
        Too few training vectors, or a class smaller than ``k`` (before any task runs).
    """
    check_embedding(field, source=source, require_crs=False)
    if hasattr(training, "pixel_outputs"):
        model = training
    else:
        model = fit_model(training, k=k, metric=metric, weights=weights, approximate=approximate)
    ds = predict_field(model, field, probabilities=probabilities, source=source)
    recall = getattr(model, "recall", None)
    if recall is not None:
        for var in ds.data_vars.values():
            var.attrs["recall_at_k"] = recall
    return ds


def fit_model(
    training: Any,
    *,
    k: int = 5,
    metric: str = "cosine",
    weights: str = "uniform",
    approximate: bool | str = False,
    allow_small_classes: bool = False,
    allow_single_class: bool = False,
) -> Any:
    """Fit an exact (or approximate) kNN model on a TrainingSet or an ``(X, y)`` pair.

    Training data with a single class would paint every pixel that class: that is an
    error unless ``allow_single_class=True`` (e.g. a deliberate presence-only map).
    """
    from geoembed.classify.approximate import ApproximateKNNClassifier
    from geoembed.classify.knn import KNNClassifier

    if isinstance(training, tuple) and len(training) == 2:
        X, y = training
        meta: dict[str, Any] = {}
    elif hasattr(training, "X") and hasattr(training, "y"):
        X, y = training.X, training.y
        meta = {
            "class_names": getattr(training, "class_names", None),
            "class_values": getattr(training, "class_values", None),
            "colors": getattr(training, "colors", None),
            "band_names": getattr(training, "bands", None),
        }
    else:
        raise LabelError(
            f"training must be a geoembed.labels.TrainingSet or an (X, y) pair, not "
            f"{type(training).__name__}."
        )
    present = np.unique(np.asarray(y))
    if present.size < 2 and not allow_single_class:
        names = meta.get("class_names")
        which = (
            repr(names[int(present[0])])
            if names is not None and present.size and int(present[0]) < len(names)
            else ", ".join(map(str, present)) or "none"
        )
        raise LabelError(
            f"the training data has {present.size} class ({which}), so every pixel would get "
            "it: add samples of the other classes, or pass allow_single_class=True if a "
            "constant map is what you want."
        )
    if approximate:
        kind = "ivf" if approximate is True else str(approximate)
        model: Any = ApproximateKNNClassifier(k, metric=metric, weights=weights, index=kind)
    else:
        model = KNNClassifier(k, metric=metric, weights=weights)
    return model.fit(X, y, allow_small_classes=allow_small_classes, **meta)
