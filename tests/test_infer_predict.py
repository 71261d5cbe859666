"""geoembed.infer.predict: seam-free exactness, outputs, nodata, strided grids."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnxruntime as ort

from geoembed.infer import SeamWarning, predict, write_sidecar
from geoembed.infer.models import conv_stack, patch_classifier, strided_fcn
from geoembed.schema import check_embedding
from geoembed.testing import make_field, raise_if_dask_computes

DEPTH = 3  # receptive radius of the conv stack
BANDS = 8


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("models")
    return conv_stack(d / "conv.onnx", bands=BANDS, depth=DEPTH, features=True, seed=3)


def _session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def whole_image(path: str, field: xr.DataArray, halo: int) -> dict[str, np.ndarray]:
    """The model run once on the whole (reflect-padded, NaN-filled) image."""
    x = field.values.astype(np.float32)
    nodata = np.isnan(x).any(axis=0)
    x = np.nan_to_num(x, nan=0.0)
    x = np.pad(x, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")[None]
    logits, feats = _session(path).run(["logits", "features"], {"input": x})
    crop = (slice(None), slice(None), slice(halo, -halo or None), slice(halo, -halo or None))
    probs = _softmax(logits[crop].astype(np.float32))[0]
    feats = feats[crop][0]
    probs[:, nodata] = np.nan
    feats[:, nodata] = np.nan
    return {"probabilities": probs, "features": feats, "nodata": nodata}


FIELD_CASES = [
    pytest.param(dict(chunks=16), 24, id="chunks16-tile24"),
    pytest.param(dict(chunks=(23, 41)), 40, id="chunks23x41-tile40"),
    pytest.param(dict(chunks=(70, 13)), 16, id="chunks70x13-tile16"),
    pytest.param(dict(chunks=None), 256, id="numpy-tile256"),
    pytest.param(dict(chunks=32, bottom_up=True), 24, id="bottom-up"),
]


@pytest.mark.parametrize(("kwargs", "tile"), FIELD_CASES)
def test_chunked_equals_whole_image_bit_for_bit(conv_model: str, kwargs: dict, tile: int) -> None:
    field = make_field(70, 90, bands=BANDS, seed=1, **kwargs)
    ref = whole_image(conv_model, field, DEPTH)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeamWarning)
        ds = predict(
            field,
            conv_model,
            tile=tile,
            overlap=DEPTH,
            batch_size=3,
            output=["classes", "probabilities", "features"],
        )
    out = ds.compute(scheduler="threads")
    np.testing.assert_array_equal(out["probabilities"].values, ref["probabilities"])
    np.testing.assert_array_equal(out["features"].values, ref["features"])
    cls = out["classes"].values
    assert cls.dtype == np.uint8
    assert (cls[ref["nodata"]] == 255).all()
    valid = ~ref["nodata"]
    np.testing.assert_array_equal(cls[valid], np.argmax(ref["probabilities"][:, valid], axis=0))
    assert np.isnan(out["confidence"].values[ref["nodata"]]).all()
    np.testing.assert_array_equal(
        out["confidence"].values[valid], ref["probabilities"][:, valid].max(axis=0)
    )
    assert ds["classes"].rio.crs == field.rio.crs
    assert ds["classes"].rio.transform() == field.rio.transform()


@pytest.mark.parametrize("blend", ["none", "cosine"])
def test_threads_and_worker_processes_agree(
    conv_model: str, dask_client: object, blend: str
) -> None:
    field = make_field(70, 90, bands=BANDS, chunks=(29, 37), seed=2)
    ref = whole_image(conv_model, field, DEPTH)
    ds = predict(
        field,
        conv_model,
        tile=32,
        overlap=DEPTH if blend == "none" else 2 * DEPTH,
        blend=blend,
        output=["classes", "probabilities", "features"],
    )
    on_workers = ds.compute()  # the dask_client fixture: 2 single-threaded worker processes
    threaded = ds.compute(scheduler="threads")
    for var in ("classes", "confidence", "probabilities", "features"):
        assert on_workers[var].values.tobytes() == threaded[var].values.tobytes(), var
    if blend == "none":
        np.testing.assert_array_equal(on_workers["probabilities"].values, ref["probabilities"])


def test_too_small_overlap_is_reported_and_really_seams(conv_model: str, tmp_path) -> None:
    field = make_field(70, 90, bands=BANDS, chunks=16, seed=1)
    # detected by the perturbation probe (no sidecar)
    with pytest.warns(SeamWarning, match="receptive radius of 3"):
        probs = predict(field, conv_model, tile=24, overlap=1, output="probabilities")[
            "probabilities"
        ]
    ref = whole_image(conv_model, field, DEPTH)["probabilities"]
    assert not np.array_equal(probs.values, ref, equal_nan=True)
    # declared in the sidecar
    cfg = write_sidecar(tmp_path / "conv.json", receptive_radius=5)
    with pytest.warns(SeamWarning, match="declares a receptive radius of 5"):
        predict(field, conv_model, model_config=cfg, tile=24, overlap=3)


def test_no_compute_until_asked(conv_model: str) -> None:
    field = make_field(40, 50, bands=BANDS, chunks=16)
    with raise_if_dask_computes():
        ds = predict(field, conv_model, tile=24, overlap=DEPTH, output=["classes", "features"])
    assert ds["classes"].chunks is not None


def test_features_are_an_embedding_field(conv_model: str) -> None:
    field = make_field(40, 50, bands=BANDS, chunks=16)
    feats = predict(field, conv_model, tile=24, overlap=DEPTH, output="features")["features"]
    assert feats.name == "features"
    check_embedding(feats.rename("embedding"), bands=[f"F{i:03d}" for i in range(16)])
    values = feats.values
    assert np.isnan(values[:, 2:5, 3:7]).all()  # make_field's nodata patch
    assert not np.isnan(values[:, 10:, 10:]).any()


def test_features_cluster_with_kmeans(conv_model: str) -> None:
    cluster = pytest.importorskip("geoembed.cluster")
    field = make_field(40, 50, bands=BANDS, chunks=16)
    feats = predict(field, conv_model, tile=24, overlap=DEPTH, output="features")["features"]
    labels = cluster.KMeans(n_clusters=3, random_state=0).fit(feats).predict(feats)
    vals = np.asarray(labels.values)
    assert vals.shape == (40, 50)
    assert (vals[2:5, 3:7] == 255).all()
    assert len(np.unique(vals[vals != 255])) == 3


def test_sidecar_bands_normalisation_and_class_names(tmp_path) -> None:
    path = conv_stack(tmp_path / "m.onnx", bands=3, depth=2, n_classes=2, seed=5)
    field = make_field(30, 40, bands=6, chunks=16, seed=4)
    wanted = ["F004", "F001", "F002"]
    mean, std = [0.1, -0.2, 0.05], [0.5, 2.0, 1.5]
    write_sidecar(
        tmp_path / "m.json",
        bands=wanted,
        mean=mean,
        std=std,
        classes=["water", "land"],
        colors=["#0000ff", "#00ff00"],
    )
    out = predict(field, path, tile=32, overlap=2, output="probabilities")[
        "probabilities"
    ]  # auto sidecar
    assert list(out["class"].values) == ["water", "land"]
    x = field.sel(band=wanted).values
    x = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    nodata = np.isnan(x).any(axis=0)
    x = np.pad(np.nan_to_num(x, nan=0.0), ((0, 0), (2, 2), (2, 2)), mode="symmetric")
    logits = _session(path).run(None, {"input": x[None].astype(np.float32)})[0]
    ref = _softmax(logits[:, :, 2:-2, 2:-2])[0]
    ref[:, nodata] = np.nan
    np.testing.assert_array_equal(out.values, ref)


def test_strided_model_grid(tmp_path) -> None:
    path = strided_fcn(tmp_path / "s.onnx", bands=BANDS, stride=4, n_classes=3)
    for bottom_up in (False, True):
        field = make_field(70, 90, bands=BANDS, chunks=(20, 28), bottom_up=bottom_up, seed=6)
        out = predict(field, path, tile=32, overlap=4, output="probabilities")["probabilities"]
        assert out.shape == (3, 18, 23)  # ceil(70/4), ceil(90/4)
        t, to = field.rio.transform(), out.rio.transform()
        assert (to.a, to.e, to.c, to.f) == (4 * t.a, 4 * t.e, t.c, t.f)
        assert out["x"].values[0] == pytest.approx(t.c + 2 * t.a)
        assert out["y"].values[0] == pytest.approx(t.f + 2 * t.e)
        # each output pixel is the model on its own 4 x 4 footprint
        x = np.nan_to_num(field.values, nan=0.0)
        x = np.pad(x, ((0, 0), (0, 2), (0, 2)), mode="symmetric")[None]
        ref = _softmax(_session(path).run(None, {"input": x})[0])[0]
        vals = out.values
        valid = ~np.isnan(vals[0])
        np.testing.assert_array_equal(vals[:, valid], ref[:, valid])
        assert valid.all()  # the 3 x 4 nodata patch never covers a whole 4 x 4 footprint


def test_patch_classifier_grid(tmp_path) -> None:
    path = patch_classifier(tmp_path / "p.onnx", bands=BANDS, size=20, n_classes=43)
    field = make_field(70, 90, bands=BANDS, chunks=40, seed=7, nodata_patch=False)
    ds = predict(field, path, batch_size=4)  # tile and overlap come from the model
    cls = ds["classes"]
    assert cls.shape == (4, 5)
    t, to = field.rio.transform(), cls.rio.transform()
    assert (to.a, to.e, to.c, to.f) == (20 * t.a, 20 * t.e, t.c, t.f)
    sess = _session(path)
    patch = field.values[:, 20:40, 40:60][None]
    expect = int(np.argmax(sess.run(None, {"input": patch})[0][0]))
    assert int(cls.values[1, 2]) == expect


def test_nodata_block_stays_nodata(conv_model: str) -> None:
    field = make_field(40, 50, bands=BANDS, chunks=16)
    field = field.where(field["x"] > field["x"][20])  # left 21 columns nodata
    ds = predict(field, conv_model, tile=24, overlap=DEPTH).compute()
    assert (ds["classes"].values[:, :21] == 255).all()
    assert (ds["classes"].values[:, 21:] != 255).all()


@pytest.mark.parametrize("blend", ["linear", "cosine"])
def test_blending_is_exact_for_a_translation_exact_model(conv_model: str, blend: str) -> None:
    field = make_field(70, 90, bands=BANDS, chunks=35, seed=1)
    ref = whole_image(conv_model, field, 8)["probabilities"]
    out = predict(field, conv_model, tile=40, overlap=8, blend=blend, output="probabilities")[
        "probabilities"
    ]
    # weighted averages of identical tile values: equal up to rounding
    np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=1e-6)


def test_uint8_probabilities(conv_model: str) -> None:
    field = make_field(40, 50, bands=BANDS, chunks=16)
    kw = dict(tile=24, overlap=DEPTH, output="probabilities")
    p32 = predict(field, conv_model, **kw)["probabilities"].values
    p8 = predict(field, conv_model, probabilities_dtype="uint8", **kw)["probabilities"]
    assert p8.dtype == np.uint8 and p8.rio.nodata == 255
    vals = p8.values
    assert (vals[:, 2:5, 3:7] == 255).all()
    ok = ~np.isnan(p32)
    np.testing.assert_array_equal(vals[ok], np.rint(p32[ok] * 254).astype(np.uint8))
    np.testing.assert_allclose(vals[ok] * p8.attrs["probability_scale"], p32[ok], atol=0.5 / 254)


def _advice(record: pytest.WarningsRecorder) -> str:
    (w,) = [w for w in record if issubclass(w.category, SeamWarning)]
    return str(w.message)


def test_seam_advice_for_a_dynamic_model_is_accepted(conv_model: str) -> None:
    import re

    field = make_field(70, 90, bands=BANDS, chunks=32, seed=1)
    with pytest.warns(SeamWarning) as record:
        predict(field, conv_model, tile=16, overlap=1)
    found = re.search(
        r"overlap=(\d+), tile=(\d+) \(CLI: --overlap \d+ --tile \d+\)", _advice(record)
    )
    assert found is not None, _advice(record)
    overlap, tile = int(found[1]), int(found[2])
    assert overlap >= DEPTH and tile > 2 * overlap
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = predict(field, conv_model, tile=tile, overlap=overlap, output="probabilities")
    ref = whole_image(conv_model, field, DEPTH)["probabilities"]
    np.testing.assert_array_equal(probs["probabilities"].values, ref)


@pytest.mark.parametrize("overlap", [0, 2])
def test_seam_advice_for_a_fixed_size_model_is_accepted(tmp_path, overlap: int) -> None:
    import re

    # receptive radius 9 cannot fit twice in a 16-pixel tile: blending is the way
    path = conv_stack(tmp_path / "fixed.onnx", bands=BANDS, depth=9, fixed_size=16, seed=2)
    field = make_field(40, 50, bands=BANDS, chunks=16, seed=1)
    with pytest.warns(SeamWarning) as record:
        predict(field, path, overlap=overlap)
    advice = _advice(record)
    assert "tile=" not in advice.replace("tile=16", "")
    found = re.search(r"(?:overlap=(\d+), )?blend='cosine', step=(\d+) \(CLI: ", advice)
    assert found is not None, advice
    kw = dict(blend="cosine", step=int(found[2]), overlap=int(found[1] or overlap))
    assert kw["overlap"] >= overlap and kw["step"] >= 16 // 2  # a useful overlap and step
    assert f"--blend cosine --step {kw['step']}" in advice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = predict(field, path, **kw).compute(scheduler="threads")
    assert (ds["classes"].values[10:, 10:] != 255).all()


def test_two_models_in_one_graph_keep_their_own_results(conv_model: str, tmp_path) -> None:
    import dask

    other = conv_stack(tmp_path / "other.onnx", bands=BANDS, depth=DEPTH, features=True, seed=4)
    field = make_field(70, 90, bands=BANDS, chunks=32, seed=2)
    kw = dict(tile=24, overlap=DEPTH, output=["classes", "probabilities", "features"])
    a, b = predict(field, conv_model, **kw), predict(field, other, **kw)
    names = {v.data.name for v in a.data_vars.values()}
    assert names.isdisjoint(v.data.name for v in b.data_vars.values())
    together = dask.compute(a, b, scheduler="threads")
    solo = [a.compute(scheduler="sync"), b.compute(scheduler="sync")]
    for joint, alone in zip(together, solo):
        for var in alone.data_vars:
            assert joint[var].values.tobytes() == alone[var].values.tobytes()
    assert not np.array_equal(solo[0]["probabilities"].values, solo[1]["probabilities"].values)
    # same inputs, same names: the graph is deterministic
    again = predict(field, conv_model, **kw)
    assert {v.data.name for v in again.data_vars.values()} == names


@pytest.mark.parametrize("blend", ["none", "linear", "cosine"])
def test_chunking_never_changes_a_byte_even_with_tile_seams(tmp_path, blend: str) -> None:
    # receptive radius 6 > overlap 2: tile edges differ from a whole-image run, but the
    # tiles are the same whatever the blocks, so every chunking gives the same bytes
    path = conv_stack(tmp_path / "deep.onnx", bands=BANDS, depth=6, features=True, seed=8)
    kw = dict(tile=20, overlap=2, blend=blend, check_overlap=False, batch_size=3)
    kw["output"] = ["classes", "probabilities", "features"]
    runs = []
    for chunks in (None, 16, (23, 41), (70, 13)):
        field = make_field(70, 90, bands=BANDS, chunks=chunks, seed=5)
        runs.append(predict(field, path, **kw).compute(scheduler="threads"))
    for run in runs[1:]:
        for var in runs[0].data_vars:
            assert run[var].values.tobytes() == runs[0][var].values.tobytes(), var
    ref = whole_image(path, make_field(70, 90, bands=BANDS, chunks=None, seed=5), 2)
    assert not np.array_equal(runs[0]["probabilities"].values, ref["probabilities"])
