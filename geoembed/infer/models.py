"""Small ONNX reference models built with ``onnx.helper`` (tests, demos, benchmarks).

* :func:`conv_stack` -- ``depth`` 3 x 3 convolutions (zero padding 1) with ReLU and a
  1 x 1 class head, seeded weights; receptive radius ``depth`` pixels, translation-exact,
  dynamic H/W. Optionally a second output with the last hidden activations (features).
* :func:`patch_classifier` -- a fixed ``size x size`` patch -> ``[N, K]`` classifier
  (mean pooling + linear), like a BigEarthNet 120 x 120 -> 43 model.
* :func:`strided_fcn` -- a stride-``s`` convolution (``s x s`` kernel) + 1 x 1 head:
  output ``H/s x W/s``.

The models are deterministic functions of their arguments; nothing here is trained.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from geoembed.errors import require

__all__ = ["conv_stack", "patch_classifier", "strided_fcn"]


def _save(graph: Any, path: str | os.PathLike[str], opset: int = 17) -> str:
    onnx = require("onnx", extra="cnn", feature="building ONNX models")
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def conv_stack(
    path: str | os.PathLike[str],
    *,
    bands: int = 8,
    width: int = 16,
    depth: int = 3,
    n_classes: int = 4,
    seed: int = 0,
    features: bool = False,
    fixed_size: int | None = None,
    input_dtype: str = "float32",
    input_rank: int = 4,
) -> str:
    """Write a stack of 3 x 3 conv + ReLU layers with a 1 x 1 head (receptive radius ``depth``).

    Parameters
    ----------
    path : path-like
        Destination ``.onnx``.
    bands, width, depth, n_classes : int
        Input channels, hidden channels, number of 3 x 3 layers, output classes.
    seed : int
        Weight seed.
    features : bool
        Add a second output ``"features"`` with the last hidden layer (``width`` channels).
    fixed_size : int, optional
        Fix the input H and W (default dynamic).
    input_dtype : str
        Declared input element type (a non-float type makes an invalid model for
        geoembed, used to test validation).
    input_rank : int
        4 for NCHW; other values declare a wrong rank (validation tests).

    Returns
    -------
    str
        The path written.
    """
    onnx = require("onnx", extra="cnn", feature="building ONNX models")
    helper, nh, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev, c = "input", bands
    for i in range(depth):
        w = (rng.normal(size=(width, c, 3, 3)) / np.sqrt(c * 9)).astype(np.float32)
        b = (0.1 * rng.normal(size=width)).astype(np.float32)
        inits += [nh.from_array(w, f"w{i}"), nh.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1] * 4))
        out = "features" if (features and i == depth - 1) else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev, c = out, width
    wh = (rng.normal(size=(n_classes, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    bh = (0.1 * rng.normal(size=n_classes)).astype(np.float32)
    inits += [nh.from_array(wh, "wh"), nh.from_array(bh, "bh")]
    nodes.append(helper.make_node("Conv", [prev, "wh", "bh"], ["logits"]))
    hw: list[Any] = [fixed_size or "H", fixed_size or "W"]
    in_shape: list[Any] = ["N", bands, *hw][: max(input_rank, 1)]
    if input_rank > 4:
        in_shape = [1] * (input_rank - 4) + ["N", bands, *hw]
    elem = {"float32": tp.FLOAT, "float16": tp.FLOAT16, "uint8": tp.UINT8}[input_dtype]
    outs = [helper.make_tensor_value_info("logits", tp.FLOAT, ["N", n_classes, *hw])]
    if features:
        outs.append(helper.make_tensor_value_info("features", tp.FLOAT, ["N", width, *hw]))
    if input_dtype != "float32" or input_rank != 4:
        # declared-only variants: a Cast/Reshape-free graph would not type-check, so the
        # model keeps a float32 compute path behind a Cast and is used for validation only
        cast_to = tp.FLOAT
        nodes.insert(0, helper.make_node("Cast", ["raw_input"], ["input"], to=cast_to))
        graph_in = helper.make_tensor_value_info("raw_input", elem, in_shape)
    else:
        graph_in = helper.make_tensor_value_info("input", tp.FLOAT, in_shape)
    graph = helper.make_graph(nodes, "conv_stack", [graph_in], outs, inits)
    return _save(graph, path)


def patch_classifier(
    path: str | os.PathLike[str],
    *,
    bands: int = 8,
    size: int = 120,
    n_classes: int = 43,
    seed: int = 0,
) -> str:
    """Write a fixed ``size x size`` patch classifier ``[N, C, size, size] -> [N, K]``."""
    onnx = require("onnx", extra="cnn", feature="building ONNX models")
    helper, nh, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(bands, n_classes)).astype(np.float32)
    b = (0.1 * rng.normal(size=n_classes)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "patch_classifier",
        [helper.make_tensor_value_info("input", tp.FLOAT, ["N", bands, size, size])],
        [helper.make_tensor_value_info("logits", tp.FLOAT, ["N", n_classes])],
        [nh.from_array(w, "w"), nh.from_array(b, "b")],
    )
    return _save(graph, path)


def strided_fcn(
    path: str | os.PathLike[str],
    *,
    bands: int = 8,
    stride: int = 4,
    n_classes: int = 3,
    seed: int = 0,
) -> str:
    """Write a stride-``s`` FCN: ``s x s`` conv with stride ``s`` + 1 x 1 head (H/s x W/s out)."""
    onnx = require("onnx", extra="cnn", feature="building ONNX models")
    helper, nh, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(16, bands, stride, stride)) / stride).astype(np.float32)
    wh = rng.normal(size=(n_classes, 16, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], strides=[stride, stride]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "wh"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "strided_fcn",
        [helper.make_tensor_value_info("input", tp.FLOAT, ["N", bands, "H", "W"])],
        [helper.make_tensor_value_info("logits", tp.FLOAT, ["N", n_classes, "h", "w"])],
        [nh.from_array(w, "w"), nh.from_array(wh, "wh")],
    )
    return _save(graph, path)
