"""AEF mirrors in the emulated GCS and S3 buckets: open_aef, fetch-aef and ``classify aef:``
on the multi-process cluster give the same vectors and maps as the local tile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from _aef_mirror import Mirror, bbox_of, build_mirror, codes_at
from click.testing import CliRunner
from test_cloud_io import _classify

from geoembed._cloud import filesystem
from geoembed.cli import main
from geoembed.io.aef import dequantize_block
from geoembed.io.aef_open import open_aef

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

_GEOEMBED = str(Path(sys.executable).parent / "geoembed")


@pytest.fixture(scope="module", params=[False, True], ids=["top-down", "bottom-up"])
def mirror(
    request: pytest.FixtureRequest, aef_tif: Path, tmp_path_factory: pytest.TempPathFactory
) -> Mirror:
    return build_mirror(aef_tif, tmp_path_factory.mktemp("aef-mirror"), bottom_up=request.param)


@pytest.fixture(scope="module")
def bottom_up_mirror(aef_tif: Path, tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    return build_mirror(aef_tif, tmp_path_factory.mktemp("aef-bottom-up"), bottom_up=True)


def upload(m: Mirror, bucket: str) -> str:
    fs = filesystem(bucket)
    root = f"{bucket}/mirror/satellite_embedding/v1/annual"
    fs.put(str(m.root) + "/", root + "/", recursive=True)
    fs.invalidate_cache()
    return root


def test_open_aef_from_a_bucket_equals_the_local_mirror(
    mirror: Mirror, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOEMBED_CACHE", str(tmp_path / "cache"))
    root = upload(mirror, bucket)
    bbox = bbox_of(mirror, slice(20, 70), slice(20, 80))
    remote = open_aef(bbox, 2024, source=root)
    local = open_aef(bbox, 2024, source=str(mirror.root))
    assert set(remote) == set(local) == {"15N", "16N"}
    for zone in ("15N", "16N"):
        np.testing.assert_array_equal(remote[zone].values, local[zone].values)
    z16 = remote["16N"]
    np.testing.assert_array_equal(
        z16.values, dequantize_block(codes_at(mirror, z16["x"].values, z16["y"].values))
    )
    # the index was downloaded once, then read from the cache
    cached = list((tmp_path / "cache" / "aef").glob("*.parquet"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    open_aef(bbox, 2024, source=root)
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache" / "aef").glob("*.parquet")] == [stamp]


def test_fetch_aef_from_a_bucket_to_a_bucket(mirror: Mirror, bucket: str, tmp_path: Path) -> None:
    import xarray as xr

    root = upload(mirror, bucket)
    bbox = bbox_of(mirror, slice(10, 90), slice(55, 95))
    out = f"{bucket}/out/field.zarr"
    args = ["--scheduler", "threads", "-q", "fetch-aef", "--bbox", *map(str, bbox)]
    args += ["--year", "2024", "--source", root, "-o", out, "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["dtype"] == "int8"
    fs = filesystem(bucket)
    stored = xr.open_zarr(fs.get_mapper(out), decode_coords="all", mask_and_scale=False)
    emb = stored["embedding"]
    np.testing.assert_array_equal(emb.values, codes_at(mirror, emb["x"].values, emb["y"].values))


def test_classify_aef_on_the_cluster_equals_the_local_tile(
    bottom_up_mirror: Mirror,
    gcs_bucket: str,
    remote_cluster: dict[str, Any],
    aef_tif: Path,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    mirror = bottom_up_mirror  # the harder layout; top-down is the same code path
    csv = shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"
    local_map = tmp_path / "tile.tif"
    _classify(str(aef_tif), str(csv), str(local_map))
    root = upload(mirror, gcs_bucket)
    fs = filesystem(gcs_bucket)
    fs.put_file(str(csv), f"{gcs_bucket}/in/samples.csv")
    bbox = bbox_of(mirror, slice(5, 90), slice(55, 95))  # zone 16: the tile's own grid
    spec = "aef:2024:" + ",".join(f"{v:.7f}" for v in bbox) + f"?source={root}"
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    env = {**remote_cluster["env"], "TMPDIR": str(client_dir)}
    out = f"{gcs_bucket}/maps/map.tif"
    args = ["-q", "--scheduler", remote_cluster["address"], "classify", spec]
    args += ["--training", f"{gcs_bucket}/in/samples.csv", "--label-column", "dw_label"]
    args += ["-k", "5", "-o", out, "--json"]
    res = subprocess.run(
        [_GEOEMBED, *args], env=env, cwd=client_dir, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr + res.stdout
    got = tmp_path / "aef.tif"
    fs.invalidate_cache()
    fs.get_file(out, str(got))
    with rasterio.open(got) as a, rasterio.open(local_map) as b:
        assert a.crs == b.crs
        window = rasterio.windows.from_bounds(*a.bounds, transform=b.transform)
        col0, row0 = round(window.col_off), round(window.row_off)
        assert (window.width, window.height) == pytest.approx((a.width, a.height))
        ref = b.read(1)[row0 : row0 + a.height, col0 : col0 + a.width]
        got_map = a.read(1)
    q = codes_at(
        mirror,
        a.transform.c + 10 * (np.arange(a.width) + 0.5),
        a.transform.f - 10 * (np.arange(a.height) + 0.5),
    )
    masked = (q == -128).any(axis=0)
    assert masked.sum() == 12
    np.testing.assert_array_equal(got_map[~masked], ref[~masked])
    assert (got_map[masked] == 255).all()
