from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.neighbors import KNeighborsClassifier

from geoembed.assess import (
    accuracy_report,
    area_adjusted,
    cross_validate,
    format_report,
    make_folds,
    wilson_interval,
)
from geoembed.errors import LabelError
from geoembed.labels import TrainingSet, training_from_table
from geoembed.schema import aef_band_names

REGIONS = ("amazon_forest", "california_coast", "iowa_ag")


def _ts(n=300, n_classes=4, seed=0, xy=True, groups=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, 8)) + y[:, None]
    return TrainingSet(
        X=X,
        y=y,
        class_names=[f"c{i}" for i in range(n_classes)],
        class_values=list(range(n_classes)),
        colors=None,
        groups=np.arange(n) if groups is None else groups,
        xy=rng.uniform(0, 10_000, size=(n, 2)) if xy else None,
        ids=np.arange(n),
    )


def test_accuracy_report_matches_sklearn():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 5, 400)
    y_pred = np.where(rng.random(400) < 0.7, y_true, rng.integers(0, 4, 400))
    y_pred[y_pred == 4] = 3  # class "e" is never predicted: user's accuracy undefined
    names = ["a", "b", "c", "d", "e"]
    rep = accuracy_report(y_true, y_pred, class_names=names)
    json.dumps(rep)
    labels = list(range(5))
    np.testing.assert_array_equal(
        rep["confusion_matrix"], metrics.confusion_matrix(y_true, y_pred, labels=labels)
    )
    assert rep["overall_accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert rep["kappa"] == pytest.approx(metrics.cohen_kappa_score(y_true, y_pred))
    p, r, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=np.nan
    )
    for i, name in enumerate(names):
        pc = rep["per_class"][name]
        assert pc["producers_accuracy"] == pytest.approx(r[i])
        assert pc["f1"] == pytest.approx(f[i])
        assert pc["support"] == s[i]
        if np.isnan(p[i]):
            assert pc["users_accuracy"] is None and pc["users_accuracy_ci95"] is None
        else:
            assert pc["users_accuracy"] == pytest.approx(p[i])
            lo, hi = pc["users_accuracy_ci95"]
            assert lo <= p[i] <= hi
        lo, hi = pc["producers_accuracy_ci95"]
        assert lo <= r[i] <= hi
        if pc["f1_ci95"] is not None:
            assert pc["f1_ci95"][0] <= f[i] <= pc["f1_ci95"][1]
    lo, hi = rep["overall_accuracy_ci95"]
    assert lo < rep["overall_accuracy"] < hi
    assert rep["kappa_ci95"][0] < rep["kappa"] < rep["kappa_ci95"][1]
    text = format_report(rep)
    assert "overall accuracy" in text and "e" in text


def test_wilson_interval_known_values_and_weights():
    # 0 of 10: the upper bound is z^2 / (n + z^2)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.959964**2 / (10 + 1.959964**2), rel=1e-6)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi)
    # integer weights equal repeated samples
    rng = np.random.default_rng(0)
    yt, yp = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    w = rng.integers(1, 4, 50)
    weighted = accuracy_report(yt, yp, class_names=["a", "b", "c"], weights=w)
    repeated = accuracy_report(np.repeat(yt, w), np.repeat(yp, w), class_names=["a", "b", "c"])
    assert weighted["confusion_matrix"] == repeated["confusion_matrix"]
    assert weighted["kappa"] == pytest.approx(repeated["kappa"])
    with pytest.raises(LabelError, match="outside the class ids"):
        accuracy_report([0, 1], [0, 255], class_names=["a", "b"])


