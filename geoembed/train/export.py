"""Export a trained :class:`~geoembed.train.model.DilatedFCN` to ONNX + sidecar JSON.

The ONNX graph is written directly with ``onnx.helper`` (no TorchScript/dynamo exporter):
batch normalisation is folded into the convolutions, so the graph is ``Conv -> Relu`` x L
followed by a 1 x 1 ``Conv``. It has one input and two outputs::

    input     float32 [N, C, H, W]   normalised bands ((x - mean) / std, NaN -> 0)
    logits    float32 [N, K, H, W]   class scores (softmax gives probabilities)
    features  float32 [N, F, H, W]   last hidden layer (a CNN feature map)

``N``, ``H`` and ``W`` are dynamic. Normalisation is not in the graph; it is in the sidecar
JSON read by :mod:`geoembed.infer` (format in :mod:`geoembed.infer.spec`), e.g.::

    {
      "geoembed_model": 1,
      "input_name": "input",
      "bands": ["B01", "B02", ...],          # field bands in channel order
      "mean": [...], "std": [...],           # per band, (x - mean) / std
      "nodata_fill": 0.0,
      "tile": 256, "overlap": 10,            # overlap = receptive radius
      "receptive_radius": 10,
      "output_name": "logits", "output_kind": "logits", "output_stride": 1,
      "features_output": "features",
      "classes": ["forest", ...], "colors": ["#2ca02c", ...],
      "sha256": "<digest of the .onnx file>",
      "extra": {"class_values": [...], "training": {...}}
    }

Both files are written under temporary names of one output set
(:class:`geoembed.export.outputs.OutputSet`) and renamed into place together, only after
the ONNX model has been checked (``onnx.checker``) and, when onnxruntime is installed, run
against the PyTorch model on a random tile.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geoembed.errors import ModelError, OutputError, require

__all__ = [
    "FEATURES_NAME",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "export_onnx",
    "onnx_export",
    "onnx_model",
    "onnx_paths",
    "verify",
    "write_export",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
FEATURES_NAME = "features"
_OPSET = 17
_IR_VERSION = 8  # readable by onnxruntime >= 1.14


def _folded(conv: Any, bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of ``bn(conv(x))`` as a single convolution (eval-mode statistics)."""
    w = conv.weight.detach().double().numpy()
    b = np.zeros(w.shape[0]) if conv.bias is None else conv.bias.detach().double().numpy()
    scale = bn.weight.detach().double().numpy() / np.sqrt(
        bn.running_var.detach().double().numpy() + bn.eps
    )
    shift = bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * scale
    return (w * scale[:, None, None, None]).astype(np.float32), (b * scale + shift).astype(
        np.float32
    )


