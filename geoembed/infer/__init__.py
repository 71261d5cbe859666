"""CNN inference with ONNX Runtime over embedding fields or imagery, on Dask.

``predict(field, "model.onnx", tile=256, overlap=32, output="classes")`` validates the
model against the field on the client, then runs it block by block over one global tile
grid, so that block edges never make seams and any chunking gives the same bytes (see
:mod:`geoembed.infer.tiling`). It always returns an :class:`xarray.Dataset` with the
variables ``classes`` and ``confidence``, ``probabilities``, ``features`` as asked.
The sidecar JSON format read next to the model is documented in
:mod:`geoembed.infer.spec`. ``onnxruntime`` and ``onnx`` come with the ``cnn`` extra.
"""

from geoembed.infer.predict import OUTPUTS, InferencePlan, SeamWarning, plan_inference, predict
from geoembed.infer.spec import ModelSpec, load_model_spec, read_sidecar, write_sidecar

__all__ = [
    "OUTPUTS",
    "InferencePlan",
    "ModelSpec",
    "SeamWarning",
    "load_model_spec",
    "plan_inference",
    "predict",
    "read_sidecar",
    "write_sidecar",
]
