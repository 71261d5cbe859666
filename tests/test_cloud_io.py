"""Inputs by URL against real object-store emulators (fake-gcs-server, moto server)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoembed._cloud import filesystem, gdal_env, gdal_path, require_input
from geoembed.errors import MissingInputError


def _put(local: str, url: str) -> None:
    filesystem(url).put_file(local, url)


def test_emulator_round_trip(bucket: str) -> None:
    fs = filesystem(bucket)
    with fs.open(f"{bucket}/a/b.txt", "wb") as f:
        f.write(b"hello")
    assert fs.cat(f"{bucket}/a/b.txt") == b"hello"
    assert fs.ls(f"{bucket}/a") == [f"{bucket.split('://')[1]}/a/b.txt"]


def test_missing_object_is_one_clear_error(bucket: str) -> None:
    url = f"{bucket}/nope/samples.csv"
    with pytest.raises(MissingInputError, match=r"does not exist.*bucket and object name") as e:
        require_input(url, "training table")
    assert url in str(e.value)


def test_gdal_reads_object_through_vsi(bucket: str, tmp_path) -> None:
    data = np.arange(64 * 48, dtype="uint16").reshape(1, 64, 48)
    local = tmp_path / "r.tif"
    with rasterio.open(
        local, "w", driver="GTiff", height=64, width=48, count=1, dtype="uint16",
        crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10),
    ) as dst:  # fmt: skip
        dst.write(data)
    url = f"{bucket}/rasters/r.tif"
    _put(str(local), url)
    with rasterio.Env(**gdal_env()), rasterio.open(gdal_path(url)) as src:
        assert src.crs.to_epsg() == 32633
        np.testing.assert_array_equal(src.read(), data)


def _field_zarr(aef_tif: Path, where: Path) -> Path:
    from geoembed.export import write_zarr
    from geoembed.io import open_embeddings

    path = where / "field.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        write_zarr(open_embeddings(aef_tif, chunks=48), path)
    return path


@pytest.fixture(scope="module")
def local_inputs(aef_tif: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The Wisconsin field as Zarr (chunks 48) and the Iowa samples, on local disk."""
    d = tmp_path_factory.mktemp("cloud-inputs")
    return {
        "field": _field_zarr(aef_tif, d),
        "samples": shared_data / "aef" / "dw_samples_2024_iowa_ag.csv",
        "tif": aef_tif,
    }


def upload_inputs(local: dict[str, Path], bucket: str) -> dict[str, str]:
    """Copy the local inputs into ``bucket``; return their URLs."""
    fs = filesystem(bucket)
    urls = {
        "field": f"{bucket}/in/field.zarr",
        "samples": f"{bucket}/in/samples.csv",
        "tif": f"{bucket}/in/field.tif",
    }
    fs.put(str(local["field"]), urls["field"], recursive=True)
    fs.put_file(str(local["samples"]), urls["samples"])
    fs.put_file(str(local["tif"]), urls["tif"])
    return urls


