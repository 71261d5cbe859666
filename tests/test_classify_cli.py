"""``geoembed classify`` end to end on the real Wisconsin field (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from sklearn.neighbors import KNeighborsClassifier

from geoembed.cli import main

BANDS = [f"A{i:02d}" for i in range(64)]


@pytest.fixture(scope="module")
def iowa_csv(shared_data: Path) -> Path:
    return shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"


def _run(args: list[str]) -> object:
    return CliRunner().invoke(main, ["--scheduler", "threads", "-q", *args])


def test_classify_wisconsin_equals_sklearn_and_reports_spatial_cv(
    aef_tif: Path, iowa_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "map.tif"
    rep = tmp_path / "r.json"
    res = _run(
        [
            "classify",
            str(aef_tif),
            "--training",
            str(iowa_csv),
            "--label-column",
            "dw_label",
            "-k",
            "5",
            "-o",
            str(out),
            "--report",
            str(rep),
            "--confidence",
            str(tmp_path / "conf.tif"),
            "--save-model",
            str(tmp_path / "model"),
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    from geoembed.io import open_embeddings

    field = open_embeddings(aef_tif)
    df = pd.read_csv(iowa_csv)
    ref = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(
        df[BANDS].to_numpy(np.float32), df["dw_label"].to_numpy()
    )
    expected = ref.predict(field.values.reshape(64, -1).T).reshape(97, 97)
    with rasterio.open(out) as src:
        written = src.read(1)
        assert src.nodata == 255 and src.crs.to_epsg() == 32616
    np.testing.assert_array_equal(written, expected)
    report = json.loads(rep.read_text())
    cv = report["cross_validation"]
    assert cv["scheme"].startswith("spatial")
    assert 0.4 < cv["pooled"]["overall_accuracy"] < 0.95
    assert summary["cross_validation"]["cv"] == cv["cv"]
    with rasterio.open(tmp_path / "conf.tif") as src:
        conf = src.read(1)
    assert np.all((conf >= 0.2) & (conf <= 1.0))

    # the saved model reproduces the map without labels
    again = tmp_path / "map2.tif"
    res = _run(["classify", str(aef_tif), "--model", str(tmp_path / "model"), "-o", str(again)])
    assert res.exit_code == 0, res.output
    with rasterio.open(again) as src:
        np.testing.assert_array_equal(src.read(1), expected)


def test_bad_requests_fail_before_computing(aef_tif: Path, iowa_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "map.tif"
    res = _run(
        [
            "classify",
            str(aef_tif),
            "--training",
            str(iowa_csv),
            "--label-column",
            "dw_label",
            "-k",
            "81",
            "-o",
            str(out),
        ]
    )
    assert res.exit_code == 2 and "smallest class" in res.output
    assert list(tmp_path.iterdir()) == []
    res = _run(["classify", str(aef_tif), "-o", str(out), "--label-column", "dw_label"])
    assert res.exit_code == 2 and "exactly one of" in res.output
    res = _run(["classify", str(aef_tif), "--training", str(iowa_csv), "-o", str(out)])
    assert res.exit_code == 2 and "--label-column" in res.output
    out.write_bytes(b"old")
    res = _run(
        [
            "classify",
            str(aef_tif),
            "--training",
            str(iowa_csv),
            "--label-column",
            "dw_label",
            "-o",
            str(out),
        ]
    )
    assert res.exit_code == 2 and "already exists" in res.output
    assert out.read_bytes() == b"old"
    res = _run(
        [
            "classify",
            str(aef_tif),
            "--training",
            str(iowa_csv),
            "--label-column",
            "dw_label",
            "-o",
            str(tmp_path / "missing" / "m.tif"),
        ]
    )
    assert res.exit_code == 2 and "does not exist" in res.output


def test_pickled_model_needs_allow_pickle(aef_tif: Path, iowa_csv: Path, tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    df = pd.read_csv(iowa_csv)
    est = LogisticRegression(max_iter=300).fit(df[BANDS].to_numpy(np.float32), df["dw_label"])
    joblib.dump(est, tmp_path / "lr.joblib")
    out = tmp_path / "lr.tif"
    res = _run(["classify", str(aef_tif), "--model", str(tmp_path / "lr.joblib"), "-o", str(out)])
    assert res.exit_code == 2 and "arbitrary code" in res.output and not out.exists()
    res = _run(
        [
            "classify",
            str(aef_tif),
            "--model",
            str(tmp_path / "lr.joblib"),
            "--allow-pickle",
            "-o",
            str(out),
            "--confidence",
            str(tmp_path / "c.tif"),
        ]
    )
    assert res.exit_code == 0, res.output
    from geoembed.io import open_embeddings

    vec = open_embeddings(aef_tif).values.reshape(64, -1).T
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1).ravel(), est.predict(vec))
