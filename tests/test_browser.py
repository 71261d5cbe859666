"""Maps and label drawing checked in a real browser (marker ``browser``; ``make browser``).

JupyterLab is served on 127.0.0.1 from this environment (ipyleaflet's and ipywidgets'
front-end extensions come with their Python packages, nothing from a CDN); Playwright
drives Debian's headless Chromium (``/usr/bin/chromium``). The first test opens a notebook
that shows a class map written by geoembed and asserts, from the screenshot's pixels,
that the class colours of the COG's colour table are drawn and that the legend lists the
classes with their colours. The second draws a polygon with the mouse and checks that it
arrives in the kernel as a labelled geometry of the class picked in the widget.
Screenshots go to ``docs/screenshots/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("GEOEMBED_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
TOKEN = "geoembed-browser-test"
#: seconds to wait for the server, the kernel, the map and the drawn label
DEADLINE = 120.0

NOTEBOOK_CODE = """
import json
from geoembed.datasets import synthetic_scene
from geoembed.export import write_cog
from geoembed.viz import LabelCollector, show_map

scene = synthetic_scene(128, 128, seed=1, chunks=64)
cog = write_cog(scene.truth, "truth.tif", class_names=scene.class_names,
                colors=scene.colors, overwrite=True)
m = show_map(cog, opacity=1.0, name="truth")
m.layout.height = "560px"
collector = LabelCollector(scene.class_names, colors=scene.colors)
collector.attach(m, position="bottomleft")
collector.on_change(lambda c: c.save("labels.geojson", overwrite=True))
with open("expected.json", "w") as f:
    json.dump({"colors": {n: "#%02x%02x%02x" % scene.colors[i]
                          for i, n in enumerate(scene.class_names)},
               "bounds": [list(b) for b in m.layers[0].bounds]}, f)
m
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """JupyterLab on 127.0.0.1 serving a folder with the map notebook; its URL and folder."""
    for module in ("jupyterlab", "playwright"):  # asked for with -m browser: never a skip
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is missing; `make browser` installs the browser extra")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `make browser` installs Debian's chromium")
    import nbformat

    _ensure_kernel()
    root = tmp_path_factory.mktemp("lab")
    settings = root.parent / f"{root.name}-settings"
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_CODE.strip())]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "map.ipynb")
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "PYTHONUNBUFFERED": "1"}
    log = (root.parent / f"{root.name}-lab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() - t0 > DEADLINE:
                    log.flush()
                    pytest.fail(
                        "JupyterLab did not start: "
                        + (root.parent / f"{root.name}-lab.log").read_text()[-2000:]
                    )
                time.sleep(0.5)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()
        shutil.rmtree(settings, ignore_errors=True)


@pytest.fixture(scope="module")
def page(lab: tuple[str, Path]) -> Iterator[Any]:
    """The map notebook open in headless Chromium, run top to bottom, map drawn."""
    from playwright.sync_api import sync_playwright

    url, root = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 1200})
            pg.set_default_timeout(DEADLINE * 1000)
            try:
                _open_and_run(pg, url)
            except Exception:
                pg.screenshot(path=str(root.parent / f"{root.name}-failure.png"))
                raise
            yield pg
        finally:
            browser.close()


def _open_and_run(pg: Any, url: str) -> None:
    """Open the notebook, run all cells, wait for the map, its tiles and its legend."""
    if True:
        if True:
            pg.goto(f"{url}/lab/tree/map.ipynb?token={TOKEN}")
            pg.wait_for_selector(".jp-Notebook .jp-Cell")
            pg.wait_for_selector(".jp-StatusBar-Widget:has-text('Idle')")  # kernel is up
            _run_all(pg)
            error = ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
            pg.wait_for_selector(f".leaflet-container img.leaflet-tile-loaded, {error}")
            if pg.locator(error).count():
                pytest.fail("the map notebook failed: " + pg.locator(error).first.inner_text())
            pg.wait_for_selector(".leaflet-control:has(h4:has-text('truth'))")
            _wait_tiles(pg)


