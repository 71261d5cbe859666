"""The classification job behind ``geoembed classify``: one library call.

open the field -> training set (labels or sampled table) or a saved model -> checks ->
optional cross-validation -> lazy kNN (or scikit-learn) maps -> validated COGs, a JSON
report and the saved model, committed together. Every input and output path is checked
before any Dask task over the field runs; the training set is the one deliberate small
read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoembed.errors import GeoembedError, LabelError, SchemaError
from geoembed.jobs._outputs import compute_all, plan_outputs, write_report, written
from geoembed.runtime.redact import redact_url
from geoembed.schema import (
    CLASS_DIM,
    CLASS_NODATA,
    CLASSES,
    CONFIDENCE,
    PROBABILITIES,
    confidence_map,
)

__all__ = [
    "ClassifyOutputs",
    "ClassifyParams",
    "all_nodata_from_metadata",
    "classify_job",
    "default_cv",
    "run_classify",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ClassifyParams:
    """What to train on (or which model to use) and the kNN settings.

    Exactly one of ``labels``, ``training`` and ``model`` is given.

    Attributes
    ----------
    labels : path or GeoDataFrame, optional
        Labelled points/polygons (sampled from the field).
    training : path or DataFrame, optional
        Table of already-sampled embeddings (e.g. an Earth Engine CSV export).
    label_column : str, optional
        Label column of ``labels`` / ``training`` (required with them).
    class_table : path, optional
        Class table (id, name, colour) for the labels.
    model : path, optional
        A saved model (directory from ``save_model``), instead of labels; a pickled
        scikit-learn estimator only with ``allow_pickle=True``.
    allow_pickle : bool
        Allow loading a pickle/joblib model (it can run code: trusted files only).
    k, metric, weights, approximate
        kNN settings (see :class:`geoembed.classify.KNNClassifier`).
    cv : str, optional
        Cross-validation spec for the report (see :func:`geoembed.assess.make_folds`);
        default: :func:`default_cv`. ``"none"`` skips it.
    seed : int
        Seed of the cross-validation folds.
    allow_single_class : bool
        Accept training labels of a single class (the map is then constant).
    """

    labels: Any = None
    training: Any = None
    label_column: str | None = None
    class_table: Any = None
    model: PathLike | None = None
    allow_pickle: bool = False
    k: int = 5
    metric: str = "cosine"
    weights: str = "uniform"
    approximate: bool | str = False
    cv: str | None = None
    seed: int = 0
    allow_single_class: bool = False


@dataclass(frozen=True)
class ClassifyOutputs:
    """Where the classification job writes (None: not written).

    Attributes
    ----------
    class_map : path
        Class map COG (uint8, nodata 255, class names and colours embedded).
    confidence, probabilities : path, optional
        Winning vote share (float32 COG), per-class vote shares (float32 bands).
    report : path, optional
        JSON report: training-data summary, cross-validation, model, outputs.
    model_dir : path, optional
        Directory to save the fitted kNN model to (arrays + JSON, no pickle).
    """

    class_map: PathLike
    confidence: PathLike | None = None
    probabilities: PathLike | None = None
    report: PathLike | None = None
    model_dir: PathLike | None = None


class _FoldKNN:
    """kNN for cross-validation folds (a fold may hold fewer than k of a class)."""

    def __init__(self, k: int, metric: str, weights: str, n_classes: int) -> None:
        self.args = (k, metric, weights)
        self.n_classes = n_classes

    def fit(self, X: np.ndarray, y: np.ndarray) -> _FoldKNN:
        from geoembed.classify.knn import KNNClassifier

        k, metric, weights = self.args
        self.model = KNNClassifier(min(k, len(X)), metric=metric, weights=weights).fit(
            X, y, class_names=[str(i) for i in range(self.n_classes)], allow_small_classes=True
        )
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)


def default_cv(training: Any) -> str:
    """Spatial CV suited to the training set.

    Whole groups (polygons) when samples share groups; otherwise square blocks of about
    an eighth of the samples' extent built from their coordinates; random folds only when
    neither is known (the report says so).
    """
    groups = np.asarray(training.groups)
    if len(np.unique(groups)) < len(groups):
        return "spatial:5"
    if training.xy is not None and len(training.xy) > 1:
        span = np.ptp(training.xy, axis=0).max()
        size = max(float(np.round(span / 8, -1)), 100.0)
        return f"spatial_blocks:5:{size:g}"
    return "random:5"


def all_nodata_from_metadata(source: Any) -> str | None:
    """Why ``source`` holds no valid pixel, when its metadata alone says so, else None.

    Reads no pixel: a Zarr store none of whose 2-D+ arrays has a chunk written (all fill
    value), or a GeoTIFF whose GDAL statistics say 0 % valid pixels.
    """
    if not isinstance(source, str | os.PathLike):
        return None
    path = Path(source)
    try:
        if path.is_dir() and (
            path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists()
        ):
            import zarr

            node = zarr.open(str(path), mode="r")
            arrays = [a for _, a in node.arrays()] if isinstance(node, zarr.Group) else [node]
            data = [a for a in arrays if a.ndim >= 2]
            if data and all(a.nchunks_initialized == 0 for a in data):
                return "no data chunk was ever written to the store"
        elif path.is_file() and path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(path) as src:
                valid = src.tags(1).get("STATISTICS_VALID_PERCENT")
            if valid is not None and float(valid) == 0:
                return "its GDAL statistics report 0 % valid pixels"
    except Exception as exc:  # unreadable here: open_embeddings gives the real error
        log.debug("metadata nodata check of %s skipped: %s", source, exc)
    return None


def check_params(params: ClassifyParams) -> None:
    """Refuse inconsistent parameters (named as the library names them) before any read.

    Raises
    ------
    LabelError
        Not exactly one of labels/training/model; no label column; cross-validation or
        model saving asked for with a saved model.
    """
    given = [
        name
        for name, value in (
            ("labels", params.labels),
            ("training", params.training),
            ("model", params.model),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise LabelError(
            f"give exactly one of labels=, training= or model= (got {', '.join(given) or 'none'})."
        )
    if params.model is None and not params.label_column:
        raise LabelError("label_column= is required with labels= / training=.")
    if params.model is not None and params.cv not in (None, "none"):
        raise LabelError("cross-validation (cv=) needs training labels, not a saved model.")


def _fit_or_load(
    params: ClassifyParams, field: Any, name: str | None, summary: dict[str, Any]
) -> tuple[Any, Any]:
    """Fit (or load) the model; return it with its training set (None: a saved model)."""
    from geoembed.classify.field import check_model_bands, fit_model
    from geoembed.classify.knn import KNNClassifier
    from geoembed.jobs.model_io import load_model

    if params.model is not None:
        fitted = load_model(params.model, allow_pickle=params.allow_pickle)
        if isinstance(fitted, KNNClassifier):
            check_model_bands(fitted, field, source=name)
        summary["model"] = {"path": str(params.model), "type": type(fitted).__name__}
        return fitted, None
    import geoembed.labels as gl

    assert params.label_column is not None  # check_params ran before the field was opened
    if params.labels is not None:
        gdf = gl.load_labels(params.labels, label_column=params.label_column)
        ts = gl.training_from_geometries(
            field, gdf, label_column=params.label_column, class_table=params.class_table
        )
    else:
        ts = gl.training_from_table(
            params.training, field, label_column=params.label_column, class_table=params.class_table
        )
    # k vs the smallest class, band checks: all before any task over the field
    fitted = fit_model(
        ts,
        k=params.k,
        metric=params.metric,
        weights=params.weights,
        approximate=params.approximate,
        allow_single_class=params.allow_single_class,
    )
    summary["training"] = {
        "n_samples": len(ts),
        "class_counts": ts.class_counts(),
        "report": ts.report,
    }
    summary["model"] = {"type": type(fitted).__name__, **fitted.params()}
    return fitted, ts


def _maps(
    fitted: Any, field: Any, out: ClassifyOutputs, name: str | None
) -> tuple[Any, Any, Any, list[str], Any]:
    """Lazy class map, confidence, probabilities, class names and colours of ``fitted``."""
    from geoembed.classify.estimator import apply_estimator
    from geoembed.classify.field import predict_field
    from geoembed.classify.knn import KNNClassifier

    if isinstance(fitted, KNNClassifier):
        ds = predict_field(fitted, field, probabilities=out.probabilities is not None, source=name)
        return (
            ds[CLASSES],
            ds[CONFIDENCE],
            ds.get(PROBABILITIES),
            list(fitted.class_names),
            fitted.colors,
        )
    class_map = apply_estimator(field, fitted, output="class", source=name)
    proba = None
    if out.probabilities is not None or out.confidence is not None:
        proba = apply_estimator(field, fitted, output="proba", source=name)
    conf = None
    if out.confidence is not None and proba is not None:
        conf = confidence_map(field, proba.max(CLASS_DIM))
    if out.confidence is not None and conf is None:
        raise GeoembedError("this model gives no confidence; do not ask for a confidence map.")
    if out.probabilities is None:
        proba = None
    return class_map, conf, proba, class_map.attrs["class_names"], None


def run_classify(
    source: Any,
    out: ClassifyOutputs,
    params: ClassifyParams,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Classify an embedding field and write the map (and friends) as COGs.

    Parameters
    ----------
    source : path or DataArray
        Anything :func:`geoembed.io.open_embeddings` opens.
    out : ClassifyOutputs
        Output paths.
    params : ClassifyParams
        Training data (or saved model) and kNN settings.
    overwrite : bool
        Replace existing outputs that geoembed wrote (never other files or folders, never
        an input). All outputs are built under temporary names and appear together once
        complete (:class:`geoembed.export.outputs.OutputSet`), or not at all.
    resume : bool
        Finish a killed run of the same job: the COG chunks (and Zarr chunks) it had
        written are reused (:mod:`geoembed.export.resume`).
    progress : bool
        Progress bars on stderr.

    Returns
    -------
    dict
        A JSON-serialisable summary (also the core of the report).
    """
    from geoembed.export import write_cog
    from geoembed.io import open_embeddings
    from geoembed.viz.panel import confusion_plot_path, confusion_png

    check_params(params)
    if params.model is not None and out.model_dir is not None:
        raise LabelError("saving a model (model_dir) needs training labels, not a saved model.")
    outputs = plan_outputs(
        {
            "class map": out.class_map,
            "confidence raster": out.confidence,
            "probability raster": out.probabilities,
            "report": out.report,
            # drawn from the cross-validation, which needs training labels
            "confusion plot": (
                confusion_plot_path(out.report)
                if params.model is None and params.cv != "none"
                else None
            ),
            "model directory": out.model_dir,
        },
        overwrite=overwrite,
        resume=resume,
        inputs=[source, params.labels, params.training, params.class_table, params.model],
        directories={"model directory"},
    )
    empty = all_nodata_from_metadata(source)
    if empty:
        raise SchemaError(
            f"{source}: the field is entirely nodata ({empty}), so the map would be empty; "
            "check the source (year, bounding box, export) before classifying it."
        )
    field = open_embeddings(source)
    name = str(source) if isinstance(source, str | os.PathLike) else None
    summary: dict[str, Any] = {
        "source": None if name is None else redact_url(name),  # also written to the report
        "field": {
            "bands": int(field.sizes["band"]),
            "height": int(field.sizes["y"]),
            "width": int(field.sizes["x"]),
            "crs": field.rio.crs.to_string() if field.rio.crs else None,
        },
    }
    import dask

    with dask.config.set({"geoembed.progress": bool(progress)}):  # the faiss index build's bar
        fitted, ts = _fit_or_load(params, field, name, summary)
    class_map, conf, proba, class_names, colors = _maps(fitted, field, out, name)

    if ts is not None and params.cv != "none" and (out.report is not None or params.cv is not None):
        from geoembed.assess import cross_validate

        spec = params.cv or default_cv(ts)
        n_classes = ts.n_classes
        k, metric, weights = params.k, params.metric, params.weights
        cv_report = cross_validate(
            lambda: _FoldKNN(k, metric, weights, n_classes), ts, cv=spec, seed=params.seed
        )
        summary["cross_validation"] = cv_report
        log.info(
            "cross-validation %s: overall accuracy %.3f",
            spec,
            cv_report["pooled"]["overall_accuracy"],
        )

    with outputs:  # all outputs appear together at commit(), or none does
        if "model directory" in outputs:
            from geoembed.jobs.model_io import save_model

            save_model(fitted, outputs.stage("model directory"))
            summary["saved_model"] = str(outputs.target("model directory"))
        writes = [
            write_cog(
                class_map,
                outputs.stage("class map"),
                class_names=class_names,
                colors=colors,
                compute=False,
                resume=resume,
            )
        ]
        if conf is not None and "confidence raster" in outputs:
            writes.append(
                write_cog(conf, outputs.stage("confidence raster"), compute=False, resume=resume)
            )
        if proba is not None and "probability raster" in outputs:
            writes.append(
                write_cog(proba, outputs.stage("probability raster"), compute=False, resume=resume)
            )
        nodata = CLASS_NODATA.get(np.dtype(class_map.dtype).name)
        valid: Any = class_map != nodata  # a lazy boolean DataArray
        *_, n_mapped = compute_all(
            *writes, valid.sum().data, progress=progress, label="classifying"
        )
        summary["mapped_pixels"] = int(n_mapped)
        if int(n_mapped) == 0:
            log.warning(
                "%s: every pixel of the class map is nodata (the field holds no valid "
                "embedding); check the source and its nodata value.",
                name or "the field",
            )
        summary["outputs"] = written(
            outputs,
            {
                "class_map": "class map",
                "confidence": "confidence raster",
                "probabilities": "probability raster",
            },
        )
        summary["class_names"] = class_names
        if "report" in outputs:
            summary["outputs"]["report"] = str(outputs.target("report"))
            if "confusion plot" in outputs and "cross_validation" in summary:
                summary["outputs"]["confusion_plot"] = str(outputs.target("confusion plot"))
                confusion_png(summary["cross_validation"], outputs.stage("confusion plot"))
            write_report(outputs, "report", summary)
        outputs.commit()
    return summary


def classify_job(
    source: Any,
    output: PathLike,
    *,
    confidence: PathLike | None = None,
    probabilities: PathLike | None = None,
    report: PathLike | None = None,
    save_model: PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    **params: Any,
) -> dict[str, Any]:
    """:func:`run_classify` with keyword arguments (the signature of geoembed <= 0.x).

    ``params`` are the fields of :class:`ClassifyParams`; the output paths are those of
    :class:`ClassifyOutputs` (``save_model`` is ``model_dir``).
    """
    out = ClassifyOutputs(output, confidence, probabilities, report, save_model)
    return run_classify(
        source,
        out,
        ClassifyParams(**params),
        overwrite=overwrite,
        resume=resume,
        progress=progress,
    )
