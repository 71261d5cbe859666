"""Render a field or a map to a small RGBA image, reading only a decimated version.

Used by :func:`geoembed.viz.quicklook_png` and :func:`geoembed.viz.show_map`. Only NumPy
and Dask are used here (no matplotlib). Memory is bounded by the output size and one
block per thread: the input is read with a stride, and for large renders the PCA is
fitted on a coarser sample and applied block by block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import xarray as xr
from affine import Affine

from geoembed.colors import decode_class_colors, decode_class_names, default_color, to_hex
from geoembed.errors import BandMismatchError, DimensionError, SchemaError
from geoembed.grid import Grid
from geoembed.schema import CLASS_NODATA

__all__ = ["Rendered", "render"]

#: pixels in the PCA sample (enough for 3 components of a 64-d field)
_PCA_SAMPLE = 20_000
#: blocks read to fit the PCA when the decimated field is too large to hold
_SAMPLE_BLOCKS = 16
#: largest decimated field (bytes) read in one go; above it, project block by block
_ONE_PASS_BYTES = 64 * 2**20
#: default RGB bands for AlphaEarth fields (those used in Earth Engine examples)
_AEF_RGB = ("A01", "A16", "A09")


@dataclass(frozen=True)
class Rendered:
    """An RGBA rendering of a raster and its georeferencing.

    Attributes
    ----------
    rgba : numpy.ndarray
        ``(rows, cols, 4)`` uint8, north-up, alpha 0 on nodata.
    transform : affine.Affine
        Transform of ``rgba`` (north-up, in ``crs``).
    crs : Any
        CRS of the source (rasterio CRS) or None.
    legend : dict of str to str or None
        ``{class name: "#rrggbb"}`` for class maps.
    kind : str
        ``"field"``, ``"classes"`` or ``"continuous"``.
    """

    rgba: np.ndarray
    transform: Affine
    crs: Any
    legend: dict[str, str] | None
    kind: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the image in its CRS."""
        rows, cols = self.rgba.shape[:2]
        left, top = self.transform * (0, 0)
        right, bottom = self.transform * (cols, rows)
        return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def _stride(height: int, width: int, max_size: int) -> int:
    if max_size < 1:
        raise SchemaError(f"max_size must be >= 1, got {max_size}.")
    return max(1, math.ceil(max(height, width) / max_size))


def _decimate(da: xr.DataArray, stride: int) -> xr.DataArray:
    if stride == 1:
        return da
    return da.isel(y=slice(None, None, stride), x=slice(None, None, stride))


