"""The kNN search kernel and classifier: exactness against scikit-learn, ties, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import DataConversionWarning
from sklearn.neighbors import KNeighborsClassifier

import geoembed.classify.search as search_mod
from geoembed.classify import KNNClassifier
from geoembed.errors import LabelError, ModelError, NotFittedError

BANDS = [f"A{i:02d}" for i in range(64)]
#: documented distance tolerance against scikit-learn (module docstring of knn.py)
DIST_ATOL = 4 * 2.0**-23


def _dw(shared_data: Path, region: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(shared_data / "aef" / f"dw_samples_2024_{region}.csv")
    return df[BANDS].to_numpy(np.float32), df["dw_label"].to_numpy(np.int64)


@pytest.fixture(scope="module")
def dw(shared_data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {r: _dw(shared_data, r) for r in ("amazon_forest", "california_coast", "iowa_ag")}


def _clustered(n: int, seed: int, d: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(20, d))
    x = centres[rng.integers(0, 20, n)] + 0.7 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_equals_sklearn_brute_on_real_dw_points(dw, metric: str, weights: str) -> None:
    """Train on two regions, predict the third: identical to sklearn brute force."""
    for held_out in dw:
        train = [r for r in dw if r != held_out]
        X = np.concatenate([dw[r][0] for r in train])
        y = np.concatenate([dw[r][1] for r in train])
        Q, _ = dw[held_out]
        ref = KNeighborsClassifier(5, metric=metric, weights=weights, algorithm="brute").fit(X, y)
        model = KNNClassifier(5, metric=metric, weights=weights).fit(X, y)
        np.testing.assert_array_equal(model.predict(Q), ref.predict(Q))
        if weights == "uniform":  # vote shares: exact
            np.testing.assert_array_equal(model.predict_proba(Q), ref.predict_proba(Q))
        else:  # inverse-distance weights inherit the distances' tolerance
            np.testing.assert_allclose(model.predict_proba(Q), ref.predict_proba(Q), rtol=2e-6)
        d_ref, i_ref = ref.kneighbors(Q)
        d, i = model.kneighbors(Q)
        # the documented tolerance: scikit-learn rounds its float32 GEMM, geoembed the
        # exact score; a few float32 ulp of the similarity apart
        np.testing.assert_allclose(d, d_ref, rtol=0, atol=DIST_ATOL)
        # the regions hold a few duplicate vectors: equal up to which copy is named
        np.testing.assert_array_equal(X[i], X[i_ref])
        assert (i == i_ref).mean() > 0.99


@pytest.mark.parametrize("k", [1, 3, 10, 17])
def test_equals_sklearn_for_other_k_and_self_queries(dw, k: int) -> None:
    X, y = dw["iowa_ag"]  # holds exact duplicate vectors: zero distances, ties
    for weights in ("uniform", "distance"):
        ref = KNeighborsClassifier(k, weights=weights, metric="cosine", algorithm="brute")
        model = KNNClassifier(k, weights=weights).fit(X, y)
        np.testing.assert_array_equal(model.predict(X), ref.fit(X, y).predict(X))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_heap_path_and_argmax_path_agree_with_sklearn(monkeypatch, metric: str) -> None:
    """Large training sets use faiss's heap over NumPy scores; both paths are exact."""
    X = _clustered(6000, seed=1)
    y = np.random.default_rng(2).integers(0, 7, len(X))
    Q = _clustered(700, seed=3)
    ref = KNeighborsClassifier(5, metric=metric, algorithm="brute").fit(X, y)
    heap = KNNClassifier(5, metric=metric).fit(X, y)
    assert heap.index.heap is not None
    monkeypatch.setattr(search_mod, "_HEAP_MIN_TRAIN", 10**9)
    monkeypatch.setattr(search_mod, "_COL_TILE", 1024)
    passes = KNNClassifier(5, metric=metric).fit(X, y)
    assert passes.index.heap is None and len(passes.index.tiles) > 1
    expected = ref.kneighbors(Q)[1]
    np.testing.assert_array_equal(heap.kneighbors(Q)[1], expected)
    np.testing.assert_array_equal(passes.kneighbors(Q)[1], expected)
    np.testing.assert_array_equal(heap.predict(Q), ref.predict(Q))


