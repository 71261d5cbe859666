"""Models without pickle (save/load), apply_estimator, and the approximate mode."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import Ridge

from geoembed.classify import (
    ApproximateKNNClassifier,
    KNNClassifier,
    apply_estimator,
    predict_field,
)
from geoembed.errors import BandMismatchError, ModelError, OutputError, UnsafeModelError
from geoembed.jobs.model_io import load_model, save_model
from geoembed.testing import make_field, raise_if_dask_computes

BANDS = [f"A{i:02d}" for i in range(64)]


@pytest.fixture(scope="module")
def field() -> xr.DataArray:
    return make_field(29, 41, chunks=12, n_classes=3, seed=5)


@pytest.fixture(scope="module")
def train(field: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    data = field.values
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(6, 29, 90), rng.integers(0, 41, 90)
    X = data[:, ys, xs].T + 0.05 * rng.normal(size=(90, 64)).astype(np.float32)
    return X.astype(np.float32), (xs * 3 // 41).astype(np.int64)


def _valid(field: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    flat = field.values.reshape(64, -1)
    ok = ~np.isnan(flat).any(axis=0)
    return flat[:, ok].T, ok


def test_save_load_round_trip(tmp_path: Path, field, train) -> None:
    X, y = train
    model = KNNClassifier(3, metric="euclidean", weights="distance").fit(
        X,
        y,
        class_names=["water", "crops", "trees"],
        class_values=[10, 40, 20],
        colors=["#0000ff", "#ffff00", "#00aa00"],
        band_names=BANDS,
    )
    path = save_model(model, tmp_path / "m")
    meta = json.loads((path / "model.json").read_text())
    assert meta["params"] == {"k": 3, "metric": "euclidean", "weights": "distance"}
    assert meta["class_values"] == [10, 40, 20] and meta["band_names"] == BANDS
    loaded = load_model(path)
    assert isinstance(loaded, KNNClassifier) and loaded.class_names == model.class_names
    a = predict_field(model, field, probabilities=True).compute()
    b = predict_field(loaded, field, probabilities=True).compute()
    for name in a.data_vars:
        assert a[name].values.tobytes() == b[name].values.tobytes()
    assert load_model(path / "model.json").n_train == 90
    with pytest.raises(OutputError, match="already exists"):
        save_model(model, path)
    save_model(model, path, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_corrupt_or_foreign_models_are_refused(tmp_path: Path, train) -> None:
    X, y = train
    path = save_model(KNNClassifier(3).fit(X, y), tmp_path / "m")
    arrays = path / "arrays.npz"
    with np.load(arrays) as z:
        data = dict(z)
    data["X"][0, 0] += 1.0
    np.savez(arrays, **data)
    with pytest.raises(ModelError, match="checksum"):
        load_model(path)
    with pytest.raises(ModelError, match="not a geoembed model directory"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="pickle"):
        save_model(RandomForestClassifier(), tmp_path / "rf")


def test_pickles_need_explicit_opt_in(tmp_path: Path, train) -> None:
    X, y = train
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    for name in ("rf.pkl", "rf.joblib"):
        p = tmp_path / name
        p.write_bytes(pickle.dumps(rf))
        with pytest.raises(UnsafeModelError, match="allow_pickle=True"):
            load_model(p)
    loaded = load_model(tmp_path / "rf.pkl", allow_pickle=True)
    np.testing.assert_array_equal(loaded.predict(X), rf.predict(X))


def test_loaded_model_checks_field_bands(tmp_path: Path, field, train) -> None:
    X, y = train
    save_model(KNNClassifier(3).fit(X, y, band_names=BANDS), tmp_path / "m")
    model = load_model(tmp_path / "m")
    with pytest.raises(BandMismatchError, match="different order"):
        predict_field(model, field.isel(band=slice(None, None, -1)).assign_coords(band=BANDS[::-1]))


def test_apply_estimator_random_forest_classes_and_probabilities(field, train) -> None:
    X, y = train
    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y + 5)  # labels 5..7
    with raise_if_dask_computes():
        cls = apply_estimator(field, rf)
        proba = apply_estimator(field, rf, output="proba")
    vec, ok = _valid(field)
    assert cls.dtype == np.uint8 and cls.attrs["class_names"] == ["5", "6", "7"]
    got = cls.values.ravel()
    np.testing.assert_array_equal(got[ok], rf.predict(vec) - 5)  # ids = positions in classes_
    assert (got[~ok] == 255).all()
    p = proba.values.reshape(3, -1)
    np.testing.assert_allclose(p[:, ok].T, rf.predict_proba(vec), rtol=1e-6)
    assert np.isnan(p[:, ~ok]).all() and proba.dims == ("class", "y", "x")
    graph = dict(cls.data.__dask_graph__())
    assert len([k for k in graph if "RandomForestClassifier" in str(k)]) == 1


def test_apply_estimator_regressors(field, train) -> None:
    X, y = train
    ridge = Ridge().fit(X, y.astype(float))
    out = apply_estimator(field, ridge, output="value")
    vec, ok = _valid(field)
    assert out.dims == ("y", "x") and out.dtype == np.float32
    np.testing.assert_allclose(out.values.ravel()[ok], ridge.predict(vec), rtol=1e-5, atol=1e-5)
    assert np.isnan(out.values.ravel()[~ok]).all()
    two = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, np.c_[y, -y])
    out2 = apply_estimator(field, two, output="value")
    assert out2.dims == ("output", "y", "x") and out2.sizes["output"] == 2
    np.testing.assert_allclose(out2.values.reshape(2, -1)[:, ok].T, two.predict(vec), rtol=1e-5)


def test_apply_estimator_checks_before_any_task(field, train) -> None:
    X, y = train
    with raise_if_dask_computes():
        with pytest.raises(ModelError, match="not fitted"):
            apply_estimator(field, RandomForestClassifier())
        small = RandomForestClassifier(n_estimators=3).fit(X[:, :10], y)
        with pytest.raises(BandMismatchError, match="10 features"):
            apply_estimator(field, small)
        df = pd.DataFrame(X, columns=[f"F{i}" for i in range(64)])
        named = RandomForestClassifier(n_estimators=3).fit(df, y)
        with pytest.raises(BandMismatchError, match="fitted on features"):
            apply_estimator(field, named)
        with pytest.raises(ModelError, match="not a classifier"):
            apply_estimator(field, Ridge().fit(X, y), output="class")
        with pytest.raises(ModelError, match="output must be"):
            apply_estimator(field, Ridge().fit(X, y), output="labels")


def test_apply_estimator_on_worker_processes(field, train, dask_client) -> None:
    X, y = train
    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    cls = apply_estimator(field, rf)
    with dask.config.set(scheduler="threads"):
        local = cls.compute(scheduler="threads")
    remote = dask_client.compute(cls).result()
    assert local.values.tobytes() == remote.values.tobytes()


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_mode_reports_recall(shared_data: Path, index: str, tmp_path: Path) -> None:
    frames = [
        pd.read_csv(shared_data / "aef" / f"dw_samples_2024_{r}.csv")
        for r in ("amazon_forest", "california_coast", "iowa_ag")
    ]
    df = pd.concat(frames)
    X = df[BANDS].to_numpy(np.float32)
    y = df["dw_label"].to_numpy(np.int64)
    approx = ApproximateKNNClassifier(5, index=index, nprobe=8).fit(X, y)
    exact = KNNClassifier(5).fit(X, y)
    assert approx.recall is not None and 0.5 < approx.recall <= 1.0
    Q = X[::7] + 0.01
    measured = approx.measure_recall(Q)
    agree = (approx.predict(Q) == exact.predict(Q)).mean()
    assert 0.5 < measured <= 1.0 and agree >= min(measured, 0.95) - 0.1
    save_model(approx, tmp_path / "a")
    loaded = load_model(tmp_path / "a")
    assert isinstance(loaded, ApproximateKNNClassifier) and loaded.recall == approx.recall
    np.testing.assert_array_equal(loaded.predict(Q), approx.predict(Q))
    field = make_field(20, 20, chunks=10)
    ds = predict_field(approx, field)
    assert ds["classes"].attrs["model"] == "approximate"


def test_random_forest_saved_with_skops_loads_without_pickle_on_workers(
    tmp_path, dask_client
) -> None:
    """save_estimator writes no pickle; load_model accepts it without allow_pickle, and
    the loaded model gives the same map on worker processes as in memory."""
    import zipfile

    from sklearn.ensemble import RandomForestClassifier

    from geoembed.classify import apply_estimator
    from geoembed.errors import OutputError
    from geoembed.jobs.model_io import load_model, save_estimator
    from geoembed.testing import make_field

    field = make_field(30, 40, chunks=(16, 23), seed=9)
    data = field.values.reshape(64, -1).T
    keep = ~np.isnan(data).any(axis=1)
    X = data[keep][::7]
    y = (np.arange(len(X)) % 3).astype(np.int64)
    rf = RandomForestClassifier(n_estimators=15, random_state=0).fit(X, y)
    path = save_estimator(rf, tmp_path / "rf.skops")
    with zipfile.ZipFile(path) as archive:
        assert not [n for n in archive.namelist() if n.endswith((".pkl", ".pickle"))]
    loaded = load_model(path)  # no allow_pickle
    np.testing.assert_array_equal(loaded.predict(X), rf.predict(X))
    on_workers = apply_estimator(field, loaded, output="proba").values
    in_memory = rf.predict_proba(data[keep]).astype(np.float32)
    np.testing.assert_array_equal(on_workers.reshape(3, -1)[:, keep].T, in_memory)
    with pytest.raises(OutputError, match="already exists"):
        save_estimator(rf, path)
    save_estimator(rf, path, overwrite=True)  # its own file: replaced
    foreign = tmp_path / "foreign.skops"
    foreign.write_bytes(b"not ours")
    with pytest.raises(OutputError):
        save_estimator(rf, foreign, overwrite=True)
    assert foreign.read_bytes() == b"not ours"


class _Custom:
    def __init__(self) -> None:
        self.value = 3


def test_skops_file_with_unknown_types_is_refused(tmp_path) -> None:
    import skops.io as sio

    from geoembed.errors import UnsafeModelError
    from geoembed.jobs.model_io import load_model

    sio.dump({"model": _Custom()}, tmp_path / "odd.skops")
    with pytest.raises(UnsafeModelError, match="_Custom"):
        load_model(tmp_path / "odd.skops")


def test_model_fitted_on_label_values_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(90, 16)).astype(np.float32)
    labels = np.array(["water", "trees", "crops"])[np.arange(90) % 3]
    model = KNNClassifier(3).fit(X, labels)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.classes_, ["crops", "trees", "water"])
    assert loaded.n_features_in_ == 16
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    ids = KNNClassifier(3).fit(X, np.arange(90) % 3)
    save_model(ids, tmp_path / "ids")
    meta = json.loads((tmp_path / "ids" / "model.json").read_text())
    assert "classes" not in meta  # ids 0..C-1: the file format is unchanged
    np.testing.assert_array_equal(load_model(tmp_path / "ids").classes_, [0, 1, 2])
