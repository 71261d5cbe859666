"""Zarr v2/v3 reader: both layouts, CRS recovery, years, int8 codes, chunks, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geoembed.errors import (
    BandMismatchError,
    CorruptInputError,
    MissingCRSError,
    MissingDependencyError,
    MissingInputError,
    QuantizationError,
    SchemaError,
)
from geoembed.io import open_embeddings
from geoembed.io.aef import dequantize_block
from geoembed.schema import check_embedding
from geoembed.testing import make_field, raise_if_dask_computes

FORMATS = [2, 3]

pytestmark = pytest.mark.filterwarnings(
    "ignore:The data type .* does not have a Zarr V3 specification"
)


@pytest.fixture
def field() -> xr.DataArray:
    return make_field(37, 53, chunks=16)


def _write(obj: xr.Dataset, path: Path, fmt: int) -> Path:
    obj.to_zarr(path, mode="w", zarr_format=fmt, consolidated=fmt == 2)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_band_array_layout(field: xr.DataArray, tmp_path: Path, fmt: int) -> None:
    path = _write(field.to_dataset(), tmp_path / "f.zarr", fmt)
    with raise_if_dask_computes():
        out = open_embeddings(path, bands=64)
        check_embedding(out, bands=list(field.band.values))
    assert out.rio.crs == field.rio.crs
    assert out.rio.transform() == field.rio.transform()
    # storage chunks are 16 x 16; default chunks are whole multiples of them
    assert all(c % 16 == 0 for c in out.chunks[1][:-1] + out.chunks[2][:-1])
    xr.testing.assert_identical(out.band, field.band)
    np.testing.assert_array_equal(out.values, field.values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_variable_per_band_layout_with_time(field: xr.DataArray, tmp_path: Path, fmt: int) -> None:
    """The layout Xee exports: A00..A63 variables over (time, y, x), CRS as an attribute."""
    field = field.compute()  # one stored chunk per variable keeps the test fast
    years = [field, (field * 0.5).astype("float32")]
    stacked = xr.concat(
        years, dim=pd.Index(pd.to_datetime(["2023-01-01", "2024-01-01"]), name="time")
    )
    ds = stacked.to_dataset("band").drop_vars("spatial_ref")
    for v in ds.data_vars.values():
        v.encoding.pop("grid_mapping", None)
        v.attrs.pop("grid_mapping", None)
    ds.attrs["crs"] = "EPSG:32616"
    path = _write(ds, tmp_path / "xee.zarr", fmt)
    with raise_if_dask_computes():
        out = open_embeddings(path, year=2024, bands=64)
    assert out.rio.crs.to_epsg() == 32616
    assert out.chunks[0] == (64,)
    np.testing.assert_allclose(out.values, field.values * 0.5)
    with pytest.raises(SchemaError, match="year"):
        open_embeddings(path, year=2020)
    with pytest.raises(Exception, match="year="):
        open_embeddings(path)  # two time steps and no year


@pytest.mark.parametrize("fmt", FORMATS)
def test_grid_mapping_variable_named_crs(field: xr.DataArray, tmp_path: Path, fmt: int) -> None:
    ds = field.to_dataset().rename({"spatial_ref": "crs"})
    ds["embedding"].encoding["grid_mapping"] = "crs"
    ds["embedding"].attrs.pop("grid_mapping", None)
    path = _write(ds, tmp_path / "gm.zarr", fmt)
    out = open_embeddings(path)
    assert out.rio.crs == field.rio.crs


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_crs_is_an_error(field: xr.DataArray, tmp_path: Path, fmt: int) -> None:
    ds = field.to_dataset().drop_vars("spatial_ref")
    ds["embedding"].attrs.pop("grid_mapping", None)
    ds["embedding"].encoding.pop("grid_mapping", None)
    path = _write(ds, tmp_path / "nocrs.zarr", fmt)
    with raise_if_dask_computes(), pytest.raises(MissingCRSError, match=r"nocrs\.zarr.*write_crs"):
        open_embeddings(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_codes_in_zarr(field: xr.DataArray, tmp_path: Path, fmt: int) -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(-127, 128, size=field.shape).astype(np.int8)
    codes[:, 4, 5] = -128
    codes[10, 6, 7] = -128
    da = field.copy(data=codes)
    da.encoding["_FillValue"] = -128
    path = _write(da.to_dataset(), tmp_path / "q.zarr", fmt)
    out = open_embeddings(path)
    assert out.attrs["quantization"] == "aef"
    np.testing.assert_array_equal(out.values, dequantize_block(codes))
    assert np.isnan(out.values[:, 6, 7]).all()
    da.encoding = {}
    path = _write(da.to_dataset(), tmp_path / "q_nofill.zarr", fmt)
    with pytest.raises(QuantizationError, match="quantization='aef'"):
        open_embeddings(path)
    np.testing.assert_array_equal(
        open_embeddings(path, quantization="aef").values, dequantize_block(codes)
    )


def test_wrong_band_count(field: xr.DataArray, tmp_path: Path) -> None:
    path = _write(field.isel(band=slice(0, 63)).to_dataset(), tmp_path / "b63.zarr", 3)
    with raise_if_dask_computes(), pytest.raises(BandMismatchError, match="63 bands; expected 64"):
        open_embeddings(path, bands=64)


def test_user_chunks_and_band_split_refused(field: xr.DataArray, tmp_path: Path) -> None:
    path = _write(field.to_dataset(), tmp_path / "c.zarr", 3)
    out = open_embeddings(path, chunks={"y": 32, "x": -1})
    assert out.chunks[1][0] == 32 and out.chunks[2] == (53,)
    with pytest.raises(Exception, match="band"):
        open_embeddings(path, chunks={"band": 8})


def test_missing_store_and_cloud_without_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MissingInputError, match="does not exist"):
        open_embeddings(tmp_path / "nothing.zarr")
    pytest.importorskip("fsspec")
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if geoembed[cloud] were not installed
    with pytest.raises(MissingDependencyError, match=r"gcsfs.*geoembed\[cloud\]"):
        open_embeddings("gs://bucket/field.zarr")


def _nan_chunk_field(field: xr.DataArray) -> xr.DataArray:
    """The field with its first 16 x 16 storage chunk entirely nodata (fill value)."""
    data = field.values.copy()
    data[:, :16, :16] = np.nan
    return field.copy(data=data).chunk({"y": 16, "x": 16})


@pytest.mark.parametrize("fmt", FORMATS)
def test_absent_chunk_is_an_error_unless_the_store_is_sparse(
    field: xr.DataArray, tmp_path: Path, fmt: int
) -> None:
    """xarray/zarr 3 leave out all-fill chunks by default: geoembed refuses that silence."""
    import zarr

    field = _nan_chunk_field(field)
    path = _write(field.to_dataset(), tmp_path / "sparse.zarr", fmt)
    key = "embedding/c/0/0/0" if fmt == 3 else "embedding/0.0.0"
    assert not (path / key).exists()  # zarr's default write_empty_chunks=False
    with raise_if_dask_computes(), pytest.raises(CorruptInputError) as err:
        open_embeddings(path)
    message = str(err.value)
    assert f"{path}: 1 chunk(s) of array 'embedding' are missing ({key})" in message
    assert "geoembed:sparse = true" in message and "Re-export or re-download" in message
    zarr.open_group(str(path), mode="r+").attrs["geoembed:sparse"] = True
    if fmt == 2:
        zarr.consolidate_metadata(str(path))
    out = open_embeddings(path)
    np.testing.assert_array_equal(out.values, field.values)  # absent = NaN nodata
    assert np.isnan(out.values[:, :16, :16]).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_bit_flip_in_a_checksummed_foreign_store(
    field: xr.DataArray, tmp_path: Path, fmt: int
) -> None:
    import numcodecs
    from zarr.codecs import ZstdCodec

    codec = numcodecs.Zstd(checksum=True) if fmt == 2 else ZstdCodec(checksum=True)
    path = tmp_path / "flip.zarr"
    field.to_dataset().to_zarr(
        path,
        mode="w",
        zarr_format=fmt,
        consolidated=fmt == 2,
        encoding={"embedding": {"compressors": [codec]}},
    )
    key = "embedding/c/0/1/2" if fmt == 3 else "embedding/0.1.2"
    raw = bytearray((path / key).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (path / key).write_bytes(bytes(raw))
    with raise_if_dask_computes():
        out = open_embeddings(path)  # lazy: the damage is found when the chunk is read
    # other chunks read fine
    np.testing.assert_array_equal(out[:, :16, :16].values, field[:, :16, :16].values)
    with pytest.raises(CorruptInputError) as err:
        out.compute()
    message = str(err.value)
    assert f"{path}: chunk {key} (index (0, 1, 2)) of array 'embedding' is corrupt" in message
    assert "cannot be decoded" in message and "\n" not in message
    assert isinstance(err.value, OSError)


def test_fsspec_url_store_is_checked_too(field: xr.DataArray, tmp_path: Path) -> None:
    """The key listing and the checked reads go through fsspec for URLs (memory:// here)."""
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://{tmp_path.name}/f.zarr"
    fs = fsspec.filesystem("memory")
    try:
        field.to_dataset().to_zarr(url, zarr_format=3, consolidated=False)
        with raise_if_dask_computes():
            out = open_embeddings(url)
        np.testing.assert_array_equal(out.values, field.values)
        fs.rm(f"/{tmp_path.name}/f.zarr/embedding/c/0/1/1")
        with raise_if_dask_computes(), pytest.raises(CorruptInputError, match=r"c/0/1/1.*\(nan\)"):
            open_embeddings(url)
    finally:
        fs.rm(f"/{tmp_path.name}", recursive=True)


def test_corrupt_coordinate_chunk_is_named_at_open(field: xr.DataArray, tmp_path: Path) -> None:
    """xarray reads coordinates on the client: a damaged one is named before any task."""
    from geoembed.export import write_zarr

    out = write_zarr(field, tmp_path / "c.zarr")
    chunk = out / "x" / "c" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with raise_if_dask_computes(), pytest.raises(CorruptInputError) as err:
        open_embeddings(out)
    assert str(err.value).startswith(f"{out}: chunk x/c/0 of array 'x' is corrupt")
    assert "Re-export or re-download" in str(err.value)


def test_chunk_manifest_that_disagrees_with_the_array(field: xr.DataArray, tmp_path: Path) -> None:
    import zarr

    from geoembed.export import verify, write_zarr

    out = write_zarr(field, tmp_path / "m.zarr")
    group = zarr.open_group(str(out), mode="r+")
    manifest = dict(group.attrs["geoembed:chunks"])
    manifest["embedding"] = {"n_chunks": 11, "crc32": manifest["embedding"]["crc32"][:11]}
    group.attrs["geoembed:chunks"] = manifest
    with raise_if_dask_computes(), pytest.raises(CorruptInputError, match="recorded 11 when"):
        open_embeddings(out)
    report = verify(out)
    assert not report["valid"]
    assert "array 'embedding' has 12 chunks, the manifest records 11" in report["problems"][0]


def test_strided_reads_of_a_checked_store(field: xr.DataArray, tmp_path: Path) -> None:
    """Decimated reads (quick looks) through the checksummed reader equal NumPy's slicing.

    Dask fuses a strided selection into the read of each block, so the reader gets steps
    (positive and negative, with offsets, across chunk edges); a damaged chunk inside the
    covering range is still found.
    """
    import dask

    from geoembed.errors import CorruptInputError
    from geoembed.export import write_zarr

    store = tmp_path / "f.zarr"
    with dask.config.set(scheduler="sync"):
        write_zarr(field, store)
        opened = open_embeddings(store)
        full = opened.values
        for sel in [
            (slice(None), slice(None, None, 2), slice(None, None, 3)),
            (slice(1, None, 5), slice(3, 35, 7), slice(None, None, 16)),
            (slice(None), slice(None, None, -2), slice(50, 2, -3)),
            (2, slice(None, None, 4), slice(5, 6, 9)),
            (slice(None), slice(10, 10, 2), slice(None)),
        ]:
            got = opened.data[sel].compute()
            np.testing.assert_array_equal(got, full[sel], err_msg=str(sel))
        chunk = next(p for p in (store / "embedding" / "c").rglob("*") if p.is_file())
        raw = bytearray(chunk.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        chunk.write_bytes(bytes(raw))
        with pytest.raises(CorruptInputError):
            open_embeddings(store).data[:, ::2, ::2].compute()
