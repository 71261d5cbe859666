"""kNN over a lazy field: nodata, chunking and scheduler invariance, laziness, real data."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.neighbors import KNeighborsClassifier

from geoembed.classify import KNNClassifier, classify_knn, predict_field
from geoembed.errors import BandMismatchError, LabelError, ModelError
from geoembed.testing import make_field, raise_if_dask_computes

BANDS = [f"A{i:02d}" for i in range(64)]


def _training(field: xr.DataArray, n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors sampled from the field's stripes plus noise, labelled by stripe."""
    data = field.values
    rng = np.random.default_rng(seed)
    h, w = data.shape[1:]
    ys = rng.integers(6, h, n)
    xs = rng.integers(0, w, n)
    X = data[:, ys, xs].T + 0.05 * rng.normal(size=(n, data.shape[0])).astype(np.float32)
    y = (xs * 4) // w
    return X.astype(np.float32), y.astype(np.int64)


def _valid_pixels(field: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    flat = field.values.reshape(field.sizes["band"], -1)
    valid = ~np.isnan(flat).any(axis=0)
    return flat[:, valid].T, valid


@pytest.fixture(scope="module")
def field() -> xr.DataArray:
    return make_field(37, 53, chunks=16, n_classes=4, seed=3)


@pytest.fixture(scope="module")
def model(field: xr.DataArray) -> KNNClassifier:
    X, y = _training(field)
    return KNNClassifier(5, weights="distance").fit(
        X, y, class_names=["a", "b", "c", "d"], band_names=BANDS
    )


def test_outputs_match_the_model_and_keep_nodata(field, model) -> None:
    ds = predict_field(model, field, probabilities=True)
    assert ds["classes"].dtype == np.uint8 and ds["classes"].dims == ("y", "x")
    assert ds["probabilities"].dims == ("class", "y", "x")
    assert list(ds["probabilities"]["class"].values) == ["a", "b", "c", "d"]
    assert ds["classes"].rio.crs == field.rio.crs
    cls = ds["classes"].values
    conf = ds["confidence"].values
    vectors, valid = _valid_pixels(field)
    assert (cls.ravel()[~valid] == 255).all() and np.isnan(conf.ravel()[~valid]).all()
    np.testing.assert_array_equal(cls.ravel()[valid], model.predict(vectors))
    np.testing.assert_allclose(conf.ravel()[valid], model.predict_proba(vectors).max(1), rtol=1e-6)
    proba = ds["probabilities"].values.reshape(4, -1)
    np.testing.assert_allclose(proba[:, valid].sum(axis=0), 1.0, rtol=1e-5)
    assert np.isnan(proba[:, ~valid]).all()
    assert ds["classes"].attrs["class_names"] == ["a", "b", "c", "d"]
    assert ds["classes"].rio.nodata == 255


@pytest.mark.parametrize("chunks", [7, (37, 53), (5, 40), None])
def test_byte_identical_across_chunkings(field, model, chunks) -> None:
    ref = predict_field(model, field, probabilities=True).compute()
    other = make_field(37, 53, chunks=chunks, n_classes=4, seed=3)
    out = predict_field(model, other, probabilities=True).compute()
    for name in ref.data_vars:
        assert ref[name].values.tobytes() == out[name].values.tobytes(), name


def test_byte_identical_with_shuffled_training_rows(field) -> None:
    X, y = _training(field)
    perm = np.random.default_rng(1).permutation(len(X))
    a = classify_knn(field, (X, y), k=5).compute()
    b = classify_knn(field, (X[perm], y[perm]), k=5).compute()
    for name in a.data_vars:
        assert a[name].values.tobytes() == b[name].values.tobytes()


def test_threads_and_worker_processes_give_the_same_bytes(field, model, dask_client) -> None:
    ds = predict_field(model, field, probabilities=True)
    on_cluster = dask_client.compute(ds).result()
    with dask.config.set(scheduler="threads"):
        threaded = ds.compute(scheduler="threads")
    for name in ds.data_vars:
        assert on_cluster[name].values.tobytes() == threaded[name].values.tobytes()


def test_training_matrix_is_one_graph_node(field, model) -> None:
    """The model is a single delayed dependency, not embedded in every block task."""
    ds = predict_field(model, field)
    graph = dict(ds["classes"].data.__dask_graph__())
    model_keys = [k for k in graph if "KNNClassifier" in str(k)]
    assert len(model_keys) == 1
    n_blocks = len(field.chunks[1]) * len(field.chunks[2])
    assert n_blocks > 4
    import pickle

    block_tasks = [v for k, v in graph.items() if "geoembed-knn-" in str(k)]
    assert len(block_tasks) == n_blocks
    assert max(len(pickle.dumps(v)) for v in block_tasks) < model.X_.nbytes / 4


def test_lazy_and_errors_before_any_task(field) -> None:
    X, y = _training(field)
    with raise_if_dask_computes():
        ds = classify_knn(field, (X, y), k=5)
        assert isinstance(ds["classes"].data, dask.array.Array)
        y_small = y.copy()
        y_small[:2] = 4  # class 4 has two samples
        with pytest.raises(LabelError, match="smallest class"):
            classify_knn(field, (X, y_small), k=5)
        wrong = make_field(37, 53, bands=16, chunks=16)
        model = KNNClassifier(5).fit(X, y, band_names=BANDS)
        with pytest.raises(BandMismatchError, match="16 bands"):
            predict_field(model, wrong)
        renamed = field.assign_coords(band=[f"B{i}" for i in range(64)])
        with pytest.raises(BandMismatchError, match="lacks bands"):
            predict_field(model, renamed)
        with pytest.raises(ModelError, match="apply_estimator"):
            predict_field(object(), field)


def test_bottom_up_field_keeps_its_grid(field, model) -> None:
    up = make_field(37, 53, chunks=16, n_classes=4, seed=3, bottom_up=True)
    ds = predict_field(model, up)
    np.testing.assert_array_equal(ds["y"].values, up["y"].values)
    vectors, valid = _valid_pixels(up)
    np.testing.assert_array_equal(ds["classes"].values.ravel()[valid], model.predict(vectors))


def test_wisconsin_field_equals_sklearn_brute_force(aef_tif: Path, shared_data: Path) -> None:
    from geoembed.io import open_embeddings

    field = open_embeddings(aef_tif, chunks=(40, 40))
    df = pd.read_csv(shared_data / "aef" / "dw_samples_2024_iowa_ag.csv")
    X = df[BANDS].to_numpy(np.float32)
    y = df["dw_label"].to_numpy(np.int64)
    # mask a patch to exercise nodata on real data
    field = field.where((field["x"] > field["x"][10]) | (field["y"] < field["y"][10]))
    ds = classify_knn(field, (X, y), k=5).compute()
    vectors, valid = _valid_pixels(field)
    ref = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(X, y)
    np.testing.assert_array_equal(ds["classes"].values.ravel()[valid], ref.predict(vectors))
    assert (ds["classes"].values.ravel()[~valid] == 255).all() and (~valid).sum() == 121
    uniq = np.unique(ds["classes"].values[ds["classes"].values != 255])
    assert len(uniq) >= 2  # a real map, not one class
