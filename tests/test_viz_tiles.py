"""Tests of the local tile server and the tiled ipyleaflet maps (geoembed.viz.tiles/leaflet)."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rio_tiler")
ipyleaflet = pytest.importorskip("ipyleaflet")

from geoembed.datasets import synthetic_scene  # noqa: E402
from geoembed.export import write_cog  # noqa: E402
from geoembed.viz import compare_maps, map_style, show_map  # noqa: E402
from geoembed.viz.leaflet import map_layer  # noqa: E402
from geoembed.viz.tiles import TileServer  # noqa: E402


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(200, 240, seed=3, chunks=64)


@pytest.fixture(scope="module")
def truth_cog(scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiles") / "truth.tif"
    return write_cog(scene.truth, out, class_names=scene.class_names, colors=scene.colors)


def _tile_at(layer, bounds, z: int, lon: float | None = None, lat: float | None = None):
    import morecantile

    (south, west), (north, east) = bounds
    lon = (west + east) / 2 if lon is None else lon
    lat = (south + north) / 2 if lat is None else lat
    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, z)
    url = layer.url.format(z=t.z, x=t.x, y=t.y)
    with urllib.request.urlopen(url, timeout=20) as resp:
        assert resp.headers["Content-Type"] == "image/png"
        return np.asarray(Image.open(io.BytesIO(resp.read())).convert("RGBA"))


def test_style_from_cog_tags(scene, truth_cog) -> None:
    style = map_style(truth_cog)
    assert style.kind == "classes"
    assert list(style.legend) == scene.class_names  # names by id, not split on commas
    assert style.legend["water"] == "#{:02x}{:02x}{:02x}".format(*scene.colors[0])


def test_class_tiles_use_the_cog_colours(scene, truth_cog) -> None:
    layer, _, bounds = map_layer(truth_cog)
    assert isinstance(layer, ipyleaflet.TileLayer)
    assert layer.url.startswith("http://127.0.0.1:")
    img = _tile_at(layer, bounds, layer.max_native_zoom)
    opaque = img[img[..., 3] == 255][:, :3]
    colours = {tuple(int(v) for v in px) for px in np.unique(opaque, axis=0)}
    present = {int(v) for v in np.unique(scene.truth.values) if v != 255}
    assert colours <= {tuple(scene.colors[i]) for i in present}
    assert len(colours) >= 3
    # partially transparent values do not occur: pixels are a class colour or empty
    assert set(np.unique(img[..., 3]).tolist()) <= {0, 255}


def test_nodata_is_transparent(tmp_path: Path, scene) -> None:
    truth = scene.truth.copy()
    truth.values[:, : truth.sizes["x"] // 2] = 255
    cog = write_cog(truth, tmp_path / "half.tif", class_names=scene.class_names)
    layer, _, bounds = map_layer(cog)
    (_, west), (_, east) = bounds
    # the western half of the map is nodata: its tile is transparent there
    img = _tile_at(layer, bounds, layer.max_native_zoom, lon=west + 0.1 * (east - west))
    assert (img[..., 3] == 0).mean() > 0.3
    assert img[..., 3].max() == 255 or (img[..., 3] == 0).all()


def test_continuous_tiles_and_zoomed_out(tmp_path: Path, scene) -> None:
    conf = scene.truth.astype("float32") / 10.0
    conf = conf.where(scene.truth != 255).rio.write_crs(scene.truth.rio.crs)
    cog = write_cog(conf, tmp_path / "conf.tif")
    layer, style, bounds = map_layer(cog)
    assert style.kind == "continuous"
    lo, hi = style.value_range
    assert 0.0 <= lo < hi <= 0.61
    img = _tile_at(layer, bounds, layer.max_native_zoom)
    rgb = img[img[..., 3] == 255][:, :3]
    assert len(np.unique(rgb, axis=0)) >= 3  # a colour ramp, not one colour
    far = _tile_at(layer, bounds, max(1, layer.max_native_zoom - 4))  # from the overviews
    assert (far[..., 3] == 255).sum() > 0


def test_show_map_tiles_legend_and_opacity(scene, truth_cog) -> None:
    m = show_map(truth_cog, opacity=0.6)
    tiles = [lay for lay in m.layers if isinstance(lay, ipyleaflet.TileLayer)]
    assert len(tiles) == 1  # no basemap by default (offline)
    assert tiles[0].opacity == 0.6
    legends = [c for c in m.controls if isinstance(c, ipyleaflet.LegendControl)]
    assert legends and list(legends[0].legend) == scene.class_names
    sliders = [c for c in m.controls if isinstance(c, ipyleaflet.WidgetControl)]
    assert sliders and sliders[0].widget.value == 0.6


def test_show_map_of_arrays_and_fields(scene) -> None:
    # an in-memory class map: written to the server's scratch COG, names from attrs
    truth = scene.truth.copy()
    truth.attrs["class_names"] = scene.class_names
    m = show_map(truth, name="truth")
    legend = next(c for c in m.controls if isinstance(c, ipyleaflet.LegendControl))
    assert list(legend.legend) == scene.class_names
    m = show_map(scene.field, m=m, name="field")
    names = [lay.name for lay in m.layers if isinstance(lay, ipyleaflet.TileLayer)]
    assert names == ["truth", "field"]
    field_layer = m.layers[-1]
    img = _tile_at(field_layer, map_layer(scene.field)[2], field_layer.max_native_zoom)
    assert img[..., :3][img[..., 3] == 255].std() > 10  # an RGB preview, not flat


def test_compare_maps_split(scene, truth_cog, tmp_path: Path) -> None:
    other = write_cog(scene.truth, tmp_path / "other.tif")
    m = compare_maps(truth_cog, other, left_name="truth", right_name="copy")
    split = [c for c in m.controls if isinstance(c, ipyleaflet.SplitMapControl)]
    assert len(split) == 1
    assert split[0].left_layer.name == "truth" and split[0].right_layer.name == "copy"
    legends = [c for c in m.controls if isinstance(c, ipyleaflet.LegendControl)]
    assert len(legends) == 2


def test_server_errors_and_close(truth_cog) -> None:
    from geoembed.errors import MissingInputError

    server = TileServer()
    url, _ = server.add(truth_cog)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url.split("/tiles/")[0] + "/tiles/" + "0" * 32 + "/1/1/1.png")
    assert err.value.code == 404
    with pytest.raises(MissingInputError, match="no such file"):
        server.add(truth_cog.with_name("missing.tif"))
    scratch = server.scratch
    (scratch / "x.tif").write_bytes(b"")
    server.close()
    assert not scratch.exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url.format(z=1, x=1, y=1), timeout=2)