def test_results_do_not_depend_on_query_batch_or_training_row_order() -> None:
    X = _clustered(900, seed=4)
    y = np.random.default_rng(5).integers(0, 5, len(X))
    Q = _clustered(600, seed=6)
    model = KNNClassifier(5, weights="distance").fit(X, y)
    full = model.pixel_outputs(Q, probabilities=True)
    parts = np.concatenate([model.pixel_outputs(Q[a : a + 7], True) for a in range(0, 600, 7)])
    assert full.tobytes() == parts.tobytes()
    perm = np.random.default_rng(7).permutation(len(X))
    shuffled = KNNClassifier(5, weights="distance").fit(X[perm], y[perm])
    assert shuffled.pixel_outputs(Q, True).tobytes() == full.tobytes()
    d, i = shuffled.kneighbors(Q)
    d0, i0 = model.kneighbors(Q)
    np.testing.assert_array_equal(perm[i], i0)  # indices refer to the caller's rows
    np.testing.assert_array_equal(d, d0)


def test_exact_ties_are_broken_by_canonical_order_not_row_order() -> None:
    """Duplicate training vectors with different labels: the same winner whatever the order."""
    rng = np.random.default_rng(8)
    base = _clustered(50, seed=9)
    X = np.concatenate([base, base[:10], base[:10]])
    y = np.concatenate([rng.integers(0, 3, 50), np.full(10, 3), np.full(10, 4)])
    Q = base[:10] + 0.0
    outs = []
    for seed in range(4):
        perm = np.random.default_rng(seed).permutation(len(X))
        m = KNNClassifier(2, weights="uniform").fit(X[perm], y[perm])
        outs.append(m.predict(Q))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_vote_ties_go_to_the_lowest_class_id() -> None:
    # two training points symmetric around the query: equal distances, one vote each
    X = np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.0], [-1.0, 0.01]], np.float32)
    y = np.array([2, 1, 0, 0])
    model = KNNClassifier(2, metric="euclidean").fit(X, y, allow_small_classes=True)
    pred = model.predict(np.array([[1.0, 0.0]], np.float32))
    assert pred.tolist() == [1]
    out = model.pixel_outputs(np.array([[1.0, 0.0]], np.float32))
    assert out[0, 1] == pytest.approx(0.5)


@pytest.mark.parametrize(("k", "n_classes"), [(1, 3), (5, 2), (5, 9), (7, 40), (15, 16), (33, 5)])
def test_uniform_votes_match_a_count_table(k: int, n_classes: int) -> None:
    # every tie pattern of k neighbours among few classes: the most votes win, equal
    # votes go to the lowest class id, the share is votes / k (pairwise counting path,
    # and the count table above _PAIR_VOTE_MAX_K)
    rng = np.random.default_rng(k * 100 + n_classes)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    y = np.arange(400) % n_classes
    model = KNNClassifier(k).fit(X, y, allow_small_classes=True)
    ind = rng.integers(0, 400, (5000, k))
    ind[:50] = ind[:50, :1]  # unanimous rows
    counts = np.zeros((len(ind), n_classes), np.int64)
    np.add.at(counts, (np.arange(len(ind))[:, None], model.y_[ind]), 1)
    _, pred, share = model._count_votes(None, ind, need_counts=False)
    np.testing.assert_array_equal(pred, counts.argmax(axis=1))
    np.testing.assert_array_equal(share, counts.max(axis=1) / k)
    assert pred.dtype == np.int64 and share.dtype == np.float64


