"""Training data for the CNN: dense labels on the field grid, a spatial split, patches.

* :func:`labels_from_raster` and :func:`labels_from_polygons` turn a label raster or labelled
  polygons into a :class:`LabelGrid`: ``(y, x)`` int16 class ids ``0..C-1`` on the field's
  grid, :data:`IGNORE` (-1) where a pixel is unlabelled or nodata.
* :func:`spatial_split` holds out whole square blocks of the grid for validation and keeps
  training patches at least ``gap`` pixels away from them (no patch overlaps the split).
* :func:`sample_patches` draws training windows that lie entirely in the training area, and
  :func:`read_windows` reads only those windows of the (lazy) field.

The label grid and the split masks live in memory (a few bytes per pixel of the training
area); pixel vectors are read only inside sampled windows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine

from geoembed.colors import PALETTE
from geoembed.errors import CRSMismatchError, LabelError, MissingCRSError
from geoembed.grid import Grid
from geoembed.labels.grid import burn
from geoembed.labels.readers import read_geometries
from geoembed.schema import resolution

__all__ = [
    "DEFAULT_COLORS",
    "IGNORE",
    "LabelGrid",
    "Split",
    "class_weights",
    "grid_transform",
    "labels_from_polygons",
    "labels_from_raster",
    "normalisation",
    "read_windows",
    "sample_patches",
    "spatial_split",
    "standardise",
]

log = logging.getLogger(__name__)

#: class id of unlabelled / nodata pixels (the loss ignores them)
IGNORE = -1

#: colours given to classes when the labels carry none (hex RGB)
DEFAULT_COLORS = list(PALETTE)

Window = tuple[int, int, int, int]  # row0, row1, col0, col1 (half-open)


@dataclass
class LabelGrid:
    """Dense class ids on the field grid.

    Attributes
    ----------
    ids : numpy.ndarray
        ``(y, x)`` int16, class ids ``0..C-1``, :data:`IGNORE` where unlabelled.
    class_values : list
        Original label value of each class id.
    class_names : list of str
        Name of each class id.
    class_colors : list of str
        ``#rrggbb`` colour of each class id.
    report : dict
        What was dropped or changed on the way (counts, notes).
    """

    ids: np.ndarray
    class_values: list[Any]
    class_names: list[str]
    class_colors: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_values)

    def counts(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Labelled pixels per class, optionally inside a boolean ``mask``."""
        ids = self.ids if mask is None else self.ids[mask]
        return np.bincount(ids[ids >= 0].ravel(), minlength=self.n_classes)


@dataclass
class Split:
    """A spatial train/validation split of the grid.

    Attributes
    ----------
    val_blocks : list of (int, int, int, int)
        Validation blocks as ``(row0, row1, col0, col1)`` windows.
    val_mask : numpy.ndarray
        ``(y, x)`` bool, pixels of the validation blocks.
    train_mask : numpy.ndarray
        ``(y, x)`` bool, pixels at least ``gap`` pixels (Chebyshev) from any validation pixel.
    block, gap : int
        Block size and buffer width in pixels.
    """

    val_blocks: list[Window]
    val_mask: np.ndarray
    train_mask: np.ndarray
    block: int
    gap: int


def grid_transform(field: xr.DataArray) -> tuple[Affine, bool]:
    """North-up affine transform of the field grid and whether its rows run bottom-up.

    A thin wrapper of :class:`geoembed.grid.Grid`: ``Grid.of(field).north_up()`` and
    ``Grid.of(field).bottom_up``.

    Returns
    -------
    (affine.Affine, bool)
        The transform of the grid with rows ordered north to south, and ``True`` when the
        field stores them south to north (positive y-resolution): flip rows to match.
    """
    grid = Grid.of(field)
    return grid.north_up(), grid.bottom_up


def _classes_from_values(
    values: Sequence[Any], class_names: Mapping[Any, str] | None
) -> tuple[list[Any], list[str], list[str]]:
    vals = sorted(values, key=lambda v: (str(type(v)), v))
    vals = [v.item() if isinstance(v, np.generic) else v for v in vals]
    names = [str((class_names or {}).get(v, v)) for v in vals]
    colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(vals))]
    return vals, names, colors


