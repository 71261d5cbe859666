"""KMeans models on disk (no pickle), cluster names, statistics, ARI, sampling."""

from __future__ import annotations

import json

import dask
import dask.array as dsa
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from geoembed.cluster import (
    KMeans,
    adjusted_rand_index,
    class_names,
    cluster_field,
    cluster_stats,
    parse_names,
)
from geoembed.cluster._init import draw_sample
from geoembed.errors import ModelError, OutputError, UnsafeModelError
from geoembed.jobs.model_io import load_kmeans as load_model
from geoembed.jobs.model_io import save_kmeans as save_model
from geoembed.testing import make_field


@pytest.fixture(scope="module")
def fitted():
    field = make_field(37, 53, chunks=16)
    return field, KMeans(4, metric="cosine", random_state=0).fit(field)


def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    field, model = fitted
    path = save_model(model, tmp_path / "m", names="0=water,3=forest")
    with np.load(path / "centers.npz", allow_pickle=False) as npz:
        assert npz["cluster_centers"].dtype == np.float32
    meta = json.loads((path / "model.json").read_text())
    assert meta["names"] == {"0": "water", "3": "forest"} and meta["bands"][0] == "A00"
    loaded = load_model(path)
    assert np.array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.metric == "cosine" and loaded.cluster_names_ == {0: "water", 3: "forest"}
    assert bool((loaded.predict(field) == model.predict(field)).all())
    with pytest.raises(OutputError, match="already exists"):
        save_model(model, path)
    save_model(model, path, overwrite=True)


def test_load_refuses_pickles_and_foreign_directories(tmp_path):
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeModelError, match="pickle"):
        load_model(pkl)
    with pytest.raises(ModelError, match=r"model\.json"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    np.savez(tmp_path / "centers.npz", cluster_centers=np.zeros((2, 2)))
    with pytest.raises(ModelError, match="format"):
        load_model(tmp_path)


def test_parse_names():
    assert parse_names("0=water, 3=forest", 4) == {0: "water", 3: "forest"}
    assert class_names(4, {1: "crops"}) == ["cluster_0", "crops", "cluster_2", "cluster_3"]
    for bad, msg in [
        ("0water", "ID=NAME"),
        ("x=water", "not an integer"),
        ("4=a", "outside"),
        ("1=a,1=b", "twice"),
    ]:
        with pytest.raises(ModelError, match=msg):
            parse_names(bad, 4)


def test_cluster_stats_counts_areas_and_means(fitted):
    field, model = fitted
    labels = model.predict(field)
    table = cluster_stats(labels, field, names=class_names(4, {0: "water"}))
    lab = labels.values
    valid = lab != 255
    assert table["pixels"].tolist() == [int((lab == i).sum()) for i in range(4)]
    assert table["pixels"].sum() == valid.sum()
    np.testing.assert_allclose(table["area_km2"], table["pixels"] * 10 * 10 / 1e6)
    x = field.values.reshape(64, -1)
    for i in range(4):
        np.testing.assert_allclose(
            table.loc[i, ["A00", "A01", "A63"]].to_numpy(dtype=float),
            x[[0, 1, 63]][:, lab.ravel() == i].mean(axis=1),
            rtol=1e-5,
        )
    assert table.loc[0, "name"] == "water"


def test_area_in_geographic_crs():
    field = make_field(10, 10, chunks=5, crs="EPSG:4326", origin=(10.0, 50.0), res=0.001)
    labels = KMeans(2, random_state=0).fit(field).predict(field)
    table = cluster_stats(labels)
    # one 0.001 deg cell near 50 N is about 111.2 m x 71.5 m
    per_pixel = table["area_km2"].sum() / table["pixels"].sum()
    assert per_pixel == pytest.approx(0.1112 * 0.0715, rel=0.01)


def test_adjusted_rand_index_matches_sklearn(fitted):
    field, _ = fitted
    result = cluster_field(field, 4, metric="cosine", seed=0, names="1=a")
    truth = result.labels.copy(
        data=((np.arange(53) * 4) // 53)[None, :].repeat(37, axis=0).astype(np.uint8)
    )
    pred = result.labels.values
    ok = pred != 255
    expected = adjusted_rand_score(truth.values[ok], pred[ok])
    assert adjusted_rand_index(result.labels, truth, n_truth=4) == pytest.approx(expected)
    assert result.class_names[1] == "a" and result.labels.attrs["class_names"][1] == "a"
    shuffled = truth.copy(
        data=np.random.default_rng(0).integers(0, 4, truth.shape).astype(np.uint8)
    )
    assert adjusted_rand_index(result.labels, shuffled, n_truth=4) < 0.05


def test_sample_reads_only_the_sampled_chunks():
    reads: list[tuple[int, int]] = []
    rng = np.random.default_rng(0)
    full = rng.normal(size=(8, 100, 100)).astype(np.float32)

    def block(block_id=None):
        _, iy, ix = block_id
        reads.append((iy, ix))
        return full[:, iy * 10 : (iy + 1) * 10, ix * 10 : (ix + 1) * 10]

    data = dsa.map_blocks(block, chunks=((8,), (10,) * 10, (10,) * 10), dtype=np.float32)
    with dask.config.set(scheduler="sync"):
        sample = draw_sample(data, 5, seed=1)
    assert sample.x.shape == (5, 8)
    assert 1 <= len(set(reads)) <= 5  # of 100 chunks
    rows, cols = sample.index // 100, sample.index % 100
    np.testing.assert_array_equal(sample.x, full[:, rows, cols].T)
    other = draw_sample(dsa.from_array(full, chunks=(8, 33, 7)), 5, seed=1)
    np.testing.assert_array_equal(other.index, sample.index)
