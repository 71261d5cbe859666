"""Training samples from labelled points and polygons over an embedding field."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geoembed.errors import LabelError, MissingCRSError
from geoembed.labels.classes import assign_classes, compact_classes
from geoembed.labels.grid import Grid, burn, gather_pixels
from geoembed.labels.hygiene import (
    apply_conflicts,
    check_class_sizes,
    check_valid_fraction,
    find_duplicates,
    id_list,
    imbalance_note,
    log_rejected,
)
from geoembed.labels.readers import load_labels
from geoembed.labels.training_set import TrainingSet
from geoembed.schema import check_embedding

__all__ = ["training_from_geometries"]

log = logging.getLogger(__name__)

_POINT_TYPES = {"Point", "MultiPoint"}
_POLYGON_TYPES = {"Polygon", "MultiPolygon"}
#: geometry type names by shapely type id + 1 (None -> "")
_TYPE_NAMES = (
    "",
    "Point",
    "LineString",
    "LinearRing",
    "Polygon",
    "MultiPoint",
    "MultiLineString",
    "MultiPolygon",
    "GeometryCollection",
)
#: rounds of top-up reads when a stratified sample hits nodata pixels
_MAX_ROUNDS = 6


class _Candidates:
    """Candidate sample pixels, in deterministic order (source row, then pixel order)."""

    def __init__(self) -> None:
        self.row_id: list[np.ndarray] = []
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.xy: list[np.ndarray] = []

    def add(self, row_id: np.ndarray, r: np.ndarray, c: np.ndarray, xy: np.ndarray) -> None:
        self.row_id.append(np.asarray(row_id, dtype=np.int64))
        self.r.append(np.asarray(r, dtype=np.int64))
        self.c.append(np.asarray(c, dtype=np.int64))
        self.xy.append(np.asarray(xy, dtype=np.float64).reshape(-1, 2))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.row_id:
            e = np.zeros(0, dtype=np.int64)
            return e, e, e, np.zeros((0, 2))
        row_id = np.concatenate(self.row_id)
        r, c, xy = np.concatenate(self.r), np.concatenate(self.c), np.concatenate(self.xy)
        order = np.argsort(row_id, kind="stable")
        return row_id[order], r[order], c[order], xy[order]


def _polygon_pixels(geom: Any, grid: Grid, all_touched: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels of ``geom`` inside the grid, row-major order."""
    minx, miny, maxx, maxy = geom.bounds
    fc = (np.array([minx, maxx]) - grid.left) / grid.dx
    fr = (np.array([miny, maxy]) - grid.top) / grid.dy
    c0 = max(int(np.floor(fc.min())) - 1, 0)
    c1 = min(int(np.floor(fc.max())) + 1, grid.width - 1)
    r0 = max(int(np.floor(fr.min())) - 1, 0)
    r1 = min(int(np.floor(fr.max())) + 1, grid.height - 1)
    if c1 < c0 or r1 < r0:
        e = np.zeros(0, dtype=np.int64)
        return e, e
    nrows, ncols = r1 - r0 + 1, c1 - c0 + 1
    # the window's own north-up grid (its rows run north to south even when the field's
    # do not), from the field grid's window formula so that pixel edges match it exactly
    window = Grid(grid.north_up_window_transform(r0, c0, nrows), (nrows, ncols))
    mask = burn([(geom, 1)], window, fill=0, dtype="uint8", all_touched=all_touched)
    if grid.bottom_up:  # bottom-up field: window rows run south to north
        mask = mask[::-1]
    rr, cc = np.nonzero(mask)
    return rr.astype(np.int64) + r0, cc.astype(np.int64) + c0


def _crs_text(crs: Any) -> str:
    try:
        epsg = crs.to_epsg()
    except Exception:  # pragma: no cover - exotic CRS
        epsg = None
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def _sample_order(
    cand_class: np.ndarray, n_classes: int, samples_per_class: int | None, seed: int
) -> list[np.ndarray]:
    """Per class, the candidate indices in the order they are tried."""
    orders = []
    for k in range(n_classes):
        idx = np.flatnonzero(cand_class == k)
        if samples_per_class is not None:
            rng = np.random.default_rng([int(seed), k])
            idx = idx[rng.permutation(idx.size)]
        orders.append(idx)
    return orders