def labels_from_raster(
    field: xr.DataArray,
    raster: str | PathLike[str] | xr.DataArray,
    *,
    nodata: float | None = None,
    class_names: Mapping[Any, str] | None = None,
) -> LabelGrid:
    """Read a single-band label raster that lies on the field's grid.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field.
    raster : path or xarray.DataArray
        Label raster (GeoTIFF or any rasterio source, or a ``(y, x)`` / ``(1, y, x)``
        DataArray with a CRS). Same CRS, shape and pixel positions as ``field``.
    nodata : number, optional
        Value meaning "unlabelled"; defaults to the raster's own nodata. NaN is always
        unlabelled.
    class_names : mapping, optional
        Name of each label value (default: the value as text).

    Returns
    -------
    LabelGrid

    Raises
    ------
    LabelError
        The raster is on another grid, or holds no labels.
    MissingCRSError, CRSMismatchError
        The raster has no CRS, or another CRS than the field.
    """
    import rioxarray

    name = str(raster) if not isinstance(raster, xr.DataArray) else "the label raster"
    if isinstance(raster, xr.DataArray):
        lab = raster
    else:
        path = Path(raster)
        if not path.exists():
            raise LabelError(f"Label raster {path} does not exist.")
        lab = rioxarray.open_rasterio(path, masked=False)  # type: ignore[assignment]
    if lab.ndim == 3:
        if lab.shape[0] != 1:
            raise LabelError(
                f"{name} has {lab.shape[0]} bands; a label raster has one band of class values."
            )
        lab = lab.isel({lab.dims[0]: 0})
    if lab.rio.crs is None:
        raise MissingCRSError(f"{name} has no CRS; write one with rio.write_crs() (the field's).")
    if lab.rio.crs != field.rio.crs:
        raise CRSMismatchError(
            f"{name} is in {lab.rio.crs}, the field in {field.rio.crs}; reproject the labels "
            "onto the field grid first: labels.rio.reproject_match(field, "
            "resampling=Resampling.nearest)."
        )
    fy, fx = field["y"].values, field["x"].values
    tol = 0.01 * abs(resolution(field)[0])
    flip = False
    same = lab.shape == (fy.size, fx.size) and np.allclose(lab["x"].values, fx, atol=tol, rtol=0)
    if same and not np.allclose(lab["y"].values, fy, atol=tol, rtol=0):
        flip = np.allclose(lab["y"].values[::-1], fy, atol=tol, rtol=0)
        same = flip
    if not same:
        ltr = lab.rio.transform()
        ftr = field.rio.transform()
        raise LabelError(
            f"{name} is on another grid than the field: shape {tuple(lab.shape)} vs "
            f"{(fy.size, fx.size)}, origin ({ltr.c:.2f}, {ltr.f:.2f}) vs ({ftr.c:.2f}, "
            f"{ftr.f:.2f}), pixel size {ltr.a:g} vs {ftr.a:g}. Resample it onto the field "
            "grid first: labels.rio.reproject_match(field, resampling=Resampling.nearest)."
        )
    values = np.asarray(lab.values)  # one band on the training grid: deliberately in memory
    if flip:
        values = values[::-1]
    nodata = lab.rio.nodata if nodata is None else nodata
    valid = np.ones(values.shape, dtype=bool)
    if np.issubdtype(values.dtype, np.floating):
        valid &= np.isfinite(values)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid &= values != nodata
    uniq = np.unique(values[valid])
    if uniq.size == 0:
        raise LabelError(f"{name} holds no labelled pixels (all nodata={nodata}).")
    vals, names, colors = _classes_from_values(list(uniq), class_names)
    ids = np.full(values.shape, IGNORE, dtype=np.int16)
    ids[valid] = np.searchsorted(uniq, values[valid]).astype(np.int16)
    if isinstance(nodata, np.generic):
        nodata = nodata.item()
    report = {"source": name, "labelled_pixels": int(valid.sum()), "nodata_value": nodata}
    return LabelGrid(ids, vals, names, colors, report)


