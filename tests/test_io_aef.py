"""AEF int8 codes: de-quantization, masking, detection, bottom-up files (real tile variants)."""

from __future__ import annotations

from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from _io_data import aef_variant, formula, read_codes
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geoembed.errors import QuantizationError
from geoembed.io import dequantize_aef, open_embeddings
from geoembed.io.aef import dequantize_block
from geoembed.schema import check_embedding
from geoembed.testing import raise_if_dask_computes

pytestmark = pytest.mark.shared_data


def lengths(field: xr.DataArray) -> np.ndarray:
    v = field.values.reshape(field.sizes["band"], -1).astype(np.float64)
    return np.linalg.norm(v, axis=0)


# --- dequantize_aef on arrays ------------------------------------------------------------


def test_formula_values_and_mask_numpy() -> None:
    q = np.array([[[127, 0], [-1, 5]], [[-127, 64], [-128, 3]]], dtype=np.int8)  # (2, 2, 2)
    out = dequantize_aef(q)
    assert out.dtype == np.float32
    # pixel (1, 0) has -128 in band 1 only: whole pixel NaN
    assert np.isnan(out[:, 1, 0]).all()
    valid = ~np.isnan(out)
    np.testing.assert_allclose(out[valid], formula(q)[valid], rtol=1e-6)
    assert valid.sum() == 6


def test_dask_input_stays_lazy_and_joins_band_chunks() -> None:
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, size=(8, 20, 30)).astype(np.int8)
    dq = dsa.from_array(q, chunks=(3, 7, 11))  # band split on purpose
    with raise_if_dask_computes():
        out = dequantize_aef(dq)
    assert out.chunks[0] == (8,)
    assert out.chunks[1:] == dq.chunks[1:]
    np.testing.assert_array_equal(out.compute(), dequantize_block(q))


def test_dataarray_band_dim_anywhere() -> None:
    q = np.random.default_rng(2).integers(-128, 128, size=(5, 6, 4)).astype(np.int8)
    da = xr.DataArray(q, dims=("y", "x", "band"), attrs={"_FillValue": -128, "keep": 1})
    out = dequantize_aef(da)
    assert out.dims == da.dims and "_FillValue" not in out.attrs and out.attrs["keep"] == 1
    np.testing.assert_array_equal(out.values, dequantize_block(q, axis=2))


def test_non_int8_is_refused() -> None:
    with pytest.raises(QuantizationError, match="int8"):
        dequantize_aef(np.zeros((2, 2), dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6)))
def test_property_mask_sign_and_formula(q: np.ndarray) -> None:
    out = dequantize_aef(q)
    masked = (q == -128).any(axis=0)
    assert np.array_equal(np.isnan(out).any(axis=0), masked)
    assert np.array_equal(np.isnan(out).all(axis=0), masked)  # whole pixel, never partial
    ok = np.broadcast_to(~masked, q.shape)
    np.testing.assert_allclose(out[ok], formula(q)[ok], rtol=1e-6, atol=0)
    assert np.array_equal(np.sign(out[ok]), np.sign(q[ok]))
    assert np.all(np.abs(out[ok]) <= 1.0)


def _quantize(v: np.ndarray) -> np.ndarray:
    """Inverse of the AEF formula: q = round(sign(v) * sqrt(|v|) * 127.5), clipped."""
    return np.clip(np.round(np.sign(v) * np.sqrt(np.abs(v)) * 127.5), -127, 127).astype(np.int8)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, (64, 3), elements=st.floats(0.2, 1.0)),
    hnp.arrays(np.bool_, (64, 3)),
)
def test_property_unit_norm_invariant(mag: np.ndarray, neg: np.ndarray) -> None:
    """reliability.md #15: quantized unit vectors decode to (near) unit length.

    Worst case (rounding errors all in one direction, which hypothesis finds): each
    component is off by at most 2 * sqrt(|v|) * 0.5 / 127.5, so the length is within
    2 * (0.5 / 127.5) * sqrt(sum |v|) <= 0.0157 * sqrt(8) = 0.022 of 1. Components are
    spread (magnitudes within a factor 5 before normalising), as in real embeddings; a
    vector with one dominant component leaves no room for the linear-decoding check.
    """
    raw = np.where(neg, -mag, mag)
    unit = raw / np.linalg.norm(raw, axis=0, keepdims=True)
    q = _quantize(unit)
    norms = np.linalg.norm(dequantize_aef(q).astype(np.float64), axis=0)
    assert np.all(np.abs(norms - 1.0) <= 0.023)
    # the invariant catches the two classic bugs
    linear = np.linalg.norm(q.astype(np.float64) / 127.5, axis=0)
    assert np.all(linear > 1.5)
    q_bad = q.copy()
    q_bad[:, 0] = -128
    unmasked = np.linalg.norm(formula(q_bad[:, :1]), axis=0)
    assert unmasked[0] > 7.5


