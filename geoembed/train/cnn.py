"""``fit_cnn``: from a field and labels to a trained CNN that ``geoembed infer`` runs.

Steps (all checks come before anything is read or trained):

1. labels -> class ids on the field grid (a label raster on the same grid, or polygons
   rasterised onto it);
2. spatial split: square blocks held out for validation, a buffer of ``gap`` pixels
   (default: the receptive radius) between them and every training patch;
3. ``n_patches`` training windows drawn inside the training area, read from the field
   (only those windows, plus each validation block with ``gap`` pixels of context);
4. per-band mean/std from the training pixels, class weights from their frequencies;
5. :func:`geoembed.train.fit.fit` (Adam, flips/rotations, early stopping on the validation
   loss, progress bar);
6. validation metrics of the CNN and of a per-pixel kNN baseline (k=5, standardised
   bands) on the same held-out pixels;
7. ONNX + sidecar JSON (:mod:`geoembed.train.export`), written by the job
   :func:`geoembed.jobs.train.train_cnn`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geoembed.errors import LabelError, require
from geoembed.schema import check_embedding
from geoembed.train.data import (
    IGNORE,
    LabelGrid,
    Split,
    class_weights,
    labelled_windows,
    labels_from_polygons,
    labels_from_raster,
    normalisation,
    sample_patches,
    spatial_split,
    standardise,
)

__all__ = ["TrainResult", "fit_cnn", "validation_metrics"]

log = logging.getLogger(__name__)

DEFAULT_DILATIONS: tuple[int, ...] = (1, 2, 4, 2, 1)


@dataclass
class TrainResult:
    """What :func:`fit_cnn` (and the job :func:`geoembed.train.train_cnn`) produced.

    Attributes
    ----------
    model : torch.nn.Module
        The trained network (eval mode); it takes normalised inputs.
    model_path, config_path : pathlib.Path or None
        The ONNX file and its sidecar JSON (``None`` when ``output`` was ``None``).
    spec : dict
        The sidecar contents.
    metrics : dict
        ``{"cnn": {...}, "knn": {...}}`` validation metrics on the held-out blocks.
    history : list of dict
        Per-epoch losses and validation accuracy.
    labels : LabelGrid
        The class ids used.
    split : Split
        The spatial split.
    train_windows : list of (int, int, int, int)
        The training windows ``(row0, row1, col0, col1)``.
    report : dict
        Counts and notes (patches, pixels per class, dropped classes ...).
    """

    model: Any
    model_path: Path | None
    config_path: Path | None
    spec: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    labels: LabelGrid
    split: Split
    train_windows: list[tuple[int, int, int, int]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Return a JSON-able summary (for ``--json``)."""
        return {
            "model": str(self.model_path) if self.model_path else None,
            "config": str(self.config_path) if self.config_path else None,
            "classes": self.labels.class_names,
            "class_values": self.labels.class_values,
            "validation": self.metrics,
            "epochs_run": len(self.history),
            "best_epoch": self.report.get("best_epoch"),
            "report": self.report,
        }