def test_confidence_is_the_winning_vote_share() -> None:
    X = _clustered(300, seed=10)
    y = np.random.default_rng(11).integers(0, 4, 300)
    Q = _clustered(200, seed=12)
    model = KNNClassifier(5).fit(X, y)
    out = model.pixel_outputs(Q, probabilities=True)
    proba = model.predict_proba(Q)
    np.testing.assert_array_equal(out[:, 0], model.predict(Q))
    np.testing.assert_allclose(out[:, 1], proba.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(out[:, 2:].sum(axis=1), 1.0, rtol=1e-6)
    assert set(np.round(out[:, 1] * 5, 4)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_k_larger_than_smallest_class_is_a_label_error() -> None:
    X = _clustered(30, seed=13)
    y = np.array([0] * 27 + [1] * 3)
    with pytest.raises(LabelError, match="smallest class"):
        KNNClassifier(5).fit(X, y, class_names=["crops", "water"])
    with pytest.raises(LabelError, match="'water' \\(3\\)"):
        KNNClassifier(5).fit(X, y, class_names=["crops", "water"])
    KNNClassifier(5).fit(X, y, allow_small_classes=True)  # explicit opt-in


def test_bad_training_data_is_rejected() -> None:
    X = _clustered(20, seed=14)
    y = np.zeros(20, np.int64)
    with pytest.raises(LabelError, match="only 20 training vectors"):
        KNNClassifier(25).fit(X, y)
    Xn = X.copy()
    Xn[3, 5] = np.nan
    with pytest.raises(LabelError, match="NaN"):
        KNNClassifier(3).fit(Xn, y)
    with pytest.raises(LabelError, match="Unknown label type"):
        KNNClassifier(3).fit(X, np.linspace(0.0, 1.0, 20))  # a regression target
    with pytest.raises(LabelError, match="requires y"):
        KNNClassifier(3).fit(X, None)
    with pytest.raises(ModelError, match="NaN or inf"):
        KNNClassifier(3).fit(X, y).predict(Xn)
    with pytest.raises(ModelError, match="metric"):
        KNNClassifier(3, metric="manhattan").fit(X, y)  # scikit-learn: validated in fit
    with pytest.raises(ModelError, match="n_neighbors"):
        KNNClassifier(0).fit(X, y)
    with pytest.raises(NotFittedError, match="not fitted"):
        KNNClassifier(3).predict(X)
    with pytest.raises(ModelError, match="length 64"):
        KNNClassifier(3).fit(X, y).predict(X[:, :10])


def test_zero_vectors_and_tiny_query_batches() -> None:
    X = _clustered(100, seed=15)
    X[0] = 0.0
    y = np.random.default_rng(16).integers(0, 3, 100)
    Q = np.concatenate([np.zeros((1, 64), np.float32), _clustered(2, seed=17)])
    ref = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(X, y)
    model = KNNClassifier(5).fit(X, y)
    np.testing.assert_array_equal(model.predict(Q[1:]), ref.predict(Q[1:]))
    np.testing.assert_array_equal(model.kneighbors(Q[1:])[1], ref.kneighbors(Q[1:])[1])
    # a zero query is at cosine distance 1 from everything: the k lowest rows win
    dist, ind = model.kneighbors(Q[:1])
    assert np.all(dist == 1.0)
    np.testing.assert_array_equal(np.sort(model.rows_[:5]), np.sort(ind[0]))


def _noisy_scores(monkeypatch, seed: int) -> None:
    """Make the float32 candidate GEMM round differently on every call.

    Each score is moved by up to 90 % of the proven error bound, far more than any BLAS
    kernel does: the outputs must not change at all, because only candidates come from
    the GEMM and every decision is re-computed exactly.
    """
    original = search_mod.ExactIndex._scores
    rng = np.random.default_rng(seed)

    def noisy(self, Qb: np.ndarray, a: int, b: int) -> np.ndarray:
        S = original(self, Qb, a, b)
        qn = np.sqrt(np.einsum("ij,ij->i", Qb.astype(np.float64), Qb.astype(np.float64)))
        scale = qn * self.xmax + (0.5 * self.xmax**2 if self.metric == "euclidean" else 0.0)
        bound = self.err_unit * scale[:, None]
        S += (rng.uniform(-0.9, 0.9, S.shape) * bound).astype(np.float32)
        return S

    monkeypatch.setattr(search_mod.ExactIndex, "_scores", noisy)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("path", ["argmax", "tiles", "heap"])
def test_outputs_do_not_depend_on_gemm_rounding_or_batch_shape(
    monkeypatch, dw, metric: str, path: str
) -> None:
    """Kernel-shape-dependent rounding (AVX2 vs AVX-512, batch shape) cannot change a bit."""
    if path == "heap":
        X = _clustered(5000, seed=21)
        y = np.random.default_rng(22).integers(0, 6, len(X))
        X[100:140] = X[:40]  # exact duplicates with other labels: boundary ties
    else:
        X, y = dw["iowa_ag"]  # real vectors with exact duplicates
    Q = np.concatenate([X[:300], _clustered(300, seed=23)])
    if path == "tiles":
        monkeypatch.setattr(search_mod, "_COL_TILE", 256)

    def outputs() -> tuple[bytes, bytes, bytes]:
        model = KNNClassifier(5, metric=metric, weights="distance").fit(X, y)
        assert (model.index.heap is not None) == (path == "heap")
        assert (len(model.index.tiles) > 1) == (path == "tiles")
        d, i = model.kneighbors(Q)
        return d.tobytes(), i.tobytes(), model.pixel_outputs(Q, probabilities=True).tobytes()

    clean = outputs()
    for seed, rows in enumerate((1, 7, 1000, 4097)):
        with monkeypatch.context() as mp:
            _noisy_scores(mp, seed)
            original_init = search_mod.ExactIndex.__init__

            def init(self, *args, _rows=rows, _init=original_init) -> None:
                _init(self, *args)
                self.query_rows = _rows

            mp.setattr(search_mod.ExactIndex, "__init__", init)
            assert outputs() == clean, f"outputs changed with query batch {rows} and GEMM noise"


def test_scikit_learn_estimator_contract(dw) -> None:
    """get_params/set_params, clone, cross_val_score, NotFittedError, n_features_in_."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError as SkNotFitted
    from sklearn.model_selection import cross_val_score
    from sklearn.utils.validation import check_is_fitted

    X, y = dw["iowa_ag"]
    model = KNNClassifier(7, metric="euclidean", weights="distance")
    assert model.get_params() == {
        "n_neighbors": 7,
        "metric": "euclidean",
        "weights": "distance",
        "allow_small_classes": False,
    }
    twin = clone(model).set_params(n_neighbors=3)
    assert twin.n_neighbors == 3 and model.n_neighbors == 7
    with pytest.raises(SkNotFitted):
        check_is_fitted(model)
    with pytest.raises(AttributeError):  # scikit-learn's NotFittedError contract
        model.predict(X)
    scores = cross_val_score(KNNClassifier(5), X, y, cv=3)
    ref = cross_val_score(KNeighborsClassifier(5, metric="cosine", algorithm="brute"), X, y, cv=3)
    np.testing.assert_allclose(scores, ref)
    fitted = clone(model).fit(X, y)
    assert fitted.n_features_in_ == 64
    np.testing.assert_array_equal(fitted.classes_, np.arange(fitted.n_classes))
    with pytest.warns(DeprecationWarning, match="n_neighbors"):
        old = KNNClassifier(k=4)
    assert old.n_neighbors == 4 and old.k == 4


def test_any_discrete_labels_are_encoded_like_scikit_learn() -> None:
    X = _clustered(300, seed=31)
    ids = np.random.default_rng(32).integers(0, 3, 300)
    Q = _clustered(50, seed=33)
    by_id = KNNClassifier(5).fit(X, ids)
    np.testing.assert_array_equal(by_id.classes_, [0, 1, 2])
    assert by_id.class_values is None and by_id.class_names == ["0", "1", "2"]
    for labels in (np.array(["water", "trees", "crops"])[ids], ids * 10 - 7, ids.astype(float)):
        model = KNNClassifier(5).fit(X, labels)
        ref = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(X, labels)
        np.testing.assert_array_equal(model.classes_, ref.classes_)
        np.testing.assert_array_equal(model.predict(Q), ref.predict(Q))
        np.testing.assert_allclose(model.predict_proba(Q), ref.predict_proba(Q))
        # the internal ids (and so class maps) are positions in classes_
        np.testing.assert_array_equal(model.classes_[model.y_], labels[model.rows_])
        ids_out = model.pixel_outputs(Q)[:, 0].astype(np.int64)
        np.testing.assert_array_equal(model.classes_[ids_out], model.predict(Q))
        assert model.class_values == model.classes_.tolist()
    with pytest.warns(DataConversionWarning):
        col = KNNClassifier(5).fit(X, ids[:, None])
    np.testing.assert_array_equal(col.predict(Q), by_id.predict(Q))


def test_deprecated_k_keyword_and_index_built_at_fit() -> None:
    from sklearn.base import clone

    with pytest.warns(DeprecationWarning, match="n_neighbors"):
        model = KNNClassifier(k=7)
    assert model.n_neighbors == 7 and model.k == 7 and "k" not in model.get_params()
    with pytest.warns(DeprecationWarning, match="n_neighbors"):
        model.set_params(k=3)
    assert model.get_params()["n_neighbors"] == 3 and clone(model).n_neighbors == 3
    X = _clustered(60, seed=34)
    y = np.random.default_rng(35).integers(0, 2, 60)
    model.fit(X, y)
    before = dict(model.__dict__)
    model.predict(X[:5])
    assert model.__dict__ == before  # the search index exists from fit on
