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

import dataclasses
import logging
import math
import operator
import warnings
from collections.abc import Sequence
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr
from affine import Affine
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoembed.errors import (
    BandMismatchError,
    ChunkingError,
    DimensionError,
    DTypeError,
    ModelError,
    require,
)
from geoembed.infer.session import get_session, resolve_providers
from geoembed.infer.spec import ModelSpec, load_model_spec
from geoembed.infer.tiling import PAD_MODES, AxisTiling, block_edges, run_region
from geoembed.schema import (
    CLASS_NODATA,
    check_embedding,
    class_dtype,
    feature_band_names,
    map_like,
)

__all__ = ["OUTPUTS", "InferencePlan", "SeamWarning", "plan_inference", "predict"]

log = logging.getLogger(__name__)

OUTPUTS = ("classes", "probabilities", "features")
_BLENDS = ("none", "linear", "cosine")


class SeamWarning(UserWarning):
    """The overlap is smaller than the model's receptive radius: seams are possible."""


@dataclasses.dataclass(frozen=True)
class InferencePlan:
    """Everything a worker needs to run one block (small, picklable).

    Attributes
    ----------
    path, sha256, input_name, input_dtype
        Model file, digest, input name and element type.
    providers : tuple of str
        ONNX Runtime providers.
    threads : int or None
        Intra-op threads (``None``: the worker's thread count).
    score_output, features_output : str or None
        Graph outputs to fetch.
    softmax : bool
        Apply softmax to the score output.
    n_classes, n_features : int
        Channels of each output (0 when not fetched).
    mean, std : tuple or None
        Normalisation.
    nodata_fill : float
        Value for NaN inputs after normalisation.
    tile, overlap, stride, batch_size, fixed_batch, blend, padding, step
        Tiling (see :mod:`geoembed.infer.tiling`).
    receptive_radius : int or None
        Declared or estimated receptive radius (input pixels).
    """

    path: str
    sha256: str
    input_name: str
    input_dtype: str
    providers: tuple[str, ...]
    threads: int | None
    score_output: str | None
    features_output: str | None
    softmax: bool
    n_classes: int
    n_features: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    nodata_fill: float
    tile: int
    overlap: int
    stride: int
    batch_size: int
    fixed_batch: int | None
    blend: str
    padding: str
    receptive_radius: int | None
    step: int | None = None

    @property
    def n_out(self) -> int:
        """Channels of the stacked block result (scores first, then features)."""
        return self.n_classes + self.n_features


# --------------------------------------------------------------------------- worker side


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _runner(plan: InferencePlan) -> Any:
    session = get_session(plan.path, plan.sha256, providers=plan.providers, threads=plan.threads)
    names = [n for n in (plan.score_output, plan.features_output) if n is not None]
    dtype = np.dtype(plan.input_dtype)
    mean = None if plan.mean is None else np.asarray(plan.mean, np.float32)[:, None, None]
    std = None if plan.std is None else np.asarray(plan.std, np.float32)[:, None, None]

    def run(batch: np.ndarray) -> np.ndarray:
        # batch is a fresh copy of the tiles: normalise and fill NaN in place
        if mean is not None:
            batch -= mean
        if std is not None:
            batch /= std
        np.copyto(batch, np.float32(plan.nodata_fill), where=np.isnan(batch))
        feed = batch if batch.dtype == dtype else batch.astype(dtype)
        res = session.run(names, {plan.input_name: feed})
        parts = []
        for name, arr in zip(names, res):
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim == 2:
                arr = arr[:, :, None, None]
            if name == plan.score_output and plan.softmax:
                arr = _softmax(arr)
            parts.append(arr)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    return run


