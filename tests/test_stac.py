"""STAC Items beside every output: built from the file, valid offline, checked by verify.

Outputs are written through the real CLI (``classify``, ``cluster``, ``infer``) and
through :class:`~geoembed.export.outputs.OutputSet` on a synthetic scene (NOT real
data); the object-store case writes to the fake-gcs-server emulator.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoembed.cli import main
from geoembed.colors import default_color
from geoembed.errors import OutputError
from geoembed.export import verify, write_cog, write_zarr
from geoembed.export.outputs import OutputSet, is_geoembed_output
from geoembed.stac import ITEM_SUFFIX, Provenance, check_item, item_path, validate_item

# write_zarr stores string band names, which Zarr v3 flags as not yet specified
pytestmark = pytest.mark.filterwarnings("ignore:The data type")

LABELS = ["--label-column", "class_id"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96 x 96 synthetic field (Zarr) and 40 labelled points (GeoPackage)."""
    import dask

    from geoembed.datasets import synthetic_scene

    d = tmp_path_factory.mktemp("stac-scene")
    with dask.config.set(scheduler="threads"):
        s = synthetic_scene(96, 96, seed=0, chunks=48)
        write_zarr(s.field, d / "field.zarr")
        s.sample_points(40, seed=1).to_file(d / "points.gpkg")
    return d


def _run(*args: str) -> str:
    res = CliRunner().invoke(main, ["--scheduler", "threads", "-q", *args])
    assert res.exit_code == 0, res.output
    return res.output


def _verify_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["verify", *args])
    return res.exit_code, res.output


