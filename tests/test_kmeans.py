"""geoembed.cluster.KMeans: agreement with scikit-learn, determinism, nodata, errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from sklearn.cluster import KMeans as SKKMeans
from sklearn.metrics import adjusted_rand_score

from geoembed.cluster import ClusterCountError, KMeans
from geoembed.errors import BandMismatchError, GeoembedError, ModelError
from geoembed.testing import InaccessibleArray, make_field, raise_if_dask_computes


def noisy_field(chunks=16, *, height=37, width=53, noise=0.35, seed=0, bottom_up=False):
    """make_field plus noise, so that k-means has real work to do (and no exact ties)."""
    f = make_field(height, width, chunks=None, n_classes=4, seed=seed, bottom_up=bottom_up)
    rng = np.random.default_rng(seed + 100)
    data = f.values + noise * rng.normal(size=f.shape).astype(np.float32)
    f = f.copy(data=data.astype(np.float32))
    return f if chunks is None else f.chunk({"band": -1, "y": chunks[0], "x": chunks[1]})


def valid_matrix(field: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    flat = field.values.reshape(field.sizes["band"], -1).T
    ok = ~np.isnan(flat).any(axis=1)
    return np.ascontiguousarray(flat[ok]), ok


def test_same_init_matches_sklearn_on_matrix():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(loc=i, size=(300, 8)) for i in range(5)]).astype(np.float32)
    init = x[rng.choice(len(x), 7, replace=False)]
    ours = KMeans(7, init=init, max_iter=300, tol=1e-4, inertia_tol=0).fit(x)
    ref = SKKMeans(7, init=init, n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4).fit(x)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-4)
    assert adjusted_rand_score(ref.labels_, ours.predict(x)) == 1.0
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
    np.testing.assert_allclose(ours.transform(x), ref.transform(x), rtol=1e-4, atol=1e-4)


def test_same_init_matches_sklearn_on_field_with_nodata():
    field = noisy_field((16, 16))
    x, ok = valid_matrix(field)
    init = x[np.random.default_rng(0).choice(len(x), 6, replace=False)]
    ours = KMeans(6, init=init, max_iter=300, inertia_tol=0).fit(field)
    ref = SKKMeans(6, init=init, n_init=1, algorithm="lloyd", max_iter=300).fit(x)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-5)
    labels = ours.predict(field).values.ravel()
    assert np.array_equal(
        labels[ok], ref.labels_
    )  # same init: identical ids, not just up to permutation
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("mode", ["lloyd", "sample", "minibatch"])
def test_invariant_to_chunking(metric, mode):
    fits = []
    maps = []
    for chunks in [(16, 16), (7, 30), (37, 53), None]:
        field = noisy_field(chunks)
        model = KMeans(
            6, metric=metric, mode=mode, random_state=5, sample_size=900, max_iter=15, n_init=1
        ).fit(field)
        fits.append(model.cluster_centers_)
        maps.append(model.predict(field).values)
    for centers, labels in zip(fits[1:], maps[1:]):
        assert np.array_equal(centers, fits[0])
        assert np.array_equal(labels, maps[0])


def test_same_seed_same_result_and_seed_matters():
    field = noisy_field((16, 16))
    a = KMeans(6, random_state=1).fit(field)
    b = KMeans(6, random_state=1).fit(field)
    c = KMeans(6, random_state=2, n_init=1, sample_size=200, max_iter=1).fit(field)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_threads_and_worker_processes_agree(dask_client):
    field = noisy_field((16, 16))
    on_cluster = KMeans(6, metric="cosine", random_state=3, max_iter=6).fit(field)
    labels_cluster = on_cluster.predict(field).compute().values
    import dask

    with dask.config.set(scheduler="threads"):
        # a different chunking on the in-process scheduler
        local_field = noisy_field((20, 9))
        local = KMeans(6, metric="cosine", random_state=3, max_iter=6).fit(local_field)
        labels_local = local.predict(local_field).compute(scheduler="threads").values
    assert np.array_equal(on_cluster.cluster_centers_, local.cluster_centers_)
    assert np.array_equal(labels_cluster, labels_local)


def test_nodata_stays_nodata_and_predict_is_lazy():
    field = noisy_field((16, 16))
    model = KMeans(5, random_state=0).fit(field)
    with raise_if_dask_computes():
        labels = model.predict(field)
        dist = model.distance(field)
        trans = model.transform(field)
    nan = np.isnan(field.values).any(axis=0)
    lab = labels.values
    assert labels.dtype == np.uint8 and labels.dims == ("y", "x")
    assert labels.rio.nodata == 255 and labels.rio.crs == field.rio.crs
    assert np.all(lab[nan] == 255) and np.all(lab[~nan] < 5)
    d = dist.values
    assert np.all(np.isnan(d[nan])) and np.all(d[~nan] >= 0)
    assert trans.dims == ("cluster", "y", "x") and trans.shape[0] == 5
    # the distance raster is the distance to the centre of the predicted cluster
    t = trans.values
    ii, jj = np.nonzero(~nan)
    np.testing.assert_allclose(t[lab[ii, jj], ii, jj], d[ii, jj], rtol=1e-5, atol=1e-6)


def test_cosine_is_spherical_kmeans():
    field = noisy_field((16, 16))
    x, ok = valid_matrix(field)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    init = xn[np.random.default_rng(1).choice(len(xn), 5, replace=False)]
    model = KMeans(5, metric="cosine", init=init, max_iter=100, tol=0, inertia_tol=0).fit(field)
    # reference spherical k-means in plain numpy
    c = init.astype(np.float64)
    for _ in range(100):
        lab = np.argmax(xn @ c.T, axis=1)
        new = np.stack([xn[lab == j].sum(axis=0) for j in range(5)])
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        if np.allclose(new, c, atol=0, rtol=0):
            break
        c = new
    np.testing.assert_allclose(np.linalg.norm(model.cluster_centers_, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(model.cluster_centers_, c, atol=1e-5)
    assert np.array_equal(model.predict(field).values.ravel()[ok], np.argmax(xn @ c.T, axis=1))


def test_k_larger_than_distinct_pixels_is_an_error_before_any_pass(monkeypatch):
    field = make_field(20, 20, chunks=8, n_classes=3, nodata_patch=True)
    x = field.values
    protos = x[:, 10, [0, 8, 19]]  # one vector per stripe
    stripe = (np.arange(20) * 3) // 20
    data = np.repeat(protos[:, stripe][:, None, :], 20, axis=1)
    data[:, 2:5, 3:7] = np.nan
    field = field.copy(data=data.astype(np.float32)).chunk({"band": -1, "y": 8, "x": 8})

    def no_pass(*args, **kwargs):
        raise AssertionError("a full pass ran before the error")

    monkeypatch.setattr("geoembed.cluster.kmeans.field_pass", no_pass)
    with pytest.raises(ClusterCountError, match="only 3 distinct"):
        KMeans(4, random_state=0).fit(field)
    # the same data with a valid k fits, and a geoembed-wide handler catches the error
    assert KMeans(3, mode="sample", random_state=0).fit(field).n_features_in_ == 64
    try:
        KMeans(4, random_state=0).fit(field)
    except GeoembedError as exc:
        assert "n_clusters <= 3" in str(exc)
    else:
        raise AssertionError("fit did not fail")


def test_k_larger_than_pixels_fails_without_reading():
    arr = xr.DataArray(
        InaccessibleArray((64, 3, 4), np.float32),
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(64)],
            "y": [3.0, 2.0, 1.0],
            "x": [0.0, 1, 2, 3],
        },
        name="embedding",
    )
    with pytest.raises(ClusterCountError, match="larger than the number of pixels"):
        KMeans(13).fit(arr)


def test_empty_cluster_is_reseeded_deterministically():
    field = noisy_field((16, 16))
    x, _ = valid_matrix(field)
    far = np.full((1, 64), 50.0, dtype=np.float32)
    init = np.concatenate([x[:4], far])
    a = KMeans(5, init=init, max_iter=50).fit(field)
    b = KMeans(5, init=init, max_iter=50).fit(noisy_field((9, 40)))
    assert np.all(a.counts_ > 0)
    assert np.abs(a.cluster_centers_).max() < 10
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)


def test_bottom_up_field_and_numpy_backed_field():
    up = noisy_field((16, 16), bottom_up=True)
    model = KMeans(4, random_state=0).fit(up)
    labels = model.predict(up)
    assert np.array_equal(labels["y"].values, up["y"].values)
    mem = noisy_field(None, bottom_up=True)
    assert np.array_equal(
        KMeans(4, random_state=0).fit(mem).cluster_centers_, model.cluster_centers_
    )


def test_minibatch_and_sample_modes_are_close_to_lloyd():
    field = noisy_field((16, 16), height=60, width=80)
    x, _ = valid_matrix(field)
    full = KMeans(6, random_state=0).fit(field)
    ref = -full.score(field)
    for mode in ("sample", "minibatch"):
        model = KMeans(6, mode=mode, random_state=0, batch_size=4096, max_iter=30).fit(field)
        assert -model.score(x) <= ref * 1.05


def test_parameter_and_band_errors():
    field = noisy_field((16, 16))
    with pytest.raises(ValueError, match="metric"):
        KMeans(3, metric="manhattan").fit(field)
    with pytest.raises(ValueError, match="mode"):
        KMeans(3, mode="elkan").fit(field)
    with pytest.raises(ModelError, match="shape"):
        KMeans(3, init=np.zeros((2, 64))).fit(field)
    with pytest.raises(ModelError, match="not fitted"):
        KMeans(3).predict(field)
    model = KMeans(3, random_state=0).fit(field)
    with pytest.raises(BandMismatchError):
        model.predict(field.isel(band=slice(0, 32)))
    with pytest.raises(BandMismatchError, match="differ"):
        model.predict(field.assign_coords(band=list(field["band"].values[::-1])))


def test_fit_predict_and_score_match():
    field = noisy_field((16, 16))
    model = KMeans(4, random_state=0, tol=0, inertia_tol=0, max_iter=50)
    labels = model.fit_predict(field)
    assert labels.shape == (37, 53)
    # the reported inertia is measured before the last update: an upper bound
    assert -model.score(field) <= model.inertia_ * (1 + 1e-7)
    assert -model.score(field) == pytest.approx(model.inertia_, rel=1e-6)


def test_clone_and_set_params_follow_scikit_learn():
    from sklearn.base import clone

    field = noisy_field((16, 16))
    init = valid_matrix(field)[0][:5]
    model = KMeans(5, metric="cosine", init=init, mode="sample", random_state=3)
    fitted = model.fit(field)
    twin = clone(fitted)
    assert not hasattr(twin, "cluster_centers_")  # clone is unfitted
    params = twin.get_params()
    assert params["n_clusters"] == 5 and params["metric"] == "cosine"
    assert params["init"] is not init and np.array_equal(params["init"], init)
    assert np.array_equal(twin.fit(field).cluster_centers_, fitted.cluster_centers_)
    # set_params changes what fit does; invalid values fail in fit, not before
    twin.set_params(n_clusters=3, init="k-means++")
    assert twin.fit(field).cluster_centers_.shape == (3, 64)
    bad = KMeans(5).set_params(metric="manhattan")
    with pytest.raises(ValueError, match="metric"):
        bad.fit(field)
    with pytest.raises(ValueError, match=r"[Ii]nvalid parameter"):
        twin.set_params(n_neighbours=3)


def test_unfitted_and_matrix_state():
    from sklearn.exceptions import NotFittedError as SKNotFitted
    from sklearn.utils.validation import check_is_fitted

    from geoembed.errors import NotFittedError

    x, _ = valid_matrix(noisy_field(None))
    model = KMeans(4, random_state=0)
    for method in (model.predict, model.transform, model.distance, model.score):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(x)
    with pytest.raises(SKNotFitted):
        check_is_fitted(model)
    model.fit(x)
    check_is_fitted(model)
    assert model.n_features_in_ == x.shape[1]
    assert np.array_equal(model.labels_, model.predict(x))
    assert model.labels_.shape == (len(x),) and set(model.labels_) == {0, 1, 2, 3}
    with pytest.raises(BandMismatchError, match="X has 63 features"):
        model.predict(x[:, 1:])
    # a later fit on a field drops the matrix's labels_ (they describe other data)
    model.fit(noisy_field((16, 16)))
    assert not hasattr(model, "labels_")
    with pytest.raises(ValueError, match=r"2D|matrix"):
        model.predict(x[0])
