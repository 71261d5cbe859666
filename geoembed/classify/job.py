"""The whole classification job behind ``geoembed classify``: one library call.

open the field -> training set (labels or sampled table) or a saved model -> checks ->
optional cross-validation -> lazy kNN (or scikit-learn) maps -> validated COGs, a JSON
report and the saved model. Every input and output path is checked before any Dask task
over the field runs; the training set is the one deliberate small read.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from geoembed.errors import GeoembedError, LabelError, SchemaError
from geoembed.runtime.redact import redact_url
from geoembed.schema import CLASS_NODATA

__all__ = ["classify_job", "default_cv"]

log = logging.getLogger(__name__)


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


def _write_json(payload: dict[str, Any], target: Path | str) -> None:
    """Write a JSON report marked as geoembed's (so that --overwrite may replace it)."""
    from geoembed._version import __version__

    text = json.dumps({"geoembed_version": __version__, **payload}, indent=2, default=str)
    if isinstance(target, str) and "://" in target:
        from geoembed.export.remote import write_remote_text

        write_remote_text(target, text)
    else:
        Path(target).write_text(text)


def _all_nodata_from_metadata(source: Any) -> str | None:
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


def classify_job(
    source: Any,
    output: str | os.PathLike[str],
    *,
    labels: Any = None,
    training: Any = None,
    label_column: str | None = None,
    class_table: Any = None,
    model: str | os.PathLike[str] | None = None,
    allow_pickle: bool = False,
    k: int = 5,
    metric: str = "cosine",
    weights: str = "uniform",
    approximate: bool | str = False,
    confidence: str | os.PathLike[str] | None = None,
    probabilities: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    cv: str | None = None,
    save_model: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    seed: int = 0,
    allow_single_class: bool = False,
) -> dict[str, Any]:
    """Classify an embedding field and write the map (and friends) as COGs.

    Parameters
    ----------
    source : path or DataArray
        Anything :func:`geoembed.io.open_embeddings` opens.
    output : path
        Class map COG (uint8, nodata 255, class names and colours embedded).
    labels : path or GeoDataFrame, optional
        Labelled points/polygons (sampled from the field).
    training : path or DataFrame, optional
        Table of already-sampled embeddings (e.g. an Earth Engine CSV export).
    label_column : str
        Label column of ``labels`` / ``training``.
    class_table : path, optional
        Class table (id, name, colour) for the labels.
    model : path, optional
        A saved model (directory from ``save_model``), instead of labels; a pickled
        scikit-learn estimator only with ``allow_pickle=True``.
    allow_pickle : bool
        Allow loading a pickle/joblib model (it can run code: trusted files only).
    k, metric, weights, approximate
        kNN settings (see :class:`geoembed.classify.KNNClassifier`).
    confidence, probabilities : path, optional
        Extra COGs: winning vote share (float32), per-class vote shares (float32 bands).
    report : path, optional
        JSON report: training-data summary, cross-validation, model, outputs.
    cv : str, optional
        Cross-validation spec for the report (see :func:`geoembed.assess.make_folds`);
        default: :func:`default_cv`. ``"none"`` skips it.
    save_model : path, optional
        Directory to save the fitted kNN model to (arrays + JSON, no pickle).
    overwrite : bool
        Replace existing outputs that geoembed wrote (never other files or folders, never
        an input). All outputs are built under temporary names and appear together once
        complete (:class:`geoembed.export.outputs.OutputSet`), or not at all.
    resume : bool
        Finish a killed run of the same job: COG chunks it had written are reused
        (:mod:`geoembed.export.resume`).
    progress : bool
        Progress bars on stderr.
    seed : int
        Seed of the cross-validation folds.
    allow_single_class : bool
        Accept training labels of a single class (the map is then constant); without
        it that is a :class:`~geoembed.errors.LabelError`.

    Returns
    -------
    dict
        A JSON-serialisable summary (also the core of the report).
    """
    from geoembed.classify.estimator import apply_estimator
    from geoembed.classify.field import check_model_bands, fit_model, predict_field
    from geoembed.classify.knn import KNNClassifier
    from geoembed.classify.model_io import load_model
    from geoembed.classify.model_io import save_model as write_model

    sources = [
        name
        for name, v in (("--labels", labels), ("--training", training), ("--model", model))
        if v is not None
    ]
    if len(sources) != 1:
        raise LabelError(
            "give exactly one of --labels FILE, --training TABLE or --model DIR "
            f"(got {', '.join(sources) or 'none'})."
        )
    if model is None and not label_column:
        raise LabelError("--label-column is required with --labels / --training.")
    if model is not None and (cv not in (None, "none") or save_model is not None):
        raise LabelError("--cv and --save-model need training labels, not --model.")
    from geoembed.export.outputs import OutputSet

    outputs = OutputSet(
        overwrite=overwrite, inputs=[source, labels, training, class_table, model], resume=resume
    )
    outputs.add("class map", output)
    outputs.add("confidence raster", confidence)
    outputs.add("probability raster", probabilities)
    outputs.add("report", report)
    outputs.add("model directory", save_model, directory=True)

    from geoembed.io import open_embeddings

    empty = _all_nodata_from_metadata(source)
    if empty:
        raise SchemaError(
            f"{source}: the field is entirely nodata ({empty}), so the map would be empty; "
            "check the source (year, bounding box, export) before classifying it."
        )
    field = open_embeddings(source)
    name = str(source) if isinstance(source, str | os.PathLike) else None
    summary: dict[str, Any] = {
        "source": None if name is None else redact_url(name),  # also written to --report
        "field": {
            "bands": int(field.sizes["band"]),
            "height": int(field.sizes["y"]),
            "width": int(field.sizes["x"]),
            "crs": field.rio.crs.to_string() if field.rio.crs else None,
        },
    }

    ts = None
    if model is not None:
        fitted = load_model(model, allow_pickle=allow_pickle)
        if isinstance(fitted, KNNClassifier):
            check_model_bands(fitted, field, source=name)
        summary["model"] = {"path": str(model), "type": type(fitted).__name__}
    else:
        import geoembed.labels as gl

        assert label_column is not None  # checked above, before the field was opened
        if labels is not None:
            gdf = gl.load_labels(labels, label_column=label_column)
            ts = gl.training_from_geometries(
                field, gdf, label_column=label_column, class_table=class_table
            )
        else:
            ts = gl.training_from_table(
                training, field, label_column=label_column, class_table=class_table
            )
        # k vs the smallest class, band checks: all before any task over the field
        fitted = fit_model(
            ts,
            k=k,
            metric=metric,
            weights=weights,
            approximate=approximate,
            allow_single_class=allow_single_class,
        )
        summary["training"] = {
            "n_samples": len(ts),
            "class_counts": ts.class_counts(),
            "report": ts.report,
        }
        summary["model"] = {"type": type(fitted).__name__, **fitted.params()}

    if isinstance(fitted, KNNClassifier):
        ds = predict_field(fitted, field, probabilities=probabilities is not None, source=name)
        class_map, conf, proba = ds["class"], ds["confidence"], ds.get("probability")
        class_names = list(fitted.class_names)
        colors = fitted.colors
    else:
        class_map = apply_estimator(field, fitted, output="class", source=name)
        class_names = class_map.attrs["class_names"]
        colors = None
        conf = None
        proba = (
            apply_estimator(field, fitted, output="proba", source=name)
            if probabilities is not None
            else None
        )
        if confidence is not None:
            if proba is None:
                proba = apply_estimator(field, fitted, output="proba", source=name)
            conf = proba.max("class").rename("confidence")
    if confidence is not None and conf is None:
        raise GeoembedError("this model gives no confidence; drop --confidence.")

    if ts is not None and cv != "none" and (report is not None or cv is not None):
        from geoembed.assess import cross_validate

        spec = cv or default_cv(ts)
        n_classes = ts.n_classes
        cv_report = cross_validate(
            lambda: _FoldKNN(k, metric, weights, n_classes), ts, cv=spec, seed=seed
        )
        summary["cross_validation"] = cv_report
        log.info(
            "cross-validation %s: overall accuracy %.3f",
            spec,
            cv_report["pooled"]["overall_accuracy"],
        )

    from geoembed.export import write_cog
    from geoembed.runtime import compute

    with outputs:  # all outputs appear together at commit(), or none does
        if "model directory" in outputs:
            write_model(fitted, outputs.stage("model directory"))
            summary["saved_model"] = str(outputs.target("model directory"))
        jobs = [
            write_cog(
                class_map,
                outputs.stage("class map"),
                class_names=class_names,
                colors=colors,
                compute=False,
                resume=resume,
            )
        ]
        if conf is not None and confidence is not None:
            stage = outputs.stage("confidence raster")
            jobs.append(write_cog(conf, stage, compute=False, resume=resume))
        if proba is not None and probabilities is not None:
            stage = outputs.stage("probability raster")
            jobs.append(write_cog(proba, stage, compute=False, resume=resume))
        nodata = CLASS_NODATA.get(np.dtype(class_map.dtype).name)
        valid: Any = class_map != nodata  # a lazy boolean DataArray
        *_, n_mapped = compute(*jobs, valid.sum().data, progress=progress, label="classifying")
        summary["mapped_pixels"] = int(n_mapped)
        if int(n_mapped) == 0:
            log.warning(
                "%s: every pixel of the class map is nodata (the field holds no valid "
                "embedding); check the source and its nodata value.",
                name or "the field",
            )
        summary["outputs"] = {"class_map": str(outputs.target("class map"))}
        if confidence is not None:
            summary["outputs"]["confidence"] = str(outputs.target("confidence raster"))
        if probabilities is not None:
            summary["outputs"]["probabilities"] = str(outputs.target("probability raster"))
        summary["class_names"] = class_names
        if "report" in outputs:
            summary["outputs"]["report"] = str(outputs.target("report"))
            _write_json(summary, outputs.stage("report"))
        outputs.commit()
    return summary
