"""Inputs by URL against real object-store emulators (fake-gcs-server, moto server)."""

from __future__ import annotations

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
