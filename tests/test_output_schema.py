"""The output schema: one constructor per output kind, and every producer using it.

Each constructor is checked for its name, dims, dtype, nodata, coordinates, CRS and
attributes; the producers (kNN, estimators, KMeans, similarity, change, regression) are
checked to return exactly those; and a class map written by ``write_cog`` from its own
attributes reopens in :mod:`geoembed.viz` with the right legend names and colours.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

from geoembed import output_schema as osc
from geoembed import schema
from geoembed.colors import default_color, parse_color, to_hex
from geoembed.errors import SchemaError
from geoembed.testing import make_field, raise_if_dask_computes


@pytest.fixture(scope="module")
def field() -> xr.DataArray:
    return make_field(20, 30, bands=8, chunks=10, seed=3)


def _same_grid(out: xr.DataArray, field: xr.DataArray) -> None:
    np.testing.assert_array_equal(out["y"].values, field["y"].values)
    np.testing.assert_array_equal(out["x"].values, field["x"].values)
    assert out.rio.crs == field.rio.crs
    assert out.rio.transform() == field.rio.transform()


def test_schema_reexports_the_output_schema() -> None:
    for name in osc.__all__:
        assert getattr(schema, name) is getattr(osc, name), name
    assert set(osc.__all__) <= set(schema.__all__)


def test_class_map_dtype_nodata_and_legend(field: xr.DataArray) -> None:
    ids = np.arange(20 * 30, dtype=np.float32).reshape(20, 30) % 3
    ids[0, :5] = np.nan  # a float map's NaN is nodata
    data = dsa.from_array(ids, chunks=10)
    with raise_if_dask_computes():
        cls = osc.class_map(
            field,
            data,
            class_names=["water", "trees", "crops"],
            colors=["#0000ff", (0.0, 0.5, 0.0), (255, 200, 0)],
            attrs={"k": 5},
        )
    assert cls.name == "classes" and cls.dims == ("y", "x") and cls.dtype == np.uint8
    assert isinstance(cls.data, dsa.Array)
    assert cls.rio.nodata == schema.CLASS_NODATA["uint8"] == 255
    assert cls.attrs["class_names"] == ["water", "trees", "crops"]
    assert cls.attrs["colors"] == ["#0000ff", "#008000", "#ffc800"]
    assert cls.attrs["k"] == 5
    _same_grid(cls, field)
    values = cls.values
    assert (values[0, :5] == 255).all() and set(np.unique(values[1:])) == {0, 1, 2}
    # many classes: uint16 with its own nodata; sparse ids keep their mapping
    big = osc.class_map(field, np.zeros((20, 30), np.int64), class_names=None, n_classes=300)
    assert big.dtype == np.uint16 and big.rio.nodata == 65535 and "class_names" not in big.attrs
    sparse = osc.class_map(field, np.zeros((20, 30), np.uint8), class_names={0: "a", 4: "e"})
    assert sparse.attrs["class_names"] == {"0": "a", "4": "e"}
    with pytest.raises(SchemaError, match="class_names or n_classes"):
        osc.class_map(field, np.zeros((20, 30), np.uint8), class_names=None)


def test_continuous_and_stacked_outputs(field: xr.DataArray) -> None:
    plane = dsa.zeros((20, 30), chunks=10, dtype=np.float64)
    for make, name in [
        (osc.confidence_map, "confidence"),
        (osc.distance_map, "distance"),
        (osc.similarity_map, "similarity"),
    ]:
        out = make(field, plane, attrs={"long_name": name})
        assert out.name == name and out.dims == osc.OUTPUT_DIMS[name] == ("y", "x")
        assert out.dtype == np.float32 and np.isnan(out.rio.nodata)
        assert out.attrs["long_name"] == name
        _same_grid(out, field)
    stack = dsa.zeros((3, 20, 30), chunks=(3, 10, 10), dtype=np.float32)
    proba = osc.probability_map(field, stack, class_names=["a", "b", "c"])
    assert proba.name == "probabilities" and proba.dims == ("class", "y", "x")
    assert list(proba["class"].values) == ["a", "b", "c"] and proba.dtype == np.float32
    assert np.isnan(proba.rio.nodata) and proba.attrs["class_names"] == ["a", "b", "c"]
    scaled = osc.probability_map(field, stack.astype(np.uint8), class_names=["a", "b", "c"])
    assert scaled.dtype == np.uint8 and scaled.rio.nodata == osc.PROBABILITY_UINT8_NODATA
    with pytest.raises(SchemaError, match="3 layers"):
        osc.probability_map(field, stack, class_names=["a", "b"])
    feats = osc.feature_map(field, stack, band_names=schema.feature_band_names(3))
    assert feats.name == "features" and feats.dims == ("band", "y", "x")
    assert list(feats["band"].values) == ["F000", "F001", "F002"]
    # a features map renamed is a canonical embedding field
    schema.check_embedding(feats.rename("embedding"))
    dist = osc.distances_map(field, stack)
    assert dist.name == "distances" and dist.dims == ("cluster", "y", "x")
    _same_grid(dist, field)
    # a class map and its probabilities fit in one Dataset ("class" is only a dimension)
    cls = osc.class_map(field, np.zeros((20, 30), np.uint8), class_names=["a", "b", "c"])
    ds = xr.Dataset({cls.name: cls, proba.name: proba})
    assert ds["classes"].dims == ("y", "x") and ds["probabilities"].dims[0] == "class"


def test_knn_outputs_follow_the_schema(field: xr.DataArray) -> None:
    from geoembed.classify import KNNClassifier, predict_field

    X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    y = np.arange(60) % 3
    model = KNNClassifier(3).fit(
        X, y, class_names=["water", "trees", "crops"], colors=["#0000ff", "#00ff00", "#ff0000"]
    )
    with raise_if_dask_computes():
        ds = predict_field(model, field, probabilities=True)
    assert list(ds.data_vars) == ["classes", "confidence", "probabilities"]
    assert "label" not in ds.dims and ds["probabilities"].dims == ("class", "y", "x")
    assert list(ds["class"].values) == ["water", "trees", "crops"]
    assert ds["classes"].dtype == np.uint8 and ds["classes"].rio.nodata == 255
    assert ds["classes"].attrs["colors"] == ["#0000ff", "#00ff00", "#ff0000"]
    assert ds["confidence"].dtype == np.float32 and ds["probabilities"].dtype == np.float32
    computed = ds.compute()
    best = computed["probabilities"].fillna(-1.0).argmax("class")
    valid = computed["classes"] != 255
    np.testing.assert_array_equal(computed["classes"].values[valid], best.values[valid])


def test_estimator_and_kmeans_outputs_follow_the_schema(field: xr.DataArray) -> None:
    from sklearn.linear_model import LogisticRegression

    from geoembed.classify import apply_estimator
    from geoembed.cluster import KMeans

    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 8)).astype(np.float32)
    est = LogisticRegression().fit(X, np.array(["a", "b", "c"])[np.arange(90) % 3])
    cls = apply_estimator(field, est, output="class")
    assert cls.name == "classes" and cls.dtype == np.uint8 and cls.rio.nodata == 255
    assert cls.attrs["class_names"] == ["a", "b", "c"]
    proba = apply_estimator(field, est, output="proba")
    assert proba.name == "probabilities" and proba.dims == ("class", "y", "x")
    assert list(proba["class"].values) == ["a", "b", "c"]

    km = KMeans(n_clusters=3, random_state=0).fit(field)
    clusters = km.predict(field)
    assert clusters.name == "clusters" and clusters.dims == ("y", "x")
    assert clusters.dtype == np.uint8 and clusters.rio.nodata == 255
    assert clusters.attrs["n_clusters"] == 3 and "class_names" not in clusters.attrs
    assert clusters.attrs["colors"] == [to_hex(default_color(i)) for i in range(3)]
    assert km.distance(field).name == "distance"
    assert km.transform(field).name == "distances"


def test_similarity_change_and_regression_outputs(field: xr.DataArray) -> None:
    from geoembed.change import change_magnitude, change_mask
    from geoembed.regress.knn import KNNRegressor, predict_regression
    from geoembed.similar import similarity, similarity_mask

    refs = field.isel(x=[3, 4], y=[5, 5]).values.reshape(8, -1).T[:1]
    refs = np.nan_to_num(refs)
    sim = similarity(field, refs)
    assert sim.name == "similarity" and sim.dtype == np.float32 and np.isnan(sim.rio.nodata)
    mask = similarity_mask(sim, 0.5)
    assert mask.name == "similar" and mask.dtype == np.uint8 and mask.rio.nodata == 255
    assert mask.attrs["class_names"] == ["not similar", "similar"]
    mag = change_magnitude(field, field)
    assert mag.name == "change" and mag.dtype == np.float32 and mag.dims == ("y", "x")
    assert change_mask(mag, 0.1).attrs["class_names"] == ["unchanged", "changed"]
    X = np.random.default_rng(2).normal(size=(40, 8)).astype(np.float32)
    reg = KNNRegressor(3).fit(X, np.arange(40.0))
    out = predict_regression(reg, field)
    assert list(out.data_vars) == ["value", "spread"]
    for name in ("value", "spread"):
        assert out[name].dtype == np.float32 and np.isnan(out[name].rio.nodata)
        _same_grid(out[name], field)


def test_class_map_cog_reopens_with_its_legend_in_viz(tmp_path: Path, field) -> None:
    """A kNN map written from its own attributes shows its names and colours in viz."""
    import rioxarray

    from geoembed.classify import KNNClassifier, predict_field
    from geoembed.export import read_class_names, write_cog
    from geoembed.viz._render import render

    X = np.random.default_rng(4).normal(size=(60, 8)).astype(np.float32)
    names = ["bare, dry", "water", "trees"]  # a comma inside a name
    colors = ["#aa5500", (0.5, 0.2, 0.1), (0, 128, 255)]
    model = KNNClassifier(3).fit(X, np.arange(60) % 3, class_names=names, colors=colors)
    classes = predict_field(model, field)["classes"]
    path = write_cog(classes, tmp_path / "map.tif")  # no names or colours passed
    assert read_class_names(path) == dict(enumerate(names))
    reopened = rioxarray.open_rasterio(path).squeeze("band", drop=True)
    img = render(reopened)
    want = {n: to_hex(c) for n, c in zip(names, colors)}
    present = {names[i] for i in np.unique(classes.values) if i != 255}
    assert {k: v for k, v in img.legend.items() if k in present} == {n: want[n] for n in present}
    assert set(img.legend) <= set(names)
    i, j = np.argwhere(classes.values == 1)[0]
    assert tuple(img.rgba[i, j, :3]) == parse_color(colors[1])[:3]


@pytest.mark.parametrize("engine", ["geoembed", "dask-ml"])
def test_kmeans_cogs_carry_a_colour_table(tmp_path: Path, field, engine: str) -> None:
    import rasterio

    from geoembed.cluster import cluster_field
    from geoembed.export import write_cog

    if engine == "dask-ml":
        pytest.importorskip("dask_ml")
    result = cluster_field(field, 3, engine=engine, seed=0, names="0=water,1=trees,2=crops")
    assert result.labels.name == "clusters"
    path = write_cog(result.labels, tmp_path / f"{engine}.tif")
    with rasterio.open(path) as src:
        cmap = src.colormap(1)
    for i in range(3):
        assert cmap[i][:3] == default_color(i)[:3]
    assert len(result.labels.attrs["class_names"]) == 3
