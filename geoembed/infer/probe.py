"""Runs of the model on the client: probe tiles, receptive radius, seam advice.

Used by :func:`geoembed.infer.plan.plan_inference` before any Dask task runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from geoembed.errors import ModelError
from geoembed.infer.spec import ModelSpec
from geoembed.infer.tiling import _round_up

__all__: list[str] = []


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