def labels_from_polygons(
    field: xr.DataArray,
    polygons: Any,
    *,
    label_column: str,
    name_column: str | None = None,
    nodata: Any = None,
    all_touched: bool = False,
) -> LabelGrid:
    """Rasterise labelled polygons onto the field's grid.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical embedding field (with a CRS).
    polygons : path or geopandas.GeoDataFrame
        Polygons (any OGR vector format); reprojected to the field's CRS when they are in
        another one (noted in the report).
    label_column : str
        Column holding the class of each polygon (numbers or text).
    name_column : str, optional
        Column holding a readable class name for each label value (e.g. ``LULC_NAME``).
    nodata : optional
        Label value meaning "no data": its polygons are left unlabelled.
    all_touched : bool, default False
        Burn every pixel a polygon touches, not only those whose centre it covers.

    Returns
    -------
    LabelGrid
        Where polygons overlap, the later row wins.

    Raises
    ------
    LabelError
        Missing column, invalid geometries, or no polygon covers a pixel centre.
    MissingCRSError
        The polygons have no CRS.
    """
    import geopandas as gpd

    if isinstance(polygons, gpd.GeoDataFrame):
        gdf, name = polygons, "the label polygons"
    else:
        path = Path(polygons)
        if not path.exists():
            raise LabelError(f"Label file {path} does not exist.")
        gdf, name = read_geometries(path), str(path)
    for col in (label_column, name_column):
        if col is not None and col not in gdf.columns:
            cols = [c for c in gdf.columns if c != gdf.geometry.name]
            raise LabelError(
                f"{name} has no column {col!r}; its columns are {cols}. Pick the class column "
                "with --label-column."
            )
    if gdf.crs is None:
        raise MissingCRSError(f"{name} has no CRS; set it with gdf.set_crs('EPSG:...').")
    report: dict[str, Any] = {"source": name, "polygons": len(gdf), "notes": []}
    if field.rio.crs is not None and gdf.crs != field.rio.crs:
        report["notes"].append(f"reprojected polygons from {gdf.crs} to {field.rio.crs}")
        gdf = gdf.to_crs(field.rio.crs)
    keep = gdf[label_column].notna() & gdf.geometry.notna() & ~gdf.geometry.is_empty
    if nodata is not None:
        keep &= gdf[label_column] != nodata
    report["dropped_empty_or_unlabelled"] = int((~keep).sum())
    gdf = gdf[keep]
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        raise LabelError(
            f"{name} has {int(invalid.sum())} invalid geometries (rows "
            f"{list(gdf.index[invalid][:10])}); repair them, e.g. gdf.geometry.make_valid()."
        )
    if gdf.empty:
        raise LabelError(f"{name} has no polygon with a value in {label_column!r}.")
    uniq = sorted(gdf[label_column].unique(), key=lambda v: (str(type(v)), v))
    index = {v: i for i, v in enumerate(uniq)}
    shapes = ((geom, index[v]) for geom, v in zip(gdf.geometry, gdf[label_column]))
    burnt = burn(shapes, Grid.of(field), fill=IGNORE, dtype="int16", all_touched=all_touched)
    present = np.unique(burnt[burnt >= 0])
    if present.size == 0:
        raise LabelError(
            f"None of the {len(gdf)} polygons in {name} covers a pixel centre of the field; "
            "check that they overlap the field (or pass all_touched=True for thin shapes)."
        )
    missing = [uniq[i] for i in range(len(uniq)) if i not in set(present.tolist())]
    if missing:
        report["notes"].append(f"classes covering no pixel centre were dropped: {missing}")
    values = [uniq[i] for i in present]
    remap = np.full(len(uniq), IGNORE, dtype=np.int16)
    remap[present] = np.arange(present.size, dtype=np.int16)
    ids = np.where(burnt >= 0, remap[np.maximum(burnt, 0)], IGNORE).astype(np.int16)
    names_map = None
    if name_column is not None:
        names_map = dict(zip(gdf[label_column], gdf[name_column].astype(str)))
    vals, names, colors = _classes_from_values(values, names_map)
    report["labelled_pixels"] = int((ids >= 0).sum())
    return LabelGrid(ids, vals, names, colors, report)


def _edges(n: int, block: int) -> list[tuple[int, int]]:
    starts = list(range(0, n, block))
    if len(starts) > 1 and n - starts[-1] < block / 2:
        starts.pop()  # merge a thin remainder into the previous block
    ends = [*starts[1:], n]
    return list(zip(starts, ends))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask.copy()
    from scipy.ndimage import maximum_filter

    return maximum_filter(mask.astype(np.uint8), size=2 * radius + 1, mode="constant") > 0


