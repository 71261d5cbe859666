"""Client-side checks of a model against a field, and the tiling they fix.

:func:`plan_inference` validates the model (band names/count, input rank, dtype, fixed vs
dynamic tile size, output stride; one probe run of a blank tile, see
:mod:`geoembed.infer.probe`) and returns an :class:`InferencePlan`: everything a worker
needs to run one block (:mod:`geoembed.infer.blocks`). No Dask task runs here.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from geoembed.errors import (
    BandMismatchError,
    ChunkingError,
    DimensionError,
    DTypeError,
    ModelError,
    require,
)
from geoembed.infer.probe import _estimate_radius, _probe, _seam_advice, _tile_cap
from geoembed.infer.session import get_session, resolve_providers
from geoembed.infer.spec import ModelSpec, load_model_spec
from geoembed.infer.tiling import PAD_MODES, _round_up
from geoembed.schema import check_embedding

__all__ = ["OUTPUTS", "InferencePlan", "SeamWarning", "plan_inference"]

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