def _block(
    pieces: list[list[np.ndarray]],
    plan: InferencePlan,
    ty: AxisTiling,
    tx: AxisTiling,
    origin: tuple[int, int],
    region: tuple[tuple[int, int], tuple[int, int]],
) -> np.ndarray:
    """Infer one output block -> ``(n_out, (y1 - y0)/s, (x1 - x0)/s)``.

    ``pieces`` are the parts of the input blocks that make up the block's window (every
    field pixel its tiles read), row by row; ``origin`` is the window's first field pixel
    and ``region`` the field pixels the block produces.
    """
    x = pieces[0][0] if len(pieces) == 1 and len(pieces[0]) == 1 else np.block(pieces)
    (y0, y1), (x0, x1) = region
    s = plan.stride
    own = x[:, y0 - origin[0] : y1 - origin[0], x0 - origin[1] : x1 - origin[1]]
    # a pixel is nodata when any band is NaN: NaN propagates through the band sum
    valid = ~np.isnan(np.add.reduce(own, axis=0, dtype=np.float32))
    by, bx = valid.shape
    if s > 1:
        valid = valid.reshape(by // s, s, bx // s, s).any(axis=(1, 3))
    if not valid.any():
        return np.full((plan.n_out, by // s, bx // s), np.nan, dtype=np.float32)
    res = run_region(
        x,
        origin,
        _runner(plan),
        ty=ty,
        tx=tx,
        region=region,
        n_out=plan.n_out,
        batch_size=plan.batch_size,
        fixed_batch=plan.fixed_batch,
        padding=plan.padding,
    )
    if not valid.all():
        res[:, ~valid] = np.nan
    return res


def _probs_to_uint8(p: np.ndarray) -> np.ndarray:
    """Probabilities 0..1 -> uint8 0..254 (value / 254), NaN -> 255."""
    out = np.full(p.shape, 255, dtype=np.uint8)
    ok = ~np.isnan(p)
    out[ok] = np.rint(np.clip(p[ok], 0.0, 1.0) * 254.0).astype(np.uint8)
    return out


def _classes_block(stacked: np.ndarray, n_classes: int, nodata: int) -> np.ndarray:
    """``(n_out, y, x)`` -> ``(2, y, x)`` float32: class id (as float) and confidence."""
    probs = stacked[:n_classes]
    valid = ~np.isnan(probs[0])
    cls = np.full(probs.shape[1:], nodata, dtype=np.float32)
    conf = np.full(probs.shape[1:], np.nan, dtype=np.float32)
    if valid.any():
        p = probs[:, valid]
        cls[valid] = np.argmax(p, axis=0)
        conf[valid] = p.max(axis=0)
    return np.stack([cls, conf])


# --------------------------------------------------------------------------- client side


def _select_bands(
    field: xr.DataArray, spec: ModelSpec, bands: Sequence[str] | None
) -> xr.DataArray:
    names = [str(b) for b in field["band"].values]
    wanted = [str(b) for b in bands] if bands is not None else None
    if wanted is None and spec.bands is not None:
        wanted = list(spec.bands)
    if wanted is not None:
        missing = [b for b in wanted if b not in names]
        if missing:
            raise BandMismatchError(
                f"the field lacks bands {missing[:5]}{'...' if len(missing) > 5 else ''} that "
                f"the model {spec.path.name} needs (it expects {wanted[:4]}...); the field has "
                f"{names[:4]}... Open the field the model was trained on, or pass bands=[...]."
            )
        if wanted != names:
            field = field.sel(band=wanted)
    n = field.sizes["band"]
    if spec.n_bands is not None and n != spec.n_bands:
        raise BandMismatchError(
            f"the model {spec.path.name} takes {spec.n_bands} input bands but the field has "
            f"{n}; select the model's bands with bands=[...] (or 'bands' in its sidecar)."
        )
    for key in ("mean", "std"):
        v = getattr(spec, key)
        if v is not None and len(v) != n:
            raise ModelError(
                f"the model config of {spec.path.name} has {len(v)} {key} values for {n} "
                "input bands; give one per band."
            )
    if spec.std is not None and any(v == 0 for v in spec.std):
        raise ModelError(f"the model config of {spec.path.name} has a zero std.")
    return field


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def _probe(session: Any, spec: ModelSpec, tile: int, n_bands: int, names: list[str]) -> Any:
    batch = spec.fixed_batch or 1
    dtype = spec.input_dtype
    x = np.zeros((batch, n_bands, tile, tile), dtype=dtype)
    try:
        return session.run(names, {spec.input_name: x})
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(
            f"the model {spec.path.name} cannot run on a {tile} x {tile} tile of {n_bands} "
            f"bands ({exc}); choose a tile size the model accepts (tile=...)."
        ) from exc


def _estimate_radius(
    session: Any, spec: ModelSpec, tile: int, n_bands: int, name: str, stride: int
) -> int:
    """Lower bound of the receptive radius: how far a centre-pixel change travels."""
    rng = np.random.default_rng(0)
    batch = spec.fixed_batch or 1
    base = rng.normal(size=(batch, n_bands, tile, tile)).astype(spec.input_dtype)
    pert = base.copy()
    c = tile // 2
    pert[:, :, c, c] += 10.0
    a = np.asarray(session.run([name], {spec.input_name: base})[0], dtype=np.float64)
    b = np.asarray(session.run([name], {spec.input_name: pert})[0], dtype=np.float64)
    if a.ndim != 4:
        return 0
    diff = np.abs(a[0] - b[0]).max(axis=0)
    yy, xx = np.nonzero(diff > 1e-6 * (1 + np.abs(a).max()))
    if yy.size == 0:
        return 0
    cy = (c // stride) + 0.5
    reach = max(np.abs(yy + 0.5 - cy).max(), np.abs(xx + 0.5 - cy).max())
    return math.ceil(reach * stride - 0.5)


def plan_inference(
    field: xr.DataArray,
    model: Any,
    *,
    model_config: Any = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    outputs: Sequence[str] = ("classes",),
    bands: Sequence[str] | None = None,
    blend: str = "none",
    padding: str = "reflect",
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
    features_output: str | None = None,
    check_overlap: bool = True,
    step: int | None = None,
) -> tuple[InferencePlan, ModelSpec, xr.DataArray]:
    """Validate model and field on the client and fix the tiling (no Dask task runs).

    Parameters are those of :func:`predict`.

    Returns
    -------
    (InferencePlan, ModelSpec, xarray.DataArray)
        The plan, the model spec and the band-selected field.
    """
    check_embedding(field, require_crs=False)
    spec = load_model_spec(model, model_config)
    ort = require("onnxruntime", extra="cnn", feature="CNN inference")  # noqa: F841
    if blend not in _BLENDS:
        raise ModelError(f"blend={blend!r}; use one of {_BLENDS}.")
    if padding not in PAD_MODES:
        raise ModelError(f"padding={padding!r}; use one of {tuple(PAD_MODES)}.")
    if batch_size < 1:
        raise ModelError(f"batch_size={batch_size}; use a positive number of tiles.")
    bad = [o for o in outputs if o not in OUTPUTS]
    if bad or not outputs:
        raise ModelError(f"output={bad or outputs!r}; use one or more of {OUTPUTS}.")

    if len(spec.input_shape) != 4:
        raise DimensionError(
            f"the model {spec.path.name} input {spec.input_name!r} has rank "
            f"{len(spec.input_shape)} (shape {spec.input_shape}); geoembed feeds "
            "[N, C, H, W] tiles. Export the model with a 4-D NCHW input."
        )
    if spec.input_dtype.kind != "f":
        raise DTypeError(
            f"the model {spec.path.name} takes {spec.input_dtype} input; geoembed feeds "
            "float tiles (float32 fields with NaN nodata). Export the model with a float "
            "input (quantize inside the graph if needed)."
        )
    field = _select_bands(field, spec, bands)
    n_bands = field.sizes["band"]

    fh, fw = spec.fixed_size
    if (fh is None) != (fw is None) or (fh is not None and fh != fw):
        raise ModelError(
            f"the model {spec.path.name} has input H x W = {fh} x {fw}; geoembed runs "
            "square tiles: export it with square or dynamic height and width."
        )
    if fh is not None:
        if tile is not None and tile != fh:
            raise ModelError(
                f"tile={tile} but the model {spec.path.name} takes fixed {fh} x {fh} tiles; "
                f"use tile={fh} (or export the model with dynamic height/width)."
            )
        tile = fh
    elif tile is None:
        tile = spec.tile or 256
    if tile < 1:
        raise ModelError(f"tile={tile}; use a positive tile size.")

    # graph outputs to fetch
    want_scores = "classes" in outputs or "probabilities" in outputs
    score_output = None
    if want_scores:
        feat_default = features_output or spec.features_output or "features"
        score_output = spec.output_name or next(
            (o for o in spec.outputs if o != feat_default), None
        )
        if score_output is None:
            raise ModelError(f"the model {spec.path.name} has no class-score output.")
    feat_output = None
    if "features" in outputs:
        feat_output = features_output or spec.features_output
        if feat_output is None and "features" in spec.outputs:
            feat_output = "features"
        if feat_output is None:
            if len(spec.outputs) == 1:
                feat_output = next(iter(spec.outputs))
            else:
                raise ModelError(
                    f"the model {spec.path.name} has outputs {sorted(spec.outputs)}; name the "
                    "one holding features with features_output= (or 'features_output' in its "
                    "sidecar)."
                )
        if feat_output not in spec.outputs:
            raise ModelError(
                f"the model {spec.path.name} has no output {feat_output!r}; its outputs are "
                f"{sorted(spec.outputs)}."
            )
    names = [n for n in (score_output, feat_output) if n is not None]

    prov = resolve_providers(providers)
    session = get_session(str(spec.path), spec.sha256, providers=prov, threads=threads)
    probe = _probe(session, spec, tile, n_bands, names)
    stride = None
    channels = []
    for name, arr in zip(names, probe):
        shp = np.shape(arr)
        if len(shp) == 2:
            shp = (*shp, 1, 1)
        if len(shp) != 4 or shp[2] != shp[3] or shp[2] < 1 or tile % shp[2]:
            raise ModelError(
                f"the model {spec.path.name} output {name!r} has shape {np.shape(arr)} for a "
                f"{tile} x {tile} tile; geoembed needs [N, K, T/s, T/s] (or [N, K] for a patch "
                "classifier) with an integer stride s."
            )
        s = tile // shp[2]
        if stride is not None and s != stride:
            raise ModelError(
                f"the model {spec.path.name} outputs {names} have different strides; request "
                "them in separate predict() calls."
            )
        stride = s
        channels.append(shp[1])
    assert stride is not None
    if spec.output_stride is not None and spec.output_stride != stride:
        raise ModelError(
            f"the model config of {spec.path.name} declares output_stride "
            f"{spec.output_stride}, but a {tile} x {tile} tile gives {tile // stride} x "
            f"{tile // stride} outputs (stride {stride}); fix 'output_stride'."
        )
    n_classes = channels[0] if score_output else 0
    n_features = channels[-1] if feat_output else 0
    if spec.classes is not None and score_output and len(spec.classes) != n_classes:
        raise ModelError(
            f"the model config of {spec.path.name} names {len(spec.classes)} classes but the "
            f"output {score_output!r} has {n_classes} channels."
        )

    if overlap is None:
        if stride == tile:
            overlap = 0
        elif spec.overlap is not None:
            overlap = spec.overlap
        elif spec.receptive_radius is not None:
            overlap = _round_up(spec.receptive_radius, stride)
        else:
            overlap = _round_up(32, stride)
    if overlap < 0 or overlap % stride:
        raise ModelError(
            f"overlap={overlap} must be a non-negative multiple of the model's output stride "
            f"{stride}."
        )
    if tile - 2 * overlap < stride:
        raise ModelError(
            f"tile={tile} leaves no interior with overlap={overlap} (needs tile > 2 x overlap"
            f"{' + stride' if stride > 1 else ''}); use a smaller overlap or a larger tile."
        )
    h = overlap
    if step is not None and step != tile - 2 * h:
        if blend == "none":
            raise ModelError(
                f"step={step} applies to blended runs; with blend='none' tiles step by "
                f"tile - 2 x overlap = {tile - 2 * h}. Pass blend='linear' or 'cosine'."
            )
        if step % stride or not (tile - 3 * h < step <= tile):
            raise ModelError(
                f"step={step} must be a multiple of the stride {stride} in "
                f"({tile - 3 * h}, {tile}] for tile={tile}, overlap={h}."
            )
    h = overlap
    for dim in ("y", "x"):
        if field.sizes[dim] < max(h, 1):
            raise ChunkingError(
                f"the field is {field.sizes[dim]} pixels along {dim}, less than overlap={h}; "
                "use a smaller overlap."
            )

    # dynamic models: no point in tiles much larger than the field plus its halo
    if fh is None and step is None:
        tile = min(tile, _tile_cap(field, h, stride))

    radius = spec.receptive_radius
    # blended runs accept inexact (averaged) tile edges: no seam check
    check_overlap = check_overlap and blend == "none"
    if radius is None and check_overlap and stride < tile:
        radius = _estimate_radius(session, spec, tile, n_bands, names[0], stride)
        log.info("estimated receptive radius of %s: >= %d px", spec.path.name, radius)
    if check_overlap and radius is not None and radius > h and stride < tile:
        declared = "declares" if spec.receptive_radius is not None else "appears to have"
        advice = _seam_advice(
            session,
            spec,
            field,
            tile=tile,
            overlap=h,
            stride=stride,
            radius=radius,
            n_bands=n_bands,
            names=names,
        )
        warnings.warn(
            f"the model {spec.path.name} {declared} a receptive radius of {radius} px "
            f"{'(at least) ' if spec.receptive_radius is None else ''}but overlap={h}: output "
            "near tile edges differs from a run of the model on the whole image (tile "
            f"seams; block edges never add seams). {advice}",
            SeamWarning,
            stacklevel=3,
        )

    plan = InferencePlan(
        path=spec.url or str(spec.path),
        sha256=spec.sha256,
        input_name=spec.input_name,
        input_dtype=str(spec.input_dtype),
        providers=prov,
        threads=threads,
        score_output=score_output,
        features_output=feat_output,
        softmax=spec.output_kind == "logits",
        n_classes=n_classes,
        n_features=n_features,
        mean=spec.mean,
        std=spec.std,
        nodata_fill=spec.nodata_fill,
        tile=tile,
        overlap=h,
        stride=stride,
        batch_size=batch_size,
        fixed_batch=spec.fixed_batch,
        blend=blend,
        padding=padding,
        receptive_radius=radius,
        step=(step or tile - 2 * h) if blend != "none" else None,
    )
    return plan, spec, field


def _tile_cap(field: xr.DataArray, halo: int, stride: int) -> int:
    """Largest useful tile of a dynamic model: the field plus its halo (multiple of 32)."""
    m = stride * 32 // math.gcd(stride, 32)
    return max(_round_up(max(field.shape[1:]) + 2 * halo, m), _round_up(2 * halo + stride, m))


def _seam_advice(
    session: Any,
    spec: ModelSpec,
    field: xr.DataArray,
    *,
    tile: int,
    overlap: int,
    stride: int,
    radius: int,
    n_bands: int,
    names: list[str],
) -> str:
    """Return settings that the model accepts and that avoid tile seams, as a sentence.

    Dynamic models: an ``overlap``/``tile`` pair covering the radius, checked by running
    the model once on such a tile. Fixed-size models (or when no such tile runs): cosine
    blending with a concrete ``step`` that :func:`plan_inference` accepts.
    """
    r = _round_up(radius, stride)
    if spec.fixed_size[0] is None:
        m = stride * 32 // math.gcd(stride, 32)
        first = _round_up(max(tile, 4 * r, 2 * r + stride), m)
        for t in range(first, first + 4 * m, m):
            t = min(t, _tile_cap(field, r, stride))
            try:
                _probe(session, spec, t, n_bands, names)
            except ModelError:
                continue
            return (
                f"Use overlap={r}, tile={t} (CLI: --overlap {r} --tile {t}), or "
                f"blend='cosine' (--blend cosine)."
            )
    # a blend needs an overlap to ramp across: at least min(radius, tile / 4)
    h = max(overlap, min(r, tile // 4 // stride * stride))
    if h == 0:
        return "No halo fits this model's tile: expect seams at tile edges."
    s = tile - 2 * h
    extra = f"overlap={h}, " if h != overlap else ""
    cli = f"--overlap {h} " if h != overlap else ""
    return (
        f"The model takes {tile} x {tile} tiles only: blend them with {extra}blend='cosine', "
        f"step={s} (CLI: {cli}--blend cosine --step {s})."
    )


def _grid_coords(field: xr.DataArray, stride: int, ny: int, nx: int) -> tuple[Any, Any, Affine]:
    transform = field.rio.transform(recalc=True)
    out = transform @ Affine.scale(stride)
    xs = out.c + out.a * (np.arange(nx) + 0.5)
    ys = out.f + out.e * (np.arange(ny) + 0.5)
    return ys, xs, out


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


def _axis_tilings(plan: InferencePlan, ny: int, nx: int) -> tuple[AxisTiling, AxisTiling]:
    kw = dict(
        tile=plan.tile, halo=plan.overlap, stride=plan.stride, blend=plan.blend, step=plan.step
    )
    return AxisTiling(size=ny, **kw), AxisTiling(size=nx, **kw)  # type: ignore[arg-type]


def _edges(plan: InferencePlan, size: int, chunk: int) -> list[int]:
    """Output block edges along an axis: near ``chunk``, aligned to the tile grid."""
    t, h, s = plan.tile, plan.overlap, plan.stride
    if plan.blend == "none":
        return block_edges(size, chunk, t - 2 * h)
    step = plan.step or t - 2 * h
    # an edge through a tile's centre is straddled by that tile only
    offset = ((t // 2 - h) % step) // s * s
    return block_edges(size, chunk, step, offset)


def _stacked(field: xr.DataArray, plan: InferencePlan) -> dsa.Array:
    """Build the lazy ``(n_out, y/s, x/s)`` model output: one task per output block.

    Output blocks follow the global tile grid (:func:`_edges`), not the field's chunks;
    each reads exactly the field pixels its tiles need (its window) as slices of the
    input blocks, so memory stays bounded by the chunk size and no block ever sees a
    different tiling than a whole-image run.
    """
    s = plan.stride
    data = field.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=(-1, 512, 512))
    data = data.astype(np.float32, copy=False)
    ny, nx = data.shape[1:]
    py, px = _round_up(ny, s) - ny, _round_up(nx, s) - nx
    if py or px:
        data = dsa.pad(data, ((0, 0), (0, py), (0, px)), mode=PAD_MODES[plan.padding])
    data = data.rechunk({0: -1})
    ny, nx = ny + py, nx + px
    ty, tx = _axis_tilings(plan, ny, nx)
    ey = _edges(plan, ny, max(data.chunks[1]))
    ex = _edges(plan, nx, max(data.chunks[2]))
    cy = np.cumsum((0, *data.chunks[1]))
    cx = np.cumsum((0, *data.chunks[2]))

    def pieces(lo: int, hi: int, bounds: np.ndarray) -> list[tuple[int, slice]]:
        return [
            (k, slice(max(lo, bounds[k]) - bounds[k], min(hi, bounds[k + 1]) - bounds[k]))
            for k in range(len(bounds) - 1)
            if bounds[k] < hi and bounds[k + 1] > lo
        ]

    # every name derives from the field's graph, the plan (model digest included) and
    # the block layout: two models or two fields never share a key
    token = tokenize(data.name, plan, ty, tx, ey, ex)
    name, part = f"geoembed-infer-{token}", f"geoembed-infer-window-{token}"
    dsk: dict[Any, Any] = {}
    for i in range(len(ey) - 1):
        ry = (ey[i], ey[i + 1])
        wy = ty.window(*ry, plan.padding)
        for j in range(len(ex) - 1):
            rx = (ex[j], ex[j + 1])
            wx = tx.window(*rx, plan.padding)
            rows = []
            for a, sy in pieces(*wy, cy):
                row = []
                for b, sx in pieces(*wx, cx):
                    key = (part, i, j, a, b)
                    dsk[key] = (operator.getitem, (data.name, 0, a, b), (slice(None), sy, sx))
                    row.append(key)
                rows.append(row)
            dsk[(name, 0, i, j)] = (_block, rows, plan, ty, tx, (wy[0], wx[0]), (ry, rx))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[data])
    chunks = ((plan.n_out,), tuple(np.diff(ey) // s), tuple(np.diff(ex) // s))
    return dsa.Array(graph, name, chunks, meta=np.empty((0, 0, 0), dtype=np.float32))


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
    if "classes" in outputs:
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
        cls_attrs = dict(attrs, class_names=names)
        if spec.colors:
            cls_attrs["colors"] = list(spec.colors)
        result["classes"] = _wrap(
            field, cc[0].astype(dtype), name="classes", stride=s, nodata=nodata, attrs=cls_attrs
        )
        result["confidence"] = _wrap(
            field, cc[1], name="confidence", stride=s, nodata=np.nan, attrs=attrs
        )
    if "probabilities" in outputs:
        probs, p_nodata, p_attrs = stacked[:k], np.nan, attrs
        if probabilities_dtype == "uint8":
            probs = dsa.map_blocks(
                _probs_to_uint8,
                probs,
                dtype=np.uint8,
                name="geoembed-probabilities-uint8-" + tokenize(probs.name),
            )
            p_nodata, p_attrs = 255, dict(attrs, probability_scale=1 / 254)
        result["probabilities"] = _wrap(
            field,
            probs,
            name="probabilities",
            stride=s,
            leading=("class", names),
            nodata=p_nodata,
            attrs=p_attrs,
        )
    if "features" in outputs:
        result["features"] = _wrap(
            field,
            stacked[k:],
            name="features",
            stride=s,
            leading=("band", feature_band_names(plan.n_features)),
            attrs=attrs,
        )
    return xr.Dataset(result)
