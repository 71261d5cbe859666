"""Real pretrained model: the ukis-csmask 6-band L1C cloud/shadow U-Net (Apache-2.0).

The scenes in ../shared/data/csmask/ (from the ukis-csmask project, Apache-2.0) are not
georeferenced; the tests wrap them as fields in EPSG:32633 with a made-up origin
(x=400000, y=5500000, upper-left) and 30 m pixels -- any projected grid would do, the
model sees pixels only.

Tiling: ukis-csmask pads the image by 51 pixels (reflect, edge included), cuts 256 x 256
tiles every 204 pixels and blends their softmax with a Tukey (alpha 0.4) window. The same
scheme in geoembed is ``tile=256, overlap=51, step=204, blend="cosine"``, whatever the
chunking (the tiles lie on one global grid). Reference masks: 0 shadow, 1 or 3 clear,
4 cloud; model classes: 0 clear, 1 cloud, 2 shadow.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("onnxruntime")
csmask = pytest.importorskip("ukis_csmask")

from click.testing import CliRunner  # noqa: E402
from ukis_csmask.mask import CSmask  # noqa: E402

from geoembed.infer import SeamWarning, predict  # noqa: E402

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
MODEL = Path(csmask.__file__).parent / "model_6b_l1c.onnx"
CONFIG = MODEL.with_suffix(".json")
CSMASK_TILING: dict[str, Any] = dict(overlap=51, step=204, blend="cosine", batch_size=4)
ORIGIN, RES = (400000.0, 5500000.0), 30.0

pytestmark = pytest.mark.shared_data


def as_field(img: np.ndarray, chunks: int = 512) -> xr.DataArray:
    """(rows, cols, bands) reflectance -> georeferenced canonical field (EPSG:32633)."""
    h, w, _ = img.shape
    xs = ORIGIN[0] + RES * (np.arange(w) + 0.5)
    ys = ORIGIN[1] - RES * (np.arange(h) + 0.5)
    da = xr.DataArray(
        np.ascontiguousarray(img.transpose(2, 0, 1)),
        dims=("band", "y", "x"),
        coords={"band": BANDS, "y": ys, "x": xs},
        name="embedding",
    )
    return da.chunk({"band": -1, "y": chunks, "x": chunks}).rio.write_crs("EPSG:32633")


def reference_classes(msk: np.ndarray) -> np.ndarray:
    """Reference mask -> model classes (0 clear, 1 cloud, 2 shadow)."""
    out = np.full(msk.shape, 255, np.uint8)
    out[(msk == 1) | (msk == 3)] = 0
    out[msk == 4] = 1
    out[msk == 0] = 2
    return out


def kappa(a: np.ndarray, b: np.ndarray, n: int = 3) -> float:
    cm = np.zeros((n, n))
    np.add.at(cm, (a, b), 1)
    total = cm.sum()
    po = np.trace(cm) / total
    pe = (cm.sum(0) * cm.sum(1)).sum() / total**2
    return float((po - pe) / (1 - pe))


class Scenes:
    """The csmask scenes with ukis-csmask's own prediction, computed once per scene."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, dict[str, np.ndarray]] = {}

    def __getitem__(self, name: str) -> dict[str, np.ndarray]:
        if name not in self.cache:
            d = np.load(self.root / "csmask" / f"{name}.npz")
            img, msk = d["img"], d["msk"][..., 0]
            own = CSmask(
                img,
                BANDS,
                product_level="l1c",
                providers=["CPUExecutionProvider"],
                intra_op_num_threads=2,
                batch_size=4,
            ).csm[..., 0]
            self.cache[name] = {"img": img, "msk": msk, "csmask": own}
        return self.cache[name]


@pytest.fixture(scope="module")
def scenes(shared_data: Path) -> Scenes:
    return Scenes(shared_data)


def _report(name: str, ours: np.ndarray, scene: dict[str, np.ndarray]) -> dict[str, float]:
    valid = ours != 255
    agree = float((ours[valid] == scene["csmask"][valid]).mean())
    ref = reference_classes(scene["msk"])
    ok = valid & (ref != 255)
    fig = {
        "agreement_with_csmask": agree,
        "pixels_differing_from_csmask": int((ours[valid] != scene["csmask"][valid]).sum()),
        "accuracy_vs_reference": float((ours[ok] == ref[ok]).mean()),
        "kappa_vs_reference": kappa(ref[ok], ours[ok]),
        "csmask_accuracy_vs_reference": float((scene["csmask"][ok] == ref[ok]).mean()),
    }
    print(name, json.dumps({k: round(v, 6) for k, v in fig.items()}))
    return fig


ALL_OUTPUTS = ["classes", "probabilities", "features"]


def _bytes(ds: xr.Dataset) -> dict[str, bytes]:
    return {str(k): v.values.tobytes() for k, v in ds.data_vars.items()}