def _item(path: Path) -> dict:
    return json.loads(Path(item_path(path)).read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def classified(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """classify with every output: map, confidence, report (with CV), saved model."""
    out = tmp_path_factory.mktemp("stac-classify")
    _run(
        "classify", str(scene / "field.zarr"), "--labels", str(scene / "points.gpkg"),
        *LABELS, "-k", "3", "-o", str(out / "map.tif"), "--confidence", str(out / "conf.tif"),
        "--report", str(out / "report.json"), "--save-model", str(out / "model"),
        "--cv", "random:3",
    )  # fmt: skip
    return out


def test_every_classify_output_has_a_valid_item(classified: Path, scene: Path) -> None:
    for name in ("map.tif", "conf.tif", "report.json", "model"):
        item_file = Path(item_path(classified / name))
        assert item_file.is_file(), name
        item = json.loads(item_file.read_text())
        validation = validate_item(item)
        assert validation.valid, (name, validation.problems)
        assert validation.core_schema and validation.core_schema.endswith("item.json")
        assert is_geoembed_output(item_file)
        code, text = _verify_cli(str(item_file))
        assert code == 0, text
        assert "valid STAC Item" in text
    model_assets = _item(classified / "model")["assets"]
    assert "model.json" in model_assets
    assert all("file:checksum" in a for a in model_assets.values())


def test_class_map_item_describes_the_cog(classified: Path) -> None:
    item = _item(classified / "map.tif")
    asset = item["assets"]["data"]
    assert asset["href"] == "./map.tif"
    assert asset["type"].startswith("image/tiff; application=geotiff")
    assert asset["file:checksum"] == "1220" + _sha256(classified / "map.tif")
    assert asset["file:size"] == (classified / "map.tif").stat().st_size
    with rasterio.open(classified / "map.tif") as src:
        assert asset["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert asset["proj:shape"] == [src.height, src.width]
        assert asset["proj:transform"] == list(src.transform)[:6]
        assert asset["raster:bands"][0]["data_type"] == src.dtypes[0]
        assert asset["raster:bands"][0]["nodata"] == src.nodata
        names = json.loads(src.tags()["class_names"])
        try:
            cmap = src.colormap(1)
        except ValueError:  # no colour table: the colours geoembed's maps show
            cmap = {}
    classes = asset["classification:classes"]
    assert {str(c["value"]): c["title"] for c in classes} == names
    for c in classes:
        r, g, b = cmap.get(c["value"], default_color(c["value"]))[:3]
        assert c["color_hint"] == f"{r:02X}{g:02X}{b:02X}"
    west, south, east, north = item["bbox"]
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    assert item["geometry"]["type"] == "Polygon"


def test_provenance_inputs_parameters_versions_accuracy(classified: Path, scene: Path) -> None:
    props = _item(classified / "map.tif")["properties"]
    assert props["geoembed:command"] == "classify"
    assert props["geoembed:parameters"]["k"] == 3
    assert props["geoembed:parameters"]["cv"] == "random:3"
    inputs = {Path(i["href"]).name: i for i in props["geoembed:inputs"]}
    assert inputs["points.gpkg"]["sha256"] == _sha256(scene / "points.gpkg")
    assert inputs["field.zarr"]["files"] > 1  # a directory: size, file count, time
    deps = props["geoembed:dependencies"]
    assert {"numpy", "rasterio", "pystac", "gdal"} <= set(deps)
    report = json.loads((classified / "report.json").read_text())
    accuracy = report["cross_validation"]["pooled"]["overall_accuracy"]
    assert props["geoembed:accuracy"]["overall_accuracy"] == accuracy
    # every Item of the set carries the same provenance and time
    other = _item(classified / "report.json")["properties"]
    assert other["datetime"] == props["datetime"]
    assert other["geoembed:inputs"] == props["geoembed:inputs"]


def test_verify_output_checks_its_item(classified: Path) -> None:
    code, text = _verify_cli(str(classified / "map.tif"), "--stac")
    assert code == 0, text
    assert "STAC Item: valid" in text
    report = verify(classified / "conf.tif", stac=True)
    assert report["valid"], report["problems"]
    assert report["stac_item"]["valid"]


def test_tampered_output_is_reported(classified: Path, tmp_path: Path) -> None:
    import shutil

    for name in ("map.tif", "map.tif.stac.json", "conf.tif"):
        shutil.copy(classified / name, tmp_path / name)
    # a class map replaced by another raster (the confidence raster) under the same name
    shutil.copy(tmp_path / "conf.tif", tmp_path / "map.tif")
    code, text = _verify_cli(str(tmp_path / "map.tif.stac.json"))
    assert code == 1
    assert "file:checksum" in text and "in the output but" in text
    assert "bands (data type, nodata)" in text and "class names" in text
    code, text = _verify_cli(str(tmp_path / "map.tif"))
    assert code == 1 and "STAC Item map.tif.stac.json: asset 'data'" in text


def test_tampered_item_is_reported(classified: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(classified / "map.tif", tmp_path / "map.tif")
    item = _item(classified / "map.tif")
    item["assets"]["data"]["proj:code"] = "EPSG:4326"
    item["assets"]["data"]["classification:classes"][0]["title"] = "renamed"
    Path(item_path(tmp_path / "map.tif")).write_text(json.dumps(item))
    report = check_item(item_path(tmp_path / "map.tif"))
    assert not report["valid"]
    assert any("proj:code" in p and "EPSG:4326" in p for p in report["problems"])
    assert any("class names" in p and "renamed" in p for p in report["problems"])
    # not a STAC Item any more: the schema says why
    del item["properties"]["datetime"]
    Path(item_path(tmp_path / "map.tif")).write_text(json.dumps(item))
    report = check_item(item_path(tmp_path / "map.tif"))
    assert any(p.startswith("not a valid STAC Item") for p in report["problems"])


def test_missing_item_or_asset_is_reported(classified: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(classified / "map.tif", tmp_path / "map.tif")
    code, text = _verify_cli(str(tmp_path / "map.tif"), "--stac")
    assert code == 1
    assert "no STAC Item beside it (expected map.tif.stac.json)" in text
    assert _verify_cli(str(tmp_path / "map.tif"))[0] == 0  # only reported without --stac
    shutil.copy(Path(item_path(classified / "report.json")), tmp_path / "r.json.stac.json")
    code, text = _verify_cli(str(tmp_path / "r.json.stac.json"))
    assert code == 1 and "'./report.json' does not exist" in text


def test_cluster_outputs_have_items(scene: Path, tmp_path: Path) -> None:
    _run("cluster", str(scene / "field.zarr"), "-k", "3", "-o", str(tmp_path / "c.tif"),
         "--distance", str(tmp_path / "d.tif"), "--save-model", str(tmp_path / "km"))  # fmt: skip
    for name in ("c.tif", "d.tif", "km"):
        code, text = _verify_cli(str(item_path(tmp_path / name)))
        assert code == 0, (name, text)
    assert _item(tmp_path / "c.tif")["properties"]["geoembed:command"] == "cluster"
    assert "classification:classes" in _item(tmp_path / "c.tif")["assets"]["data"]


def test_infer_outputs_have_items(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from geoembed.infer import write_sidecar
    from geoembed.infer.models import conv_stack
    from geoembed.testing import make_field

    field = make_field(40, 44, bands=8, chunks=None, seed=3)
    write_cog(field.astype("float32"), tmp_path / "field.tif")
    onnx = Path(conv_stack(tmp_path / "m.onnx", bands=8, depth=2, features=True, n_classes=3))
    write_sidecar(onnx.with_suffix(".json"), classes=["a", "b", "c"], receptive_radius=2)
    _run("infer", str(tmp_path / "field.tif"), "--model", str(onnx), "-o",
         str(tmp_path / "c.tif"), "--features", str(tmp_path / "f.zarr"))  # fmt: skip
    zarr_item = _item(tmp_path / "f.zarr")
    asset = zarr_item["assets"]["data"]
    assert asset["type"] == "application/vnd+zarr"
    assert asset["proj:shape"] == [40, 44]
    assert validate_item(zarr_item).valid
    for name in ("c.tif", "f.zarr"):
        code, text = _verify_cli(str(item_path(tmp_path / name)))
        assert code == 0, (name, text)
    hrefs = [i["href"] for i in zarr_item["properties"]["geoembed:inputs"]]
    assert str(onnx) in hrefs  # the model is an input, with its hash
    # a stale Item: the store rewritten with another grid under the same name
    import shutil

    shutil.rmtree(tmp_path / "f.zarr")
    write_zarr(make_field(20, 22, bands=4, chunks=None, seed=1), tmp_path / "f.zarr")
    code, text = _verify_cli(str(item_path(tmp_path / "f.zarr")))
    assert code == 1 and "proj:shape" in text


def _field(h: int = 32, w: int = 40):
    import xarray as xr

    da = xr.DataArray(
        (np.arange(h * w).reshape(h, w) % 3).astype("uint8"),
        dims=("y", "x"),
        coords={"y": 500000 - np.arange(h) * 10.0 - 5, "x": 300000 + np.arange(w) * 10.0 + 5},
    )
    return da.rio.write_crs("EPSG:32615")


def test_output_set_provenance_argument(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("input")
    outputs = OutputSet(
        inputs=[source],
        provenance=Provenance(command="mine", parameters={"alpha": np.float32(0.5)}),
    )
    outputs.add("class map", tmp_path / "m.tif")
    with outputs:
        write_cog(_field(), outputs.stage("class map"), class_names={0: "a b", 1: "c", 2: "d"})
        outputs.set_provenance(Provenance(command="mine", parameters={"alpha": 0.25}))
        outputs.commit()
    props = _item(tmp_path / "m.tif")["properties"]
    assert props["geoembed:command"] == "mine" and props["geoembed:parameters"] == {"alpha": 0.25}
    assert props["geoembed:inputs"] == [{"href": str(source), "size": 5, "sha256": _sha256(source)}]
    classes = _item(tmp_path / "m.tif")["assets"]["data"]["classification:classes"]
    assert classes[0]["name"] == "a_b" and classes[0]["title"] == "a b"  # name: a token
    # stac=False: no Item
    outputs = OutputSet(stac=False)
    outputs.add("class map", tmp_path / "n.tif")
    with outputs:
        write_cog(_field(), outputs.stage("class map"))
        outputs.commit()
    assert not Path(item_path(tmp_path / "n.tif")).exists()


def test_existing_item_is_checked_like_an_output(tmp_path: Path) -> None:
    Path(item_path(tmp_path / "m.tif")).write_text('{"not": "geoembed"}')
    with pytest.raises(OutputError, match="already exists"):
        OutputSet().add("class map", tmp_path / "m.tif")
    with pytest.raises(OutputError, match="Refusing to replace"):
        OutputSet(overwrite=True).add("class map", tmp_path / "m.tif")
    assert json.loads(Path(item_path(tmp_path / "m.tif")).read_text()) == {"not": "geoembed"}


def test_interrupted_commit_leaves_no_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = OutputSet()
    outputs.add("class map", tmp_path / "m.tif")
    item_key = "STAC item of the class map"
    real_replace = os.replace

    def interrupted(src: object, dst: object) -> None:
        # Ctrl-C as the Item is renamed into place, after the map was
        if str(dst).endswith(ITEM_SUFFIX):
            raise KeyboardInterrupt
        real_replace(src, dst)

    with pytest.raises(KeyboardInterrupt), outputs:
        write_cog(_field(), outputs.stage("class map"))
        assert item_key in outputs
        monkeypatch.setattr(os, "replace", interrupted)
        outputs.commit()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the map nor its Item


def test_item_for_an_output_in_object_storage(gcs_bucket: str, tmp_path: Path) -> None:
    from geoembed._cloud import filesystem

    url = f"{gcs_bucket}/out/m.tif"
    outputs = OutputSet(inputs=[url.replace("m.tif", "in.zarr")])
    outputs.add("class map", url)
    with outputs:
        write_cog(_field(), outputs.stage("class map"), class_names={0: "a", 1: "b", 2: "c"})
        outputs.commit()
    fs = filesystem(gcs_bucket)
    fs.invalidate_cache()
    names = sorted(k.rpartition("/")[2] for k in fs.ls(f"{gcs_bucket}/out"))
    assert names == ["m.tif", "m.tif.stac.json"]  # and no temporary key
    local = tmp_path / "m.tif"
    local.write_bytes(fs.cat(url))
    (tmp_path / "m.tif.stac.json").write_bytes(fs.cat(url + ITEM_SUFFIX))
    item = _item(local)
    assert item["assets"]["data"]["file:checksum"] == "1220" + _sha256(local)
    assert item["assets"]["data"]["proj:code"] == "EPSG:32615"
    assert check_item(tmp_path / "m.tif.stac.json")["valid"]


def test_validation_needs_no_network(classified: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("validation opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    result = validate_item(_item(classified / "map.tif"))
    assert result.valid and result.core_schema
    # extension schemas no local folder holds are listed, never fetched
    assert all(u.startswith("https://stac-extensions") for u in result.extensions_unavailable)


def test_extension_schemas_from_a_local_folder(
    classified: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stand-in schema written here (NOT the published one), laid out like its URL
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        "type": "object",
        "properties": {
            "assets": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"proj:code": {"type": ["string", "null"]}},
                },
            }
        },
    }
    folder = tmp_path / "schemas" / "projection" / "v2.0.0"
    folder.mkdir(parents=True)
    (folder / "schema.json").write_text(json.dumps(schema))
    monkeypatch.setenv("GEOEMBED_STAC_SCHEMAS", str(tmp_path / "schemas"))
    item = _item(classified / "map.tif")
    result = validate_item(item)
    assert result.valid and schema["$id"] in result.extensions_validated
    assert schema["$id"] not in result.extensions_unavailable
    item["assets"]["data"]["proj:code"] = 32615
    result = validate_item(item)
    assert not result.valid
    assert any(schema["$id"] in p and "32615" in p for p in result.problems)
