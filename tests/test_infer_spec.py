"""Model spec + validation: every mismatch is raised on the client, before any task runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from geoembed.errors import (  # noqa: E402
    BandMismatchError,
    DimensionError,
    DTypeError,
    ModelError,
    UnsafeModelError,
)
from geoembed.infer import load_model_spec, predict, read_sidecar, write_sidecar  # noqa: E402
from geoembed.infer.models import conv_stack  # noqa: E402
from geoembed.infer.session import clear_sessions, get_session  # noqa: E402
from geoembed.infer.spec import file_sha256  # noqa: E402
from geoembed.testing import make_field, raise_if_dask_computes  # noqa: E402


@pytest.fixture
def model(tmp_path) -> str:
    return conv_stack(tmp_path / "m.onnx", bands=8, depth=2, n_classes=3)


def _field(bands: int = 8, **kw):
    return make_field(40, 50, bands=bands, chunks=16, **kw)


def test_spec_reads_interface_and_digest(model: str) -> None:
    spec = load_model_spec(model)
    assert spec.input_name == "input"
    assert spec.input_shape == (None, 8, None, None)
    assert spec.input_dtype == np.float32
    assert list(spec.outputs) == ["logits"]
    assert spec.sha256 == file_sha256(model)
    assert spec.config_path is None


def test_band_count_mismatch(model: str) -> None:
    with raise_if_dask_computes(), pytest.raises(BandMismatchError, match="takes 8 input bands"):
        predict(_field(bands=6), model)


def test_sidecar_band_missing(model: str, tmp_path) -> None:
    cfg = write_sidecar(tmp_path / "cfg.json", bands=[f"F{i:03d}" for i in range(7)] + ["B99"])
    with raise_if_dask_computes(), pytest.raises(BandMismatchError, match="lacks bands"):
        predict(_field(), model, model_config=cfg)


def test_rank_mismatch(tmp_path) -> None:
    path = conv_stack(tmp_path / "r.onnx", bands=8, input_rank=3)
    with raise_if_dask_computes(), pytest.raises(DimensionError, match="rank 3"):
        predict(_field(), path)


def test_fixed_size_incompatible_with_tile(tmp_path) -> None:
    path = conv_stack(tmp_path / "f.onnx", bands=8, fixed_size=32)
    with raise_if_dask_computes(), pytest.raises(ModelError, match="fixed 32 x 32"):
        predict(_field(), path, tile=24)
    with raise_if_dask_computes():
        out = predict(_field(), path, overlap=4)  # tile defaults to the fixed size
    assert out["classes"].shape == (40, 50)


def test_model_dtype_must_be_float(tmp_path) -> None:
    path = conv_stack(tmp_path / "u8.onnx", bands=8, input_dtype="uint8")
    with raise_if_dask_computes(), pytest.raises(DTypeError, match="uint8 input"):
        predict(_field(), path)


def test_field_dtype_must_be_float32(model: str) -> None:
    with raise_if_dask_computes(), pytest.raises(DTypeError):
        predict(_field().astype("float64"), model)


def test_overlap_and_tile_checks(model: str) -> None:
    with raise_if_dask_computes():
        with pytest.raises(ModelError, match="leaves no interior"):
            predict(_field(), model, tile=32, overlap=16)
        with pytest.raises(ModelError, match="blend"):
            predict(_field(), model, blend="gaussian")
        with pytest.raises(ModelError, match="output"):
            predict(_field(), model, output="segments")


def test_sidecar_stride_and_classes_are_checked(model: str, tmp_path) -> None:
    bad_stride = write_sidecar(tmp_path / "a.json", output_stride=2)
    with pytest.raises(ModelError, match="output_stride"):
        predict(_field(), model, model_config=bad_stride)
    bad_classes = write_sidecar(tmp_path / "b.json", classes=["a", "b"])
    with pytest.raises(ModelError, match="names 2 classes"):
        predict(_field(), model, model_config=bad_classes)
    bad_norm = write_sidecar(tmp_path / "c.json", mean=[0.0] * 3, std=[1.0] * 3)
    with pytest.raises(ModelError, match="3 mean values"):
        predict(_field(), model, model_config=bad_norm)


def test_sidecar_format(tmp_path) -> None:
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"geoembed_model": 1, "tiel": 256}))
    with pytest.raises(ModelError, match="unknown keys"):
        read_sidecar(p)
    p.write_text(json.dumps({"tile": 256}))
    with pytest.raises(ModelError, match="geoembed_model"):
        read_sidecar(p)
    p.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        read_sidecar(p)


def test_foreign_json_next_to_model_is_ignored(model: str, tmp_path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"something": "else"}))
    assert load_model_spec(model).config_path is None


def test_sha256_pin(model: str, tmp_path) -> None:
    cfg = write_sidecar(tmp_path / "pin.json", sha256="0" * 64)
    with pytest.raises(ModelError, match="pinned"):
        load_model_spec(model, cfg)
    good = write_sidecar(tmp_path / "ok.json", sha256=file_sha256(model))
    assert load_model_spec(model, good).sha256 == file_sha256(model)


def test_worker_refuses_a_model_changed_after_validation(model: str, tmp_path) -> None:
    clear_sessions()
    with pytest.raises(ModelError, match="changed since it was validated"):
        get_session(model, "f" * 64)


@pytest.mark.parametrize("location", ["../evil.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_escaping_the_model_dir_is_refused(
    model: str, tmp_path, location: str
) -> None:
    proto = onnx.load(model)
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    with pytest.raises(UnsafeModelError, match="outside the model's directory"):
        load_model_spec(bad)


def test_pickles_are_refused(tmp_path) -> None:
    p = tmp_path / "model.pt"
    p.write_bytes(b"\x80\x04not really")
    with pytest.raises(UnsafeModelError):
        load_model_spec(p)


def test_missing_model_file(tmp_path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model_spec(tmp_path / "nope.onnx")
