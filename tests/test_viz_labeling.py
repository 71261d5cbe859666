"""Tests of label drawing (LabelCollector) and the mapping loop (MappingSession)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipyleaflet")
pytest.importorskip("rio_tiler")

from shapely.geometry import Point, box, mapping

from geoembed.datasets import synthetic_scene
from geoembed.errors import LabelError, OutputError
from geoembed.labels.classes import ClassTable
from geoembed.viz import LabelCollector, MappingSession, show_map, suggest_points


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(160, 160, seed=4, chunks=80)


def _table(scene) -> ClassTable:
    ids = tuple(range(len(scene.class_names)))
    colors = tuple("#{:02x}{:02x}{:02x}".format(*scene.colors[i]) for i in ids)
    return ClassTable(ids, tuple(scene.class_names), colors)


def _label_scene(lc: LabelCollector, scene, per_class: int, seed: int) -> None:
    pts = scene.sample_points(per_class, seed=seed).to_crs("EPSG:4326")
    for geom, cid in zip(pts.geometry, pts["class_id"]):
        lc.add(geom, int(cid))


def test_collect_undo_and_frame() -> None:
    lc = LabelCollector(["water", "trees"])
    assert lc.current_class == "water"
    lc.add(Point(15.01, 46.04))
    lc.current_class = "TREES"  # case-insensitive
    lc.add(mapping(box(15.0, 46.0, 15.001, 46.001)))
    lc.add({"type": "Feature", "geometry": mapping(Point(15.02, 46.03)), "properties": {}}, 0)
    gdf = lc.labels
    assert gdf.crs.to_epsg() == 4326
    assert gdf["class"].tolist() == ["water", "trees", "water"]
    assert gdf["class_id"].tolist() == [0, 1, 0]
    assert gdf.geometry.geom_type.tolist() == ["Point", "Polygon", "Point"]
    assert lc.undo() and len(lc) == 2
    assert lc.counts() == {"water": 1, "trees": 1}
    lc.clear()
    assert not lc.undo()


def test_bad_labels_are_refused() -> None:
    lc = LabelCollector(["water"])
    with pytest.raises(LabelError, match="not in the class table"):
        lc.add(Point(1, 1), "lava")
    with pytest.raises(LabelError, match="longitude/latitude"):
        lc.add(Point(500000, 5000000))
    with pytest.raises(LabelError, match="LineString"):
        lc.add({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})
    with pytest.raises(LabelError, match="No labels yet"):
        lc.training(None)


def test_edit_classes() -> None:
    lc = LabelCollector("dynamic_world")
    assert lc.color_of("water") == "#419bdf"
    cid = lc.add_class("wetland_rice", "#00ffaa")
    assert cid == 9 and lc.color_of(9) == "#00ffaa"
    lc.set_color("water", (0, 0, 255))
    assert lc.color_of("water") == "#0000ff"
    with pytest.raises(LabelError, match="already exists"):
        lc.add_class("Water")


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_save_and_load_keep_classes(tmp_path: Path, suffix: str) -> None:
    lc = LabelCollector(["water", "trees", "crops"])
    lc.set_color("crops", "#e49635")
    lc.add(Point(15.0, 46.0), "crops")
    lc.add(box(15.0, 46.0, 15.01, 46.01), "water")
    out = lc.save(tmp_path / f"labels{suffix}")
    with pytest.raises(OutputError, match="exists"):
        lc.save(out)
    back = LabelCollector.load(out)
    assert back.class_table.names == ("water", "trees", "crops")  # unused classes too
    assert back.color_of("crops") == "#e49635"
    assert back.labels["class"].tolist() == ["crops", "water"]
    assert back.labels.geometry.geom_equals_exact(lc.labels.geometry, tolerance=1e-9).all()
    assert not list(tmp_path.glob(".*partial*"))
    with pytest.raises(OutputError, match=r"\.gpkg or \.geojson"):
        lc.save(tmp_path / "labels.shp")


def test_labels_feed_training(scene) -> None:
    lc = LabelCollector(_table(scene))
    _label_scene(lc, scene, 4, seed=1)
    poly = scene.sample_points(1, seed=9).to_crs("EPSG:4326").geometry.iloc[0].buffer(0.0002)
    lc.add(poly, "water")
    ts = lc.training(scene.field)
    assert set(ts.class_names) <= set(scene.class_names)
    assert ts.y.size > len(lc)  # the polygon gave several pixels
    truth = scene.truth.values
    # every point's sample has the class it was drawn with (points sit on their class)
    point_rows = ts.ids < len(lc) - 1
    rc = [scene.truth.rio.transform().__invert__() * (x, y) for x, y in ts.xy[point_rows]]
    got = [truth[int(r), int(c)] for c, r in rc]
    want = [ts.class_values[int(v)] for v in ts.y[point_rows]]
    assert got == want


def test_draw_callback_adds_a_label_of_the_current_class(scene) -> None:
    lc = LabelCollector(_table(scene))
    m = show_map(scene.truth)
    lc.attach(m)
    lc.current_class = "crops"
    feature = {"type": "Feature", "geometry": mapping(box(15.0, 46.04, 15.001, 46.041))}
    lc._handle_draw(None, "created", feature)
    lc._handle_draw(None, "deleted", feature)  # only "created" adds
    assert lc.labels["class"].tolist() == ["crops"]
    layer = lc._widgets["layer"]
    assert layer.data["features"][0]["properties"]["color"] == lc.color_of("crops")
    assert lc._widgets["picker"].value == "crops"
    assert "crops: 1" in lc._widgets["status"].value


def test_session_classifies_scores_and_suggests(scene, tmp_path: Path) -> None:
    lc = LabelCollector(_table(scene))
    _label_scene(lc, scene, 3, seed=2)
    sess = MappingSession(scene.field, collector=lc, k=5, workdir=tmp_path)
    ds = sess.classify("field")
    assert ds["classes"].shape == scene.truth.shape
    assert sess.paths["classes"].exists() and sess.paths["confidence"].exists()
    first = sess.history[-1]
    assert first["labels"] == len(lc) and first["cv"].startswith("spatial")
    # a box classifies only that part
    left, bottom, right, top = scene.field.rio.bounds()
    part = sess.classify((left, bottom, (left + right) / 2, top))
    assert part["classes"].sizes["x"] == scene.field.sizes["x"] // 2
    quick = sess.classify("field", max_size=40)  # a quick look at screen resolution
    assert max(quick["classes"].shape) == 40
    sess.classify("field")
    sug = sess.suggest_points(6)
    assert len(sug) == 6 and sug.crs.to_epsg() == 4326
    assert (np.diff(sug["confidence"].values) >= -1).all()
    assert sug["predicted"].nunique() >= 2  # across classes
    xy = sug.to_crs(scene.field.rio.crs).geometry
    d = [a.distance(b) for i, a in enumerate(xy) for b in list(xy)[i + 1 :]]
    assert min(d) > 50.0  # spread out (pixels are 10 m)
    # label the suggestions with their true class: the next batch scores
    for pt in xy:
        c, r = ~scene.truth.rio.transform() * (pt.x, pt.y)
        cid = int(scene.truth.values[int(r), int(c)])
        if cid != 255:
            lc.add(sug.geometry.iloc[list(xy).index(pt)], cid)
    sess.classify("field")
    assert len(sess.history) == 5 and sess.history[-1]["labels"] > first["labels"]
    fig = sess.accuracy_plot()
    assert len(fig.axes[0].lines) >= 1
    fig.savefig(tmp_path / "acc.png")


def test_suggest_points_prefers_low_confidence(scene) -> None:
    truth = scene.truth.compute()
    conf = (truth.astype("float32") * 0 + 0.9).rio.write_crs(truth.rio.crs)
    conf.values[90:150, 10:70] = 0.2  # one unsure patch, more than a tenth of the map
    cls = truth.where(truth != 255, 0).astype("uint8").rio.write_crs(truth.rio.crs)
    cls.attrs["class_names"] = scene.class_names
    sug = suggest_points(cls, conf, 3).to_crs(scene.truth.rio.crs)
    inv = ~scene.truth.rio.transform()
    rows = [int((inv * (p.x, p.y))[1]) for p in sug.geometry]
    cols = [int((inv * (p.x, p.y))[0]) for p in sug.geometry]
    assert all(90 <= r < 150 and 10 <= c < 70 for r, c in zip(rows, cols))
    assert set(sug["predicted"]) <= set(scene.class_names)
    with pytest.raises(Exception, match="at least one"):
        suggest_points(cls, conf, 0)


def test_session_widget(scene) -> None:
    lc = LabelCollector(_table(scene))
    _label_scene(lc, scene, 3, seed=3)
    sess = MappingSession(scene.field, collector=lc)
    box_widget = sess.show()
    sess.classify("view")  # no browser: the whole field
    names = [lay.name for lay in sess.map.layers]
    assert names[:1] == ["field"] and "classes" in names and "confidence" in names
    assert names[-1] == "labels"
    assert "accuracy" in sess._ui["report"].value or "CV not possible" in sess._ui["report"].value
    sess.suggest_points(4)
    assert any(lay.name == "suggested points" for lay in sess.map.layers)
    assert box_widget.children[0] is sess.map
    assert json.dumps(sess.history)


def test_session_cache_gives_the_full_resolution_classes(scene, tmp_path: Path) -> None:
    lc = LabelCollector(_table(scene))
    _label_scene(lc, scene, 3, seed=5)
    plain = MappingSession(scene.field, collector=lc, k=3, workdir=tmp_path, cache=False)
    full = plain.classify("field")
    assert plain._cache is None
    sess = MappingSession(scene.field, collector=lc, k=3, workdir=tmp_path)
    again = sess.classify("field")
    np.testing.assert_array_equal(again["classes"].values, full["classes"].values)
    stores = sorted(p.name for p in sess._cache.root.iterdir())
    assert stores == ["level-1.zarr"]
    # a quick look at screen resolution, of a window: its pixels have the full map's classes
    left, bottom, right, top = scene.field.rio.bounds()
    view = (left + 130.0, bottom + 210.0, right - 70.0, top - 40.0)
    quick = sess.classify(view, max_size=50)
    assert max(quick["classes"].shape) <= 50 and min(quick["classes"].shape) > 30
    assert "level-3.zarr" in {p.name for p in sess._cache.root.iterdir()}
    at = full["classes"].sel(x=quick["x"], y=quick["y"])
    np.testing.assert_array_equal(quick["classes"].values, at.values)
    np.testing.assert_allclose(
        quick["confidence"].values, full["confidence"].sel(x=quick["x"], y=quick["y"]).values
    )
    # the window's pixels lie inside the view
    assert quick["x"].values.min() >= view[0] and quick["x"].values.max() <= view[2]
    assert quick["y"].values.min() >= view[1] and quick["y"].values.max() <= view[3]
    # the same look without the cache picks the same pixels
    uncached = plain.classify(view, max_size=50)
    np.testing.assert_array_equal(uncached["x"].values, quick["x"].values)
    np.testing.assert_array_equal(uncached["classes"].values, quick["classes"].values)
    root = sess._cache.root
    sess.close()
    assert not root.exists()
