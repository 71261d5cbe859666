"""Training sets from tables of already-sampled embeddings (Earth Engine CSV exports)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geoembed._cloud import is_url, open_input, split_url
from geoembed.errors import BandMismatchError, LabelError
from geoembed.labels.classes import assign_classes, compact_classes
from geoembed.labels.hygiene import (
    apply_conflicts,
    check_class_sizes,
    check_valid_fraction,
    find_duplicates,
    id_list,
    imbalance_note,
    log_rejected,
)
from geoembed.labels.readers import LONLAT_CRS
from geoembed.labels.training_set import TrainingSet

__all__ = ["training_from_table"]

log = logging.getLogger(__name__)

_LAT_NAMES = ("latitude", "lat")
_LON_NAMES = ("longitude", "lon", "lng", "long")


def _read(table: Any) -> tuple[pd.DataFrame, str]:
    if isinstance(table, pd.DataFrame):
        return table, "the training table"
    where = f"training table {str(table)!r}"
    path: Any
    if is_url(table):  # gs://, s3://, https://: read through fsspec
        path = open_input(str(table), "training table")
        suffix = PurePosixPath(split_url(str(table))[2]).suffix.lower()
    else:
        path = Path(table)
        if not path.exists():
            raise LabelError(f"{where} does not exist; check the path.")
        suffix = path.suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        return pd.read_parquet(path), where
    sep = "\t" if suffix == ".tsv" else ","
    return pd.read_csv(path, sep=sep), where


def _band_like(names: Sequence[str]) -> re.Pattern[str] | None:
    """Return a regex matching names of the family of ``names`` (``A00``: prefix + digits)."""
    prefixes = set()
    for name in names:
        m = re.fullmatch(r"([A-Za-z_]*?)(\d+)", name)
        if m is None:
            return None
        prefixes.add(re.escape(m.group(1)))
    return re.compile(rf"^(?:{'|'.join(sorted(prefixes))})\d+$")


def _check_bands(df: pd.DataFrame, bands: list[str], where: str, source: str) -> None:
    cols = [str(c) for c in df.columns]
    missing = [b for b in bands if b not in df.columns]
    pattern = _band_like(bands)
    extra = [c for c in cols if pattern is not None and pattern.match(c) and c not in bands]
    if missing or extra:
        n_table = len([c for c in cols if c in bands or c in extra])
        raise BandMismatchError(
            f"{where} has {n_table} band columns but {source} has {len(bands)} bands "
            f"({bands[0]}..{bands[-1]}): missing columns {missing[:10]}"
            f"{'...' if len(missing) > 10 else ''}, extra band columns {extra[:10]}"
            f"{'...' if len(extra) > 10 else ''}. Export every band of the same embedding "
            "product the field holds (e.g. all 64 AlphaEarth bands A00..A63)."
        )


def _coords(df: pd.DataFrame, where: str) -> tuple[np.ndarray | None, str]:
    lower = {str(c).lower(): c for c in df.columns}
    lat = next((lower[n] for n in _LAT_NAMES if n in lower), None)
    lon = next((lower[n] for n in _LON_NAMES if n in lower), None)
    if lat is not None and lon is not None:
        xy = np.column_stack(
            [
                pd.to_numeric(df[lon], errors="coerce").to_numpy(np.float64),
                pd.to_numeric(df[lat], errors="coerce").to_numpy(np.float64),
            ]
        )
        return xy, f"columns {lon!r}/{lat!r}"
    if ".geo" in df.columns:
        xy = np.full((len(df), 2), np.nan)
        for i, text in enumerate(df[".geo"].to_numpy()):
            try:
                geom = json.loads(text) if isinstance(text, str) else None
            except json.JSONDecodeError:
                geom = None
            if geom and geom.get("type") == "Point":
                xy[i] = geom["coordinates"][:2]
        if np.isfinite(xy).all(axis=1).any():
            return xy, "column '.geo'"
    return None, ""


def training_from_table(
    table: Any,
    field: xr.DataArray | Sequence[str],
    *,
    label_column: str,
    class_table: Any = None,
    min_per_class: int = 1,
    min_valid_fraction: float = 0.5,
    on_conflict: str = "raise",
    group_column: str | None = None,
    crs: Any = None,
) -> TrainingSet:
    """Build a training set from a table of already-sampled embedding vectors.

    This is the form Earth Engine exports with ``sampleRegions`` or ``stratifiedSample``
    to CSV: one column per band, named like the field's bands (``A00``..``A63``), plus a
    label column. Other columns (``system:index``, ``.geo``, class probabilities,
    Sentinel-1 bands ...) are ignored, except that ``longitude``/``latitude`` columns (or
    the ``.geo`` GeoJSON point) are kept as ``xy`` (reprojected from EPSG:4326 to the
    field's CRS) so that spatial cross-validation by blocks works.

    Parameters
    ----------
    table : str, path or pandas.DataFrame
        CSV/TSV/Parquet file or DataFrame.
    field : xarray.DataArray or sequence of str
        The field to classify (its band names and CRS are used, no pixel is read), or
        just the band names.
    label_column : str
        Column of class names or integer codes.
    class_table : optional
        Class table (see :func:`load_class_table`), e.g. ``"dynamic_world"``.
    min_per_class : int
        Minimum samples per class (the kNN classifier passes its ``k``).
    min_valid_fraction : float
        Raise :class:`LabelError` when fewer than this fraction of rows are usable.
    on_conflict : {"raise", "drop", "keep"}
        What to do with identical vectors that carry different labels.
    group_column : str, optional
        Column holding a group per row (e.g. ``region``) for spatial cross-validation;
        by default every row is its own group.
    crs : optional
        CRS for ``xy`` when ``field`` is a list of band names (default: keep lon/lat).

    Returns
    -------
    TrainingSet

    Raises
    ------
    BandMismatchError
        Band columns missing from the table, or band-like columns the field lacks.
    LabelError
        No label column, too many unusable rows, a class below ``min_per_class``, or
        conflicting duplicates.
    """
    df, where = _read(table)
    if isinstance(field, xr.DataArray):
        from geoembed.schema import check_embedding

        check_embedding(field, source="the embedding field", require_crs=False)
        bands = [str(b) for b in field["band"].values]
        target_crs = field.rio.crs
        source = "the field"
    else:
        bands = [str(b) for b in field]
        target_crs = crs
        source = "the band list"
    if label_column not in df.columns:
        raise LabelError(
            f"{where} has no label column {label_column!r}; columns are "
            f"{[str(c) for c in df.columns if str(c) not in bands]}. Pass label_column=."
        )
    _check_bands(df, bands, where, source)
    if on_conflict not in ("raise", "drop", "keep"):
        raise LabelError(f"on_conflict={on_conflict!r}; use 'raise', 'drop' or 'keep'.")
    n_input = len(df)
    notes: list[str] = []
    try:
        X_all = df[bands].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    except (TypeError, ValueError) as exc:  # pragma: no cover - to_numeric coerces
        raise LabelError(f"{where}: band columns are not numeric ({exc}).") from exc
    reasons = np.full(n_input, "", dtype=object)
    assignment = assign_classes(df[label_column], class_table=class_table, where=where)
    reasons[assignment.missing] = "missing_label"
    reasons[assignment.unknown & (reasons == "")] = "unknown_class"
    reasons[~np.isfinite(X_all).all(axis=1) & (reasons == "")] = "nan"
    rejected = {k: int((reasons == k).sum()) for k in ("missing_label", "unknown_class", "nan")}
    rejected = {k: v for k, v in rejected.items() if v}
    ok = reasons == ""
    fraction = check_valid_fraction(
        int(ok.sum()), n_input, rejected, min_valid_fraction=min_valid_fraction, where=where
    )
    log_rejected(where, n_input, rejected)
    ids = np.flatnonzero(ok).astype(np.int64)
    X = X_all[ok]
    y = assignment.y[ok]

    xy_all, xy_source = _coords(df, where)
    xy = None
    if xy_all is not None:
        xy = xy_all[ok]
        if target_crs is not None:
            from pyproj import CRS, Transformer

            dst = CRS.from_user_input(target_crs)
            if not dst.equals(CRS.from_user_input(LONLAT_CRS)):
                tr = Transformer.from_crs(LONLAT_CRS, dst, always_xy=True)
                xs, ys = tr.transform(xy[:, 0], xy[:, 1])
                xy = np.column_stack([xs, ys])
                msg = f"reprojected xy from {xy_source} ({LONLAT_CRS}) to {dst.to_string()}"
                log.info("%s: %s", where, msg)
                notes.append(msg)
    if group_column is not None:
        if group_column not in df.columns:
            raise LabelError(f"{where} has no group column {group_column!r}.")
        codes, uniques = pd.factorize(df[group_column], sort=True)
        groups = codes.astype(np.int64)[ok]
        group_names = [str(u) for u in uniques]
    else:
        groups, group_names = ids.copy(), []

    report: dict[str, Any] = {
        "source": "table",
        "bands": len(bands),
        "n_rows": n_input,
        "n_rows_used": int(ok.sum()),
        "valid_fraction": fraction,
        "rejected": rejected,
        "rejected_ids": {k: id_list(np.flatnonzero(reasons == k)) for k in rejected},
        "rejected_samples": {},
        "ignored_columns": [
            str(c) for c in df.columns if str(c) not in bands and c not in (label_column,)
        ],
        "notes": notes,
    }
    if group_names:
        report["groups"] = group_names
    conflicting, n_dup = find_duplicates(X, y)
    keep = apply_conflicts(conflicting, ids, on_conflict=on_conflict, where=where, report=report)
    report["duplicates"] = n_dup
    X, y, ids, groups = X[keep], y[keep], ids[keep], groups[keep]
    if xy is not None:
        xy = xy[keep]
    y, dropped = compact_classes(y, assignment)
    if dropped:
        notes.append(f"classes {dropped} have no usable row and are left out")
        report["dropped_classes"] = dropped
    report["class_counts"] = check_class_sizes(
        y, ids, assignment.class_names, min_per_class=min_per_class, where=where
    )
    imbalance_note(report["class_counts"], notes)
    report["n_samples"] = int(y.size)
    return TrainingSet(
        X=X,
        y=y,
        class_names=assignment.class_names,
        class_values=assignment.class_values,
        colors=assignment.colors,
        groups=groups,
        xy=xy,
        ids=ids,
        report=report,
        bands=bands,
    )
