"""``geoembed verify`` of outputs in the emulated buckets (fake-gcs-server, moto server)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoembed._cloud import filesystem
from geoembed.cli import main
from geoembed.datasets import synthetic_scene
from geoembed.errors import OutputError
from geoembed.export import verify, write_zarr


@pytest.fixture(scope="module")
def field_zarr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify-url") / "field.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        write_zarr(synthetic_scene(600, 80, seed=2, chunks=200).field, path)
    return path


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["--scheduler", "threads", "-q", *args])
    return res.exit_code, res.output


def test_verify_cog_and_stac_item_by_url(bucket: str, field_zarr: Path) -> None:
    url = f"{bucket}/out/map.tif"
    code, out = _cli("cluster", str(field_zarr), "-k", "3", "--max-iter", "2", "-o", url)
    assert code == 0, out
    report = verify(url, full=True, stac=True)
    assert report["valid"], report["problems"]
    assert report["format"] == "GeoTIFF" and report["is_cog"]
    assert (report["height"], report["width"]) == (600, 80)
    assert report["overview_blocks_read"] > 0
    assert report["stac_item"]["valid"]
    item = verify(url + ".stac.json")
    assert item["format"] == "STAC Item" and item["valid"], item["problems"]
    assert item["path"] == url + ".stac.json"
    code, out = _cli("verify", "--full", "--stac", url)
    assert code == 0, out
    assert f"{url}: valid GeoTIFF" in out and "STAC Item: valid" in out
    code, out = _cli("verify", "--json", url + ".stac.json")
    assert code == 0 and json.loads(out)["valid"]


def test_verify_finds_a_truncated_cog_and_a_stale_item(bucket: str, field_zarr: Path) -> None:
    url = f"{bucket}/bad/map.tif"
    code, out = _cli("cluster", str(field_zarr), "-k", "3", "--max-iter", "2", "-o", url)
    assert code == 0, out
    fs = filesystem(bucket)
    data = fs.cat(url)
    fs.pipe(url, data[: len(data) * 2 // 3])  # cut off: the Item's size/checksum no longer match
    fs.invalidate_cache()
    report = verify(url, full=True)
    assert not report["valid"]
    assert any("STAC Item" in p for p in report["problems"])
    assert any("block" in p or "cannot be read" in p for p in report["problems"])
    code, out = _cli("verify", url + ".stac.json")
    assert code == 1 and "INVALID" in out


def test_verify_zarr_by_url(bucket: str, field_zarr: Path) -> None:
    url = f"{bucket}/z/field.zarr"
    filesystem(bucket).put(str(field_zarr), url, recursive=True)
    report = verify(url, full=True)
    assert report["format"] == "Zarr" and report["valid"], report["problems"]
    assert report["n_missing_chunks"] == 0 and report["n_corrupt_chunks"] == 0
    assert report["stac_item"] is None
    fs = filesystem(bucket)
    chunk = next(k for k in fs.find(url) if "/embedding/c/" in k or "/embedding/" in k)
    fs.rm(chunk if "://" in chunk else f"{url.split('://')[0]}://{chunk}")
    fs.invalidate_cache()
    assert verify(url)["n_missing_chunks"] == 1


def test_verify_missing_url_is_one_clear_error(bucket: str) -> None:
    url = f"{bucket}/nothing/here.tif"
    with pytest.raises(OutputError, match="does not exist"):
        verify(url)
    code, out = _cli("verify", url)
    assert code == 2 and "does not exist" in out and "Traceback" not in out


def test_info_by_url(bucket: str, field_zarr: Path) -> None:
    url = f"{bucket}/info/field.zarr"
    filesystem(bucket).put(str(field_zarr), url, recursive=True)
    code, out = _cli("info", "--json", "--sample", "1000", url)
    assert code == 0, out
    summary = json.loads(out)
    assert (summary["height"], summary["width"]) == (600, 80)
    code, out = _cli("info", f"{bucket}/info/missing.zarr")
    assert code != 0 and "does not exist" in out and "Traceback" not in out
