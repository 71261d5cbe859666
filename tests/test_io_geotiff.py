"""GeoTIFF/COG reader: single file, lists stacked on bands, chunks, corrupt and missing files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from _io_data import aef_variant, read_codes, write_tif
from rasterio.transform import from_origin

from geoembed.errors import (
    BandMismatchError,
    CorruptInputError,
    MissingCRSError,
    MissingInputError,
    SchemaError,
)
from geoembed.io import open_embeddings
from geoembed.schema import check_embedding
from geoembed.testing import raise_if_dask_computes


def _float_tif(path: Path, data: np.ndarray, **kw: object) -> Path:
    profile = {
        "driver": "GTiff",
        "crs": "EPSG:32633",
        "transform": from_origin(465180.0, 5080260.0, 10.0, 10.0),
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
        "height": data.shape[1],
        "width": data.shape[2],
    }
    profile.update(kw)
    return write_tif(path, data, profile)


@pytest.fixture
def floats() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 45, 70)).astype(np.float32)


def test_float_geotiff_generic_band_names(floats: np.ndarray, tmp_path: Path) -> None:
    path = _float_tif(tmp_path / "f.tif", floats, nodata=-9999.0)
    with raise_if_dask_computes():
        field = open_embeddings(path, bands=6)
        check_embedding(field, bands=[f"F{i:03d}" for i in range(6)])
    assert field.rio.crs.to_epsg() == 32633
    assert field.rio.transform() == from_origin(465180.0, 5080260.0, 10.0, 10.0)
    np.testing.assert_array_equal(field.values, floats)


def test_float_nodata_value_becomes_nan(floats: np.ndarray, tmp_path: Path) -> None:
    floats = floats.copy()
    floats[2, 5, 6] = -9999.0
    field = open_embeddings(_float_tif(tmp_path / "nd.tif", floats, nodata=-9999.0))
    assert np.isnan(field.values[2, 5, 6])
    assert np.isnan(field.values).sum() == 1


def test_list_of_files_stacked_on_bands(aef_tif: Path, tmp_path: Path) -> None:
    data, prof, desc = read_codes(aef_tif)
    parts = [
        write_tif(tmp_path / f"part{i}.tif", data[s], prof, descriptions=desc[s])
        for i, s in enumerate([slice(0, 20), slice(20, 64)])
    ]
    with raise_if_dask_computes():
        stacked = open_embeddings(parts, bands=64)
    whole = open_embeddings(aef_tif)
    assert [str(b) for b in stacked.band.values] == desc
    np.testing.assert_array_equal(stacked.values, whole.values)
    assert stacked.chunks[0] == (64,)


def test_list_of_files_on_different_grids_is_refused(floats: np.ndarray, tmp_path: Path) -> None:
    a = _float_tif(tmp_path / "a.tif", floats)
    b = _float_tif(
        tmp_path / "b.tif", floats, transform=from_origin(465190.0, 5080260.0, 10.0, 10.0)
    )
    with pytest.raises(SchemaError, match="grid"):
        open_embeddings([a, b])


def test_same_file_twice_is_refused(aef_tif: Path) -> None:
    with pytest.raises(BandMismatchError, match="twice"):
        open_embeddings([aef_tif, aef_tif])


@pytest.mark.parametrize("n", [63, 65])
def test_wrong_band_count(aef_tif: Path, tmp_path: Path, n: int) -> None:
    path = aef_variant(aef_tif, tmp_path / f"b{n}.tif", n_bands=n)
    with raise_if_dask_computes(), pytest.raises(BandMismatchError, match=f"{n} bands"):
        open_embeddings(path, bands=64)


def test_band_names_override(aef_tif: Path) -> None:
    names = [f"E{i}" for i in range(64)]
    field = open_embeddings(aef_tif, band_names=names)
    assert [str(b) for b in field.band.values] == names
    with pytest.raises(BandMismatchError, match="one name per band"):
        open_embeddings(aef_tif, band_names=names[:3])


def test_default_chunks_align_with_tiles(tmp_path: Path) -> None:
    data = np.zeros((64, 1100, 1300), dtype=np.int8)
    prof = {
        "driver": "GTiff",
        "crs": "EPSG:32616",
        "transform": from_origin(0.0, 0.0, 10.0, 10.0),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "height": 1100,
        "width": 1300,
        "nodata": -128,
        "compress": "deflate",
    }
    path = write_tif(tmp_path / "big.tif", data, prof)
    field = open_embeddings(path)
    cy, cx = field.chunks[1][0], field.chunks[2][0]
    assert cy % 256 == 0 and cx % 256 == 0
    assert 32 * 2**20 <= 64 * cy * cx * 4 <= 128 * 2**20
    assert field.attrs["storage_block"] == [256, 256]
    custom = open_embeddings(path, chunks=300)  # not aligned: allowed, with a warning
    assert custom.chunks[1][0] == 300


def test_no_crs_is_an_error(floats: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=45,
        width=70,
        count=6,
        dtype="float32",
        transform=from_origin(100.0, 200.0, 1.0, 1.0),
    ) as ds:
        ds.write(floats)
    with pytest.raises(MissingCRSError, match=r"nocrs\.tif has no CRS"):
        open_embeddings(path)


def test_truncated_file(aef_tif: Path, tmp_path: Path) -> None:
    raw = aef_tif.read_bytes()
    for frac in (0.6, 0.001):
        path = tmp_path / f"trunc{frac}.tif"
        path.write_bytes(raw[: int(len(raw) * frac)])
        with raise_if_dask_computes(), pytest.raises(CorruptInputError, match=path.name):
            open_embeddings(path)


def test_not_a_raster(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("hello")
    with pytest.raises(CorruptInputError, match=r"notes\.tif"):
        open_embeddings(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"nope\.tif does not exist"):
        open_embeddings(tmp_path / "nope.tif")
    with pytest.raises(FileNotFoundError):  # also the builtin
        open_embeddings([tmp_path / "nope.tif", tmp_path / "nope2.tif"])


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore:The data type")
def test_reads_on_worker_processes(dask_client: object, aef_tif: Path, tmp_path: Path) -> None:
    """The lazy field pickles to real worker processes and decodes there."""
    masked = aef_variant(aef_tif, tmp_path / "m.tif", mask_pixels=[(7, 8)])
    field = open_embeddings(masked, chunks=32)
    local = open_embeddings(masked, chunks=32).compute(scheduler="sync")
    remote = dask_client.compute(field).result()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(remote.values, local.values)
    assert np.isnan(remote.values[:, 7, 8]).all()
    zarr_path = tmp_path / "m.zarr"
    local.chunk({"y": 32, "x": 32}).to_dataset().to_zarr(zarr_path, zarr_format=3)
    from_zarr = dask_client.compute(open_embeddings(zarr_path)).result()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(from_zarr.values, local.values)