def validation_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Overall and balanced accuracy, kappa, per-class recall/precision, confusion matrix."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, confusion_matrix

    labels = np.arange(len(class_names))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with warnings.catch_warnings():  # classes predicted but absent from the held-out blocks
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    per_class = {
        name: {
            "support": int(support[i]),
            "recall": float(cm[i, i] / support[i]) if support[i] else None,
            "precision": float(cm[i, i] / predicted[i]) if predicted[i] else None,
        }
        for i, name in enumerate(class_names)
    }
    return {
        "pixels": int(y_true.size),
        "accuracy": float((y_true == y_pred).mean()),
        "balanced_accuracy": balanced,
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def _knn_baseline(
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    windows: Sequence[tuple[int, int, int, int]],
    shape: tuple[int, int],
    val_x: np.ndarray,
    val_y: np.ndarray,
    class_names: Sequence[str],
    *,
    k: int,
    max_train: int,
    seed: int,
) -> dict[str, Any]:
    """Per-pixel kNN on standardised bands, trained on the labelled pixels of the patches."""
    from sklearn.neighbors import KNeighborsClassifier

    index, feats, targets = [], [], []
    for (r0, _, c0, _), x, y in zip(windows, xs, ys):
        rr, cc = np.nonzero(y != IGNORE)
        index.append((rr + r0) * shape[1] + cc + c0)
        feats.append(x[:, rr, cc].T)
        targets.append(y[rr, cc])
    idx = np.concatenate(index)
    _, first = np.unique(idx, return_index=True)  # each pixel once
    feats_all = np.concatenate(feats)[first]
    targets_all = np.concatenate(targets)[first]
    if targets_all.size > max_train:
        pick = np.sort(np.random.default_rng(seed).choice(targets_all.size, max_train, False))
        feats_all, targets_all = feats_all[pick], targets_all[pick]
    knn = KNeighborsClassifier(n_neighbors=min(k, targets_all.size))
    knn.fit(feats_all, targets_all)
    out = validation_metrics(val_y, knn.predict(val_x), class_names)
    out.update(k=k, train_pixels=int(targets_all.size))
    return out


def fit_cnn(
    field: xr.DataArray,
    *,
    labels: Any = None,
    label_column: str | None = None,
    name_column: str | None = None,
    labels_raster: str | os.PathLike[str] | xr.DataArray | None = None,
    label_nodata: float | None = None,
    class_names: Mapping[Any, str] | None = None,
    epochs: int = 30,
    patch: int = 64,
    batch_size: int = 16,
    n_patches: int = 256,
    val_fraction: float = 0.25,
    block: int | None = None,
    gap: int | None = None,
    width: int = 32,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
    learning_rate: float = 2e-3,
    patience: int = 5,
    class_weighting: str = "sqrt",
    min_labelled: int = 100,
    tile: int = 256,
    seed: int = 0,
    threads: int | None = None,
    baseline: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train a compact fully convolutional network (nothing is written).

    :func:`geoembed.train.train_cnn` (the job in :mod:`geoembed.jobs.train`) opens the
    field, checks the output paths, calls this and exports the model to ONNX + sidecar
    JSON.

    Parameters
    ----------
    field : xarray.DataArray
        Embedding field or imagery (canonical ``(band, y, x)`` float32 with a CRS). Only
        sampled windows are read.
    labels : path or geopandas.GeoDataFrame, optional
        Labelled polygons (give ``label_column``). Exactly one of ``labels`` and
        ``labels_raster``.
    label_column : str, optional
        Class column of ``labels``.
    name_column : str, optional
        Column of ``labels`` with readable class names.
    labels_raster : path or xarray.DataArray, optional
        One-band class raster on the field's grid (same CRS, shape, pixel positions).
    label_nodata : number or str, optional
        Label value meaning "unlabelled" (default for ``labels_raster``: its nodata).
    class_names : mapping, optional
        Names of label values (for ``labels_raster``).
    epochs : int, default 30
        Maximum epochs (passes over the training patches).
    patch : int, default 64
        Training patch size in pixels.
    batch_size : int, default 16
        Patches per step.
    n_patches : int, default 256
        Training windows drawn (fewer when fewer fit). Memory: ``n_patches * bands *
        patch**2 * 4`` bytes.
    val_fraction : float, default 0.25
        Share of labelled pixels held out, as whole blocks.
    block : int, optional
        Validation block size (default ``2 * patch``, at most half the field's shorter side).
    gap : int, optional
        Buffer between validation blocks and training patches (default: receptive radius).
    width : int, default 32
        Hidden channels (and size of the ``features`` output).
    dilations : sequence of int, default (1, 2, 4, 2, 1)
        Dilations of the 3 x 3 layers; the receptive radius is their sum.
    learning_rate : float, default 2e-3
        Adam learning rate.
    patience : int, default 5
        Early stopping: epochs without a lower validation loss.
    class_weighting : {"sqrt", "inverse", "none"}, default "sqrt"
        Loss weight of each class from its training frequency: ``sqrt(1/f)``, ``1/f`` or
        equal.
    min_labelled : int, default 100
        Fewest labelled pixels accepted.
    tile : int, default 256
        Inference tile size written to the sidecar.
    seed : int, default 0
        Seed of the split, the patch draw, the weights and the augmentations.
    threads : int, optional
        PyTorch threads (default ``min(cpu_count, 8)``). Results are reproducible for a
        given seed and thread count.
    baseline : bool, default True
        Also score a per-pixel kNN on the same split.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    TrainResult
        With ``model_path`` and ``config_path`` None and ``spec`` the sidecar keys
        (without the ONNX digest).

    Raises
    ------
    LabelError
        No or both label inputs, a missing column, a label raster on another grid, fewer
        than two classes or ``min_labelled`` pixels, no room for a training patch.
    MissingDependencyError
        PyTorch (extra ``train``) or onnx is not installed.
    """
    require("torch", extra="train", feature="geoembed train-cnn")
    require("onnx", extra="train", feature="geoembed train-cnn (ONNX export)")
    from geoembed.train.fit import ValWindow, fit, predict_windows
    from geoembed.train.model import receptive_radius

    check_embedding(field)
    da = field
    if (labels is None) == (labels_raster is None):
        raise LabelError(
            "Give exactly one label source: labelled polygons (labels=..., label_column=...) "
            "or a label raster on the field grid (labels_raster=...)."
        )
    if labels is not None:
        if not label_column:
            raise LabelError("Polygon labels need label_column=.")
        grid = labels_from_polygons(
            da, labels, label_column=label_column, name_column=name_column, nodata=label_nodata
        )
    else:
        assert labels_raster is not None
        grid = labels_from_raster(da, labels_raster, nodata=label_nodata, class_names=class_names)
    if grid.ids.shape != (da.sizes["y"], da.sizes["x"]):  # pragma: no cover - guarded above
        raise LabelError("labels and field shapes differ")
    n_labelled = int((grid.ids >= 0).sum())
    if grid.n_classes < 2:
        raise LabelError(
            f"The labels hold a single class ({grid.class_names}); a classifier needs two or more."
        )
    if n_labelled < min_labelled:
        raise LabelError(
            f"Only {n_labelled} labelled pixels on the field grid; train-cnn needs at least "
            f"{min_labelled}. Add labels (larger polygons, a denser label raster)."
        )
    halo = receptive_radius(dilations)
    gap = halo if gap is None else int(gap)
    if block is None:  # two patches wide, but at least a 2 x 2 grid of blocks on small fields
        block = min(2 * patch, max(16, min(grid.ids.shape) // 2))
    split = spatial_split(grid, block=block, val_fraction=val_fraction, gap=gap, seed=seed)
    windows = sample_patches(grid, split, patch=patch, n=n_patches, seed=seed)
    h, w = grid.ids.shape
    # validation blocks are read with `halo` pixels of context; beyond the field edge the
    # context is mirrored like geoembed.infer's default padding ("reflect", edge included)
    ctx = [
        (max(0, r0 - halo), min(h, r1 + halo), max(0, c0 - halo), min(w, c1 + halo))
        for r0, r1, c0, c1 in split.val_blocks
    ]
    # training windows lie in split.train_mask; validation labels are cropped to the blocks
    xs, ys = labelled_windows(da, grid, [*windows, *ctx])
    tx, ty = xs[: len(windows)], ys[: len(windows)]
    vx, vy = xs[len(windows) :], ys[len(windows) :]
    x = np.stack(tx)
    y = np.stack(ty)
    train_counts = np.bincount(y[y != IGNORE], minlength=grid.n_classes)
    if train_counts.sum() == 0:
        raise LabelError("The training patches hold no labelled, valid pixel.")
    mean, std = normalisation(x)
    val_windows, val_true, val_feats = [], [], []
    for (r0, r1, c0, c1), (a0, a1, b0, b1), wx, wy in zip(split.val_blocks, ctx, vx, vy):
        pads = ((0, 0), (halo - (r0 - a0), halo - (a1 - r1)), (halo - (c0 - b0), halo - (b1 - c1)))
        inner = (slice(halo, halo + r1 - r0), slice(halo, halo + c1 - c0))
        yb = wy[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
        xb = np.pad(wx, pads, mode="symmetric")
        val_windows.append(ValWindow(standardise(xb, mean, std), yb, inner))
        rr, cc = np.nonzero(yb != IGNORE)
        val_true.append(yb[rr, cc])
        val_feats.append(xb[:, inner[0], inner[1]][:, rr, cc].T)
    y_val = np.concatenate(val_true)
    if y_val.size == 0:
        raise LabelError("The validation blocks hold no labelled, valid pixel.")
    notes = list(grid.report.get("notes", []))
    absent = [grid.class_names[i] for i in np.nonzero(train_counts == 0)[0]]
    if absent:
        notes.append(f"classes with no training pixel (never predicted well): {absent}")
    weights = class_weights(train_counts, class_weighting)
    threads = threads or min(os.cpu_count() or 1, 8)
    result = fit(
        standardise(x, mean, std),
        y,
        val_windows,
        n_classes=grid.n_classes,
        class_weights=weights,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        patience=patience,
        width=width,
        dilations=dilations,
        seed=seed,
        threads=threads,
        progress=progress,
    )
    preds = [lg.argmax(0) for lg in predict_windows(result.model, val_windows)]
    y_pred = np.concatenate([p[wv.y != IGNORE] for p, wv in zip(preds, val_windows)])
    metrics: dict[str, Any] = {"cnn": validation_metrics(y_val, y_pred, grid.class_names)}
    if baseline:
        xv = ((np.concatenate(val_feats) - mean) / std).astype(np.float32)
        txs = [standardise(a, mean, std) for a in tx]
        metrics["knn"] = _knn_baseline(
            txs, ty, windows, (h, w), xv, y_val, grid.class_names, k=5, max_train=20000,
            seed=seed,
        )  # fmt: skip
    report: dict[str, Any] = {
        "labels": {k: v for k, v in grid.report.items() if k != "notes"},
        "notes": notes,
        "train_patches": len(windows),
        "patch": patch,
        "val_blocks": len(split.val_blocks),
        "block": split.block,
        "gap": gap,
        "receptive_radius": halo,
        "train_pixels_per_class": dict(zip(grid.class_names, train_counts.tolist())),
        "val_pixels_per_class": dict(
            zip(grid.class_names, np.bincount(y_val, minlength=grid.n_classes).tolist())
        ),
        "class_weights": dict(zip(grid.class_names, weights.round(4).tolist())),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "seed": seed,
        "threads": threads,
    }
    sidecar: dict[str, Any] = {
        "bands": [str(b) for b in da["band"].values],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "nodata_fill": 0.0,
        "tile": int(tile),
        "overlap": halo,
        "receptive_radius": halo,
        "output_stride": 1,
        "classes": list(grid.class_names),
        "colors": list(grid.class_colors),
        "extra": {
            "class_values": list(grid.class_values),
            "architecture": {"name": "DilatedFCN", "width": width, "dilations": list(dilations)},
            "training": {
                "validation_accuracy": metrics["cnn"]["accuracy"],
                "knn_validation_accuracy": metrics.get("knn", {}).get("accuracy"),
                **{k: report[k] for k in ("patch", "train_patches", "best_epoch", "seed")},
            },
        },
    }
    return TrainResult(
        model=result.model,
        model_path=None,
        config_path=None,
        spec=sidecar,
        metrics=metrics,
        history=result.history,
        labels=grid,
        split=split,
        train_windows=windows,
        report=report,
    )