def _classify(source: str, training: str, out: str, *extra: str) -> None:
    from click.testing import CliRunner

    from geoembed.cli import main

    args = ["--scheduler", "threads", "-q", "classify", source, "--training", training]
    args += ["--label-column", "dw_label", "-k", "5", "-o", out, *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output


def test_classify_reads_every_input_by_url(
    bucket: str, local_inputs: dict[str, Path], tmp_path: Path
) -> None:
    urls = upload_inputs(local_inputs, bucket)
    _classify(str(local_inputs["field"]), str(local_inputs["samples"]), str(tmp_path / "a.tif"))
    _classify(urls["field"], urls["samples"], str(tmp_path / "b.tif"))
    _classify(urls["tif"], urls["samples"], str(tmp_path / "c.tif"))
    a = (tmp_path / "a.tif").read_bytes()
    assert a == (tmp_path / "b.tif").read_bytes()
    with rasterio.open(tmp_path / "a.tif") as x, rasterio.open(tmp_path / "c.tif") as y:
        np.testing.assert_array_equal(x.read(), y.read())


def test_missing_training_object_fails_before_any_task(bucket: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoembed.cli import main

    url = f"{bucket}/nope.csv"
    res = CliRunner().invoke(
        main,
        [
            *("-q", "--scheduler", "threads", "classify", f"{bucket}/f.zarr"),
            *("--training", url, "--label-column", "c", "-o", str(tmp_path / "m.tif")),
        ],
    )
    assert res.exit_code != 0
    assert "does not exist" in res.output
    assert not list(tmp_path.iterdir())


def test_classify_writes_every_output_to_the_bucket_byte_identical(
    bucket: str, local_inputs: dict[str, Path], tmp_path: Path
) -> None:
    field, samples = str(local_inputs["field"]), str(local_inputs["samples"])
    _classify(
        field, samples, str(tmp_path / "map.tif"),
        "--confidence", str(tmp_path / "conf.tif"), "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    out = f"{bucket}/out"
    _classify(
        field, samples, f"{out}/map.tif",
        "--confidence", f"{out}/conf.tif", "--report", f"{out}/r.json",
    )  # fmt: skip
    fs = filesystem(bucket)
    fs.invalidate_cache()
    # the outputs with their STAC Items, and nothing else (no temporary key is left)
    names = ["conf.tif", "map.tif", "r.json"]
    listed = sorted(k.rpartition("/")[2] for k in fs.ls(out))
    assert listed == sorted([*names, *(f"{n}.stac.json" for n in names)])
    assert fs.cat(f"{out}/map.tif") == (tmp_path / "map.tif").read_bytes()
    assert fs.cat(f"{out}/conf.tif") == (tmp_path / "conf.tif").read_bytes()
    report = json.loads(fs.cat(f"{out}/r.json"))
    assert report["outputs"]["class_map"] == f"{out}/map.tif"
    # an existing output is kept unless --overwrite, and then replaced by the same bytes
    with pytest.raises(AssertionError, match="already exists"):
        _classify(field, samples, f"{out}/map.tif")
    _classify(field, samples, f"{out}/map.tif", "--overwrite")
    assert fs.cat(f"{out}/map.tif") == (tmp_path / "map.tif").read_bytes()


def test_failed_job_leaves_nothing_in_the_bucket(
    bucket: str, local_inputs: dict[str, Path]
) -> None:
    fs = filesystem(bucket)
    fs.pipe_file(f"{bucket}/out/keep.txt", b"not geoembed's")
    # the probability raster cannot be written over a file geoembed did not write:
    # refused before any task runs, and the class map is not written either
    with pytest.raises(AssertionError, match="not written by geoembed"):
        _classify(
            str(local_inputs["field"]), str(local_inputs["samples"]), f"{bucket}/out/map.tif",
            "--probabilities", f"{bucket}/out/keep.txt", "--overwrite",
        )  # fmt: skip
    fs.invalidate_cache()
    assert [k.rpartition("/")[2] for k in fs.ls(f"{bucket}/out")] == ["keep.txt"]
    assert fs.cat(f"{bucket}/out/keep.txt") == b"not geoembed's"


def test_model_saved_to_and_loaded_from_the_bucket(
    bucket: str, local_inputs: dict[str, Path], tmp_path: Path
) -> None:
    field, samples = str(local_inputs["field"]), str(local_inputs["samples"])
    model = f"{bucket}/models/knn"
    _classify(field, samples, str(tmp_path / "a.tif"), "--save-model", model)
    fs = filesystem(bucket)
    fs.invalidate_cache()
    assert sorted(k.rpartition("/")[2] for k in fs.ls(model)) == [
        ".geoembed-output.json",
        "arrays.npz",
        "model.json",
    ]
    listed = sorted(k.rpartition("/")[2] for k in fs.ls(f"{bucket}/models"))
    assert listed == ["knn", "knn.stac.json"]  # the model directory and its STAC Item
    from click.testing import CliRunner

    from geoembed.cli import main

    res = CliRunner().invoke(
        main,
        [
            *("--scheduler", "threads", "-q", "classify", field),
            *("--model", model, "-o", str(tmp_path / "b.tif")),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_write_zarr_to_the_bucket_is_complete_and_equal(bucket: str, tmp_path: Path) -> None:
    import xarray as xr

    from geoembed.datasets import synthetic_scene
    from geoembed.export import missing_chunks, write_zarr

    field = synthetic_scene(37, 53, seed=1, chunks=16).field
    url = f"{bucket}/out/field.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        assert write_zarr(field, url) == url
        write_zarr(field, tmp_path / "field.zarr")
    fs = filesystem(bucket)
    fs.invalidate_cache()
    assert [k.rpartition("/")[2] for k in fs.ls(f"{bucket}/out")] == ["field.zarr"]
    assert missing_chunks(url) == {}
    remote = xr.open_zarr(url, consolidated=False)
    local = xr.open_zarr(tmp_path / "field.zarr", consolidated=False)
    xr.testing.assert_identical(remote.load(), local.load())


def test_cluster_map_to_the_bucket_equals_local(
    gcs_bucket: str, local_inputs: dict[str, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from geoembed.cli import main

    def run(out: str) -> None:
        args = ["--scheduler", "threads", "-q", "cluster", str(local_inputs["field"])]
        res = CliRunner().invoke(main, [*args, "-k", "4", "--max-iter", "3", "-o", out])
        assert res.exit_code == 0, res.output

    run(str(tmp_path / "c.tif"))
    run(f"{gcs_bucket}/c.tif")
    assert filesystem(gcs_bucket).cat(f"{gcs_bucket}/c.tif") == (tmp_path / "c.tif").read_bytes()


def test_cluster_saves_the_model_to_the_bucket(
    gcs_bucket: str, local_inputs: dict[str, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from geoembed.cli import main
    from geoembed.cluster import load_model

    def run(out: str, model: str) -> None:
        args = ["--scheduler", "threads", "-q", "cluster", str(local_inputs["field"])]
        args += ["-k", "4", "--max-iter", "3", "-o", out, "--save-model", model]
        res = CliRunner().invoke(main, [*args, "--names", "0=water"])
        assert res.exit_code == 0, res.output

    run(str(tmp_path / "c.tif"), str(tmp_path / "model"))
    url = f"{gcs_bucket}/models/kmeans"
    run(f"{gcs_bucket}/c.tif", url)
    fs = filesystem(gcs_bucket)
    fs.invalidate_cache()
    keys = sorted(k.rpartition("/")[2] for k in fs.ls(url))
    assert keys == sorted(p.name for p in (tmp_path / "model").iterdir()), keys
    here, there = load_model(tmp_path / "model"), load_model(url)
    np.testing.assert_array_equal(here.cluster_centers_, there.cluster_centers_)
    assert there.cluster_names_ == here.cluster_names_ and there.cluster_names_[0] == "water"
    # nothing but the outputs in the bucket
    assert sorted(k.rpartition("/")[2] for k in fs.ls(gcs_bucket)) == [
        "c.tif", "c.tif.stac.json", "models"
    ]  # fmt: skip


def test_infer_reads_the_onnx_model_from_the_bucket(gcs_bucket: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from geoembed.cli import main
    from geoembed.infer import write_sidecar
    from geoembed.infer.models import conv_stack
    from geoembed.testing import make_field

    field = make_field(40, 50, bands=8, chunks=None, seed=3)
    source = tmp_path / "field.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from geoembed.export import write_zarr

        write_zarr(field.chunk({"y": 20, "x": 25}), source)
    model = Path(conv_stack(tmp_path / "m.onnx", bands=8, depth=2, n_classes=3))
    write_sidecar(model.with_suffix(".json"), classes=["a", "b", "c"], receptive_radius=2)
    fs = filesystem(gcs_bucket)
    for name in ("m.onnx", "m.json"):
        fs.put_file(str(tmp_path / name), f"{gcs_bucket}/models/{name}")

    def run(model_path: str, out: str) -> None:
        args = ["--scheduler", "threads", "-q", "infer", str(source), "--model", model_path]
        res = CliRunner().invoke(main, [*args, "--tile", "16", "--overlap", "4", "-o", out])
        assert res.exit_code == 0, res.output

    run(str(model), str(tmp_path / "a.tif"))
    run(f"{gcs_bucket}/models/m.onnx", f"{gcs_bucket}/maps/a.tif")
    assert fs.cat(f"{gcs_bucket}/maps/a.tif") == (tmp_path / "a.tif").read_bytes()


def test_job_failing_mid_run_leaves_no_object_in_the_bucket(
    gcs_bucket: str, local_inputs: dict[str, Path]
) -> None:
    from click.testing import CliRunner

    from geoembed.cli import main

    urls = upload_inputs(local_inputs, gcs_bucket)
    fs = filesystem(gcs_bucket)
    chunks = sorted(k for k in fs.find(urls["field"]) if "/embedding/c/" in k)
    assert len(chunks) > 1
    victim = f"gs://{chunks[-1]}"
    data = bytearray(fs.cat_file(victim))
    data[len(data) // 2] ^= 0xFF  # a flipped bit: found only when the task reads the chunk
    fs.pipe_file(victim, bytes(data))
    out = f"{gcs_bucket}/out"
    res = CliRunner().invoke(
        main,
        [
            *("--scheduler", "threads", "-q", "classify", urls["field"]),
            *("--training", urls["samples"], "--label-column", "dw_label"),
            *("-o", f"{out}/map.tif", "--confidence", f"{out}/conf.tif"),
            *("--report", f"{out}/r.json"),
        ],
    )
    assert res.exit_code != 0
    assert "corrupt" in res.output.lower()
    fs.invalidate_cache()
    assert not fs.exists(out) or fs.find(out) == []


def test_inputs_by_plain_http_url(
    gcs_bucket: str, gcs_emulator: str, local_inputs: dict[str, Path], tmp_path: Path
) -> None:
    """``https://`` inputs (public objects): the emulator serves objects over plain HTTP."""
    urls = upload_inputs(local_inputs, gcs_bucket)
    http = {k: f"{gcs_emulator}/{v.split('://', 1)[1]}" for k, v in urls.items()}
    _classify(str(local_inputs["tif"]), str(local_inputs["samples"]), str(tmp_path / "a.tif"))
    _classify(http["tif"], http["samples"], str(tmp_path / "b.tif"))
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    with pytest.raises(MissingInputError, match="does not exist"):
        require_input(f"{gcs_emulator}/{gcs_bucket[5:]}/nope.csv", "training table")


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".csv"])
def test_label_files_by_url(
    gcs_bucket: str, local_inputs: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    with rasterio.open(local_inputs["tif"]) as src:
        t, crs = src.transform, src.crs
    rows = range(5, 95, 9)
    pts = [Point(t @ (c + 0.5, r + 0.5)) for r in rows for c in rows]
    gdf = gpd.GeoDataFrame({"cls": [i % 3 for i in range(len(pts))]}, geometry=pts, crs=crs)
    local = tmp_path / f"labels{suffix}"
    if suffix == ".csv":
        ll = gdf.to_crs("EPSG:4326")
        ll.assign(lon=ll.geometry.x, lat=ll.geometry.y).drop(columns="geometry").to_csv(local)
    else:
        gdf.to_file(local)
    url = f"{gcs_bucket}/labels/labels{suffix}"
    filesystem(url).put_file(str(local), url)
    field = str(local_inputs["field"])

    def run(labels: str, out: Path) -> None:
        from click.testing import CliRunner

        from geoembed.cli import main

        args = ["--scheduler", "threads", "-q", "classify", field, "--labels", labels]
        res = CliRunner().invoke(main, [*args, "--label-column", "cls", "-k", "3", "-o", str(out)])
        assert res.exit_code == 0, res.output

    run(str(local), tmp_path / "a.tif")
    run(url, tmp_path / "b.tif")
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
