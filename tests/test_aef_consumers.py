"""AEF int8 fields flow through the graph as codes; estimator and CNN tasks decode them.

Each consumer is run twice on the same pixels: on the lazy de-quantization of the codes
(which it now reads as int8, decoding inside its own tasks) and on a float32 copy that
is not recognisable as codes (the old path, decoded by a Dask layer). The results must
be the same bits, and the first graph must hold no float32 de-quantization layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from dask.core import flatten

from geoembed import _aef_codes as aef_codes
from geoembed._aef_codes import aef_codes_of, decode_codes, dequantize_block
from geoembed._blockwise import map_pixels
from geoembed.classify import apply_estimator
from geoembed.io.aef import dequantize_aef


def _aef_field(bands: int, ny: int, nx: int, chunks: tuple[int, int], seed: int) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(-127, 128, size=(bands, ny, nx)).astype(np.int8)
    codes[2, 3, 4] = -128  # masked in one band: the whole pixel is nodata
    codes[:, 10, 11] = -128  # masked in every band
    codes[:, 20:23, 30:34] = -128  # a masked patch across a chunk edge
    q = xr.DataArray(
        dsa.from_array(codes, chunks=(bands, *chunks)),
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(bands)],
            "y": 4906600.0 - 10.0 * (np.arange(ny) + 0.5),
            "x": 358410.0 + 10.0 * (np.arange(nx) + 0.5),
        },
    )
    field = dequantize_aef(q).rio.write_crs("EPSG:32616")
    assert aef_codes_of(field.data) is not None
    return field


def _floats(field: xr.DataArray) -> xr.DataArray:
    """The same float32 field, no longer recognisable as codes (decoded by a Dask layer)."""
    floats = field.copy(data=field.data.map_blocks(np.copy))
    assert aef_codes_of(floats.data) is None
    return floats


def _decodes_in_dask(arr: Any) -> bool:
    """Whether computing ``arr`` runs the float32 de-quantization layer (before fusion)."""
    graph = arr.__dask_graph__().cull(set(flatten(arr.__dask_keys__())))
    return any(str(name).startswith("dequantize-aef") for name in graph.layers)


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_decode_codes_has_the_bits_of_dequantize_block_for_every_code() -> None:
    codes = np.arange(-127, 128, dtype=np.int8)
    ref = dequantize_block(codes[:, None], axis=1)[:, 0]
    _same_bits(decode_codes(codes), ref)
    # into a strided view of a larger buffer (what the estimator tiles do)
    grid = np.tile(codes, (3, 1))
    buf = np.zeros((5, 255, 3), np.float32)
    got = decode_codes(grid.T, out=buf[1, :, :])
    assert got.base is buf or got is buf[1]
    _same_bits(buf[1].T.copy(), np.tile(ref, (3, 1)))
    assert np.all(buf[0] == 0) and np.all(buf[2:] == 0)
    masked = decode_codes(np.array([5, -128, -3], np.int8))
    assert np.isnan(masked[1]) and not np.isnan(masked[[0, 2]]).any()
    # above the per-thread scratch size the sign is restored in place (copysign)
    big = np.resize(codes, (5, 300_000))
    assert big.size > aef_codes._SCRATCH_MAX
    _same_bits(decode_codes(big), np.resize(ref, big.shape))
    # a small tile after a big one reuses the scratch with its own shape
    _same_bits(decode_codes(grid), np.tile(ref, (3, 1)))


def _rows_sum(vectors: np.ndarray) -> np.ndarray:
    assert vectors.dtype == np.float32 and vectors.flags.c_contiguous
    return np.stack([vectors.sum(axis=1), vectors[:, 0] * vectors[:, -1]], axis=1)


@pytest.mark.parametrize("tile", [None, (8, 16)])
def test_map_pixels_decodes_codes_in_its_tasks(tile: tuple[int, int] | None) -> None:
    field = _aef_field(16, 40, 45, (17, 19), seed=1)
    kw: dict[str, Any] = dict(n_out=2, name="rowsum", tile=tile)
    out = map_pixels(field, _rows_sum, aef_codes=True, **kw)
    assert not _decodes_in_dask(out.data)
    ref = map_pixels(_floats(field), _rows_sum, **kw)
    with dask.config.set(scheduler="synchronous"):
        got, want = out.values, ref.values
    _same_bits(got, want)
    assert np.isnan(got[:, 3, 4]).all() and np.isnan(got[:, 21, 31]).all()
    assert np.isnan(got[0]).sum() == 2 + 12


@pytest.fixture(scope="module")
def estimators() -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge

    rng = np.random.default_rng(3)
    X = dequantize_block(rng.integers(-127, 128, size=(64, 300)).astype(np.int8)).T
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.3)
    return {
        "class": RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y),
        "proba": LogisticRegression(max_iter=500).fit(X, y),
        "value": Ridge().fit(X, np.stack([X[:, 0] - X[:, 5], X[:, 7]], axis=1)),
    }


@pytest.mark.parametrize("output", ["class", "proba", "value"])
def test_apply_estimator_reads_codes_with_the_same_bits(
    estimators: dict[str, Any], output: str
) -> None:
    field = _aef_field(64, 37, 50, (16, 24), seed=2)
    est = estimators[output]
    out = apply_estimator(field, est, output=output)
    assert not _decodes_in_dask(out.data)
    ref = apply_estimator(_floats(field), est, output=output)
    with dask.config.set(scheduler="threads"):
        got, want = out.values, ref.values
    _same_bits(got, want)
    nodata = got[..., 10, 11]
    assert np.all(nodata == 255) if output == "class" else np.isnan(nodata).all()


def test_cnn_inference_reads_codes_with_the_same_bits(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from geoembed.infer import predict
    from geoembed.infer.models import conv_stack

    model = conv_stack(tmp_path / "conv.onnx", bands=8, depth=3, features=True, seed=3)
    field = _aef_field(8, 45, 61, (20, 26), seed=4)
    kw: dict[str, Any] = dict(tile=24, overlap=3, output=("classes", "probabilities", "features"))
    out = predict(field, model, **kw)
    for var in out.data_vars.values():
        assert not _decodes_in_dask(var.data)
    ref = predict(_floats(field), model, **kw)
    with dask.config.set(scheduler="threads"):
        got, want = out.compute(), ref.compute()
    for name in got.data_vars:
        _same_bits(got[name].values, want[name].values)
    assert np.isnan(got["confidence"].values[10, 11])
