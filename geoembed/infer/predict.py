"""Batched, tiled CNN inference over an embedding field (or imagery) with ONNX Runtime.

:func:`predict` checks the model against the field on the client (band names/count,
input rank, dtype, fixed vs dynamic tile size, output stride; one probe run of a blank
tile), then builds one lazy Dask task per output block. The tiles lie on one global grid
that does not depend on the Dask blocks (:mod:`geoembed.infer.tiling`); a block reads
the field around it as far as its tiles reach (slices of the neighbouring input blocks),
cuts the tiles, normalises and NaN-fills them, runs them ``batch_size`` at a time
through a per-process cached session (:mod:`geoembed.infer.session`) and stitches (or
blends) them. Any chunking gives the same bytes as one block.

Nodata: an output pixel is nodata when every input pixel under it is nodata (a pixel is
nodata when any of its bands is NaN, or when its bands hold both +inf and -inf): class
255 (or the class dtype's nodata), NaN confidence, probabilities and features. NaN
inputs are replaced by the sidecar's ``nodata_fill`` (default 0, i.e. the band mean after
normalisation) before the model runs, tile batch by tile batch.

Seams: block edges never make seams. Tile edges do when the model's receptive radius
(sidecar ``receptive_radius``, else estimated with a perturbation probe) exceeds
``overlap`` with ``blend="none"``: a :class:`SeamWarning` then suggests settings the model
accepts (a larger overlap and tile for dynamic models, cosine blending with a concrete
step for fixed-size ones).

Task keys: every Dask name is a token of the field's graph, the plan (model digest,
tiling, normalisation...) and the block layout, so several models or fields can share
one graph (one ``dask.compute``) without collisions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr
from affine import Affine
from dask.base import tokenize

from geoembed.errors import ModelError
from geoembed.grid import Grid
from geoembed.infer.blocks import _classes_block, _probs_to_uint8, _stacked
from geoembed.infer.plan import OUTPUTS, InferencePlan, SeamWarning, plan_inference
from geoembed.infer.spec import ModelSpec
from geoembed.output_schema import (
    CLASSES,
    CONFIDENCE,
    FEATURES,
    PROBABILITIES,
    class_map,
    confidence_map,
    feature_map,
    probability_map,
)
from geoembed.schema import (
    CLASS_NODATA,
    class_dtype,
    feature_band_names,
    map_like,
)

__all__ = ["OUTPUTS", "InferencePlan", "SeamWarning", "plan_inference", "predict"]


def _grid_coords(field: xr.DataArray, stride: int, ny: int, nx: int) -> tuple[Any, Any, Affine]:
    """Coordinates and transform of a ``(ny, nx)`` output with ``stride``-times larger pixels."""
    grid = Grid.of(field).decimate(stride).with_shape((ny, nx))
    coords = grid.coords()
    return coords["y"], coords["x"], grid.transform


def _wrap(
    field: xr.DataArray,
    data: Any,
    *,
    name: str,
    stride: int,
    leading: tuple[str, Sequence[Any]] | None = None,
    nodata: float | int | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    if stride == 1:
        return map_like(field, data, name=name, leading=leading, nodata=nodata, attrs=attrs)
    ny, nx = data.shape[-2:]
    ys, xs, transform = _grid_coords(field, stride, ny, nx)
    dims: tuple[str, ...] = ("y", "x")
    coords: dict[str, Any] = {"y": ys, "x": xs}
    if leading is not None:
        dims = (leading[0], "y", "x")
        coords[leading[0]] = list(leading[1])
    out = xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=dict(attrs or {}))
    if field.rio.crs is not None:
        out = out.rio.write_crs(field.rio.crs)
    out = out.rio.write_transform(transform)
    if nodata is not None:
        out = out.rio.write_nodata(nodata)
    return out


def predict(
    field: xr.DataArray,
    model: Any,
    *,
    model_config: Any = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    output: str | Sequence[str] = "classes",
    bands: Sequence[str] | None = None,
    blend: str = "none",
    padding: str = "reflect",
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
    features_output: str | None = None,
    check_overlap: bool = True,
    step: int | None = None,
    probabilities_dtype: str = "float32",
) -> xr.Dataset:
    """Run an ONNX CNN over a field, tile by tile on one global tile grid, lazily.

    Parameters
    ----------
    field : xarray.DataArray
        Canonical ``(band, y, x)`` float32 field (embeddings or imagery), NaN nodata.
    model : path-like or ModelSpec
        The ONNX model (see :func:`geoembed.infer.load_model_spec`).
    model_config : path-like or dict, optional
        Sidecar JSON (default: ``<model stem>.json`` next to the model if it is one).
    tile : int, optional
        Tile size in pixels: the model's fixed input size, else the sidecar's ``tile``,
        else 256. For dynamic models it is capped at the field plus its halo (never
        at a block: the tiling must not depend on the chunks).
    overlap : int, optional
        Halo ``h`` on each side of a tile (input pixels, multiple of the stride).
        Default: the sidecar's ``overlap``, else its ``receptive_radius``, else 32; 0 for
        patch classifiers. Output equals a run of the model on the whole image when ``h``
        covers the model's receptive radius.
    batch_size : int, default 8
        Tiles per ONNX Runtime call (a fixed model batch size wins).
    output : {"classes", "probabilities", "features"} or a sequence of them
        Which variables the Dataset holds, all computed from one model run per block:
        ``"classes"``: ``classes`` ``(y, x)`` (argmax, ``class_dtype`` with nodata 255
        for uint8) and ``confidence`` ``(y, x)`` float32 (the winning probability).
        ``"probabilities"``: ``probabilities`` ``(class, y, x)``. ``"features"``:
        ``features`` ``(band, y, x)`` float32 with bands ``F000``.. -- a canonical
        embedding field once renamed (``ds["features"].rename("embedding")``).
    bands : sequence of str, optional
        Field bands to feed, in model order (default: the sidecar's ``bands``, else all).
    blend : {"none", "linear", "cosine"}
        Combine overlapping tiles (see :mod:`geoembed.infer.tiling`).
    padding : {"reflect", "nearest"}
        How the field is extended beyond its edges.
    providers : "cpu", "cuda" or list of str, optional
        ONNX Runtime providers (default CPU).
    threads : int, optional
        Intra-op threads per session (default: the Dask worker's thread count, else 1).
    features_output : str, optional
        Graph output holding features (default: the sidecar's ``features_output``).
    check_overlap : bool, default True
        With ``blend="none"``: estimate the receptive radius when the sidecar does not
        declare it and warn (:class:`SeamWarning`) if ``overlap`` is smaller; the
        warning suggests settings the model accepts.
    step : int, optional
        Tile spacing of blended runs (default ``tile - 2 * overlap``), with
        ``tile - 3 * overlap < step <= tile``. E.g. ``tile=256, overlap=51, step=204,
        blend="cosine"`` on one block reproduces ukis-csmask's tiling.
    probabilities_dtype : {"float32", "uint8"}
        ``"uint8"`` stores probabilities as ``round(p * 254)`` with 255 as nodata
        (attribute ``probability_scale`` = 1/254): a quarter of the size.

    Returns
    -------
    xarray.Dataset
        Always a Dataset, whatever ``output`` is: lazy variables on the field's grid;
        for a model with output stride ``s`` on a grid ``s`` times coarser (transform
        scaled by ``s``, same origin, ``ceil(H/s)`` rows). The tiles lie on one global
        grid, so the values (to the byte) do not depend on the field's chunks.

    Raises
    ------
    BandMismatchError, DimensionError, DTypeError, ModelError, ChunkingError
        Before any Dask task runs.
    """
    outputs = (output,) if isinstance(output, str) else tuple(output)
    if probabilities_dtype not in ("float32", "uint8"):
        raise ModelError(f"probabilities_dtype={probabilities_dtype!r}; use 'float32' or 'uint8'.")
    plan, spec, field = plan_inference(
        field,
        model,
        model_config=model_config,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        outputs=outputs,
        bands=bands,
        blend=blend,
        padding=padding,
        providers=providers,
        threads=threads,
        features_output=features_output,
        check_overlap=check_overlap,
        step=step,
    )
    stacked = _stacked(field, plan)
    return _assemble(field, stacked, plan, spec, outputs, probabilities_dtype)


def _assemble(
    field: xr.DataArray,
    stacked: dsa.Array,
    plan: InferencePlan,
    spec: ModelSpec,
    outputs: tuple[str, ...],
    probabilities_dtype: str = "float32",
) -> xr.Dataset:
    s = plan.stride
    k = plan.n_classes
    names = list(spec.classes) if spec.classes else [f"class_{i}" for i in range(k)]
    attrs = {
        "model": spec.path.name,
        "model_sha256": spec.sha256,
        "tile": plan.tile,
        "overlap": plan.overlap,
        "output_stride": s,
        "blend": plan.blend,
    }
    if plan.step is not None:
        attrs["step"] = plan.step
    result: dict[str, xr.DataArray] = {}
    if CLASSES in outputs:
        dtype = class_dtype(k)
        nodata = CLASS_NODATA[dtype.name]
        cc = dsa.map_blocks(
            _classes_block,
            stacked,
            n_classes=k,
            nodata=nodata,
            dtype=np.float32,
            chunks=((2,), *stacked.chunks[1:]),
            meta=np.empty((0, 0, 0), dtype=np.float32),
            name="geoembed-classes-" + tokenize(stacked.name, k, nodata),
        )
        place = functools.partial(_wrap, stride=s)
        result[CLASSES] = class_map(
            field,
            cc[0].astype(dtype),
            class_names=names,
            colors=list(spec.colors) if spec.colors else None,
            n_classes=k,
            attrs=attrs,
            place=place,
        )
        result[CONFIDENCE] = confidence_map(field, cc[1], attrs=attrs, place=place)
    if PROBABILITIES in outputs:
        probs, p_attrs = stacked[:k], attrs
        if probabilities_dtype == "uint8":
            probs = dsa.map_blocks(
                _probs_to_uint8,
                probs,
                dtype=np.uint8,
                name="geoembed-probabilities-uint8-" + tokenize(probs.name),
            )
            p_attrs = dict(attrs, probability_scale=1 / 254)
        result[PROBABILITIES] = probability_map(
            field,
            probs,
            class_names=names,
            attrs=p_attrs,
            place=functools.partial(_wrap, stride=s),
        )
    if FEATURES in outputs:
        result[FEATURES] = feature_map(
            field,
            stacked[k:],
            band_names=feature_band_names(plan.n_features),
            attrs=attrs,
            place=functools.partial(_wrap, stride=s),
        )
    return xr.Dataset(result)
