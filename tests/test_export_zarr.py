"""Round trips, completeness checks and resume of geoembed.export.write_zarr."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
import zarr

from geoembed.errors import OutputError
from geoembed.export import missing_chunks, verify, write_zarr
from geoembed.export.zarr import _array_metadata, _write_chunk
from geoembed.schema import map_like
from geoembed.testing import make_field, raise_if_dask_computes


def _class_map(height: int = 37, width: int = 53, chunks: object = 16) -> xr.DataArray:
    field = make_field(height, width, bands=4, chunks=None)
    cls = (np.arange(height * width).reshape(height, width) % 5).astype(np.uint8)
    cls[:16, :16] = 255  # one whole chunk of nodata (= fill value): must still be stored
    return map_like(field, dsa.from_array(cls, chunks=chunks), name="class", nodata=255)


def _chunk_files(store: Path, name: str) -> list[Path]:
    return sorted(p for p in (store / name / "c").rglob("*") if p.is_file())


def test_class_map_round_trip_keeps_crs_and_every_chunk(tmp_path: Path) -> None:
    da = _class_map()
    out = write_zarr(da, tmp_path / "classes.zarr")
    assert out == tmp_path / "classes.zarr"
    assert not (tmp_path / "classes.zarr.partial").exists()
    assert missing_chunks(out) == {}
    assert len(_chunk_files(out, "class")) == 3 * 4  # incl. the all-nodata chunk
    back = xr.open_zarr(out, decode_coords="all", mask_and_scale=False)["class"]
    assert back.rio.crs.to_epsg() == 32616
    assert back.rio.nodata == 255
    assert back.dtype == np.uint8
    assert back.chunks == ((16, 16, 5), (16, 16, 16, 5))
    np.testing.assert_array_equal(back.values, da.values)
    np.testing.assert_array_equal(back.y.values, da.y.values)
    report = verify(out)
    assert report["valid"], report["problems"]
    assert report["crs"] == "EPSG:32616"


def test_field_round_trip_opens_with_geoembed_io(tmp_path: Path) -> None:
    field = make_field(37, 53, chunks=16, bottom_up=True)
    out = write_zarr(field, tmp_path / "field.zarr")
    from geoembed.io import open_embeddings

    back = open_embeddings(str(out))
    assert back.rio.crs.to_epsg() == 32616
    assert list(back.band.values) == list(field.band.values)
    np.testing.assert_array_equal(back.values, field.values)
    np.testing.assert_array_equal(back.y.values, field.y.values)


def test_dataset_with_several_outputs_and_numpy_data(tmp_path: Path) -> None:
    da = _class_map()
    conf = xr.DataArray(np.random.default_rng(0).random(da.shape).astype("float32"), dims=da.dims)
    ds = xr.Dataset({"class": da, "confidence": conf})
    out = write_zarr(ds, tmp_path / "both.zarr")
    back = xr.open_zarr(out, decode_coords="all")
    np.testing.assert_array_equal(back["confidence"].values, conf.values)
    assert back["confidence"].rio.crs.to_epsg() == 32616
    assert missing_chunks(out) == {}


def test_irregular_dask_chunks_are_made_regular(tmp_path: Path) -> None:
    field = make_field(37, 53, bands=4, chunks=None)
    data = dsa.from_array(np.ones((37, 53), "float32"), chunks=((10, 20, 7), (30, 23)))
    out = write_zarr(map_like(field, data, name="c"), tmp_path / "r.zarr")
    back = xr.open_zarr(out)["c"]
    assert back.chunks == ((10, 10, 10, 7), (30, 23))
    assert float(back.sum()) == 37 * 53


def test_deleted_chunk_is_reported(tmp_path: Path) -> None:
    out = write_zarr(_class_map(), tmp_path / "m.zarr")
    victim = out / "class" / "c" / "1" / "2"
    victim.unlink()
    assert missing_chunks(out) == {"class": [(1, 2)]}
    report = verify(out)
    assert not report["valid"]
    assert report["n_missing_chunks"] == 1
    assert "class" in report["problems"][0]


def test_chunk_writes_are_idempotent(tmp_path: Path) -> None:
    da = _class_map()
    out = write_zarr(da, tmp_path / "i.zarr")
    files = _chunk_files(out, "class")
    before = [f.read_bytes() for f in files]
    block = da.data.blocks[1, 2].compute()
    meta = _array_metadata(str(out), ["class"])["class"]
    _write_chunk(block, str(out), "class", (1, 2), meta)  # a task that Dask re-ran
    assert [f.read_bytes() for f in files] == before


def test_failed_write_keeps_partial_and_resume_redoes_only_missing(tmp_path: Path) -> None:
    da = _class_map()
    target = tmp_path / "res.zarr"
    seen: list[tuple[int, ...]] = []
    lock = threading.Lock()

    def flaky(fail: bool):
        def fn(block: np.ndarray, block_info=None) -> np.ndarray:
            loc = block_info[0]["chunk-location"]
            with lock:
                seen.append(loc)
            if fail and loc in ((2, 3), (0, 1)):
                raise RuntimeError("worker lost")
            return block

        return fn

    bad = da.copy(data=da.data.map_blocks(flaky(True), dtype=da.dtype))
    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="worker lost"):
        write_zarr(bad, target)
    partial = tmp_path / "res.zarr.partial"
    assert partial.exists() and not target.exists()
    missing = missing_chunks(partial)["class"]
    assert (0, 1) in missing
    # without resume= the leftover is refused, before any task runs
    with raise_if_dask_computes(), pytest.raises(OutputError, match="resume=True"):
        write_zarr(da, target)
    seen.clear()
    good = da.copy(data=da.data.map_blocks(flaky(False), dtype=da.dtype))
    out = write_zarr(good, target, resume=True)
    assert sorted(seen) == sorted(missing)
    assert not partial.exists()
    back = xr.open_zarr(out, mask_and_scale=False)["class"]
    np.testing.assert_array_equal(back.values, da.values)
    assert verify(out)["valid"]
    # chunks of both runs are in the manifest: a full check decodes and compares them all
    full = verify(out, full=True)
    assert full["valid"] and full["n_corrupt_chunks"] == 0, full["problems"]
    assert zarr.open_group(str(out)).attrs["geoembed:chunks"]["class"]["n_chunks"] == 12


def test_resume_refuses_a_different_output(tmp_path: Path) -> None:
    da = _class_map()
    target = tmp_path / "d.zarr"
    job = write_zarr(da, target, compute=False)  # metadata written, chunks not
    assert (tmp_path / "d.zarr.partial").exists()
    del job
    other = _class_map(chunks=8)
    with raise_if_dask_computes(), pytest.raises(OutputError, match="does not match"):
        write_zarr(other, target, resume=True)
    out = write_zarr(other, target, overwrite=True)
    assert xr.open_zarr(out)["class"].chunks[0][0] == 8


def test_compute_false_writes_on_compute(tmp_path: Path) -> None:
    da = _class_map()
    target = tmp_path / "lazy.zarr"
    with raise_if_dask_computes():
        job = write_zarr(da, target, compute=False)
    assert not target.exists()
    assert dask.compute(job)[0] == str(target)
    assert missing_chunks(target) == {}


def test_overwrite_and_unwritable(tmp_path: Path) -> None:
    da = _class_map()
    target = tmp_path / "o.zarr"
    write_zarr(da, target)
    with raise_if_dask_computes(), pytest.raises(OutputError, match="overwrite=True"):
        write_zarr(da, target)
    with raise_if_dask_computes(), pytest.raises(OutputError, match="nothing to resume"):
        write_zarr(da, target, resume=True)
    write_zarr((da * 0).rio.write_nodata(255), target, overwrite=True)
    assert int(xr.open_zarr(target, mask_and_scale=False)["class"].max()) == 0
    (tmp_path / "afile").write_text("x")
    with raise_if_dask_computes(), pytest.raises(OutputError, match="is a file"):
        write_zarr(da, tmp_path / "afile" / "x.zarr")
    assert sorted(os.listdir(tmp_path)) == ["afile", "o.zarr"]


def test_write_zarr_on_local_cluster(tmp_path: Path, dask_client) -> None:
    field = make_field(37, 53, chunks=16)
    out = write_zarr(field, tmp_path / "dist.zarr")
    assert missing_chunks(out) == {}
    back = xr.open_zarr(out, decode_coords="all")["embedding"]
    np.testing.assert_array_equal(back.values, field.values)
    assert back.rio.crs.to_epsg() == 32616


def test_zarr_v2_store(tmp_path: Path) -> None:
    da = _class_map()
    out = write_zarr(da, tmp_path / "v2.zarr", zarr_format=2)
    assert zarr.open_group(str(out), mode="r").metadata.zarr_format == 2
    assert missing_chunks(out) == {}
    (out / "class" / "0.0").unlink()
    assert missing_chunks(out) == {"class": [(0, 0)]}


@pytest.mark.parametrize("fmt", [2, 3])
def test_every_array_is_checksummed_and_in_the_manifest(tmp_path: Path, fmt: int) -> None:
    import zlib

    out = write_zarr(make_field(37, 53, chunks=16), tmp_path / "f.zarr", zarr_format=fmt)
    group = zarr.open_group(str(out), mode="r")
    manifest = group.attrs["geoembed:chunks"]
    assert set(manifest) == {"embedding", "band", "x", "y", "spatial_ref"}
    for name, arr in group.arrays():
        if fmt == 3:
            zstd = [c for c in arr.metadata.codecs if type(c).__name__ == "ZstdCodec"]
            assert zstd and zstd[0].checksum, (name, arr.metadata.codecs)
        else:
            assert arr.metadata.compressor.get_config()["checksum"] is True
        entry = manifest[name]
        grid = [-(-s // c) for s, c in zip(arr.shape, arr.chunks)]
        assert entry["n_chunks"] == int(np.prod(grid))
        if name != "embedding":
            continue
        assert entry["n_chunks"] == 3 * 4
        for flat, idx in enumerate(np.ndindex(*grid)):
            sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, arr.chunks))
            values = np.ascontiguousarray(arr[sel])
            assert entry["crc32"][flat] == zlib.crc32(values.tobytes())


def test_resume_refuses_a_partial_without_checksums(tmp_path: Path) -> None:
    da = _class_map()
    target = tmp_path / "old.zarr"
    # what an older geoembed left: same layout, chunks without a checksum codec
    da.to_dataset().to_zarr(tmp_path / "old.zarr.partial", compute=False, consolidated=False)
    with raise_if_dask_computes(), pytest.raises(OutputError, match="no checksum codec"):
        write_zarr(da, target, resume=True)
    out = write_zarr(da, target, overwrite=True)
    assert verify(out, full=True)["valid"]