def test_random_unit_vectors_decode_within_one_percent() -> None:
    """Typical vectors (random directions, errors cancel): lengths in [0.99, 1.01]."""
    rng = np.random.default_rng(7)
    v = rng.normal(size=(64, 10_000))
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    norms = np.linalg.norm(dequantize_aef(_quantize(v)).astype(np.float64), axis=0)
    assert norms.min() >= 0.99 and norms.max() <= 1.01


# --- the real tile and its variants -------------------------------------------------------


def test_real_tile_is_unit_length(aef_tif: Path) -> None:
    field = open_embeddings(aef_tif, bands=64)
    check_embedding(field, bands=64)
    assert field.attrs["quantization"] == "aef" and field.attrs["source_dtype"] == "int8"
    assert [str(b) for b in field.band.values[:2]] == ["A00", "A01"]
    norms = lengths(field)
    assert norms.min() >= 0.99 and norms.max() <= 1.01
    q, _, _ = read_codes(aef_tif)
    np.testing.assert_allclose(field.values, formula(q), rtol=1e-6)


def test_masked_pixels_become_nan(aef_tif: Path, tmp_path: Path) -> None:
    full = [(0, 0), (10, 20), (96, 96)]
    one_band = [(5, 40, 41), (63, 70, 3)]
    path = aef_variant(
        aef_tif, tmp_path / "masked.tif", mask_pixels=full, mask_band_pixels=one_band
    )
    field = open_embeddings(path, bands=64)
    values = field.values
    nan_pixels = {(int(r), int(c)) for r, c in zip(*np.where(np.isnan(values).any(axis=0)))}
    assert nan_pixels == set(full) | {(r, c) for _, r, c in one_band}
    for r, c in nan_pixels:
        assert np.isnan(values[:, r, c]).all()
    norms = lengths(field)
    valid = ~np.isnan(norms)
    assert valid.sum() == 97 * 97 - 5
    assert norms[valid].min() >= 0.99 and norms[valid].max() <= 1.01


def test_bottom_up_matches_north_up_at_same_coordinates(aef_tif: Path, tmp_path: Path) -> None:
    up = aef_variant(aef_tif, tmp_path / "bu.tif", bottom_up=True, mask_pixels=[(3, 4)])
    north = open_embeddings(aef_variant(aef_tif, tmp_path / "nu.tif", mask_pixels=[(3, 4)]))
    bottom = open_embeddings(up)
    assert bottom.y.values[1] > bottom.y.values[0]  # increasing y
    assert north.y.values[1] < north.y.values[0]
    t = bottom.rio.transform()
    assert t.e > 0
    np.testing.assert_allclose(bottom.y.values, t.f + t.e * (np.arange(97) + 0.5))
    np.testing.assert_allclose(bottom.x.values, t.c + t.a * (np.arange(97) + 0.5))
    aligned = bottom.sortby("y", ascending=False)
    np.testing.assert_array_equal(aligned.y.values, north.y.values)
    np.testing.assert_array_equal(aligned.values, north.values)  # NaN pixel included
    # a point lookup at map coordinates gives the same vector
    x, y = float(north.x[50]), float(north.y[20])
    np.testing.assert_array_equal(bottom.sel(x=x, y=y).values, north.sel(x=x, y=y).values)
    assert bottom.rio.bounds() == pytest.approx(north.rio.bounds())


def test_int8_without_nodata_needs_quantization(aef_tif: Path, tmp_path: Path) -> None:
    path = aef_variant(aef_tif, tmp_path / "nonodata.tif", nodata=None)
    with raise_if_dask_computes(), pytest.raises(QuantizationError, match="quantization='aef'"):
        open_embeddings(path)
    field = open_embeddings(path, quantization="aef")
    norms = lengths(field)
    assert norms.min() >= 0.99 and norms.max() <= 1.01


def test_quantization_aef_on_float_is_refused(tmp_path: Path) -> None:
    from geoembed.testing import make_field

    with pytest.raises(QuantizationError, match="int8"):
        open_embeddings(make_field(8, 9), quantization="aef")
    with pytest.raises(QuantizationError, match="unknown quantization"):
        open_embeddings(make_field(8, 9), quantization="int8")


def test_no_descriptions_aef_gets_aef_names(aef_tif: Path, tmp_path: Path) -> None:
    path = aef_variant(aef_tif, tmp_path / "nodesc.tif", descriptions=False)
    field = open_embeddings(path)
    assert [str(b) for b in field.band.values] == [f"A{i:02d}" for i in range(64)]
