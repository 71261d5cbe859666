"""``geoembed fetch-aef`` and ``aef:YEAR:W,S,E,N`` inputs on local AEF mirrors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from _aef_mirror import Mirror, bbox_of, build_mirror, codes_at
from click.testing import CliRunner
from sklearn.neighbors import KNeighborsClassifier

from geoembed.cli import main
from geoembed.io import open_embeddings
from geoembed.io.aef import dequantize_block
from geoembed.io.aef_fetch import encode_block
from geoembed.io.aef_open import open_aef_field, parse_aef_spec

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

BANDS = [f"A{i:02d}" for i in range(64)]


@pytest.fixture(scope="module", params=[False, True], ids=["top-down", "bottom-up"])
def mirror(
    request: pytest.FixtureRequest, aef_tif: Path, tmp_path_factory: pytest.TempPathFactory
) -> Mirror:
    root = tmp_path_factory.mktemp("aef-mirror")
    return build_mirror(aef_tif, root, bottom_up=request.param)


def spec(m: Mirror, bbox: tuple[float, ...], **extra: str) -> str:
    query = "&".join([f"source={m.root}", *(f"{k}={v}" for k, v in extra.items())])
    return "aef:2024:" + ",".join(f"{v:.7f}" for v in bbox) + "?" + query


def run(args: list[str]) -> object:
    return CliRunner().invoke(main, ["--scheduler", "threads", "-q", *args])


def test_encode_is_the_exact_inverse_of_decoding() -> None:
    q = np.arange(-128, 128, dtype=np.int8).reshape(256, 1)
    v = dequantize_block(q, axis=1)
    np.testing.assert_array_equal(encode_block(v), q)


def test_fetch_keeps_int8_codes_and_resumes(mirror: Mirror, tmp_path: Path) -> None:
    bbox = bbox_of(mirror, slice(10, 90), slice(55, 95))
    out = tmp_path / "field.zarr"
    args = ["fetch-aef", "--bbox", *map(str, bbox), "--year", "2024"]
    res = run([*args, "--source", str(mirror.root), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["dtype"] == "int8" and summary["resumed"] is False
    import xarray as xr

    ds = xr.open_zarr(out, decode_coords="all", mask_and_scale=False)
    stored = ds["embedding"]
    assert stored.dtype == np.int8
    # exactly the tile's codes (masked block included), from both 16N files
    expect = codes_at(mirror, stored["x"].values, stored["y"].values)
    np.testing.assert_array_equal(stored.values, expect)
    assert (stored.values == -128).all(axis=0).sum() == 12
    # it opens as the canonical field, de-quantized
    field = open_embeddings(out)
    np.testing.assert_array_equal(field.values, dequantize_block(expect, axis=0))

    # an interrupted fetch: a partial store missing some chunks is finished, not redone
    again = tmp_path / "again.zarr"
    partial = tmp_path / "again.zarr.partial"
    shutil.copytree(out, partial)
    chunk_files = sorted(
        p for p in (partial / "embedding").rglob("*") if p.is_file() and "c" in p.parts
    )
    assert chunk_files
    for p in chunk_files[: max(1, len(chunk_files) // 2)]:
        p.unlink()
    res = run([*args, "--source", str(mirror.root), "-o", str(again), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["resumed"] is True
    back = xr.open_zarr(again, decode_coords="all", mask_and_scale=False)["embedding"]
    np.testing.assert_array_equal(back.values, stored.values)
    assert not partial.exists()


def test_fetch_dequantize_and_overview(mirror: Mirror, tmp_path: Path) -> None:
    bbox = bbox_of(mirror, slice(0, 96), slice(50, 97))
    out = tmp_path / "float.zarr"
    res = run(
        [
            "fetch-aef",
            "--bbox",
            *map(str, bbox),
            "--year",
            "2024",
            "--source",
            str(mirror.root),
            "--dequantize",
            "--resolution",
            "20",
            "-o",
            str(out),
        ]
    )
    assert res.exit_code == 0, res.output
    field = open_embeddings(out)
    assert field.rio.resolution() == (20.0, -20.0)
    direct = open_aef_field(bbox, 2024, source=str(mirror.root), resolution=20)
    np.testing.assert_array_equal(field.values, direct.values)


def test_bad_bbox_fails_before_anything_is_written(mirror: Mirror, tmp_path: Path) -> None:
    out = tmp_path / "x.zarr"
    res = run(
        [
            "fetch-aef",
            "--bbox",
            "10",
            "50",
            "10.1",
            "50.1",
            "--year",
            "2024",
            "--source",
            str(mirror.root),
            "-o",
            str(out),
        ]
    )
    assert res.exit_code == 2
    assert "intersects" in res.output
    assert list(tmp_path.iterdir()) == []


def test_aef_spec_is_a_field_input(mirror: Mirror, shared_data: Path, tmp_path: Path) -> None:
    bbox = bbox_of(mirror, slice(5, 90), slice(10, 95))  # both zones
    text = spec(mirror, bbox)
    year, _bounds, options = parse_aef_spec(text)
    assert year == 2024 and options["source"] == str(mirror.root)
    field = open_embeddings(text)
    # several zones: one field in the UTM zone of the centre (16N), zone 15 resampled
    assert field.rio.crs.to_epsg() == 32616
    assert field.attrs["source"] == text
    east = field.isel(x=field["x"].values > mirror.transform.c + 10 * 49)
    np.testing.assert_array_equal(
        east.values, dequantize_block(codes_at(mirror, east["x"].values, east["y"].values))
    )
    res = run(["info", text, "--json"])
    assert res.exit_code == 0, res.output

    csv = shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"
    out = tmp_path / "map.tif"
    res = run(
        ["classify", text, "--training", str(csv), "--label-column", "dw_label", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(csv)
    knn = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(
        df[BANDS].to_numpy(np.float32), df["dw_label"].to_numpy()
    )
    values = field.values.reshape(64, -1).T
    ok = ~np.isnan(values).any(axis=1)
    expected = np.full(values.shape[0], 255, dtype=np.uint8)
    expected[ok] = knn.predict(values[ok])
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1).ravel(), expected)


def test_bad_spec_names_the_spelling() -> None:
    from geoembed.errors import SchemaError

    with pytest.raises(SchemaError, match="aef:YEAR:WEST,SOUTH,EAST,NORTH"):
        open_embeddings("aef:2024:1,2,3")
    with pytest.raises(SchemaError, match="'colour' is not one of"):
        open_embeddings("aef:2024:1,2,3,4?colour=red")
