"""Model spec for CNN inference: an ONNX file plus an optional sidecar JSON.

The sidecar JSON (format ``geoembed_model: 1``)
------------------------------------------------
Written next to the model as ``<model stem>.json`` (picked up automatically when it
carries the ``"geoembed_model"`` key) or passed explicitly (``model_config=`` /
``--model-config``). Every key except ``geoembed_model`` is optional::

    {
      "geoembed_model": 1,                 # format version (int); required
      "input_name": "input",               # graph input to feed (default: the first input)
      "bands": ["A00", "A01", ...],        # field band names in the model's channel order;
                                           # the field is selected/reordered by name
      "mean": [0.0, ...],                  # per-band normalisation (x - mean) / std,
      "std": [1.0, ...],                   # one value per model input channel
      "nodata_fill": 0.0,                  # value put in place of NaN inputs AFTER
                                           # normalisation (default 0.0, i.e. the mean)
      "tile": 256,                         # default tile size (pixels, square)
      "overlap": 32,                       # default halo (pixels) on each side of a tile
      "receptive_radius": 8,               # how far (input pixels) an output pixel looks;
                                           # overlap < receptive_radius gives a SeamWarning
      "output_name": "logits",             # graph output with class scores (default: first)
      "output_kind": "logits",             # "logits" (softmax applied) or "probabilities"
      "output_stride": 1,                  # input pixels per output pixel (1 = same grid;
                                           # 120 for a 120 x 120 -> 1 x 1 patch classifier)
      "features_output": "features",       # graph output used for output="features"
      "classes": ["water", "trees", ...],  # class names, in output-channel order
      "colors": ["#419bdf", ...],          # "#rrggbb" per class, for COG colour maps
      "sha256": "ab12..."                  # pin: loading fails if the ONNX file differs
    }

``geoembed train-cnn`` writes this file; other tools may add keys under ``"extra"``
(ignored). Unknown top-level keys are rejected so that typos do not pass silently. The
ukis-csmask JSON layout (``data.dataset_statistics`` with ``img`` mean/std and
``band_names``, ``data.target_size``) is also understood, so its models run as shipped.

Tensor conventions: input ``[N, C, H, W]`` float32 (float16/float64 inputs are fed
cast), outputs ``[N, K, H/s, W/s]`` (or ``[N, K]`` for a patch classifier, read as
``[N, K, 1, 1]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoembed.errors import ModelError, UnsafeModelError, require

__all__ = [
    "SIDECAR_VERSION",
    "ModelSpec",
    "file_sha256",
    "load_model_spec",
    "read_sidecar",
    "write_sidecar",
]

log = logging.getLogger(__name__)

SIDECAR_VERSION = 1

_SIDECAR_KEYS = {
    "geoembed_model",
    "input_name",
    "bands",
    "mean",
    "std",
    "nodata_fill",
    "tile",
    "overlap",
    "receptive_radius",
    "output_name",
    "output_kind",
    "output_stride",
    "features_output",
    "classes",
    "colors",
    "sha256",
    "extra",
}

# ONNX TensorProto element types -> numpy
_ONNX_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("float32"),
    2: np.dtype("uint8"),
    3: np.dtype("int8"),
    4: np.dtype("uint16"),
    5: np.dtype("int16"),
    6: np.dtype("int32"),
    7: np.dtype("int64"),
    9: np.dtype("bool"),
    10: np.dtype("float16"),
    11: np.dtype("float64"),
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What geoembed knows about an ONNX model, read once on the client.

    Attributes
    ----------
    path : pathlib.Path
        Absolute path of the ONNX file (workers load it from there).
    sha256 : str
        Digest of the ONNX file; worker sessions are cached by it and re-checked.
    input_name : str
        Graph input fed with tiles.
    input_shape : tuple
        ``(N, C, H, W)``; ``None`` for dynamic dimensions.
    input_dtype : numpy.dtype
        Element type of the input.
    outputs : dict
        Graph output name -> static shape (``None`` for dynamic dimensions).
    bands, mean, std, nodata_fill, tile, overlap, receptive_radius, output_name,
    output_kind, output_stride, features_output, classes, colors
        From the sidecar (see the module docstring); ``None`` when not given.
    config_path : pathlib.Path or None
        The sidecar that was read.
    url : str or None
        The ``gs://`` / ``s3://`` / ``https://`` URL the model came from; workers read it
        from there (``path`` is then the client's downloaded copy).
    """

    path: Path
    sha256: str
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: np.dtype
    outputs: dict[str, tuple[int | None, ...]]
    bands: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    nodata_fill: float = 0.0
    tile: int | None = None
    overlap: int | None = None
    receptive_radius: int | None = None
    output_name: str | None = None
    output_kind: str = "logits"
    output_stride: int | None = None
    features_output: str | None = None
    classes: tuple[str, ...] | None = None
    colors: tuple[str, ...] | None = None
    config_path: Path | None = None
    url: str | None = None

    @property
    def n_bands(self) -> int | None:
        """Number of input channels (``None`` if the model leaves it dynamic)."""
        return self.input_shape[1]

    @property
    def fixed_size(self) -> tuple[int | None, int | None]:
        """Fixed input ``(H, W)``; ``None`` entries are dynamic."""
        return self.input_shape[2], self.input_shape[3]

    @property
    def fixed_batch(self) -> int | None:
        """Fixed batch size of the input, or ``None`` when dynamic."""
        return self.input_shape[0]

    def describe(self) -> dict[str, Any]:
        """Return a JSON-able summary (for ``--json`` and logs)."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "input": {"name": self.input_name, "shape": list(self.input_shape)},
            "outputs": {k: list(v) for k, v in self.outputs.items()},
            "bands": list(self.bands) if self.bands else None,
            "classes": list(self.classes) if self.classes else None,
            "output_stride": self.output_stride,
            "receptive_radius": self.receptive_radius,
            "config": str(self.config_path) if self.config_path else None,
        }


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def _from_csmask(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Translate the ukis-csmask sidecar layout into geoembed keys."""
    data = raw["data"]
    stats = data.get("dataset_statistics", {})
    out: dict[str, Any] = {"geoembed_model": SIDECAR_VERSION}
    if "img" in stats:
        out["mean"], out["std"] = stats["img"][0], stats["img"][1]
    if "band_names" in stats:
        out["bands"] = stats["band_names"]
    size = data.get("target_size")
    if size:
        out["tile"] = int(size[0])
    if int(data.get("classes", 0)) == 3:
        out["classes"] = ["clear", "cloud", "cloud_shadow"]
        out["colors"] = ["#3c8c3c", "#f0f0f0", "#3c3c50"]
    out["output_kind"] = "logits"
    return out


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a sidecar JSON file.

    Parameters
    ----------
    path : path-like
        The JSON file.

    Returns
    -------
    dict
        Keys as in the module docstring.

    Raises
    ------
    ModelError
        Unreadable JSON, an unknown key, or a value of the wrong kind.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read the model config {p}: {exc}. Pass a JSON sidecar as described in "
            "geoembed.infer.spec."
        ) from exc
    if not isinstance(raw, dict):
        raise ModelError(f"model config {p} must hold a JSON object, not {type(raw).__name__}.")
    if "geoembed_model" not in raw and isinstance(raw.get("data"), dict):
        raw = _from_csmask(raw)
    if "geoembed_model" not in raw:
        raise ModelError(
            f"model config {p} has no 'geoembed_model' key; it is not a geoembed sidecar "
            '(add "geoembed_model": 1, see geoembed.infer.spec).'
        )
    if int(raw["geoembed_model"]) > SIDECAR_VERSION:
        raise ModelError(
            f"model config {p} has format version {raw['geoembed_model']}; this geoembed reads "
            f"up to {SIDECAR_VERSION}. Upgrade geoembed."
        )
    unknown = sorted(set(raw) - _SIDECAR_KEYS)
    if unknown:
        raise ModelError(
            f"model config {p} has unknown keys {unknown}; allowed: {sorted(_SIDECAR_KEYS)} "
            "(put tool-specific data under 'extra')."
        )
    for key in ("bands", "mean", "std", "classes", "colors"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], list):
            raise ModelError(f"model config {p}: {key!r} must be a list.")
    kind = raw.get("output_kind", "logits")
    if kind not in ("logits", "probabilities"):
        raise ModelError(
            f"model config {p}: output_kind must be 'logits' or 'probabilities', not {kind!r}."
        )
    return raw


