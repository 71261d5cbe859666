"""dask-ml interoperability: fitted dask-ml estimators give the same maps as their own predict.

Real AlphaEarth tile (Wisconsin), ragged chunks and a nodata patch; Dask work runs on the
shared LocalCluster (worker processes on 127.0.0.1), so dask-ml's own graphs inside
``predict`` are computed in-task.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from geoembed.classify import apply_estimator
from geoembed.cli import main
from geoembed.cluster import KMeans
from geoembed.errors import ModelError
from geoembed.io import open_embeddings
from geoembed.jobs.model_io import load_kmeans as load_model
from geoembed.jobs.model_io import save_kmeans as save_model

dask_ml_cluster = pytest.importorskip("dask_ml.cluster")
dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")

pytestmark = pytest.mark.shared_data

BANDS = [f"A{i:02d}" for i in range(64)]


@pytest.fixture(scope="module")
def field(aef_tif: Path):
    """The real tile with ragged 40 x 40 chunks and a 7 x 9 nodata patch."""
    da = open_embeddings(aef_tif).chunk({"y": 40, "x": 40})
    mask = np.ones((97, 97), bool)
    mask[30:37, 50:59] = False
    return da.where(da.copy(data=np.broadcast_to(mask, da.shape)))


@pytest.fixture(scope="module")
def vectors(field) -> tuple[np.ndarray, np.ndarray]:
    """(valid pixel vectors, their flat positions) of ``field``."""
    flat = field.values.reshape(64, -1).T
    valid = ~np.isnan(flat).any(axis=1)
    return flat[valid], np.flatnonzero(valid)


@pytest.fixture(scope="module")
def iowa(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(shared_data / "aef" / "dw_samples_2024_iowa_ag.csv")
    return df[BANDS].to_numpy(np.float32), df["dw_label"].to_numpy()


@pytest.fixture(scope="module")
def dm_kmeans(vectors) -> object:
    x, _ = vectors
    return dask_ml_cluster.KMeans(n_clusters=6, random_state=0).fit(
        dsa.from_array(x, chunks=(2000, 64))
    )


def _expected(pred: object, positions: np.ndarray, nodata: int = 255) -> np.ndarray:
    pred = np.asarray(pred.compute() if hasattr(pred, "compute") else pred)
    out = np.full(97 * 97, nodata, dtype=np.int64)
    out[positions] = pred
    return out.reshape(97, 97)


def test_dask_ml_kmeans_map_equals_its_predict(field, vectors, dm_kmeans, dask_client):
    x, pos = vectors
    own = dm_kmeans.predict(dsa.from_array(x, chunks=(3000, 64)))
    cmap = apply_estimator(field, dm_kmeans, output="class")
    assert cmap.dtype == np.uint8 and cmap.attrs["class_names"] == [str(i) for i in range(6)]
    np.testing.assert_array_equal(cmap.compute().values, _expected(own, pos))


def test_dask_results_are_computed_in_the_task(vectors, dm_kmeans, dask_client):
    from geoembed.classify.estimator import _call

    x, _ = vectors
    inner = dask_ml_wrappers.ParallelPostFit(dm_kmeans)  # its predict builds a dask graph
    got = dask_client.submit(_call, inner, "predict", x[:1024], pure=False).result()
    np.testing.assert_array_equal(got, dm_kmeans.predict(x[:1024]).compute())


def test_lazy_labels_do_not_travel_with_the_estimator(field, dm_kmeans):
    assert isinstance(dm_kmeans.labels_, dsa.Array)  # dask-ml keeps the training graph
    cmap = apply_estimator(field, dm_kmeans, output="class")
    graph_bytes = len(pickle.dumps(dict(cmap.data.__dask_graph__())))
    assert graph_bytes < len(pickle.dumps(dm_kmeans.labels_.__dask_graph__()))
    assert hasattr(dm_kmeans, "labels_")  # the user's model is left as it was


def test_geoembed_kmeans_from_dask_ml_same_map(field, vectors, dm_kmeans, tmp_path):
    x, pos = vectors
    model = KMeans.from_dask_ml(dm_kmeans, feature_names=BANDS)
    assert model.metric == "euclidean" and np.isnan(model.inertia_)  # dask-ml's is unsquared
    np.testing.assert_array_equal(model.cluster_centers_, dm_kmeans.cluster_centers_)
    expected = _expected(dm_kmeans.predict(x), pos)
    np.testing.assert_array_equal(model.predict(field).values, expected)
    # saving a dask-ml model directly keeps its centres (arrays + JSON, no pickle)
    save_model(dm_kmeans, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(field).values, expected)
    # from_centers: the same from bare centres; cosine normalises them
    bare = KMeans.from_centers(dm_kmeans.cluster_centers_, feature_names=BANDS)
    np.testing.assert_array_equal(bare.predict(field).values, expected)
    cos = KMeans.from_centers(dm_kmeans.cluster_centers_, metric="cosine")
    np.testing.assert_allclose(np.linalg.norm(cos.cluster_centers_, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ModelError, match="cluster_centers_"):
        KMeans.from_dask_ml(dask_ml_cluster.KMeans(3))
    with pytest.raises(ModelError, match=r"\(k, band\)"):
        KMeans.from_centers(np.zeros(5))


def test_parallel_post_fit_class_and_proba(field, vectors, iowa, dask_client):
    from sklearn.neighbors import KNeighborsClassifier

    x, pos = vectors
    xt, yt = iowa
    fitted = dask_ml_wrappers.ParallelPostFit(KNeighborsClassifier(5)).fit(xt, yt)
    # a fitted estimator wrapped afterwards (no fit on the wrapper) works too
    wrapped = dask_ml_wrappers.ParallelPostFit(KNeighborsClassifier(5).fit(xt, yt))
    xd = dsa.from_array(x, chunks=(2500, 64))
    own = np.searchsorted(fitted.classes_, fitted.predict(xd).compute())
    for est in (fitted, wrapped):
        cmap = apply_estimator(field, est, output="class").compute()
        np.testing.assert_array_equal(cmap.values, _expected(own, pos))
    proba = apply_estimator(field, wrapped, output="proba").compute().values
    own_p = wrapped.predict_proba(xd).compute()
    np.testing.assert_allclose(proba.reshape(len(fitted.classes_), -1)[:, pos].T, own_p)
    with pytest.raises(ModelError, match="not fitted"):
        apply_estimator(field, dask_ml_wrappers.ParallelPostFit(KNeighborsClassifier(5)))


def test_incremental_map_equals_its_predict(field, vectors, iowa):
    from sklearn.linear_model import SGDClassifier

    x, pos = vectors
    xt, yt = iowa
    inc = dask_ml_wrappers.Incremental(SGDClassifier(random_state=0), scoring="accuracy")
    inc.fit(dsa.from_array(xt, chunks=(240, 64)), dsa.from_array(yt, chunks=240), classes=range(9))
    own = np.searchsorted(inc.classes_, inc.predict(dsa.from_array(x, chunks=(2500, 64))).compute())
    cmap = apply_estimator(field, inc, output="class").compute(scheduler="threads")
    np.testing.assert_array_equal(cmap.values, _expected(own, pos))


def test_classify_cli_loads_pickled_dask_ml_model(aef_tif, dm_kmeans, tmp_path):
    import joblib

    joblib.dump(dm_kmeans, tmp_path / "km.joblib")
    out = tmp_path / "km.tif"
    args = ["--scheduler", "threads", "-q", "classify", str(aef_tif)]
    args += ["--model", str(tmp_path / "km.joblib"), "--allow-pickle", "-o", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    x = open_embeddings(aef_tif).values.reshape(64, -1).T
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1).ravel(), dm_kmeans.predict(x).compute())


def test_cluster_cli_engine_dask_ml(aef_tif, tmp_path, dask_cluster):
    from geoembed.cluster import cluster_field

    out = tmp_path / "c.tif"
    args = ["--scheduler", dask_cluster.scheduler_address, "-q", "cluster", str(aef_tif)]
    args += ["-k", "5", "--engine", "dask-ml", "-o", str(out), "--json"]
    args += ["--save-model", str(tmp_path / "model"), "--distance", str(tmp_path / "d.tif")]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["engine"] == "dask-ml" and summary["metric"] == "euclidean"
    assert sum(c["pixels"] for c in summary["clusters"]) == 97 * 97
    with rasterio.open(out) as src:
        written = src.read(1)
    # the same seed through the Python API gives the same dask-ml fit and map
    field = open_embeddings(aef_tif)
    result = cluster_field(field, 5, metric="euclidean", engine="dask-ml", seed=0)
    dm = result.extra["estimator"]
    x = field.values.reshape(64, -1).T
    np.testing.assert_array_equal(written.ravel(), dm.predict(x).compute())
    sse = np.sum((x.astype(np.float64) - dm.cluster_centers_[written.ravel()]) ** 2)
    assert summary["inertia"] == pytest.approx(sse, rel=1e-5)
    # the saved model holds dask-ml's centres and reproduces the map
    model = load_model(tmp_path / "model")
    np.testing.assert_array_equal(model.cluster_centers_, dm.cluster_centers_)
    np.testing.assert_array_equal(model.predict(field).values, written)


def test_cluster_cli_engine_dask_ml_refuses_cosine(aef_tif, tmp_path):
    out = tmp_path / "c.tif"
    args = ["--scheduler", "sync", "cluster", str(aef_tif), "-k", "3", "-o", str(out)]
    res = CliRunner().invoke(main, [*args, "--engine", "dask-ml", "--metric", "cosine"])
    assert res.exit_code == 2 and "Euclidean only" in res.output and not out.exists()


def test_dask_ml_maps_do_not_depend_on_chunking(field, dm_kmeans, iowa):
    from sklearn.neighbors import KNeighborsClassifier

    xt, yt = iowa
    ppf = dask_ml_wrappers.ParallelPostFit(KNeighborsClassifier(5)).fit(xt, yt)
    for est in (dm_kmeans, ppf):
        maps = [
            apply_estimator(field.chunk({"y": c, "x": c}), est).compute(scheduler="threads").values
            for c in (23, 97)
        ]
        np.testing.assert_array_equal(maps[0], maps[1])


def test_cluster_field_dask_ml_engine_keeps_nodata(field, vectors):
    from geoembed.cluster import cluster_field

    x, pos = vectors
    result = cluster_field(field, 4, metric="euclidean", engine="dask-ml", max_iter=5, seed=1)
    dm = result.extra["estimator"]
    assert dm.max_iter == 5 and dm.random_state == 1
    labels = result.labels.compute(scheduler="threads").values
    np.testing.assert_array_equal(labels, _expected(dm.predict(x), pos))
    assert result.labels.attrs["class_names"] == [f"cluster_{i}" for i in range(4)]
    dist = result.distance.compute(scheduler="threads").values
    assert np.isnan(dist[30:37, 50:59]).all() and not np.isnan(dist[:30]).any()
    with pytest.raises(ModelError, match="engine must be one of"):
        cluster_field(field, 4, metric="euclidean", engine="sklearn")