def _run_all(pg: Any) -> None:
    """Run > Run All Cells, again until the cell starts (an early click can be lost)."""
    prompt = pg.locator(".jp-Notebook .jp-InputPrompt").first
    t0 = time.monotonic()
    while time.monotonic() - t0 < DEADLINE:
        pg.click("li.lm-MenuBar-item:has-text('Run')")
        pg.click("li.lm-Menu-item:has-text('Run All Cells')")
        for _ in range(20):
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                return
            time.sleep(0.25)
    pytest.fail("the notebook's cells never started running")


def _wait_tiles(pg: Any) -> None:
    """Wait until no tile of the map is loading (every visible tile arrived)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < DEADLINE:
        loading = pg.evaluate(
            "() => [...document.querySelectorAll('.leaflet-container img.leaflet-tile')]"
            ".filter(i => !i.complete || !i.classList.contains('leaflet-tile-loaded')).length"
        )
        if loading == 0:
            time.sleep(0.5)  # the fade-in animation of the last tiles
            return
        time.sleep(0.25)
    pytest.fail("map tiles did not finish loading")


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _count(img: np.ndarray, hexcolor: str) -> int:
    rgb = np.array([int(hexcolor[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.all(np.abs(img.astype(int) - rgb) <= 2, axis=-1).sum())


def _save_small(png: bytes, name: str, width: int = 720) -> None:
    import io

    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        im.save(SCREENSHOTS / name, optimize=True)


def test_class_map_colours_and_legend_in_the_browser(page: Any, lab: tuple[str, Path]) -> None:
    _, root = lab
    expected = json.loads((root / "expected.json").read_text())["colors"]
    shot = page.locator(".leaflet-container").first.screenshot()
    _save_small(shot, "map_with_legend.png")
    img = _pixels(shot)
    drawn = {name: _count(img, c) for name, c in expected.items()}
    # the big classes of the scene fill the view in their colour-table colours
    assert sum(n > 500 for n in drawn.values()) >= 4, drawn
    # the legend lists every class with its colour swatch
    legend = page.locator(".leaflet-control:has(h4:has-text('truth'))").first
    text = legend.inner_text()
    assert all(name in text for name in expected), text
    swatches = _pixels(legend.screenshot())
    missing = [n for n, c in expected.items() if _count(swatches, c) < 20]
    assert not missing, f"legend swatches missing for {missing}"


def test_draw_a_polygon_and_get_a_labelled_geometry(page: Any, lab: tuple[str, Path]) -> None:
    _, root = lab
    page.click(".widget-toggle-button:has-text('crops')")
    page.click(".leaflet-draw-draw-polygon")
    box = page.locator(".leaflet-container").first.bounding_box()
    cx, cy = box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.35
    corners = [(cx - 60, cy - 40), (cx + 60, cy - 40), (cx + 70, cy + 50), (cx - 50, cy + 45)]
    for x, y in corners:
        page.mouse.click(x, y)
        time.sleep(0.2)
    page.mouse.click(*corners[0])  # close the ring on the first vertex
    labels = root / "labels.geojson"
    t0 = time.monotonic()
    while not labels.exists() and time.monotonic() - t0 < DEADLINE:
        time.sleep(0.25)
    assert labels.exists(), "the drawn polygon never reached the kernel"
    doc = json.loads(labels.read_text())
    feats = doc["features"]
    assert len(feats) == 1
    assert feats[0]["geometry"]["type"] == "Polygon"
    assert feats[0]["properties"]["class"] == "crops"
    ring = np.array(feats[0]["geometry"]["coordinates"][0])
    assert len(ring) == 5  # four vertices, closed
    (south, west), (north, east) = json.loads((root / "expected.json").read_text())["bounds"]
    lon, lat = ring[:, 0].mean(), ring[:, 1].mean()
    assert west < lon < east and south < lat < north  # drawn on the map, in lon/lat
    # the label layer shows it in the class colour (and the draw layer was cleared)
    page.wait_for_selector(f"path.leaflet-interactive[stroke='{_crops(root)}']")
    _save_small(page.locator(".leaflet-container").first.screenshot(), "drawn_label.png")


def _crops(root: Path) -> str:
    return str(json.loads((root / "expected.json").read_text())["colors"]["crops"])
