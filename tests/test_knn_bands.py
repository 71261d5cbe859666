"""The band-major kNN block kernel gives exactly the row-major results (nodata, ties)."""

from __future__ import annotations

import numpy as np
import pytest

from geoembed._blockwise import _apply_block, _apply_block_bands
from geoembed.classify import KNNClassifier


def _block(rng: np.random.Generator, X: np.ndarray) -> np.ndarray:
    """A (64, 40, 50) block: random vectors, exact training copies, zeros, NaN, scaled rows."""
    q = rng.normal(size=(2000, 64)).astype(np.float32)
    q[:300] = X[rng.integers(0, len(X), 300)]  # exact duplicates: ties at distance 0
    q[300:310] = 0.0  # zero vectors: every training vector ties
    q[310:400] *= np.float32(1e3)  # scale does not change a cosine ranking
    q[400:420, 5] = np.nan  # nodata
    q[420:440] = X[np.arange(20) % len(X)] + np.float32(1e-6)  # near ties
    return np.ascontiguousarray(q.T.reshape(64, 40, 50))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(("n_train", "k"), [(300, 5), (3000, 5), (5000, 3), (6, 5)])
def test_band_major_equals_row_major(metric: str, n_train: int, k: int) -> None:
    rng = np.random.default_rng(n_train + k)
    X = rng.normal(size=(n_train, 64)).astype(np.float32)
    X[1] = X[0]  # duplicate training rows with different labels
    y = rng.integers(0, 7, n_train) if n_train > 100 else np.zeros(n_train, int)
    model = KNNClassifier(k, metric=metric).fit(X, y)
    block = _block(rng, X)
    f32 = np.dtype(np.float32)
    for proba in (False, True):
        n_out = 2 + (model.n_classes if proba else 0)
        old = _apply_block(
            block,
            proba,
            pixel_func=model.pixel_outputs,
            n_out=n_out,
            fill=np.nan,
            out_dtype=f32,
        )
        new = _apply_block_bands(
            block,
            proba,
            pixel_func=model.block_outputs,
            n_out=n_out,
            fill=np.nan,
            out_dtype=f32,
        )
        assert np.isnan(new[0]).sum() == 20
        np.testing.assert_array_equal(new, old)


def test_band_major_distance_weights() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 64)).astype(np.float32)
    model = KNNClassifier(5, weights="distance").fit(X, rng.integers(0, 3, 200))
    block = _block(rng, X)
    f32 = np.dtype(np.float32)
    old = _apply_block(block, pixel_func=model.pixel_outputs, n_out=2, fill=-1, out_dtype=f32)
    new = _apply_block_bands(block, pixel_func=model.block_outputs, n_out=2, fill=-1, out_dtype=f32)
    np.testing.assert_array_equal(new, old)


def test_aef_codes_flow_as_int8_and_match_decoding_first() -> None:
    """An AEF int8 field is classified from its codes; the same map as its float32 field."""
    import dask
    import dask.array as dsa
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    from geoembed.classify import predict_field
    from geoembed.io.aef import aef_codes_of, dequantize_aef

    rng = np.random.default_rng(7)
    codes = rng.integers(-127, 128, size=(64, 96, 80)).astype(np.int8)
    codes[5, 3, 4] = -128  # a masked pixel (one band)
    codes[:, 10, 10] = -128  # a masked pixel (every band)
    q = xr.DataArray(
        dsa.from_array(codes, chunks=(64, 48, 40)),
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(64)],
            "y": np.arange(96.0),
            "x": np.arange(80.0),
        },
    )
    field = dequantize_aef(q).rio.write_crs("EPSG:32633")
    assert aef_codes_of(field.data) is not None
    X = np.asarray(field.isel(y=slice(0, 3), x=slice(0, 100)).values.reshape(64, -1).T)
    X = X[~np.isnan(X).any(axis=1)]
    model = KNNClassifier(3).fit(X, np.arange(len(X)) % 4)
    floats = field.copy(data=field.data.map_blocks(np.copy))  # not recognisable as codes
    assert aef_codes_of(floats.data) is None
    with dask.config.set(scheduler="synchronous"):
        out = predict_field(model, field)
        (opt,) = dask.optimize(out["classes"].data)
        assert not any(
            str(k[0] if isinstance(k, tuple) else k).startswith("dequantize-aef") for k in opt.dask
        )
        ref = predict_field(model, floats)
        for name in ("classes", "confidence"):
            np.testing.assert_array_equal(out[name].values, ref[name].values)
    conf = out["confidence"].values
    assert np.isnan(conf[3, 4]) and np.isnan(conf[10, 10]) and np.isnan(conf).sum() == 2


def test_kmeans_predict_on_aef_codes_matches_decoding_first() -> None:
    """KMeans fit/predict/score on an AEF int8 field read the codes; the same bits."""
    import dask
    import dask.array as dsa
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    from geoembed.cluster import KMeans
    from geoembed.io.aef import dequantize_aef

    rng = np.random.default_rng(11)
    codes = rng.integers(-127, 128, size=(64, 300, 250)).astype(np.int8)
    codes[7, 20, 30] = -128
    q = xr.DataArray(
        dsa.from_array(codes, chunks=(64, 256, 256)),
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(64)],
            "y": np.arange(300.0),
            "x": np.arange(250.0),
        },
    )
    field = dequantize_aef(q).rio.write_crs("EPSG:32633")
    floats = field.copy(data=field.data.map_blocks(np.copy))
    with dask.config.set(scheduler="synchronous"):
        model = KMeans(6, random_state=0).fit(floats)
        from_codes = KMeans(6, random_state=0).fit(field)  # Lloyd passes over the codes
        a = model.predict(field).values
        b = model.predict(floats).values
        score = (model.score(field), model.score(floats))
    assert from_codes.cluster_centers_.tobytes() == model.cluster_centers_.tobytes()
    assert from_codes.n_iter_ == model.n_iter_ and score[0] == score[1]
    np.testing.assert_array_equal(a, b)
    assert a[20, 30] == 255 and (a == 255).sum() == 1
