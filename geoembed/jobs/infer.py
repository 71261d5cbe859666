"""The inference job behind ``geoembed infer``: an ONNX model over a field, outputs together.

The class map, confidences, probabilities and feature map all come from one model run per
block and are committed together through the job's output set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from geoembed.errors import OutputError
from geoembed.jobs._outputs import compute_all, plan_outputs

__all__ = ["InferOutputs", "InferParams", "run_infer"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class InferParams:
    """The model and its tiling (see :func:`geoembed.infer.predict`).

    Attributes
    ----------
    model : path or URL
        ONNX model file.
    model_config : path, optional
        Sidecar JSON (default: the model's name with ``.json``, if present).
    tile, overlap, step, blend, batch_size, bands, providers
        Tiling and runtime settings of :func:`geoembed.infer.predict`.
    chunks : int, optional
        Spatial chunk (block) size the field is opened with.
    uint8_probabilities : bool
        Store probabilities as uint8 0..254 (scale 1/254, nodata 255).
    """

    model: PathLike
    model_config: PathLike | None = None
    tile: int | None = None
    overlap: int | None = None
    step: int | None = None
    blend: str = "none"
    batch_size: int = 8
    bands: Sequence[str] | None = None
    providers: str | Sequence[str] | None = None
    chunks: int | None = None
    uint8_probabilities: bool = False


@dataclass(frozen=True)
class InferOutputs:
    """Where the inference job writes (at least one of them; None: not written)."""

    classes: PathLike | None = None
    confidence: PathLike | None = None
    probabilities: PathLike | None = None
    features: PathLike | None = None


_WHAT = {
    "classes": "class map",
    "confidence": "confidence raster",
    "probabilities": "probability raster",
    "features": "feature map",
}


def _open_field(sources: list[Any], chunks: int | None) -> Any:
    from geoembed.io import open_embeddings

    return open_embeddings(sources[0] if len(sources) == 1 else sources, chunks=chunks)


def run_infer(
    source: Any,
    out: InferOutputs,
    params: InferParams,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    check_field: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run an ONNX model over an embedding field and write its outputs.

    Parameters
    ----------
    source : path, URL, sequence of them, or xarray.DataArray
        What :func:`geoembed.io.open_embeddings` opens (several GeoTIFFs: a list), or
        an embedding field already opened.
    out : InferOutputs
        Output paths (at least one).
    params : InferParams
        Model and tiling.
    overwrite : bool
        Replace existing outputs that geoembed wrote.
    resume : bool
        Finish a killed run of the same job: the COG chunks (and Zarr chunks) it had
        written are reused (:mod:`geoembed.export.resume`).
    progress : bool
        Progress bar on stderr.
    check_field : callable, optional
        Called with the opened field before the model runs (a caller's own checks).

    Returns
    -------
    dict
        JSON-ready summary: source, model and its sha256, tiling, outputs, shape, seconds.

    Raises
    ------
    OutputError
        No output asked for, or an output path that may not be written.
    """
    from geoembed.export import write_cog, write_zarr
    from geoembed.infer import predict

    if not any(getattr(out, key) for key in _WHAT):
        raise OutputError(
            "give at least one output: a class map, confidences, probabilities or features."
        )
    import xarray as xr

    if isinstance(source, xr.DataArray):
        sources: list[Any] = []
    elif isinstance(source, str | os.PathLike):
        sources = [source]
    else:
        sources = list(source)
    # every output checked before anything runs; built aside, made visible together
    outputs = plan_outputs(
        {what: getattr(out, key) for key, what in _WHAT.items()},
        overwrite=overwrite,
        resume=resume,
        inputs=[*sources, params.model, params.model_config],
        directories={"feature map"},
    )
    field = source if isinstance(source, xr.DataArray) else _open_field(sources, params.chunks)
    if check_field is not None:
        check_field(field)
    wanted = []
    if out.classes or out.confidence:
        wanted.append("classes")
    if out.probabilities:
        wanted.append("probabilities")
    if out.features:
        wanted.append("features")
    start = time.perf_counter()
    res = predict(
        field,
        params.model,
        model_config=params.model_config,
        tile=params.tile,
        overlap=params.overlap,
        batch_size=params.batch_size,
        output=wanted,
        bands=list(params.bands) if params.bands else None,
        blend=params.blend,
        step=params.step,
        providers=params.providers,
        probabilities_dtype="uint8" if params.uint8_probabilities else "float32",
    )
    with outputs:
        writes = []
        if "class map" in outputs:
            writes.append(
                write_cog(res["classes"], outputs.stage("class map"), compute=False, resume=resume)
            )
        if "confidence raster" in outputs:
            writes.append(
                write_cog(
                    res["confidence"],
                    outputs.stage("confidence raster"),
                    compute=False,
                    resume=resume,
                )
            )
        if "probability raster" in outputs:
            scale = 1 / 254 if params.uint8_probabilities else None
            writes.append(
                write_cog(
                    res["probabilities"],
                    outputs.stage("probability raster"),
                    compute=False,
                    resume=resume,
                    scale=scale,
                )
            )
        if "feature map" in outputs:
            writes.append(
                write_zarr(
                    res["features"].rename("embedding"),  # a canonical embedding field
                    outputs.stage("feature map"),
                    compute=False,
                    resume=resume,
                )
            )
        compute_all(*writes, progress=progress, label="infer")
        outputs.commit()
    elapsed = time.perf_counter() - start
    first = next(iter(res.data_vars.values()))
    shown = sources[0] if len(sources) == 1 else (sources or "<DataArray>")
    return {
        "source": str(shown),
        "model": params.model,
        "model_sha256": first.attrs.get("model_sha256"),
        "tiling": {k: first.attrs.get(k) for k in ("tile", "overlap", "output_stride", "blend")},
        "outputs": {key: getattr(out, key) for key in _WHAT if getattr(out, key)},
        "shape": {"y": int(res.sizes["y"]), "x": int(res.sizes["x"])},
        "seconds": round(elapsed, 3),
    }
