"""The training job behind ``geoembed train-cnn``: a CNN exported to ONNX + sidecar JSON.

The ``.onnx`` file and its ``.json`` sidecar are checked before anything is read or
trained, written under temporary names of one output set and committed together: with
``overwrite`` they replace only a model that geoembed exported (and the sidecar that
describes it), never another file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import xarray as xr

from geoembed.jobs._outputs import plan_outputs
from geoembed.schema import check_embedding
from geoembed.train.cnn import TrainResult, fit_cnn

__all__ = ["open_field", "train_cnn"]


def open_field(source: Any) -> xr.DataArray:
    """Open (or check) the field or imagery a CNN is trained on."""
    if isinstance(source, xr.DataArray):
        check_embedding(source)
        return source
    from geoembed.io import open_embeddings

    da = open_embeddings(source)
    check_embedding(da, source=str(source))
    return da


def train_cnn(
    field: xr.DataArray | str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    overwrite: bool = False,
    **params: Any,
) -> TrainResult:
    """Train a compact fully convolutional network and export it to ONNX + sidecar JSON.

    Parameters
    ----------
    field : xarray.DataArray or path
        Embedding field or imagery (canonical ``(band, y, x)`` float32 with a CRS), or a
        source :func:`geoembed.io.open_embeddings` reads. Only sampled windows are read.
    output : path or None
        Destination ``.onnx``; the sidecar goes to the same name with ``.json``. ``None``
        trains without writing anything.
    overwrite : bool, default False
        Replace existing outputs that geoembed wrote (an ONNX model it exported and its
        sidecar; never other files).
    **params
        The training settings of :func:`geoembed.train.cnn.fit_cnn` (labels,
        label_column, labels_raster, epochs, patch, seed, progress, ...).

    Returns
    -------
    TrainResult

    Raises
    ------
    OutputError
        ``output`` does not end in ``.onnx``, its folder is missing, or it (or its
        sidecar) exists without ``overwrite`` or was not written by geoembed.
    LabelError, MissingDependencyError
        See :func:`~geoembed.train.cnn.fit_cnn`.
    """
    from geoembed.errors import require

    require("torch", extra="train", feature="geoembed train-cnn")
    require("onnx", extra="train", feature="geoembed train-cnn (ONNX export)")
    from geoembed.train.export import onnx_export, onnx_paths, write_export

    da = open_field(field)
    if output is None:
        return fit_cnn(da, **params)
    onnx_path, json_path = onnx_paths(output)
    inputs = [field, params.get("labels"), params.get("labels_raster")]
    outputs = plan_outputs(
        {"ONNX model": onnx_path, "model sidecar": json_path},
        overwrite=overwrite,
        inputs=inputs,
    )
    result = fit_cnn(da, **params)
    data, spec = onnx_export(result.model, result.spec)
    with outputs:
        write_export(data, spec, outputs.stage("ONNX model"), outputs.stage("model sidecar"))
        outputs.commit()
    return dataclasses.replace(result, model_path=onnx_path, config_path=json_path, spec=spec)
