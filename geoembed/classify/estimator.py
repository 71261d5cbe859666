"""Run any fitted scikit-learn (or dask-ml) classifier, clusterer or regressor blockwise."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import dask
import numpy as np
import xarray as xr

from geoembed._blockwise import map_pixels
from geoembed._threads import single_thread_blas
from geoembed.errors import BandMismatchError, ModelError
from geoembed.output_schema import class_map, probability_map
from geoembed.schema import check_embedding

__all__ = ["OUTPUTS", "apply_estimator"]

OUTPUTS = ("class", "proba", "value")


def _postfit(est: Any) -> Any:
    """Return the estimator holding the fitted attributes (dask-ml wrappers delegate).

    ``dask_ml.wrappers.ParallelPostFit`` and ``Incremental`` predict with an inner
    scikit-learn estimator (``_postfit_estimator``); its ``classes_`` and
    ``n_features_in_`` are what the field is checked against.
    """
    if getattr(type(est), "_postfit_estimator", None) is None:
        return est
    try:
        return est._postfit_estimator
    except Exception as exc:  # dask-ml raises NotFittedError from the property
        raise ModelError(
            f"{type(est).__name__} is not fitted; call fit() (or wrap a fitted estimator)."
        ) from exc


def _classes(est: Any) -> np.ndarray | None:
    """Class labels of a classifier; ``0..k-1`` for a clusterer (KMeans, dask-ml KMeans)."""
    ref = _postfit(est)
    classes = getattr(ref, "classes_", None)
    if classes is not None:
        return np.asarray(classes)
    centers = getattr(ref, "cluster_centers_", None)
    if centers is not None and hasattr(ref, "predict"):
        return np.arange(len(np.asarray(centers)))
    return None


def _shippable(est: Any) -> Any:
    """Return a shallow copy without lazy Dask attributes (dask-ml keeps ``labels_`` lazy).

    Such attributes hold the whole training graph: they are not needed to predict and
    must not travel to the workers with the estimator. Wrapped estimators are cleaned
    too.
    """
    attrs = getattr(est, "__dict__", None)
    if attrs is None:
        return est
    drop = [k for k, v in attrs.items() if dask.is_dask_collection(v)]
    inner = {
        k: _shippable(attrs[k])
        for k in ("estimator", "estimator_")
        if k in attrs and not dask.is_dask_collection(attrs[k])
    }
    inner = {k: v for k, v in inner.items() if v is not attrs[k]}
    if not drop and not inner:
        return est
    out = copy.copy(est)
    for k in drop:
        delattr(out, k)
    for k, v in inner.items():
        setattr(out, k, v)
    return out


def _is_dask_ml_kmeans(est: Any) -> bool:
    return type(est).__module__.startswith("dask_ml.cluster") and hasattr(est, "cluster_centers_")


def _call(est: Any, method: str, vectors: np.ndarray) -> np.ndarray:
    """``est.<method>(vectors)`` as a NumPy array.

    dask-ml estimators may build and compute Dask graphs inside ``predict`` (and return
    Dask arrays); inside a task they run on the synchronous scheduler, never on the
    cluster the task itself runs on. ``dask_ml.cluster.KMeans.predict`` is
    scikit-learn's ``pairwise_distances_argmin_min`` on each block of its input: it is
    called directly (the same labels, without ~20 ms of graph overhead per call).
    """
    if method == "predict" and _is_dask_ml_kmeans(est):
        from sklearn.metrics import pairwise_distances_argmin_min

        return pairwise_distances_argmin_min(vectors, est.cluster_centers_)[0].astype(np.int32)
    with dask.config.set(scheduler="synchronous"):
        res = getattr(est, method)(vectors)
        if dask.is_dask_collection(res):
            res = dask.compute(res, scheduler="synchronous")[0]
    return np.asarray(res)


def _check_estimator(est: Any, field: xr.DataArray, output: str, source: str | None) -> None:
    what = source or "the embedding field"
    ref = _postfit(est)
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(ref)
    except NotFittedError as exc:
        raise ModelError(f"{type(est).__name__} is not fitted; call fit() first.") from exc
    except TypeError:  # not a scikit-learn estimator: duck-typed predict is enough
        pass
    names = [str(b) for b in field["band"].values]
    n_in = getattr(ref, "n_features_in_", None)
    if n_in is not None and n_in != len(names):
        raise BandMismatchError(
            f"{what} has {len(names)} bands but {type(est).__name__} was fitted on "
            f"{n_in} features; use the field the training vectors were sampled from."
        )
    feat = getattr(ref, "feature_names_in_", None)
    if feat is not None and [str(f) for f in feat] != names:
        raise BandMismatchError(
            f"{type(est).__name__} was fitted on features {list(feat)[:3]}... but {what} has "
            f"bands {names[:3]}...; select and order the bands like the training table."
        )
    needed = "predict_proba" if output == "proba" else "predict"
    if not (hasattr(est, needed) and hasattr(ref, needed)):
        raise ModelError(f"{type(est).__name__} has no {needed}(); output={output!r} needs it.")
    if output == "class" and _classes(est) is None:
        raise ModelError(
            f"{type(est).__name__} is not a classifier (no classes_) nor a clusterer "
            "(no cluster_centers_); use output='value'."
        )
    if output == "proba" and not hasattr(ref, "classes_"):
        raise ModelError(
            f"{type(est).__name__} is not a classifier (no classes_); use output='value'."
        )


#: pixels per estimator call: a tile of the field's global grid (see
#: :func:`geoembed._blockwise.map_pixels`), so that BLAS inside the estimator always sees
#: the same batch shape and each pixel the same position in it, whatever the chunking
ESTIMATOR_TILE = (8, 128)


def _predict_block(
    vectors: np.ndarray, est: Any, output: str, classes: np.ndarray | None = None
) -> np.ndarray:
    with single_thread_blas(), warnings.catch_warnings():
        # estimators fitted on a DataFrame warn about missing feature names
        warnings.filterwarnings("ignore", message=".*feature names.*", category=UserWarning)
        if output == "proba":
            return _call(est, "predict_proba", vectors).astype(np.float32, copy=False)
        pred = _call(est, "predict", vectors)
    if output == "class":
        return np.searchsorted(np.asarray(classes), pred).astype(np.float32)
    return pred.astype(np.float32)


def apply_estimator(
    field: xr.DataArray,
    estimator: Any,
    *,
    output: str = "class",
    source: str | None = None,
) -> xr.DataArray:
    """Apply a fitted estimator to every valid pixel vector of ``field``, lazily.

    The estimator is wrapped in :func:`dask.delayed`, so it travels to each worker once
    instead of being embedded in every task.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field ``(band, y, x)``.
    estimator : fitted scikit-learn or dask-ml estimator
        Anything with ``predict`` (and ``predict_proba`` for probabilities) taking
        ``(n, band)`` float32 arrays: random forest, logistic regression, MLP,
        a pipeline, a regressor, a clusterer (``cluster_centers_``: class ids are
        the cluster labels), ``dask_ml.cluster.KMeans``, or an estimator wrapped in
        ``dask_ml.wrappers.ParallelPostFit``/``Incremental``. Dask arrays returned
        by ``predict`` are computed inside each task on the synchronous scheduler.
    output : {"class", "proba", "value"}, default "class"
        ``"class"``: ``(y, x)`` class ids named ``classes`` (positions in
        ``estimator.classes_``), uint8 or uint16 with nodata 255/65535, class names in
        ``attrs["class_names"]``; ``"proba"``: ``(class, y, x)`` float32
        ``probabilities``, NaN at nodata;
        ``"value"``: regression output ``(y, x)`` (or ``(output, y, x)`` for several
        targets), float32, NaN at nodata.
    source : str, optional
        How to name the field in error messages.

    Returns
    -------
    xarray.DataArray
        Lazy result on the field's grid.
    """
    if output not in OUTPUTS:
        raise ModelError(f"output must be one of {OUTPUTS}, got {output!r}.")
    check_embedding(field, source=source, require_crs=False)
    _check_estimator(estimator, field, output, source)
    name = type(estimator).__name__
    delayed_est = dask.delayed(_shippable(estimator), pure=True)
    if output in ("class", "proba"):
        class_values = _classes(estimator)
        assert class_values is not None  # checked above
        classes = [str(c) for c in class_values]
        if output == "proba":
            out = map_pixels(
                field,
                _predict_block,
                n_out=len(classes),
                args=(delayed_est, "proba"),
                fill=np.nan,
                dtype=np.float32,
                out_dim="class",
                out_coords=classes,
                name="probability",
                tile=ESTIMATOR_TILE,
                aef_codes=True,
            )
            return probability_map(field, out, class_names=classes, attrs={"estimator": name})
        out = map_pixels(
            field,
            _predict_block,
            n_out=1,
            args=(delayed_est, "class", class_values),
            fill=np.nan,
            dtype=np.float32,
            name="class",
            tile=ESTIMATOR_TILE,
            aef_codes=True,
        )
        return class_map(
            field, out.isel(output=0, drop=True), class_names=classes, attrs={"estimator": name}
        )
    # regression: find the number of targets from one dummy prediction (no Dask compute)
    probe = np.zeros((1, field.sizes["band"]), np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*feature names.*", category=UserWarning)
        shape = _call(estimator, "predict", probe).shape
    n_out = 1 if len(shape) == 1 else int(shape[1])
    out = map_pixels(
        field,
        _predict_block,
        n_out=n_out,
        args=(delayed_est, "value"),
        fill=np.nan,
        dtype=np.float32,
        name="value",
        tile=ESTIMATOR_TILE,
        aef_codes=True,
    )
    out.attrs.update(estimator=name)
    return out.isel(output=0, drop=True) if len(shape) == 1 else out