def _check_external_data(model: Any, model_path: Path) -> None:
    """Reject ONNX external-data locations that escape the model's directory."""
    from onnx.external_data_helper import uses_external_data

    base = model_path.parent.resolve()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        bad = (
            not loc
            or os.path.isabs(loc)
            or loc.startswith(("/", "\\"))
            or ":" in loc
            or ".." in Path(loc).parts
        )
        target = (base / loc).resolve() if not bad else None
        if target is not None and base not in target.parents:
            bad = True
        if bad:
            raise UnsafeModelError(
                f"{model_path}: initializer {tensor.name!r} points to external data "
                f"{loc!r} outside the model's directory; refusing to load it. Keep external "
                "data files next to the model with plain relative names."
            )


def _shape(value_info: Any) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in dims)


def load_model_spec(
    model: str | os.PathLike[str] | ModelSpec,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    sha256: str | None = None,
) -> ModelSpec:
    """Read an ONNX model's interface and its sidecar, without running it.

    Parameters
    ----------
    model : path-like or ModelSpec
        The ``.onnx`` file (a ModelSpec is returned unchanged).
    config : path-like or mapping, optional
        Sidecar JSON (or its parsed dict). Default: ``<model stem>.json`` when it exists
        and is a geoembed (or ukis-csmask) sidecar.
    sha256 : str, optional
        Expected digest of the ONNX file (overrides the sidecar's ``sha256``).

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelError
        Missing or unreadable file, digest mismatch, bad sidecar.
    UnsafeModelError
        External-data paths escaping the model directory.
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str) and "://" in model:
        return _spec_from_url(model, config=config, sha256=sha256)
    onnx = require("onnx", extra="cnn", feature="CNN inference")
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; pass the path of an .onnx file.")
    if path.suffix.lower() in (".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt"):
        raise UnsafeModelError(
            f"{path} looks like a pickle/PyTorch checkpoint; geoembed runs ONNX models only "
            "(export with torch.onnx.export)."
        )
    path = path.resolve()
    raw: dict[str, Any] = {}
    config_path: Path | None = None
    if config is None:
        auto = path.with_suffix(".json")
        if auto.is_file():
            try:
                raw = read_sidecar(auto)
                config_path = auto
            except ModelError as exc:
                log.info("ignoring %s next to the model: %s", auto, exc)
    elif isinstance(config, Mapping):
        raw = dict(config)
        raw.setdefault("geoembed_model", SIDECAR_VERSION)
        unknown = sorted(set(raw) - _SIDECAR_KEYS)
        if unknown:
            raise ModelError(f"model config has unknown keys {unknown}.")
    else:
        config_path = Path(config).expanduser().resolve()
        raw = read_sidecar(config_path)

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"cannot read {path} as an ONNX model: {exc}") from exc
    _check_external_data(proto, path)

    digest = file_sha256(path)
    pinned = sha256 or raw.get("sha256")
    if pinned and pinned.lower() != digest:
        raise ModelError(
            f"{path} has sha256 {digest}, but {pinned} was pinned"
            f"{' in ' + str(config_path) if config_path and not sha256 else ''}; "
            "the model file is not the one expected."
        )

    inits = {i.name for i in proto.graph.initializer}
    inputs = {i.name: i for i in proto.graph.input if i.name not in inits}
    if not inputs:
        raise ModelError(f"{path} has no graph inputs.")
    input_name = raw.get("input_name") or next(iter(inputs))
    if input_name not in inputs:
        raise ModelError(
            f"{path} has no input {input_name!r}; its inputs are {sorted(inputs)} "
            "(fix 'input_name' in the model config)."
        )
    vi = inputs[input_name]
    input_shape = _shape(vi)
    elem = vi.type.tensor_type.elem_type
    input_dtype = _ONNX_DTYPES.get(elem, np.dtype("O"))
    outputs = {o.name: _shape(o) for o in proto.graph.output}
    for key in ("output_name", "features_output"):
        name = raw.get(key)
        if name is not None and name not in outputs:
            raise ModelError(
                f"{path} has no output {name!r} ({key} in the model config); its outputs are "
                f"{sorted(outputs)}."
            )

    def tup(key: str, kind: type = str) -> tuple[Any, ...] | None:
        v = raw.get(key)
        return tuple(kind(x) for x in v) if v is not None else None

    def opt_int(key: str) -> int | None:
        v = raw.get(key)
        return int(v) if v is not None else None

    return ModelSpec(
        path=path,
        sha256=digest,
        input_name=input_name,
        input_shape=input_shape,
        input_dtype=input_dtype,
        outputs=outputs,
        bands=tup("bands"),
        mean=tup("mean", float),
        std=tup("std", float),
        nodata_fill=float(raw.get("nodata_fill", 0.0)),
        tile=opt_int("tile"),
        overlap=opt_int("overlap"),
        receptive_radius=opt_int("receptive_radius"),
        output_name=raw.get("output_name"),
        output_kind=str(raw.get("output_kind", "logits")),
        output_stride=opt_int("output_stride"),
        features_output=raw.get("features_output"),
        classes=tup("classes"),
        colors=tup("colors"),
        config_path=config_path,
    )


def _spec_from_url(url: str, *, config: Any, sha256: str | None) -> ModelSpec:
    """Download an ONNX model (and its ``.json`` sidecar, if any) and read its spec.

    The copy lives in this process's temporary directory, named by the URL; workers read
    the model from the URL itself (:func:`geoembed.infer.session.get_session`) and check
    the same digest.
    """
    import hashlib
    import tempfile

    from geoembed._cloud import filesystem, require_input

    require_input(url, "ONNX model")
    fs = filesystem(url)
    name = url.rpartition("/")[2]
    cache = Path(tempfile.gettempdir()) / "geoembed-models"
    cache = cache / hashlib.sha256(url.encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / name
    fs.get_file(url, str(local))
    sidecar = url.rpartition(".")[0] + ".json" if "." in name else url + ".json"
    if config is None and fs.exists(sidecar):
        fs.get_file(sidecar, str(local.with_suffix(".json")))
    spec = load_model_spec(local, config=config, sha256=sha256)
    return dataclasses.replace(spec, url=url)


def write_sidecar(path: str | os.PathLike[str], **keys: Any) -> Path:
    """Write a sidecar JSON (``geoembed_model`` is added); keys as in the module docstring.

    Parameters
    ----------
    path : path-like
        Destination ``.json``.
    **keys
        Sidecar keys; unknown keys raise :class:`ModelError`.

    Returns
    -------
    pathlib.Path
    """
    unknown = sorted(set(keys) - _SIDECAR_KEYS)
    if unknown:
        raise ModelError(f"unknown sidecar keys {unknown}; allowed: {sorted(_SIDECAR_KEYS)}.")
    payload = {"geoembed_model": SIDECAR_VERSION, **keys}
    p = Path(path)
    p.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return p


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | Sequence):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