@pytest.mark.parametrize("name", ["sentinel2", pytest.param("landsat5", marks=pytest.mark.slow)])
def test_library_on_worker_processes_matches_csmask(
    name: str, scenes: Scenes, dask_client: Any
) -> None:
    scene = scenes[name]
    field = as_field(scene["img"])
    ds = predict(field, MODEL, model_config=CONFIG, output=ALL_OUTPUTS, **CSMASK_TILING)
    assert ds["classes"].attrs["class_names"] == ["clear", "cloud", "cloud_shadow"]
    on_workers = ds.compute()  # on the dask_client's two single-threaded worker processes
    fig = _report(name, on_workers["classes"].values, scene)
    assert fig["pixels_differing_from_csmask"] == 0
    assert fig["accuracy_vs_reference"] >= 0.75
    assert fig["kappa_vs_reference"] >= 0.5
    # the threaded scheduler gives the same bytes
    assert _bytes(ds.compute(scheduler="threads")) == _bytes(on_workers)


@pytest.mark.parametrize("name", ["sentinel2", pytest.param("landsat5", marks=pytest.mark.slow)])
def test_chunking_does_not_change_a_byte(name: str, scenes: Scenes) -> None:
    """256-pixel blocks and one block: same tiles, same blending, same bytes as csmask."""
    scene = scenes[name]
    runs = {}
    for chunks in (256, -1):
        field = as_field(scene["img"], chunks)
        ds = predict(field, MODEL, model_config=CONFIG, output=ALL_OUTPUTS, **CSMASK_TILING)
        assert (ds["classes"].data.numblocks == (1, 1)) == (chunks == -1)
        runs[chunks] = ds.compute(scheduler="threads")
    assert _bytes(runs[256]) == _bytes(runs[-1])
    assert (
        _report(name + "-256", runs[256]["classes"].values, scene)["pixels_differing_from_csmask"]
        == 0
    )


@pytest.mark.slow
def test_chunking_of_a_larger_mosaic_does_not_change_a_byte(scenes: Scenes) -> None:
    """A 1024 x 768 mirrored mosaic of both scenes: 256, 512 and one block agree exactly."""
    s2, l5 = scenes["sentinel2"]["img"], scenes["landsat5"]["img"]
    top = np.concatenate([s2, l5[:, ::-1][:, :256]], axis=1)
    img = np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))  # 1024 x 768
    own = CSmask(img, BANDS, product_level="l1c", providers=["CPUExecutionProvider"]).csm[..., 0]
    runs = {}
    for chunks in (256, 512, -1):
        ds = predict(as_field(img, chunks), MODEL, model_config=CONFIG, **CSMASK_TILING)
        runs[chunks] = ds.compute(scheduler="threads")
        assert int((runs[chunks]["classes"].values != own).sum()) == 0, chunks
    assert _bytes(runs[256]) == _bytes(runs[-1]) == _bytes(runs[512])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sentinel2"])
def test_chunked_halo_run_agrees_closely(name: str, scenes: Scenes, dask_client: Any) -> None:
    """256-pixel tiles with a 64-pixel halo, no blending: the default geoembed scheme."""
    scene = scenes[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeamWarning)
        ds = predict(as_field(scene["img"], 256), MODEL, model_config=CONFIG, overlap=64)
    fig = _report(name + "-chunked", ds["classes"].values, scene)
    # the U-Net sees context far beyond 64 px, so other tilings flip a few % of pixels
    assert fig["agreement_with_csmask"] >= 0.95


@pytest.mark.slow
def test_cli_on_worker_processes(scenes: Scenes, dask_cluster: Any, tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    from geoembed.cli import main

    scene = scenes["sentinel2"]
    img = scene["img"]
    src = tmp_path / "sentinel2.tif"
    profile = dict(
        driver="GTiff",
        width=img.shape[1],
        height=img.shape[0],
        count=6,
        dtype="float32",
        crs="EPSG:32633",
        transform=from_origin(*ORIGIN, RES, RES),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(img.transpose(2, 0, 1))
        dst.descriptions = tuple(BANDS)
    out = tmp_path / "classes.tif"
    args = [
        "--scheduler",
        dask_cluster.scheduler_address,
        "-q",
        "infer",
        str(src),
        "--model",
        str(MODEL),
        "--model-config",
        str(CONFIG),
        "--overlap",
        "51",
        "--step",
        "204",
        "--blend",
        "cosine",
        "--chunks",
        "512",
        "-o",
        str(out),
        "--json",
    ]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["outputs"]["classes"] == str(out)
    with rasterio.open(out) as ds:
        ours = ds.read(1)
        assert ds.crs.to_epsg() == 32633
        assert ds.transform == profile["transform"]
    fig = _report("sentinel2-cli", ours, scene)
    assert fig["pixels_differing_from_csmask"] == 0
