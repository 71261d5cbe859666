"""``geoembed info`` and ``geoembed export-ee`` (without the ee extra) through click."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _io_data import aef_variant
from click.testing import CliRunner

from geoembed.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.shared_data
def test_info_json_on_the_real_tile(runner: CliRunner, aef_tif: Path) -> None:
    res = runner.invoke(main, ["info", "--json", str(aef_tif)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["bands"] == 64 and info["band_names"][0] == "A00"
    assert info["crs"] == "EPSG:32616"
    assert info["resolution"] == [10.0, 10.0] and info["orientation"] == "north-up"
    assert (info["width"], info["height"]) == (97, 97)
    assert info["dtype"] == "float32"
    assert (info["source_dtype"], info["quantization"]) == ("int8", "aef")
    assert info["bounds"] == [358410.0, 4905630.0, 359380.0, 4906600.0]
    assert info["nodata_fraction"] == 0.0
    assert 0.99 <= info["vector_length"]["min"] <= info["vector_length"]["max"] <= 1.01
    assert info["unit_length"] is True


@pytest.mark.shared_data
def test_info_text_masked_bottom_up(runner: CliRunner, aef_tif: Path, tmp_path: Path) -> None:
    path = aef_variant(aef_tif, tmp_path / "v.tif", bottom_up=True, mask_pixels=[(1, 1)])
    res = runner.invoke(main, ["--scheduler", "sync", "info", str(path)])
    assert res.exit_code == 0, res.output
    assert "EPSG:32616" in res.output and "10 m (bottom-up)" in res.output
    assert "64 (A00..A63)" in res.output
    assert f"{100 / 97**2:.2f} %" in res.output


@pytest.mark.shared_data
def test_info_metadata_only(runner: CliRunner, aef_tif: Path) -> None:
    res = runner.invoke(main, ["info", "--json", "--sample", "0", str(aef_tif)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["sample_pixels"] == 0 and info["vector_length"] is None


def test_info_errors_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(main, ["info", str(tmp_path / "missing.tif")])
    assert res.exit_code == 2
    assert "missing.tif does not exist" in res.output


def test_export_ee_without_extra(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ee", None)
    out = tmp_path / "field.zarr"
    res = runner.invoke(
        main,
        ["export-ee", "--bbox", "-88.8,44.2,-88.7,44.3", "--year", "2024", "-o", str(out)],
    )
    assert res.exit_code == 2
    assert "earthengine-api" in res.output and 'pip install "geoembed[ee]"' in res.output
    assert not out.exists()


def test_export_ee_bad_bbox(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(
        main, ["export-ee", "--bbox", "1,2,3", "--year", "2024", "-o", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "four numbers" in res.output


def test_utm_zone_for_bbox() -> None:
    from geoembed.cli.export_ee import utm_crs_for

    assert utm_crs_for((-88.8, 44.2, -88.7, 44.3)) == "EPSG:32616"
    assert utm_crs_for((14.5, 45.9, 14.6, 46.0)) == "EPSG:32633"
    assert utm_crs_for((-47.0, -23.6, -46.9, -23.5)) == "EPSG:32723"
