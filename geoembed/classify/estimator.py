"""Run any fitted scikit-learn classifier or regressor over a lazy field, blockwise."""

from __future__ import annotations

import warnings
from typing import Any

import dask
import numpy as np
import xarray as xr

from geoembed._blockwise import map_pixels
from geoembed._threads import single_thread_blas
from geoembed.errors import BandMismatchError, ModelError
from geoembed.schema import CLASS_NODATA, check_embedding, class_dtype

__all__ = ["OUTPUTS", "apply_estimator"]

OUTPUTS = ("class", "proba", "value")


def _check_estimator(est: Any, field: xr.DataArray, output: str, source: str | None) -> None:
    what = source or "the embedding field"
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(est)
    except NotFittedError as exc:
        raise ModelError(f"{type(est).__name__} is not fitted; call fit() first.") from exc
    except TypeError:  # not a scikit-learn estimator: duck-typed predict is enough
        pass
    names = [str(b) for b in field["band"].values]
    n_in = getattr(est, "n_features_in_", None)
    if n_in is not None and n_in != len(names):
        raise BandMismatchError(
            f"{what} has {len(names)} bands but {type(est).__name__} was fitted on "
            f"{n_in} features; use the field the training vectors were sampled from."
        )
    feat = getattr(est, "feature_names_in_", None)
    if feat is not None and [str(f) for f in feat] != names:
        raise BandMismatchError(
            f"{type(est).__name__} was fitted on features {list(feat)[:3]}... but {what} has "
            f"bands {names[:3]}...; select and order the bands like the training table."
        )
    needed = "predict_proba" if output == "proba" else "predict"
    if not hasattr(est, needed):
        raise ModelError(f"{type(est).__name__} has no {needed}(); output={output!r} needs it.")
    if output in ("class", "proba") and not hasattr(est, "classes_"):
        raise ModelError(
            f"{type(est).__name__} is not a classifier (no classes_); use output='value'."
        )


#: pixels per estimator call: a tile of the field's global grid (see
#: :func:`geoembed._blockwise.map_pixels`), so that BLAS inside the estimator always sees
#: the same batch shape and each pixel the same position in it, whatever the chunking
ESTIMATOR_TILE = (8, 128)


def _predict_block(vectors: np.ndarray, est: Any, output: str) -> np.ndarray:
    with single_thread_blas(), warnings.catch_warnings():
        # estimators fitted on a DataFrame warn about missing feature names
        warnings.filterwarnings("ignore", message=".*feature names.*", category=UserWarning)
        if output == "proba":
            return np.asarray(est.predict_proba(vectors), dtype=np.float32)
        pred = np.asarray(est.predict(vectors))
    if output == "class":
        return np.searchsorted(np.asarray(est.classes_), pred).astype(np.float32)
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
    estimator : fitted scikit-learn estimator
        Anything with ``predict`` (and ``predict_proba`` for probabilities) taking
        ``(n, band)`` float32 arrays: random forest, logistic regression, MLP,
        a pipeline, a regressor...
    output : {"class", "proba", "value"}, default "class"
        ``"class"``: ``(y, x)`` class ids (positions in ``estimator.classes_``), uint8 or
        uint16 with nodata 255/65535, class names in ``attrs["class_names"]``;
        ``"proba"``: ``(class, y, x)`` float32 probabilities, NaN at nodata;
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
    delayed_est = dask.delayed(estimator, pure=True)
    if output in ("class", "proba"):
        classes = [str(c) for c in np.asarray(estimator.classes_)]
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
            )
            out.attrs.update(class_names=classes, estimator=name)
            return out
        dtype = class_dtype(len(classes))
        nodata = CLASS_NODATA[dtype.name]
        out = map_pixels(
            field,
            _predict_block,
            n_out=1,
            args=(delayed_est, "class"),
            fill=np.nan,
            dtype=np.float32,
            name="class",
            tile=ESTIMATOR_TILE,
        )
        cls = out.isel(output=0, drop=True).fillna(nodata).astype(dtype).rename("class")
        cls = cls.rio.write_nodata(nodata, encoded=False)
        cls.attrs.update(class_names=classes, estimator=name)
        return cls
    # regression: find the number of targets from one dummy prediction (no Dask compute)
    probe = np.zeros((1, field.sizes["band"]), np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*feature names.*", category=UserWarning)
        shape = np.asarray(estimator.predict(probe)).shape
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
    )
    out.attrs.update(estimator=name)
    return out.isel(output=0, drop=True) if len(shape) == 1 else out