def spatial_split(
    labels: LabelGrid, *, block: int, val_fraction: float, gap: int, seed: int = 0
) -> Split:
    """Hold out whole blocks for validation, with a buffer around them.

    The grid is cut into ``block`` x ``block`` squares (a thin last row/column is merged into
    its neighbour). Blocks holding labels are taken in a seeded random order until they hold
    at least ``val_fraction`` of the labelled pixels, skipping any block whose removal (with
    its buffer) would leave a class without training pixels. Training uses only pixels more
    than ``gap`` pixels away from every validation pixel.

    Parameters
    ----------
    labels : LabelGrid
        The labels.
    block : int
        Block size in pixels.
    val_fraction : float
        Share of labelled pixels to hold out (0 < f < 1).
    gap : int
        Buffer in pixels between validation blocks and the training area (use at least the
        model's receptive radius, so no training input sees a validation pixel).
    seed : int
        Random seed.

    Returns
    -------
    Split

    Raises
    ------
    LabelError
        Fewer than two labelled blocks, or no block can be held out.
    """
    if not 0 < val_fraction < 1:
        raise LabelError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    h, w = labels.ids.shape
    labelled = labels.ids >= 0
    blocks = [
        (r0, r1, c0, c1)
        for r0, r1 in _edges(h, block)
        for c0, c1 in _edges(w, block)
        if labelled[r0:r1, c0:c1].any()
    ]
    if len(blocks) < 2:
        raise LabelError(
            f"The labels fall in {len(blocks)} block(s) of {block} x {block} px; a spatial "
            "split needs at least two. Use a smaller block (or patch) size or more labels."
        )
    total = int(labelled.sum())
    rng = np.random.default_rng(seed)
    val_mask = np.zeros((h, w), dtype=bool)
    train_mask = np.ones((h, w), dtype=bool)
    left = labels.counts()  # labelled training pixels per class, updated as blocks are taken
    chosen: list[Window] = []
    held = 0
    skipped = 0
    for i in rng.permutation(len(blocks)):
        if held >= val_fraction * total:
            break
        r0, r1, c0, c1 = blocks[i]
        win = (slice(max(0, r0 - gap), r1 + gap), slice(max(0, c0 - gap), c1 + gap))
        ids = labels.ids[win][train_mask[win]]
        lost = np.bincount(ids[ids >= 0], minlength=labels.n_classes)
        if np.any((left > 0) & (left - lost <= 0)):
            skipped += 1  # would take the last training pixels of a class
            continue
        left = left - lost
        train_mask[win] = False
        val_mask[r0:r1, c0:c1] = True
        held += int(labelled[r0:r1, c0:c1].sum())
        chosen.append(blocks[i])
    if not chosen:
        raise LabelError(
            f"Every {block} x {block} px block holds the last training pixels of some class, "
            "so none can be held out for validation; use a smaller block or more labels."
        )
    if held < val_fraction * total:
        log.info(
            "validation blocks hold %.1f %% of the labels (asked %.1f %%): %d block(s) were "
            "skipped to keep every class in training",
            100 * held / total, 100 * val_fraction, skipped,
        )  # fmt: skip
    return Split(sorted(chosen), val_mask, train_mask, block, gap)


