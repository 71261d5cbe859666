"""``geoembed verify`` and geoembed.export.verify on good, broken and foreign outputs."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geoembed.cli import main
from geoembed.errors import OutputError
from geoembed.export import verify, write_cog, write_zarr
from geoembed.schema import map_like
from geoembed.testing import make_field


@pytest.fixture
def class_map():
    field = make_field(300, 200, bands=4, chunks=None)
    cls = (np.arange(300 * 200).reshape(300, 200) % 5).astype(np.uint8)
    return map_like(field, dsa.from_array(cls, chunks=100), name="class", nodata=255)


def _invoke(*args: str):
    return CliRunner().invoke(main, ["verify", *args], catch_exceptions=False)


def test_valid_cog_json(tmp_path: Path, class_map) -> None:
    out = write_cog(class_map, tmp_path / "c.tif", class_names=["a", "b"], blocksize=64)
    result = _invoke("--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["valid"] and report["is_cog"]
    assert report["crs"] == "EPSG:32616"
    assert (report["height"], report["width"]) == (300, 200)
    assert report["nodata"] == 255
    assert report["overviews"] == [2, 4, 8]
    assert report["class_names"] == {"0": "a", "1": "b"}
    full = verify(out, full=True)
    assert full["valid"] and full["blocks_read"] > 1
    # every block of each overview level is decoded too: 3 x 2, 2 x 1, 1 x 1 tiles of 64
    assert full["overview_blocks_read"] == 6 + 2 + 1


def test_valid_cog_text(tmp_path: Path, class_map) -> None:
    out = write_cog(class_map, tmp_path / "c.tif")
    result = _invoke(str(out))
    assert result.exit_code == 0
    assert "valid" in result.output and "EPSG:32616" in result.output


def test_striped_geotiff_is_not_a_cog(tmp_path: Path) -> None:
    path = tmp_path / "striped.tif"
    data = np.zeros((1, 1200, 1100), np.uint8)
    profile = {
        "driver": "GTiff",
        "height": 1200,
        "width": 1100,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32616",
        "transform": from_origin(0, 0, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    result = _invoke("--json", str(path))
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not report["valid"] and not report["is_cog"]
    assert report["problems"]


def test_truncated_cog_is_invalid(tmp_path: Path, class_map) -> None:
    rng = np.random.default_rng(0)
    noisy = class_map.copy(data=dsa.from_array(rng.integers(0, 5, (300, 200), dtype=np.uint8)))
    out = write_cog(noisy, tmp_path / "t.tif", blocksize=64)
    raw = out.read_bytes()
    out.write_bytes(raw[: len(raw) // 2])
    report = verify(out)
    assert not report["valid"]
    assert _invoke(str(out)).exit_code == 1


def test_zarr_missing_chunk_exit_code(tmp_path: Path, class_map) -> None:
    out = write_zarr(class_map, tmp_path / "m.zarr")
    assert _invoke(str(out)).exit_code == 0
    chunk = sorted(p for p in (out / "class" / "c").rglob("*") if p.is_file())[0]
    chunk.unlink()
    result = _invoke("--json", str(out))
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["n_missing_chunks"] == 1
    assert report["missing_chunks"]["class"] == [[0, 0]]


def test_missing_output(tmp_path: Path) -> None:
    with pytest.raises(OutputError):
        verify(tmp_path / "none.tif")
    assert _invoke(str(tmp_path / "none.tif")).exit_code == 2


def test_zarr_declared_sparse_may_lack_chunks(tmp_path: Path, class_map) -> None:
    import zarr

    out = write_zarr(class_map, tmp_path / "s.zarr")
    (out / "class" / "c" / "0" / "0").unlink()
    assert _invoke("--full", str(out)).exit_code == 1
    zarr.open_group(str(out), mode="r+").attrs["geoembed:sparse"] = True
    result = _invoke("--full", "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["sparse"] and report["n_missing_chunks"] == 1
    assert report["n_corrupt_chunks"] == 0


def test_zarr_full_reports_a_truncated_chunk_in_one_line(tmp_path: Path, class_map) -> None:
    out = write_zarr(class_map, tmp_path / "t.zarr")
    chunk = out / "class" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    result = CliRunner().invoke(main, ["verify", "--full", str(out)])
    assert result.exit_code == 1
    problems = [ln for ln in result.output.splitlines() if "problem:" in ln]
    assert len(problems) == 1, result.output
    assert problems[0].startswith("  problem: array 'class': chunk class/c/1/0 is corrupt")
