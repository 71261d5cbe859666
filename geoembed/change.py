"""Change between years: a ``(time, band, y, x)`` stack, change magnitude, masks, transitions.

* :func:`stack_years` puts several fields on one ``time`` axis, refusing fields whose
  grids (CRS, transform, shape, bands) differ.
* :func:`change_magnitude` is the per-pixel ``1 - cosine similarity`` of two years,
  from order-fixed float64 dot products (:mod:`geoembed._exact`), as float32: a pixel's
  value depends only on its two vectors, whatever the chunking or the CPU.
* :func:`choose_change_threshold` picks the threshold of :func:`change_mask`.
* :func:`transitions` classifies both years with one kNN model and counts the
  "from -> to" pixels; :func:`transition_report` turns the counts into hectares.

Threshold choice (documented default): Otsu's threshold on a deterministic sample of the
magnitude (a lattice of at most 16 blocks, strided to at most 2**18 pixels), but never
below ``min_threshold = 0.1``. Otsu separates "unchanged" (the bulk near zero: the same
surface embedded twice differs only by model noise) from "changed" when the histogram is
bimodal; when little or nothing changed, Otsu splits the noise itself, and the floor keeps
it from flagging noise. 0.1 is an angle of about 26 degrees between unit vectors. The
floor is a chosen guard, not a value calibrated on multi-year AlphaEarth data: pass a
fixed threshold when you have change references.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np
import xarray as xr

from geoembed._blockwise import map_pixels
from geoembed._exact import row_dots
from geoembed.errors import CRSMismatchError, GridMismatchError, LabelError, SchemaError
from geoembed.output_schema import CHANGE, CLASSES, continuous_map, threshold_mask
from geoembed.schema import check_embedding, resolution

__all__ = [
    "MASK_NODATA",
    "MIN_THRESHOLD",
    "change_magnitude",
    "change_mask",
    "choose_change_threshold",
    "otsu_threshold",
    "pixel_area_hectares",
    "stack_years",
    "transition_report",
    "transitions",
]

#: change mask values: 1 changed, 0 unchanged, 255 nodata
MASK_NODATA = 255
#: floor of the automatic threshold (1 - cosine); see the module docstring
MIN_THRESHOLD = 0.1
_SAMPLE_BLOCKS = 16
_SAMPLE_PIXELS = 1 << 18


def _name(names: Sequence[str] | None, i: int) -> str:
    return names[i] if names is not None else f"field {i}"


def check_same_grid(fields: Sequence[xr.DataArray], names: Sequence[str] | None = None) -> None:
    """Raise unless every field has the first one's CRS, transform, shape and bands.

    Raises
    ------
    CRSMismatchError, GridMismatchError
        Naming the two inputs and what differs.
    """
    first = fields[0]
    ref_name = _name(names, 0)
    for i, other in enumerate(fields[1:], start=1):
        what = _name(names, i)
        fix = (
            f"Resample {what} onto the grid of {ref_name} (e.g. rioxarray's reproject_match) "
            "or export both years for the same region and projection."
        )
        if (first.rio.crs is None) != (other.rio.crs is None) or (
            first.rio.crs is not None and first.rio.crs != other.rio.crs
        ):
            raise CRSMismatchError(
                f"{what} is in {other.rio.crs} but {ref_name} is in {first.rio.crs}. {fix}"
            )
        if (first.sizes["y"], first.sizes["x"]) != (other.sizes["y"], other.sizes["x"]):
            raise GridMismatchError(
                f"{what} has {other.sizes['y']} x {other.sizes['x']} pixels but {ref_name} has "
                f"{first.sizes['y']} x {first.sizes['x']}. {fix}"
            )
        if not (
            np.array_equal(first["x"].values, other["x"].values)
            and np.array_equal(first["y"].values, other["y"].values)
        ):
            raise GridMismatchError(
                f"{what} and {ref_name} have the same size but different pixel coordinates "
                f"(origin {float(other['x'][0])}, {float(other['y'][0])} vs "
                f"{float(first['x'][0])}, {float(first['y'][0])}). {fix}"
            )
        a_bands = [str(b) for b in first["band"].values]
        b_bands = [str(b) for b in other["band"].values]
        if a_bands != b_bands:
            raise GridMismatchError(
                f"{what} has bands {b_bands[:3]}... ({len(b_bands)}) but {ref_name} has "
                f"{a_bands[:3]}... ({len(a_bands)}); compare fields of the same embedding "
                "product, bands in the same order."
            )


def stack_years(
    fields: Sequence[xr.DataArray],
    times: Sequence[Any] | None = None,
    *,
    names: Sequence[str] | None = None,
) -> xr.DataArray:
    """Stack fields of several years on a ``time`` axis, lazily.

    Parameters
    ----------
    fields : sequence of xarray.DataArray
        Canonical fields (e.g. from :func:`geoembed.open_embeddings`, one per year, from
        GeoTIFFs or Zarr stores) on one grid.
    times : sequence, optional
        Coordinate of each field on ``time`` (e.g. years); default ``0..n-1``.
    names : sequence of str, optional
        How to name the fields in error messages (e.g. their paths).

    Returns
    -------
    xarray.DataArray
        ``(time, band, y, x)``, chunked like the first field.

    Raises
    ------
    CRSMismatchError, GridMismatchError
        Fields on different grids (before any task runs).
    """
    fields = list(fields)
    if len(fields) < 2:
        raise SchemaError("a change stack needs at least two fields (years).")
    for i, f in enumerate(fields):
        check_embedding(f, source=_name(names, i), require_crs=False)
    check_same_grid(fields, names)
    if times is None:
        times = list(range(len(fields)))
    if len(times) != len(fields):
        raise SchemaError(f"{len(times)} times for {len(fields)} fields.")
    chunks = fields[0].chunks
    aligned = [
        f.chunk(dict(zip(f.dims, chunks, strict=True))) if chunks is not None else f for f in fields
    ]
    stack = xr.concat(aligned, dim="time", coords="minimal", compat="override", join="override")
    return stack.assign_coords(time=list(times))


def _magnitude_block(vectors: np.ndarray) -> np.ndarray:
    d = vectors.shape[1] // 2
    a, b = vectors[:, :d], vectors[:, d:]
    norms = np.sqrt(row_dots(a, a) * row_dots(b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(norms > 0, row_dots(a, b) / norms, 0.0)
    return np.clip(1.0 - s, 0.0, 2.0).astype(np.float32)


def change_magnitude(
    a: xr.DataArray, b: xr.DataArray, *, names: Sequence[str] | None = None
) -> xr.DataArray:
    """Per-pixel change ``1 - cosine(a, b)`` between two years, lazily.

    Parameters
    ----------
    a, b : xarray.DataArray
        Canonical fields on the same grid (or the two ``time`` slices of a stack).
    names : sequence of str, optional
        How to name ``a`` and ``b`` in error messages.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` float32 in ``[0, 2]`` named ``change`` (0: same direction), NaN where
        either year is nodata. Nothing is computed.
    """
    stack = stack_years([a, b], names=names)
    first, second = stack.isel(time=0, drop=True), stack.isel(time=1, drop=True)
    bands = [f"t0_{v}" for v in first["band"].values] + [f"t1_{v}" for v in first["band"].values]
    if first.chunks is not None:
        import dask.array as dsa

        data: Any = dsa.concatenate([first.data, second.data], axis=0).rechunk({0: -1})
    else:
        data = np.concatenate([first.values, second.values], axis=0)
    both = first.isel(band=0, drop=True).expand_dims(band=bands).copy(data=data)
    out = map_pixels(
        both, _magnitude_block, n_out=1, fill=np.nan, dtype=np.float32, name="change"
    ).isel(output=0, drop=True)
    attrs = {"long_name": "change magnitude (1 - cosine similarity)", "units": "1"}
    return continuous_map(first, out, name=CHANGE, attrs=attrs)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (NaN ignored): maximal between-class variance."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise LabelError("no valid pixel to choose a change threshold from.")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu0 = m0 / w0
        mu1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


def _sample(magnitude: xr.DataArray) -> Any:
    """Lazy 1-D sample: a lattice of at most 16 blocks, strided to at most 2**18 pixels."""
    import dask.array as dsa

    data = magnitude.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(np.asarray(data), chunks=(512, 512))
    ny, nx = data.numblocks
    side = int(np.sqrt(_SAMPLE_BLOCKS))
    rows = np.unique(np.linspace(0, ny - 1, min(ny, side)).round().astype(int))
    cols = np.unique(np.linspace(0, nx - 1, min(nx, side)).round().astype(int))
    parts = [data.blocks[int(i), int(j)].ravel() for i in rows for j in cols]
    flat = dsa.concatenate(parts)
    step = max(1, -(-flat.shape[0] // _SAMPLE_PIXELS))
    return flat[::step]


def choose_change_threshold(
    magnitude: xr.DataArray,
    threshold: float | str = "otsu",
    *,
    min_threshold: float = MIN_THRESHOLD,
) -> dict[str, Any]:
    """Choose the change threshold (see the module docstring for the rationale).

    Parameters
    ----------
    magnitude : xarray.DataArray
        From :func:`change_magnitude`.
    threshold : float or "otsu"
        A fixed threshold (returned as is), or ``"otsu"``: Otsu's threshold on a
        deterministic sample, never below ``min_threshold``. This computes the sample
        (at most 16 blocks of the magnitude).
    min_threshold : float
        Floor of the automatic threshold.

    Returns
    -------
    dict
        ``threshold``, ``method`` and, for Otsu, ``otsu`` (before the floor),
        ``sample_pixels`` and ``sample_changed_fraction``.
    """
    if not isinstance(threshold, str):
        t = float(threshold)
        if not 0.0 <= t <= 2.0:
            raise LabelError(f"change threshold {t} is outside 0..2 (1 - cosine similarity).")
        return {"threshold": t, "method": "fixed"}
    if threshold != "otsu":
        raise LabelError(f"threshold={threshold!r}: give a number or 'otsu'.")
    (sample,) = dask.compute(_sample(magnitude))
    sample = sample[np.isfinite(sample)]
    otsu = otsu_threshold(sample)
    t = max(otsu, float(min_threshold))
    return {
        "threshold": t,
        "method": f"otsu on a sample, floor {min_threshold:g}",
        "otsu": otsu,
        "sample_pixels": int(sample.size),
        "sample_changed_fraction": float(np.mean(sample >= t)) if sample.size else None,
    }


def change_mask(magnitude: xr.DataArray, threshold: float) -> xr.DataArray:
    """Lazy uint8 mask: 1 where ``magnitude >= threshold``, 0 elsewhere, 255 at nodata."""
    return threshold_mask(
        magnitude, threshold, class_names=["unchanged", "changed"], name="changed"
    )


def transitions(
    model: Any, a: xr.DataArray, b: xr.DataArray, *, names: Sequence[str] | None = None
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Classify both years with ``model`` and count pixels per "from -> to" pair, lazily.

    Parameters
    ----------
    model : KNNClassifier
        A fitted exact kNN model (e.g. :meth:`KNNClassifier.from_training`).
    a, b : xarray.DataArray
        The two years on one grid.
    names : sequence of str, optional
        How to name them in messages.

    Returns
    -------
    (xarray.DataArray, xarray.DataArray, xarray.DataArray)
        The ``(from, to)`` int64 pixel counts (lazy; pixels valid in both years only),
        and the class maps of ``a`` and ``b``.
    """
    import dask.array as dsa

    from geoembed.classify import predict_field

    check_same_grid([a, b], names)
    ca = predict_field(model, a)[CLASSES]
    cb = predict_field(model, b)[CLASSES]
    C = int(model.n_classes)
    nodata = ca.rio.nodata
    va, vb = ca.data, cb.data
    if not isinstance(va, dsa.Array):
        va, vb = dsa.from_array(np.asarray(va)), dsa.from_array(np.asarray(vb))
    valid = (va != nodata) & (vb != nodata)
    code = dsa.where(valid, va.astype(np.int64) * C + vb.astype(np.int64), C * C)
    counts, _ = dsa.histogram(code, bins=C * C + 1, range=(0, C * C + 1))
    matrix = counts[: C * C].reshape(C, C).astype(np.int64)
    names_ = list(model.class_names)
    out = xr.DataArray(
        matrix, dims=("from", "to"), coords={"from": names_, "to": names_}, name="transitions"
    )
    return out, ca, cb


def pixel_area_hectares(field: xr.DataArray) -> float | None:
    """Area of one pixel in hectares, or None when the CRS has no linear unit (degrees)."""
    crs = field.rio.crs
    if crs is None:
        return None
    from pyproj import CRS

    pcrs = CRS.from_user_input(crs)
    if not pcrs.is_projected:
        return None
    factor = pcrs.axis_info[0].unit_conversion_factor  # metres per CRS unit
    rx, ry = resolution(field)
    return abs(rx * ry) * factor * factor / 10_000.0


def transition_report(
    counts: Any, class_names: Sequence[str], *, pixel_area_ha: float | None
) -> dict[str, Any]:
    """JSON-ready transition matrix in pixels and hectares, and the list of changes.

    Parameters
    ----------
    counts : array-like (C, C)
        Computed counts (rows: class in the first year, columns: in the second).
    class_names : sequence of str
        Class names.
    pixel_area_ha : float or None
        Area of one pixel (from :func:`pixel_area_hectares`); None leaves hectares out.

    Returns
    -------
    dict
    """
    m = np.asarray(counts, dtype=np.int64)
    names = [str(c) for c in class_names]
    total = int(m.sum())
    changes = []
    for i, j in zip(*np.nonzero(m), strict=True):
        if i == j:
            continue
        row: dict[str, Any] = {"from": names[i], "to": names[j], "pixels": int(m[i, j])}
        if pixel_area_ha is not None:
            row["hectares"] = float(m[i, j] * pixel_area_ha)
        changes.append(row)
    changes.sort(key=lambda r: (-r["pixels"], r["from"], r["to"]))
    report: dict[str, Any] = {
        "class_names": names,
        "axes": {"rows": "from (first year)", "columns": "to (second year)"},
        "pixels": m.tolist(),
        "valid_pixels": total,
        "changed_pixels": int(total - np.trace(m)),
        "pixel_area_ha": pixel_area_ha,
        "changes": changes,
    }
    if pixel_area_ha is not None:
        report["hectares"] = (m * pixel_area_ha).tolist()
        report["changed_hectares"] = float((total - np.trace(m)) * pixel_area_ha)
    else:
        report["note"] = "the CRS is not projected: areas are given in pixels only"
    return report