def _window_sums(mask: np.ndarray, p: int) -> np.ndarray:
    c = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    c[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return c[p:, p:] - c[:-p, p:] - c[p:, :-p] + c[:-p, :-p]


def sample_patches(
    labels: LabelGrid, split: Split, *, patch: int, n: int, seed: int = 0
) -> list[Window]:
    """Draw up to ``n`` distinct ``patch`` x ``patch`` windows inside the training area.

    A window qualifies when all its pixels are in ``split.train_mask`` and it holds at
    least one labelled pixel. Up to ``n / classes`` windows are drawn among those holding
    each class (rarest class first), the rest uniformly at random.

    Returns
    -------
    list of (int, int, int, int)
        Windows ``(row0, row1, col0, col1)`` in row-major order.

    Raises
    ------
    LabelError
        No window qualifies.
    """
    h, w = labels.ids.shape
    if patch > h or patch > w:
        raise LabelError(
            f"The patch size {patch} px is larger than the field ({h} x {w} px); use a "
            "smaller --patch."
        )
    outside = _window_sums(~split.train_mask, patch) == 0
    labelled = _window_sums((labels.ids >= 0) & split.train_mask, patch) > 0
    rows, cols = np.nonzero(outside & labelled)
    if rows.size == 0:
        raise LabelError(
            f"No {patch} x {patch} px training patch fits in the training area (labelled "
            f"pixels more than {split.gap} px from the validation blocks); use a smaller "
            "--patch or --val-fraction, or more labels."
        )
    rng = np.random.default_rng(seed)
    n = min(n, rows.size)
    # stratified by class: up to n / C windows are drawn among those holding each class
    # (rarest first), the rest uniformly, so that rare classes appear in training
    taken = np.zeros(rows.size, dtype=bool)
    counts = labels.counts(split.train_mask)
    for c in np.argsort(counts, kind="stable"):
        if counts[c] == 0:
            continue
        has = _window_sums((labels.ids == c) & split.train_mask, patch)[rows, cols] > 0
        pool = np.nonzero(has & ~taken)[0]
        k = min(pool.size, n // labels.n_classes, n - int(taken.sum()))
        if k > 0:
            taken[rng.choice(pool, size=k, replace=False)] = True
    rest = np.nonzero(~taken)[0]
    k = n - int(taken.sum())
    if k > 0:
        taken[rng.choice(rest, size=k, replace=False)] = True
    rows, cols = rows[taken], cols[taken]
    return [(int(r), int(r) + patch, int(c), int(c) + patch) for r, c in zip(rows, cols)]


def read_windows(field: xr.DataArray, windows: Sequence[Window]) -> list[np.ndarray]:
    """Read ``(band, h, w)`` float32 windows of the field, and nothing else, in one compute."""
    data = field.data
    parts: list[Any] = [data[:, r0:r1, c0:c1] for r0, r1, c0, c1 in windows]
    if parts and hasattr(data, "dask"):
        from geoembed.runtime import compute

        parts = list(compute(*parts))
    return [np.asarray(p, dtype=np.float32) for p in parts]


def labelled_windows(
    field: xr.DataArray,
    labels: LabelGrid,
    windows: Sequence[Window],
    *,
    keep: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read windows of the field with their class ids.

    Parameters
    ----------
    field : xarray.DataArray
        The field.
    labels : LabelGrid
        Labels on the same grid.
    windows : sequence of (int, int, int, int)
        ``(row0, row1, col0, col1)`` windows.
    keep : numpy.ndarray, optional
        ``(y, x)`` bool; labels outside it are set to :data:`IGNORE`.

    Returns
    -------
    (list of numpy.ndarray, list of numpy.ndarray)
        ``(band, h, w)`` float32 values and ``(h, w)`` int64 class ids; pixels with a NaN
        input are :data:`IGNORE`.
    """
    xs = read_windows(field, windows)
    ys = []
    for (r0, r1, c0, c1), x in zip(windows, xs):
        y = labels.ids[r0:r1, c0:c1].astype(np.int64)
        bad = np.isnan(x).any(axis=0)
        if keep is not None:
            bad |= ~keep[r0:r1, c0:c1]
        ys.append(np.where(bad, IGNORE, y))
    return xs, ys


def normalisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation (float64) of ``(n, band, h, w)`` patches.

    Pixels with a NaN in any band are left out; a constant band gets std 1.
    """
    n_bands = x.shape[1]
    flat = np.moveaxis(x, 1, 0).reshape(n_bands, -1)
    flat = flat[:, ~np.isnan(flat).any(axis=0)]
    if flat.shape[1] == 0:
        raise LabelError("The training patches hold no valid (non-NaN) pixel.")
    mean = flat.mean(axis=1, dtype=np.float64)
    std = flat.std(axis=1, dtype=np.float64)
    std[~(std > 1e-12)] = 1.0
    return mean, std


def standardise(x: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """``(x - mean) / std`` per band (band axis -3), NaN replaced by 0 (the band mean).

    ``mean`` and ``std`` are sequences or arrays of one value per band.
    """
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    out = (np.asarray(x, dtype=np.float32) - m) / s
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


def class_weights(counts: np.ndarray, kind: str = "sqrt") -> np.ndarray:
    """Loss weights from class frequencies, mean 1 over the classes present.

    Parameters
    ----------
    counts : numpy.ndarray
        Training pixels per class.
    kind : {"sqrt", "inverse", "none"}
        ``sqrt(1 / frequency)`` (default, a mild correction), ``1 / frequency`` (every
        class counts equally) or equal weights. Classes without pixels get weight 0.

    Returns
    -------
    numpy.ndarray
        float32 weights.
    """
    powers = {"sqrt": 0.5, "inverse": 1.0, "none": 0.0}
    if kind not in powers:
        raise ValueError(f"class weighting must be one of {sorted(powers)}, not {kind!r}.")
    counts = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(counts)
    present = counts > 0
    w[present] = (counts[present].sum() / counts[present]) ** powers[kind]
    w[present] /= w[present].mean()
    return w.astype(np.float32)
