"""Continuous targets under points/polygons or beside sampled tables: :class:`TargetSet`.

The sampling, reprojection, extent/nodata rejection and band checks are those of
:func:`geoembed.labels.training_from_geometries` / :func:`geoembed.labels.training_from_table`:
the target column is passed to them as the "label" column (each distinct value becomes a
class there) and the class values are mapped back to the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geoembed.errors import LabelError

__all__ = ["TargetSet", "targets_from_geometries", "targets_from_table"]


@dataclass
class TargetSet:
    """Embedding vectors with a continuous target each.

    Attributes
    ----------
    X : numpy.ndarray
        ``(n, bands)`` float32 vectors.
    y : numpy.ndarray
        ``(n,)`` float64 targets.
    groups : numpy.ndarray
        ``(n,)`` group of each sample (source polygon/point, or a group column) for
        spatial cross-validation.
    xy : numpy.ndarray or None
        ``(n, 2)`` coordinates in the field's CRS, when known.
    ids : numpy.ndarray
        ``(n,)`` source row of each sample.
    target : str
        Name of the target column.
    report : dict
        Rejected counts per reason, notes, a summary of the targets.
    bands : list of str or None
        Band names of the columns of ``X``.
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    xy: np.ndarray | None
    ids: np.ndarray
    target: str
    report: dict[str, Any] = field(default_factory=dict)
    bands: list[str] | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])


def _numeric(values: pd.Series, column: str, where: str) -> pd.Series:
    """Return the target column as floats; text that is not a number is an error, not NaN."""
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() & values.notna()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:10].tolist()
        raise LabelError(
            f"{where}: target column {column!r} holds {int(bad.sum())} values that are not "
            f"numbers (rows {rows}, e.g. {values[bad].iloc[0]!r}); regression needs numeric "
            "targets (use geoembed classify for classes)."
        )
    return num.astype(np.float64)


def _from_training(ts: Any, target: str) -> TargetSet:
    values = np.asarray(ts.class_values, dtype=np.float64)[ts.y]
    report = {
        k: v
        for k, v in ts.report.items()
        if k not in ("class_counts", "dropped_classes", "duplicates")
    }
    report["notes"] = [n for n in ts.report.get("notes", []) if "class" not in n]
    report["rejected"] = {
        ("missing_target" if k == "missing_label" else k): v
        for k, v in ts.report.get("rejected", {}).items()
    }
    report["target"] = {
        "column": target,
        "n": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
    }
    return TargetSet(
        X=ts.X,
        y=values,
        groups=ts.groups,
        xy=ts.xy,
        ids=ts.ids,
        target=target,
        report=report,
        bands=ts.bands,
    )


def targets_from_table(
    table: Any,
    field: xr.DataArray,
    *,
    target_column: str,
    group_column: str | None = None,
) -> TargetSet:
    """Targets beside already-sampled embeddings (e.g. an Earth Engine CSV export).

    Parameters
    ----------
    table : path or pandas.DataFrame
        CSV/TSV/Parquet with the field's band columns (``A00``..``A63``) and the target.
    field : xarray.DataArray
        The field to predict (band names and CRS; no pixel is read).
    target_column : str
        Numeric column to predict (e.g. ``S1_VV``, ``trees``); rows where it is
        missing are rejected and counted.
    group_column : str, optional
        Group of each row for spatial cross-validation.

    Returns
    -------
    TargetSet
    """
    from geoembed.labels import training_from_table

    if isinstance(table, pd.DataFrame):
        df, where = table.copy(), "the training table"
    else:
        path = Path(table)
        where = f"training table {str(path)!r}"
        if not path.exists():
            raise LabelError(f"{where} does not exist; check the path.")
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    if target_column not in df.columns:
        raise LabelError(
            f"{where} has no target column {target_column!r}; columns are "
            f"{[str(c) for c in df.columns][:20]}... Give the right target_column=."
        )
    df[target_column] = _numeric(df[target_column], target_column, where)
    ts = training_from_table(
        df, field, label_column=target_column, on_conflict="keep", group_column=group_column
    )
    return _from_training(ts, target_column)


def targets_from_geometries(
    field: xr.DataArray,
    labels: Any,
    *,
    target_column: str,
    all_touched: bool = False,
    group_column: str | None = None,
) -> TargetSet:
    """Sample the field under points/polygons carrying a numeric target.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical field with a CRS.
    labels : path or GeoDataFrame
        Anything :func:`geoembed.labels.load_labels` reads; a polygon gives all its
        pixels the polygon's value.
    target_column : str
        Numeric column to predict.
    all_touched : bool
        Polygons take every pixel they touch.
    group_column : str, optional
        Group of each row for spatial cross-validation (default: each row).

    Returns
    -------
    TargetSet
    """
    from geoembed.labels import load_labels, training_from_geometries

    where = f"labels {str(labels)!r}" if isinstance(labels, str | Path) else "labels"
    gdf = load_labels(labels, label_column=target_column)
    gdf[target_column] = _numeric(gdf[target_column], target_column, where)
    ts = training_from_geometries(
        field,
        gdf,
        label_column=target_column,
        on_conflict="keep",
        all_touched=all_touched,
        group_column=group_column,
    )
    return _from_training(ts, target_column)