def onnx_model(model: Any, *, metadata: Mapping[str, str] | None = None) -> Any:
    """Build the ONNX graph of a trained ``DilatedFCN`` (in eval mode).

    Parameters
    ----------
    model : DilatedFCN
        The trained network.
    metadata : mapping of str to str, optional
        Stored as the model's ``metadata_props``.

    Returns
    -------
    onnx.ModelProto
    """
    onnx = require("onnx", extra="train", feature="Exporting a CNN to ONNX")
    from onnx import TensorProto, helper, numpy_helper

    layers = list(model.body)
    nodes, inits = [], []
    current = INPUT_NAME
    for i in range(0, len(layers), 3):
        conv, bn = layers[i], layers[i + 1]
        w, b = _folded(conv, bn)
        d = int(conv.dilation[0])
        inits += [
            numpy_helper.from_array(w, f"w{i // 3}"),
            numpy_helper.from_array(b, f"b{i // 3}"),
        ]
        out = f"conv{i // 3}"
        nodes.append(
            helper.make_node(
                "Conv", [current, f"w{i // 3}", f"b{i // 3}"], [out], kernel_shape=[3, 3],
                dilations=[d, d], pads=[d, d, d, d], strides=[1, 1],
            )
        )  # fmt: skip
        current = FEATURES_NAME if i + 3 == len(layers) else f"relu{i // 3}"
        nodes.append(helper.make_node("Relu", [out], [current]))
    hw = model.head.weight.detach().numpy().astype(np.float32)
    hb = model.head.bias.detach().numpy().astype(np.float32)
    inits += [numpy_helper.from_array(hw, "w_head"), numpy_helper.from_array(hb, "b_head")]
    nodes.append(
        helper.make_node("Conv", [current, "w_head", "b_head"], [OUTPUT_NAME], kernel_shape=[1, 1])
    )
    graph = helper.make_graph(
        nodes,
        "geoembed_dilated_fcn",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["N", model.in_bands, "H", "W"]
            )
        ],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["N", model.n_classes, "H", "W"]
            ),
            helper.make_tensor_value_info(
                FEATURES_NAME, TensorProto.FLOAT, ["N", model.width, "H", "W"]
            ),
        ],
        initializer=inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="geoembed"
    )
    proto.ir_version = _IR_VERSION
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def verify(
    model: Any, onnx_bytes: bytes, *, size: tuple[int, int] = (37, 45), seed: int = 0
) -> float | None:
    """Run the ONNX model and the PyTorch model on one random tile; return the max difference.

    Returns ``None`` when onnxruntime is not installed.

    Raises
    ------
    ModelError
        The two disagree by more than ``1e-4`` (relative to the largest logit).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, model.in_bands, *size)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max())
    scale = max(1.0, float(np.abs(want).max()))
    if not diff <= 1e-4 * scale:
        raise ModelError(
            f"the exported ONNX model differs from the PyTorch model by {diff:g} on a random "
            "tile; the export is wrong (please report this as a bug)."
        )
    return diff


def _check_sidecar(path: Path) -> None:
    """Read the sidecar back with the reader ``geoembed infer`` uses."""
    try:
        from geoembed.infer.spec import read_sidecar
    except ImportError:  # pragma: no cover - infer ships with the package
        return
    read_sidecar(path)


def onnx_export(model: Any, sidecar: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Build and verify the ONNX bytes of ``model`` and its sidecar contents (writes nothing).

    Parameters
    ----------
    model : DilatedFCN
        The trained network.
    sidecar : mapping
        Sidecar keys (see the module docstring); ``geoembed_model``, ``input_name``,
        ``output_name``, ``features_output`` and ``sha256`` are filled in here.

    Returns
    -------
    (bytes, dict)
        The serialised ONNX model and the sidecar contents (including
        ``extra.onnx_max_abs_diff``, the verification result).
    """
    model.eval()
    proto = onnx_model(model, metadata={"geoembed_model": "1"})
    data = proto.SerializeToString()
    diff = verify(model, data)
    spec: dict[str, Any] = {
        "geoembed_model": 1,
        "input_name": INPUT_NAME,
        **dict(sidecar),
        "output_name": OUTPUT_NAME,
        "output_kind": "logits",
        "features_output": FEATURES_NAME,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    spec["extra"] = {**dict(spec.get("extra") or {}), "onnx_max_abs_diff": diff}
    return data, spec


def write_export(
    data: bytes,
    spec: Mapping[str, Any],
    onnx_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str],
) -> None:
    """Write the ONNX bytes and the sidecar (read back with ``geoembed infer``'s reader).

    The paths are the staged names of an output set; the caller commits them.
    """
    Path(onnx_path).write_bytes(data)
    Path(json_path).write_text(json.dumps(spec, indent=2))
    _check_sidecar(Path(json_path))


def onnx_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return the ``.onnx`` path and its sidecar's ``.json`` path for ``path``.

    Raises
    ------
    OutputError
        ``path`` does not end in ``.onnx``.
    """
    onnx_path = Path(path).expanduser()
    if onnx_path.suffix.lower() != ".onnx":
        raise OutputError(f"{onnx_path}: the model file must end in .onnx (e.g. model.onnx).")
    return onnx_path, onnx_path.with_suffix(".json")


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    sidecar: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``model`` as ONNX to ``path`` and its sidecar JSON next to it, together.

    Parameters
    ----------
    model : DilatedFCN
        The trained network.
    path : path-like
        Destination ``.onnx`` file; the sidecar goes to the same name with ``.json``.
    sidecar : mapping
        Sidecar keys (see :func:`onnx_export`).
    overwrite : bool, default False
        Replace existing files that geoembed wrote (an ONNX model it exported and the
        sidecar describing it; never other files).

    Returns
    -------
    (pathlib.Path, pathlib.Path, dict)
        The ONNX path, the sidecar path and the sidecar contents.

    Raises
    ------
    OutputError
        The files exist (without ``overwrite``, or not written by geoembed) or the
        folder is missing.
    """
    from geoembed.export.outputs import OutputSet

    onnx_path, json_path = onnx_paths(path)
    outputs = OutputSet(overwrite=overwrite)
    outputs.add("ONNX model", onnx_path)
    outputs.add("model sidecar", json_path)
    data, spec = onnx_export(model, sidecar)
    with outputs:
        write_export(data, spec, outputs.stage("ONNX model"), outputs.stage("model sidecar"))
        outputs.commit()
    return onnx_path, json_path, spec
