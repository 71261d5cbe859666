"""Tests of quicklook PNGs and ipyleaflet maps (geoembed.viz)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from PIL import Image
from pyproj import Transformer

from geoembed.datasets import CLASSES, synthetic_scene
from geoembed.errors import BandMismatchError, DimensionError, OutputError
from geoembed.schema import map_like
from geoembed.testing import make_field
from geoembed.viz import overlay_image, quicklook_png, show_map
from geoembed.viz._render import render


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(120, 200, seed=2, chunks=64)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        return np.asarray(im)


def test_quicklook_field_pca(scene, tmp_path: Path) -> None:
    out = quicklook_png(scene.field, tmp_path / "q.png", max_size=100)
    assert out == tmp_path / "q.png"
    img = _png(out)
    assert img.shape == (60, 100, 4)  # stride 2
    # nodata transparent, the rest opaque and varied
    truth = scene.truth.values[::2, ::2]
    np.testing.assert_array_equal(img[..., 3] == 0, truth == 255)
    rgb = img[..., :3][truth != 255]
    assert all(rgb[:, i].std() > 20 for i in range(3))
    # PCA colours separate classes: water and trees differ clearly
    water = rgb[truth[truth != 255] == 0].mean(axis=0)
    trees = rgb[truth[truth != 255] == 1].mean(axis=0)
    assert np.abs(water - trees).max() > 40


def test_quicklook_bands_and_full_size(tmp_path: Path) -> None:
    field = make_field(37, 53, chunks=16)
    img = _png(quicklook_png(field, tmp_path / "b.png", method="bands"))
    assert img.shape == (37, 53, 4)
    assert (img[2:5, 3:7, 3] == 0).all()  # make_field's nodata patch
    assert img[..., :3].std() > 10
    img2 = _png(quicklook_png(field, tmp_path / "c.png", method="bands", bands=[0, 1, 2]))
    assert img2.shape == img.shape
    with pytest.raises(BandMismatchError, match="not in the field"):
        quicklook_png(field, tmp_path / "d.png", method="bands", bands=["A00", "B1", "A02"])
    assert not (tmp_path / "d.png").exists()


def test_quicklook_class_map_colours(scene, tmp_path: Path) -> None:
    img = _png(
        quicklook_png(
            scene.truth, tmp_path / "t.png", class_names=scene.class_names, colors=scene.colors
        )
    )
    truth = scene.truth.values
    assert img.shape == (120, 200, 4)
    for c in CLASSES:
        sel = truth == c.id
        assert sel.any()
        assert (img[sel][:, :3] == np.array(c.color)).all(), c.name
    assert (img[truth == 255][:, 3] == 0).all()
    # hex colours and default palette work too
    hexes = {c.id: c.hex for c in CLASSES}
    img2 = _png(quicklook_png(scene.truth, tmp_path / "h.png", colors=hexes))
    np.testing.assert_array_equal(img, img2)
    img3 = _png(quicklook_png(scene.truth, tmp_path / "p.png"))
    assert len(np.unique(img3[truth != 255][:, :3], axis=0)) == len(CLASSES)


def test_quicklook_continuous_map(scene, tmp_path: Path) -> None:
    conf = map_like(scene.field, np.linspace(0, 1, 120 * 200).reshape(120, 200), name="conf")
    img = _png(quicklook_png(conf, tmp_path / "conf.png", max_size=50))
    assert img.shape == (30, 50, 4)
    assert img[0, 0, 0] < img[-1, -1, 0]


def test_quicklook_bottom_up_is_north_up(tmp_path: Path) -> None:
    down = make_field(20, 30, chunks=None, nodata_patch=True, seed=1)
    up = make_field(20, 30, chunks=None, nodata_patch=True, seed=1, bottom_up=True)
    a = render(down, method="bands")
    b = render(up, method="bands")
    # the bottom-up field holds the same rows in reverse geographic order
    np.testing.assert_array_equal(a.rgba[..., 3][::-1], b.rgba[..., 3])
    assert b.rgba[-5:-2, 3:7, 3].max() == 0  # nodata rows 2..4 of a bottom-up field are south
    left, bottom, right, top = b.bounds
    assert (left, right) == (358410.0, 358710.0)
    assert (bottom, top) == (4906600.0, 4906800.0)


def test_decimated_render_grid() -> None:
    big = synthetic_scene(4096, 4096, seed=0, chunks=256).field
    img = render(big.isel(y=slice(0, 256), x=slice(0, 512)), max_size=64)
    assert img.rgba.shape == (32, 64, 4)  # stride 8
    assert img.transform.a == 80.0 and img.transform.e == -80.0
    assert (img.transform.c, img.transform.f) == (500000.0, 5100000.0)


@pytest.mark.parametrize("one_pass", [True, False])
def test_render_memory_is_bounded_by_blocks(monkeypatch, one_pass: bool) -> None:
    import tracemalloc

    import geoembed.viz._render as r

    if not one_pass:
        monkeypatch.setattr(r, "_ONE_PASS_BYTES", 1)
    rng = dsa.random.default_rng(0)
    data = rng.standard_normal((64, 1024, 1024), chunks=(64, 128, 128), dtype=np.float32)
    field = xr.DataArray(  # 256 MiB if it were computed whole
        data,
        dims=("band", "y", "x"),
        coords={
            "band": [f"A{i:02d}" for i in range(64)],
            "y": -np.arange(1024.0),
            "x": np.arange(1024.0),
        },
    ).rio.write_crs("EPSG:32633")
    tracemalloc.start()
    try:
        img = r.render(field, max_size=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.rgba.shape == (64, 64, 4)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_render_large_uses_blockwise_projection(monkeypatch) -> None:
    import geoembed.viz._render as r

    field = make_field(64, 80, chunks=16, n_classes=4)
    one = r.render(field)
    monkeypatch.setattr(r, "_ONE_PASS_BYTES", 1)  # force: sample blocks, project blockwise
    two = r.render(field)
    assert one.rgba.shape == two.rgba.shape
    np.testing.assert_array_equal(one.rgba[..., 3], two.rgba[..., 3])
    # both show the four stripes of make_field as four distinct colours
    stripe = (np.arange(80) * 4) // 80
    for img in (one, two):
        ok = img.rgba[..., 3] > 0
        rgb = img.rgba[..., :3].astype(float)
        means = np.array([rgb[ok & (stripe == k)[None, :]].mean(axis=0) for k in range(4)])
        spread = max(rgb[ok & (stripe == k)[None, :]].std(axis=0).max() for k in range(4))
        gaps = [np.abs(means[a] - means[b]).max() for a in range(4) for b in range(a + 1, 4)]
        assert min(gaps) > 2 * spread


def test_quicklook_bad_inputs(tmp_path: Path) -> None:
    field = make_field(10, 12, chunks=None)
    with pytest.raises(OutputError, match="does not exist"):
        quicklook_png(field, tmp_path / "missing" / "q.png")
    with pytest.raises(DimensionError):
        quicklook_png(field.transpose("y", "x", "band"), tmp_path / "q.png")
    assert not list(tmp_path.iterdir())


def test_render_computes_once_and_shows_the_field_at_its_stride() -> None:
    from geoembed.testing import raise_if_dask_computes

    field = make_field(40, 40, chunks=20)  # lazy, with a nodata patch
    with raise_if_dask_computes(max_computes=1) as counter:
        img = render(field, max_size=20)
    assert counter.total == 1  # one pass over the (strided) field, nothing before
    assert img.rgba.shape == (20, 20, 4)
    # image pixel (i, j) is field pixel (2i, 2j): nodata is transparent exactly there
    valid = np.isfinite(field.values).all(axis=0)
    assert not valid.all()
    np.testing.assert_array_equal(img.rgba[..., 3] == 255, valid[::2, ::2])
    assert (img.rgba[~valid[::2, ::2], :3] == 0).all()
    classes = (field.isel(band=0, drop=True).fillna(-1.0) > 0).astype(np.uint8)
    with raise_if_dask_computes(max_computes=1):
        shown = render(classes.where(field.isel(band=0).notnull(), 255), max_size=20)
    np.testing.assert_array_equal(shown.rgba[..., 3] == 255, valid[::2, ::2])


def test_show_map_overlay_and_bounds(scene) -> None:
    ipyleaflet = pytest.importorskip("ipyleaflet")
    m = show_map(
        scene.truth, class_names=scene.class_names, colors=scene.colors, opacity=0.6, tiles=False
    )
    assert isinstance(m, ipyleaflet.Map)
    overlays = [lay for lay in m.layers if isinstance(lay, ipyleaflet.ImageOverlay)]
    assert len(overlays) == 1
    ov = overlays[0]
    assert ov.opacity == 0.6
    assert ov.url.startswith("data:image/png;base64,")
    (south, west), (north, east) = ov.bounds
    left, bottom, right, top = scene.field.rio.bounds()
    to_ll = Transformer.from_crs(scene.field.rio.crs, "EPSG:4326", always_xy=True)
    lons, lats = to_ll.transform([left, right, left, right], [bottom, bottom, top, top])
    # the Web-Mercator image encloses the UTM footprint, within about a pixel
    tol = 3e-4  # degrees, about 20 m
    assert west <= min(lons) + 1e-9 and east >= max(lons) - 1e-9
    assert south <= min(lats) + 1e-9 and north >= max(lats) - 1e-9
    assert west > min(lons) - tol and east < max(lons) + tol
    assert south > min(lats) - tol and north < max(lats) + tol
    assert south < m.center[0] < north and west < m.center[1] < east
    legends = [c for c in m.controls if isinstance(c, ipyleaflet.LegendControl)]
    assert len(legends) == 1
    assert legends[0].legend["water"] == CLASSES[0].hex
    # decode the overlay image: valid PNG with the class colours
    raw = base64.b64decode(ov.url.split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    opaque = rgba[rgba[..., 3] > 0][:, :3]
    colours = {tuple(int(v) for v in px) for px in np.unique(opaque, axis=0)}
    assert colours <= {c.color for c in CLASSES}
    assert len(colours) == len(CLASSES)


def test_show_map_field_adds_to_existing_map(scene) -> None:
    ipyleaflet = pytest.importorskip("ipyleaflet")
    m = show_map(scene.field, max_size=64, name="embedding PCA", tiles=False)
    n_layers = len(m.layers)
    m2 = show_map(scene.truth, m=m, colors=scene.colors, name="truth", tiles=False)
    assert m2 is m
    assert len(m.layers) == n_layers + 1
    assert [lay.name for lay in m.layers if isinstance(lay, ipyleaflet.ImageOverlay)] == [
        "embedding PCA",
        "truth",
    ]


def test_overlay_geographic_field() -> None:
    ll = make_field(20, 20, chunks=None)
    ll = ll.assign_coords(x=np.linspace(10.0, 10.019, 20), y=np.linspace(50.019, 50.0, 20))
    ll = ll.rio.write_crs("EPSG:4326")
    _, ((south, west), (north, east)), legend = overlay_image(ll)
    assert legend is None
    assert abs(west - 9.9995) < 1e-3 and abs(east - 10.0195) < 1e-3
    assert abs(south - 49.9995) < 1e-3 and abs(north - 50.0195) < 1e-3


def test_overlay_needs_crs() -> None:
    from geoembed.errors import MissingCRSError

    field = make_field(10, 10, chunks=None)
    bare = xr.DataArray(field.values, dims=field.dims, coords={"band": field["band"]})
    bare = bare.assign_coords(x=field["x"].values, y=field["y"].values)
    with pytest.raises(MissingCRSError):
        overlay_image(bare)


def test_show_map_without_ipyleaflet_names_the_extra(monkeypatch) -> None:
    import sys

    from geoembed.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ipyleaflet", None)
    with pytest.raises(MissingDependencyError, match=r"geoembed\[viz\]"):
        show_map(make_field(8, 8, chunks=None))


def test_importing_viz_does_not_import_ipyleaflet() -> None:
    import subprocess
    import sys

    code = "import sys, geoembed.viz, geoembed.datasets; print('ipyleaflet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_classify_cog_reopened_shows_its_own_names_and_colours(tmp_path) -> None:
    """One codec: the COG's class_names/class_colors tags drive viz's legend and colours."""
    import rioxarray

    from geoembed.colors import parse_color
    from geoembed.export import read_class_names, write_cog
    from geoembed.viz._render import render

    ids = np.zeros((20, 30), np.uint8)
    ids[:, 10:] = 1
    ids[:, 20:] = 2
    da = xr.DataArray(
        ids,
        dims=("y", "x"),
        coords={"y": 4906600.0 - 10 * np.arange(20), "x": 358410.0 + 10 * np.arange(30)},
    ).rio.write_crs("EPSG:32616")
    names = ["bare, dry", "water", "trees"]  # a comma inside a name
    colors = ["#aa5500", (0.5, 0.2, 0.1), (0, 128, 255)]
    path = tmp_path / "map.tif"
    write_cog(da, path, class_names=names, colors=colors)
    assert read_class_names(path) == dict(enumerate(names))
    reopened = rioxarray.open_rasterio(path).squeeze("band", drop=True)
    img = render(reopened)
    want = {n: "#{:02x}{:02x}{:02x}".format(*parse_color(c)[:3]) for n, c in zip(names, colors)}
    assert img.legend == want
    assert want["water"] == "#80331a"  # 0-1 floats scale to 0-255 (brown, not black)
    # the pixels carry the same colours
    assert tuple(img.rgba[0, 15, :3]) == parse_color(colors[1])[:3]


def test_kmeans_cog_carries_a_colour_table(tmp_path) -> None:
    import rasterio

    from geoembed.cluster import KMeans
    from geoembed.colors import default_color
    from geoembed.export import write_cog
    from geoembed.testing import make_field

    field = make_field(24, 30, chunks=12, seed=4)
    clusters = KMeans(n_clusters=3, random_state=0).fit(field).predict(field)
    write_cog(clusters, tmp_path / "clusters.tif")
    with rasterio.open(tmp_path / "clusters.tif") as src:
        cmap = src.colormap(1)
    for i in range(3):
        assert cmap[i][:3] == default_color(i)[:3]