def test_folds_are_deterministic_stratified_and_keep_groups_whole():
    groups = np.repeat(np.arange(30), 10)
    ts = _ts(groups=groups)
    folds, info = make_folds(ts, "random:5", seed=1)
    again, _ = make_folds(ts, "random:5", seed=1)
    other, _ = make_folds(ts, "random:5", seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(300))
    counts = np.array([np.bincount(ts.y[f], minlength=4) for f in folds])
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()  # stratified

    folds, info = make_folds(ts, "spatial:5", seed=0)
    fold_of = np.empty(300, dtype=int)
    for i, f in enumerate(folds):
        fold_of[f] = i
    for g in range(30):
        assert np.unique(fold_of[groups == g]).size == 1  # a group is never split
    assert {f.size for f in folds} == {60}

    folds, info = make_folds(ts, "spatial_blocks:4:2500", seed=0)
    block = np.floor(ts.xy / 2500).astype(int)
    for i, f in enumerate(folds):
        fold_of[f] = i
    for b in np.unique(block, axis=0):
        members = (block == b).all(axis=1)
        assert np.unique(fold_of[members]).size == 1
    assert info["n_groups"] == 16

    (test,), info = make_folds(ts, "holdout:0.3", seed=0)
    assert 0.25 < test.size / 300 < 0.35
    with pytest.raises(LabelError, match="only 2 spatial groups"):
        make_folds(_ts(groups=np.repeat([0, 1], 150)), "spatial:5")
    with pytest.raises(LabelError, match="needs sample coordinates"):
        make_folds(_ts(xy=False), "spatial_blocks:5:100")
    with pytest.raises(LabelError, match=r"not understood|unknown scheme"):
        make_folds(ts, "kfold-5")


def test_cross_validate_pools_held_out_predictions():
    ts = _ts()
    rep = cross_validate(lambda: KNeighborsClassifier(5), ts, cv="random:5", seed=0)
    json.dumps(rep)
    assert rep["n_folds"] == 5 and sum(f["n_test"] for f in rep["folds"]) == 300
    # pooled accuracy equals a direct computation with the same folds
    folds, _ = make_folds(ts, "random:5", seed=0)
    pred = np.empty(300, dtype=int)
    for f in folds:
        train = np.setdiff1d(np.arange(300), f)
        pred[f] = KNeighborsClassifier(5).fit(ts.X[train], ts.y[train]).predict(ts.X[f])
    assert rep["pooled"]["overall_accuracy"] == pytest.approx(np.mean(pred == ts.y))
    assert "fold" in format_report(rep)


def _region_table(shared_data: Path) -> pd.DataFrame:
    files = [shared_data / "aef" / f"dw_samples_2024_{r}.csv" for r in REGIONS]
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def _knn():
    return KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute")


def test_spatial_cv_on_real_regions_is_lower_than_random(shared_data: Path, capsys):
    df = _region_table(shared_data)
    ts = training_from_table(
        df,
        aef_band_names(),
        label_column="dw_label",
        group_column="region",
        class_table="dynamic_world",
        on_conflict="keep",
    )
    assert ts.report["groups"] == list(REGIONS)
    spatial = cross_validate(_knn, ts, cv="spatial:3", seed=0)
    assert spatial["n_groups"] == 3
    held_out = {REGIONS[f["held_out_groups"][0]]: f["overall_accuracy"] for f in spatial["folds"]}
    assert sorted(held_out) == sorted(REGIONS)
    # the same figure computed directly: train on two regions, predict the third
    for region, oa in held_out.items():
        test = df["region"].to_numpy() == region
        X = df[aef_band_names()].to_numpy()
        pred = _knn().fit(X[~test], df["dw_label"][~test]).predict(X[test])
        assert oa == pytest.approx(np.mean(pred == df["dw_label"][test]))
    random_oa = {}
    for region in REGIONS:
        one = ts.subset(df["region"].to_numpy()[ts.ids] == region)
        random_oa[region] = cross_validate(_knn, one, cv="random:5", seed=0)[
            "overall_accuracy_mean"
        ]
    with capsys.disabled():
        rounded = {k: round(v, 3) for k, v in held_out.items()}
        print(f"\nheld-out-region OA (kNN k=5 cosine): {rounded}")
        rounded = {k: round(v, 3) for k, v in random_oa.items()}
        print(f"random 5-fold OA within region: {rounded}")
    # measured: ~0.36-0.45 per held-out region, ~0.67-0.74 within a region
    assert all(0.25 < a < 0.6 for a in held_out.values())
    assert all(0.6 < a < 0.85 for a in random_oa.values())
    assert np.mean(list(random_oa.values())) - np.mean(list(held_out.values())) > 0.15
    text = format_report({"spatial": spatial})
    assert "water" in text and "pooled" in text