def _stretch(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-channel 2-98 % stretch of ``(c, rows, cols)`` to uint8 (``valid`` mask)."""
    out = np.zeros(values.shape, dtype=np.uint8)
    for i in range(values.shape[0]):
        v = values[i][valid]
        if v.size == 0:
            continue
        lo, hi = np.percentile(v, [2.0, 98.0])
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        scaled = np.clip((values[i] - lo) * scale, 0, 255)
        out[i] = np.where(valid, scaled, 0).astype(np.uint8)
    return out


def _fit_pca(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and first three principal axes (3, bands) of ``(n, bands)`` valid vectors."""
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    axes = vt[:3]
    if axes.shape[0] < 3:
        axes = np.vstack([axes, np.zeros((3 - axes.shape[0], sample.shape[1]))])
    # deterministic signs: the largest loading of each axis is positive
    signs = np.sign(axes[np.arange(3), np.argmax(np.abs(axes), axis=1)])
    signs[signs == 0] = 1.0
    return mean.astype(np.float32), (axes * signs[:, None]).astype(np.float32)


def _project(block: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``(bands, r, c)`` -> ``(3, r, c)`` PCA scores (NaN where the input is nodata)."""
    b, r, c = block.shape
    flat = block.reshape(b, -1).T
    scores = (flat - mean) @ axes.T
    return np.ascontiguousarray(scores.T.reshape(3, r, c)).astype(np.float32)


def _block_sample(dec: xr.DataArray) -> np.ndarray:
    """Return valid ``(n, bands)`` vectors from up to ``_SAMPLE_BLOCKS`` spread-out blocks.

    Reading a handful of blocks (instead of a strided pass over all of them) keeps the
    PCA fit cheap; the projection pass then reads every block once.
    """
    data = dec.data
    if hasattr(data, "blocks"):
        nby, nbx = data.numblocks[1], data.numblocks[2]
        side = max(1, int(math.sqrt(_SAMPLE_BLOCKS)))
        iy = np.unique(np.linspace(0, nby - 1, min(nby, side)).round().astype(int))
        ix = np.unique(np.linspace(0, nbx - 1, min(nbx, side)).round().astype(int))
        parts = dask.compute(*[data.blocks[0, i, j] for i in iy for j in ix])
        flat = np.concatenate([p.reshape(p.shape[0], -1).T for p in parts])
    else:
        values = np.asarray(data)
        flat = values.reshape(values.shape[0], -1).T
    flat = flat[np.all(np.isfinite(flat), axis=1)]
    if flat.shape[0] > _PCA_SAMPLE:
        flat = flat[:: math.ceil(flat.shape[0] / _PCA_SAMPLE)]
    return flat.astype(np.float64)


def _compute(obj: Any) -> np.ndarray:
    data = obj.data if isinstance(obj, xr.DataArray) else obj
    if hasattr(data, "compute"):
        data = data.compute()
    return np.asarray(data)


def _render_field(
    da: xr.DataArray, stride: int, method: str, bands: Sequence[Any] | None
) -> np.ndarray:
    """``(3, rows, cols)`` float values and validity of the decimated field."""
    dec = _decimate(da, stride)
    if method == "bands":
        names = [str(b) for b in da["band"].values]
        if bands is None:
            chosen: list[Any] = list(_AEF_RGB) if all(b in names for b in _AEF_RGB) else names[:3]
        else:
            chosen = list(bands)
        if len(chosen) not in (1, 3):
            raise BandMismatchError(f"bands= takes 1 or 3 bands, got {len(chosen)}: {chosen}.")
        idx = []
        for b in chosen:
            if isinstance(b, int | np.integer):
                if not 0 <= int(b) < len(names):
                    raise BandMismatchError(f"Band index {b} is outside 0..{len(names) - 1}.")
                idx.append(int(b))
            elif str(b) in names:
                idx.append(names.index(str(b)))
            else:
                raise BandMismatchError(
                    f"Band {b!r} is not in the field (bands {names[0]}..{names[-1]})."
                )
        rgb = _compute(dec.isel(band=idx)).astype(np.float32)
        return rgb if len(idx) == 3 else np.repeat(rgb, 3, axis=0)
    if method != "pca":
        raise SchemaError(f"method must be 'pca' or 'bands', got {method!r}.")
    nb, rows, cols = dec.shape
    if nb * rows * cols * 4 <= _ONE_PASS_BYTES:
        values = _compute(dec).astype(np.float32)
        flat = values.reshape(nb, -1).T
        valid = np.all(np.isfinite(flat), axis=1)
        sample = flat[valid]
        if sample.shape[0] > _PCA_SAMPLE:
            step = math.ceil(sample.shape[0] / _PCA_SAMPLE)
            sample = sample[::step]
        if sample.shape[0] == 0:
            return np.full((3, rows, cols), np.nan, dtype=np.float32)
        mean, axes = _fit_pca(sample.astype(np.float64))
        return _project(values, mean, axes)
    # large: fit on a few blocks spread over the field, then project block by block
    sample = _block_sample(dec)
    if sample.shape[0] == 0:  # the sampled blocks are all nodata: use a coarse grid
        step = stride * math.ceil(math.sqrt(rows * cols / _PCA_SAMPLE))
        flat = _compute(_decimate(da, step)).reshape(nb, -1).T
        sample = flat[np.all(np.isfinite(flat), axis=1)].astype(np.float64)
    if sample.shape[0] == 0:
        return np.full((3, rows, cols), np.nan, dtype=np.float32)
    mean, axes = _fit_pca(sample)
    data = dec.data
    if hasattr(data, "map_blocks"):
        proj = data.map_blocks(
            _project, mean, axes, chunks=((3,), *data.chunks[1:]), dtype=np.float32
        )
        return np.asarray(proj.compute())
    return _project(np.asarray(data, dtype=np.float32), mean, axes)


def _class_colors(
    ids: np.ndarray,
    class_names: Sequence[str] | Mapping[int, str] | None,
    colors: Sequence[Any] | Mapping[int, Any] | None,
    attrs: Mapping[str, Any],
) -> tuple[dict[int, tuple[int, int, int]], dict[int, str]]:
    """Names and colours by class id: arguments, else the map's own (COG tags), else defaults."""
    if class_names is None:
        class_names = attrs.get("class_names")
    if colors is None:
        colors = attrs.get("colors", attrs.get("class_colors"))
    names = decode_class_names(class_names)
    cmap = {k: v[:3] for k, v in decode_class_colors(colors).items()}
    for i in sorted(set(ids.tolist()) | set(names)):
        cmap.setdefault(i, default_color(i)[:3])
        names.setdefault(i, f"class {i}")
    return cmap, names


def render(
    obj: xr.DataArray,
    *,
    method: str = "pca",
    bands: Sequence[Any] | None = None,
    max_size: int = 1024,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    colors: Sequence[Any] | Mapping[int, Any] | None = None,
) -> Rendered:
    """Render a field, a class map or a continuous map to a north-up RGBA array.

    Parameters
    ----------
    obj : xarray.DataArray
        ``(band, y, x)`` embedding field, ``(y, x)`` integer class map, or ``(y, x)``
        float map (confidence...).
    method : {"pca", "bands"}
        For fields: first three principal components, or three bands as RGB.
    bands : sequence of str or int, optional
        Bands for ``method="bands"`` (default ``A01, A16, A09`` for AlphaEarth, else the
        first three).
    max_size : int
        Longest side of the image; the input is read with the stride that achieves it.
    class_names, colors : optional
        For class maps: names and colours by class id (lists in id order or dicts).

    Returns
    -------
    Rendered
    """
    if not isinstance(obj, xr.DataArray):
        field = getattr(obj, "field", None)
        if isinstance(field, xr.DataArray):
            obj = field
        else:
            raise SchemaError(
                f"Cannot render a {type(obj).__name__}; pass an xarray.DataArray "
                "(an embedding field or a (y, x) map)."
            )
    dims = tuple(obj.dims)
    if dims not in (("band", "y", "x"), ("y", "x")):
        raise DimensionError(
            f"Cannot render an array with dims {dims}; expected ('band', 'y', 'x') or ('y', 'x')."
        )
    stride = _stride(obj.sizes["y"], obj.sizes["x"], max_size)
    # the decimated image's grid: north-up transform, and whether its rows must be flipped
    grid = Grid.of(obj).decimate(stride)
    transform, flip = grid.north_up(), grid.bottom_up
    legend: dict[str, str] | None = None
    if dims == ("band", "y", "x"):
        values = _render_field(obj, stride, method, bands)
        valid = np.all(np.isfinite(values), axis=0)
        rgb = _stretch(values, valid)
        kind = "field"
    elif np.issubdtype(obj.dtype, np.integer) or obj.dtype == bool:
        labels = _compute(_decimate(obj, stride))
        nodata = obj.rio.nodata
        if nodata is None:
            nodata = CLASS_NODATA.get(str(obj.dtype))
        valid = labels != nodata if nodata is not None else np.ones(labels.shape, dtype=bool)
        ids = np.unique(labels[valid]).astype(np.int64)
        cmap, names = _class_colors(ids, class_names, colors, obj.attrs)
        lut_ids = np.array(sorted(cmap), dtype=np.int64)
        lut = np.array([cmap[i] for i in lut_ids], dtype=np.uint8)
        pos = np.searchsorted(lut_ids, np.where(valid, labels, lut_ids[0]))
        pos = np.clip(pos, 0, len(lut_ids) - 1)
        rgb = np.moveaxis(lut[pos], -1, 0)
        named = class_names is not None or "class_names" in obj.attrs
        shown = sorted(set(names) if named else set(ids.tolist()))
        legend = {names[i]: to_hex(cmap[i]) for i in shown}
        kind = "classes"
    else:
        values = _compute(_decimate(obj, stride)).astype(np.float64)
        nodata = obj.rio.nodata
        valid = np.isfinite(values)
        if nodata is not None and np.isfinite(nodata):
            valid &= values != nodata
        gray = _stretch(values[None], valid)
        rgb = np.repeat(gray, 3, axis=0)
        kind = "continuous"
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha[None]], axis=0)
    rgba[:3, ~valid] = 0
    rgba = np.ascontiguousarray(np.moveaxis(rgba, 0, -1))
    if flip:
        rgba = np.ascontiguousarray(rgba[::-1])
    return Rendered(rgba=rgba, transform=transform, crs=obj.rio.crs, legend=legend, kind=kind)