def _read_samples(
    field: xr.DataArray,
    r: np.ndarray,
    c: np.ndarray,
    orders: list[np.ndarray],
    samples_per_class: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read candidate pixels; with a quota, top up classes whose pixels hit nodata.

    Returns the accepted candidate indices (sorted), their vectors, and the indices of
    the candidates read that were nodata.
    """
    n_classes = len(orders)
    nb = field.sizes["band"]
    got = [0] * n_classes
    acc_idx: list[np.ndarray] = []
    acc_x: list[np.ndarray] = []
    nodata: list[np.ndarray] = []
    ptr = [0] * n_classes
    rounds = 1 if samples_per_class is None else _MAX_ROUNDS
    for round_ in range(rounds):
        parts: list[tuple[int, np.ndarray]] = []
        for k in range(n_classes):
            if samples_per_class is None:
                take = orders[k]
            else:
                need = samples_per_class - got[k]
                if need <= 0:
                    continue
                n_take = need if round_ == 0 else int(np.ceil(need * 1.5)) + 8
                take = orders[k][ptr[k] : ptr[k] + n_take]
            ptr[k] += take.size
            if take.size:
                parts.append((k, take))
        if not parts:
            break
        batch = np.concatenate([t for _, t in parts])
        X = gather_pixels(field, r[batch], c[batch])
        valid = ~np.isnan(X).any(axis=1)
        nodata.append(batch[~valid])
        offset = 0
        for k, take in parts:
            sel = np.flatnonzero(valid[offset : offset + take.size])
            if samples_per_class is not None:
                sel = sel[: samples_per_class - got[k]]
            acc_idx.append(take[sel])
            acc_x.append(X[offset : offset + take.size][sel])
            got[k] += sel.size
            offset += take.size
    idx = np.concatenate(acc_idx) if acc_idx else np.zeros(0, dtype=np.int64)
    X = np.concatenate(acc_x) if acc_x else np.zeros((0, nb), dtype=np.float32)
    order = np.argsort(idx, kind="stable")
    bad = np.concatenate(nodata) if nodata else np.zeros(0, dtype=np.int64)
    return idx[order], np.ascontiguousarray(X[order], dtype=np.float32), bad


def _group_ids(gdf: Any, group_column: str | None, where: str) -> tuple[np.ndarray, list[Any]]:
    n = len(gdf)
    if group_column is None:
        return np.arange(n, dtype=np.int64), []
    if group_column not in gdf.columns:
        raise LabelError(f"{where} has no group column {group_column!r}.")
    codes, uniques = pd.factorize(gdf[group_column], sort=True)
    return codes.astype(np.int64), [u.item() if hasattr(u, "item") else u for u in uniques]


def training_from_geometries(
    field: xr.DataArray,
    labels: Any,
    *,
    label_column: str,
    class_table: Any = None,
    samples_per_class: int | None = None,
    seed: int = 0,
    min_per_class: int = 1,
    all_touched: bool = False,
    min_valid_fraction: float = 0.5,
    on_conflict: str = "raise",
    make_valid: bool = False,
    group_column: str | None = None,
    crs: Any = None,
) -> TrainingSet:
    """Sample the field's vectors under labelled points and polygons.

    Geometries are reprojected to the field's CRS explicitly (an INFO log line and a
    note in ``report["notes"]``). A point takes the pixel it falls in, by the half-open
    convention: a point on an edge shared by two pixels belongs to the pixel with the
    larger row/column index, so a point exactly on the field's far edge (right edge, and
    the edge past the last row) is outside, while one on the near edge (left edge, edge
    of row 0) is inside. Points outside the field or on nodata are rejected with a
    per-reason count, never snapped to the nearest pixel. A polygon contributes the pixels
    whose centre lies inside it (or every pixel it touches with ``all_touched=True``).
    Only the chunks that hold samples are read, in one compute.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field ``(band, y, x)`` with a CRS; north-up or bottom-up.
    labels : GeoDataFrame, path or DataFrame
        Labelled geometries, or anything :func:`load_labels` reads.
    label_column : str
        Column of class names or integer codes.
    class_table : optional
        Class table (see :func:`load_class_table`), e.g. ``"dynamic_world"``.
    samples_per_class : int, optional
        Keep a seeded random sample of this many pixels per class (points and polygon
        pixels together); pixels that turn out to be nodata are replaced by further
        candidates. ``None`` keeps every pixel.
    seed : int
        Seed of that sample (same seed, same samples, whatever the chunking).
    min_per_class : int
        Minimum samples per class; the kNN classifier passes its ``k``.
    all_touched : bool
        Polygons take every pixel they touch, not only those whose centre is inside.
    min_valid_fraction : float
        Raise :class:`LabelError` when fewer than this fraction of label rows yield a sample.
    on_conflict : {"raise", "drop", "keep"}
        What to do with identical vectors that carry different labels.
    make_valid : bool
        Repair invalid polygons with ``shapely.make_valid`` instead of rejecting them.
    group_column : str, optional
        Column giving the group of each row for spatial cross-validation; by default
        each row (polygon or point) is its own group.
    crs : optional
        CRS of ``labels`` when they have none (passed to :func:`load_labels`).

    Returns
    -------
    TrainingSet
        ``ids`` are 0-based row positions in ``labels``; ``report`` holds per-reason
        rejected row counts (``rejected``) and ids (``rejected_ids``), rejected sample
        counts (``rejected_samples``), ``class_counts`` and ``notes``.

    Raises
    ------
    MissingCRSError
        The labels (or the field) have no CRS.
    LabelError
        Too few usable rows, a class below ``min_per_class``, or conflicting duplicates,
        with the row ids in the message.
    """
    import geopandas as gpd
    import shapely

    check_embedding(field, source="the embedding field")
    if on_conflict not in ("raise", "drop", "keep"):
        raise LabelError(f"on_conflict={on_conflict!r}; use 'raise', 'drop' or 'keep'.")
    if samples_per_class is not None and samples_per_class < 1:
        raise LabelError(f"samples_per_class={samples_per_class}; use a positive count or None.")
    where = f"labels {str(labels)!r}" if isinstance(labels, str | Path) else "labels"
    if isinstance(labels, gpd.GeoDataFrame):
        if labels.crs is None and crs is None:
            raise MissingCRSError(
                f"{where} (a GeoDataFrame) have no CRS. Set it with gdf.set_crs('EPSG:...') "
                "or pass crs=; geoembed never assumes one."
            )
        gdf = load_labels(labels, label_column=label_column, crs=crs)
    else:
        gdf = load_labels(labels, label_column=label_column, crs=crs)
    notes: list[str] = []
    field_crs = field.rio.crs
    label_crs = gdf.crs
    if not label_crs.equals(field_crs):
        msg = (
            f"reprojected {len(gdf)} label geometries from {_crs_text(label_crs)} to the "
            f"field's CRS {_crs_text(field_crs)}"
        )
        log.info("%s: %s", where, msg)
        notes.append(msg)
    n_input = len(gdf)
    reasons = np.full(n_input, "", dtype=object)

    assignment = assign_classes(gdf[label_column], class_table=class_table, where=where)
    reasons[assignment.missing] = "missing_label"
    reasons[assignment.unknown & (reasons == "")] = "unknown_class"

    geoms = np.asarray(gdf.geometry.values, dtype=object)
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    reasons[empty & (reasons == "")] = "empty_geometry"
    kinds = np.asarray(_TYPE_NAMES, dtype=object)[shapely.get_type_id(geoms) + 1]
    supported = np.isin(kinds, list(_POINT_TYPES | _POLYGON_TYPES))
    reasons[~supported & (reasons == "")] = "unsupported_geometry"
    ok = reasons == ""
    invalid = np.zeros(n_input, dtype=bool)
    invalid[ok] = ~shapely.is_valid(geoms[ok].astype(object))
    if invalid.any():
        if make_valid:
            geoms[invalid] = shapely.make_valid(geoms[invalid])
            notes.append(f"repaired {int(invalid.sum())} invalid geometries with make_valid")
            kinds[invalid] = np.asarray(_TYPE_NAMES, dtype=object)[
                shapely.get_type_id(geoms[invalid]) + 1
            ]
        else:
            reasons[invalid] = "invalid_geometry"
    if not label_crs.equals(field_crs):
        ok = reasons == ""
        moved = gpd.GeoSeries(list(geoms[ok]), crs=label_crs).to_crs(field_crs)
        geoms[ok] = np.asarray(moved.values, dtype=object)

    grid = Grid.of(field)
    cands = _Candidates()
    ok = reasons == ""
    point_rows = np.flatnonzero(ok & np.isin(kinds, list(_POINT_TYPES)))
    if point_rows.size:
        coords, part = shapely.get_coordinates(geoms[point_rows].astype(object), return_index=True)
        row_of = point_rows[part]
        r, c, inside = grid.index(coords[:, 0], coords[:, 1])
        cands.add(row_of[inside], r[inside], c[inside], coords[inside, :2])
        has_inside = np.zeros(n_input, dtype=bool)
        has_inside[row_of[inside]] = True
        reasons[point_rows[~has_inside[point_rows]]] = "outside"
    for row in np.flatnonzero(ok & np.isin(kinds, list(_POLYGON_TYPES))):
        rr, cc = _polygon_pixels(geoms[row], grid, all_touched)
        if rr.size == 0:
            reasons[row] = "outside" if not _overlaps(geoms[row], grid) else "no_pixels"
            continue
        cands.add(np.full(rr.size, row), rr, cc, grid.centres(rr, cc))
    row_id, cr, cc, cxy = cands.arrays()

    def counts() -> dict[str, int]:
        return {k: int(v) for k, v in sorted(Counter(reasons[reasons != ""]).items())}

    # fail before any Dask task runs when the labels clearly do not fit the field
    n_usable = int((reasons == "").sum())
    check_valid_fraction(
        n_usable, n_input, counts(), min_valid_fraction=min_valid_fraction, where=where
    )

    cand_class = assignment.y[row_id]
    n_classes = len(assignment.class_names)
    orders = _sample_order(cand_class, n_classes, samples_per_class, seed)
    idx, X, bad = _read_samples(field, cr, cc, orders, samples_per_class)

    has_sample = np.zeros(n_input, dtype=bool)
    has_sample[row_id[idx]] = True
    was_read = np.zeros(n_input, dtype=bool)
    was_read[row_id[bad]] = True
    reasons[was_read & ~has_sample & (reasons == "")] = "nodata"
    is_polygon = np.isin(kinds, list(_POLYGON_TYPES))
    rejected_samples = {"nodata_pixels": int(is_polygon[row_id[bad]].sum())}
    not_sampled = int(((reasons == "") & ~has_sample).sum())
    n_valid = int(has_sample.sum())
    check_valid_fraction(
        n_valid + not_sampled,
        n_input,
        counts(),
        min_valid_fraction=min_valid_fraction,
        where=where,
    )

    y = cand_class[idx]
    ids = row_id[idx]
    group_codes, group_names = _group_ids(gdf, group_column, where)
    report: dict[str, Any] = {
        "source": "geometries",
        "crs": _crs_text(field_crs),
        "labels_crs": _crs_text(label_crs),
        "n_rows": n_input,
        "n_rows_used": n_valid,
        "n_rows_not_sampled": not_sampled,
        "valid_fraction": (n_valid + not_sampled) / n_input,
        "rejected": counts(),
        "rejected_ids": {k: id_list(np.flatnonzero(reasons == k)) for k in counts()},
        "rejected_samples": rejected_samples,
        "notes": notes,
    }
    if group_names:
        report["groups"] = [str(g) for g in group_names]
    conflicting, n_dup = find_duplicates(X, y)
    keep = apply_conflicts(conflicting, ids, on_conflict=on_conflict, where=where, report=report)
    report["duplicates"] = n_dup
    if n_dup:
        notes.append(f"{n_dup} samples repeat an identical vector with the same label")
    X, y, ids, xy = X[keep], y[keep], ids[keep], cxy[idx][keep]
    y, dropped = compact_classes(y, assignment)
    if dropped:
        msg = f"classes {dropped} have no usable sample (all their rows were rejected)"
        log.warning("%s: %s", where, msg)
        notes.append(msg + " and are left out")
        report["dropped_classes"] = dropped
    report["class_counts"] = check_class_sizes(
        y, ids, assignment.class_names, min_per_class=min_per_class, where=where
    )
    imbalance_note(report["class_counts"], notes)
    report["n_samples"] = int(y.size)
    log_rejected(where, n_input, report["rejected"])
    return TrainingSet(
        X=X,
        y=y,
        class_names=assignment.class_names,
        class_values=assignment.class_values,
        colors=assignment.colors,
        groups=group_codes[ids],
        xy=xy,
        ids=ids,
        report=report,
        bands=[str(b) for b in field["band"].values],
    )


def _overlaps(geom: Any, grid: Grid) -> bool:
    import shapely

    return bool(shapely.intersects(geom, shapely.box(*grid.bounds)))