def _olofsson_sample():
    # Olofsson et al. (2014), section 5 worked example: sample counts, rows = map class
    counts = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
    y_map, y_ref = [], []
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            y_map += [i] * c
            y_ref += [j] * c
    return np.array(counts, float), np.array(y_ref), np.array(y_map)


def test_area_adjusted_olofsson_example():
    counts, y_ref, y_map = _olofsson_sample()
    N = np.array([200_000, 150_000, 3_200_000, 6_450_000], float)  # 30 m pixels
    rep = area_adjusted(N, y_ref, y_map, pixel_area=0.09, class_names=["d", "g", "f", "nf"])
    json.dumps(rep)
    d = rep["per_class"]["d"]
    # figures published in the paper (ha, rounded)
    assert round(d["area"]) == 21_158
    assert round(1.96 * d["area_se"]) == 6_158
    assert round(rep["per_class"]["g"]["area"]) == 11_686
    assert round(rep["per_class"]["f"]["area"]) == 285_770
    assert round(rep["per_class"]["nf"]["area"]) == 581_386
    assert round(d["users_accuracy"], 2) == 0.88 and round(d["producers_accuracy"], 2) == 0.75
    assert round(rep["overall_accuracy"], 2) == 0.95
    assert round(1.96 * d["producers_accuracy_se"], 2) == 0.21

    # independent straightforward computation of every estimate
    W = N / N.sum()
    n_i = counts.sum(axis=1)
    A = N.sum() * 0.09
    for j, name in enumerate(["d", "g", "f", "nf"]):
        pc = rep["per_class"][name]
        p_j = sum(W[i] * counts[i, j] / n_i[i] for i in range(4))
        var = sum(
            W[i] ** 2 * (counts[i, j] / n_i[i]) * (1 - counts[i, j] / n_i[i]) / (n_i[i] - 1)
            for i in range(4)
        )
        assert pc["area"] == pytest.approx(A * p_j)
        assert pc["area_se"] == pytest.approx(A * np.sqrt(var))
        ua = counts[j, j] / n_i[j]
        assert pc["users_accuracy_se"] == pytest.approx(np.sqrt(ua * (1 - ua) / (n_i[j] - 1)))
        pa = W[j] * ua / p_j
        assert pc["producers_accuracy"] == pytest.approx(pa)
        Nj_hat = sum(N[i] * counts[i, j] / n_i[i] for i in range(4))
        v_pa = (
            N[j] ** 2 * (1 - pa) ** 2 * ua * (1 - ua) / (n_i[j] - 1)
            + pa**2
            * sum(
                N[i] ** 2 * counts[i, j] / n_i[i] * (1 - counts[i, j] / n_i[i]) / (n_i[i] - 1)
                for i in range(4)
                if i != j
            )
        ) / Nj_hat**2
        assert pc["producers_accuracy_se"] == pytest.approx(np.sqrt(v_pa))
    oa_var = sum(
        W[i] ** 2 * (counts[i, i] / n_i[i]) * (1 - counts[i, i] / n_i[i]) / (n_i[i] - 1)
        for i in range(4)
    )
    assert rep["overall_accuracy_se"] == pytest.approx(np.sqrt(oa_var))
    assert "adjusted area" in format_report(rep)
    with pytest.raises(LabelError, match="no reference sample"):
        area_adjusted([10, 10], [0, 0], [0, 0], pixel_area=1.0)


def test_accuracy_from_confusion_equals_per_sample_report():
    from geoembed.assess import accuracy_from_confusion, accuracy_report

    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 4, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 4, 500))
    names = ["a", "b", "c", "d"]
    per_sample = accuracy_report(y_true, y_pred, class_names=names)
    cm = np.zeros((4, 4))
    np.add.at(cm, (y_true, y_pred), 1)
    assert accuracy_from_confusion(cm, class_names=names) == per_sample
