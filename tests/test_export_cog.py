"""Round trips and failure behaviour of geoembed.export.write_cog."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from rio_cogeo.cogeo import cog_validate

from geoembed.errors import (
    DimensionError,
    DTypeError,
    MissingCRSError,
    OutputError,
    SchemaError,
)
from geoembed.export import read_class_names, write_cog
from geoembed.schema import map_like
from geoembed.testing import make_field, raise_if_dask_computes

H, W = 300, 200  # > blocksize 64, so the COG gets overviews


def _class_array(height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # 1-pixel stripes of classes 0 and 4: AVERAGE overviews would invent class 2, MODE not
    cls = np.where(np.arange(width)[None, :] % 2 == 0, 0, 4).repeat(height, axis=0)
    cls = cls.astype(np.uint8)
    cls[rng.random(cls.shape) < 0.05] = 1
    cls[:7, :9] = 255
    return cls


def _class_map(chunks: object = 64, bottom_up: bool = False) -> tuple[xr.DataArray, np.ndarray]:
    field = make_field(H, W, bands=4, chunks=None, bottom_up=bottom_up)
    cls = _class_array()
    return map_like(field, dsa.from_array(cls, chunks=chunks), name="class", nodata=255), cls


NAMES = ["water", "forest", "crop", "urban", "road"]
COLORS = ["#1f78b4", "#33a02c", (255, 255, 0), (227, 26, 28), "#000000"]


def _no_temp_files(directory: Path) -> list[str]:
    return [p for p in os.listdir(directory) if "geoembed-tmp" in p]


def test_class_map_round_trip(tmp_path: Path) -> None:
    da, cls = _class_map()
    out = write_cog(da, tmp_path / "classes.tif", class_names=NAMES, colors=COLORS, blocksize=64)
    assert out == tmp_path / "classes.tif"
    valid, errors, _ = cog_validate(str(out), quiet=True)
    assert valid, errors
    with rasterio.open(out) as src:
        assert src.dtypes == ("uint8",)
        assert src.nodata == 255
        assert src.crs.to_epsg() == 32616
        assert src.transform == da.rio.transform(recalc=True)
        np.testing.assert_array_equal(src.read(1), cls)
        assert src.overviews(1), "overviews expected"
        cmap = src.colormap(1)
        assert cmap[0][:3] == (0x1F, 0x78, 0xB4)
        assert cmap[2][:3] == (255, 255, 0)
        assert cmap[255][3] == 0  # nodata is transparent
        assert json.loads(src.tags()["class_names"])["1"] == "forest"
    assert read_class_names(out) == dict(enumerate(NAMES))
    # MODE overviews: only values present in the map, never the average of 0 and 4
    with rasterio.open(out, overview_level=0) as ovr:
        values = set(np.unique(ovr.read(1)).tolist())
    assert values <= {0, 1, 4, 255}
    assert _no_temp_files(tmp_path) == []


def test_class_names_from_attrs_and_dict(tmp_path: Path) -> None:
    da, _ = _class_map()
    da.attrs["class_names"] = ["a", "b"]
    write_cog(da, tmp_path / "a.tif")
    assert read_class_names(tmp_path / "a.tif") == {0: "a", 1: "b"}
    write_cog(da, tmp_path / "b.tif", class_names={4: "urban", 0: "water"})
    assert read_class_names(tmp_path / "b.tif") == {0: "water", 4: "urban"}


def test_uint16_class_map_default_nodata(tmp_path: Path) -> None:
    field = make_field(40, 50, bands=4, chunks=None)
    cls = (np.arange(40 * 50).reshape(40, 50) % 300).astype(np.uint16)
    da = map_like(field, dsa.from_array(cls, chunks=16), name="class")
    out = write_cog(da, tmp_path / "c16.tif", colors={299: "#ff0000"})
    with rasterio.open(out) as src:
        assert src.dtypes == ("uint16",)
        assert src.nodata == 65535
        assert src.colormap(1)[299][:3] == (255, 0, 0)
        np.testing.assert_array_equal(src.read(1), cls)
    assert read_class_names(out) == {}


def test_confidence_float32_round_trip(tmp_path: Path) -> None:
    field = make_field(H, W, bands=4, chunks=None)
    rng = np.random.default_rng(1)
    conf = rng.random((H, W)).astype(np.float32)
    conf[10:20, 10:20] = np.nan
    da = map_like(field, dsa.from_array(conf, chunks=(70, 90)), name="confidence")
    out = write_cog(da, tmp_path / "conf.tif", blocksize=64, compress="zstd")
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        assert src.dtypes == ("float32",)
        assert np.isnan(src.nodata)
        assert src.crs.to_epsg() == 32616
        np.testing.assert_array_equal(src.read(1), conf)
        assert src.overviews(1)
    # AVERAGE overviews: the first level is the mean of 2 x 2 blocks (NaN ignored)
    with rasterio.open(out, overview_level=0) as ovr:
        level = ovr.read(1)
    expected = np.nanmean(conf[:4, 30:34].reshape(2, 2, 2, 2).swapaxes(1, 2), axis=(2, 3))
    np.testing.assert_allclose(level[:2, 15:17], expected, rtol=1e-5)


def test_probabilities_class_y_x(tmp_path: Path) -> None:
    field = make_field(H, W, bands=4, chunks=None)
    rng = np.random.default_rng(2)
    p = rng.random((3, H, W)).astype(np.float32)
    p /= p.sum(axis=0, keepdims=True)
    names = ["water", "forest", "crop"]
    data = dsa.from_array(p, chunks=(1, 64, 64))  # class split over chunks: rechunked
    da = map_like(field, data, name="probability", leading=("class", names))
    out = write_cog(da, tmp_path / "probs.tif", blocksize=64)
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        assert src.count == 3
        assert src.descriptions == tuple(names)
        assert src.overviews(1)
        np.testing.assert_array_equal(src.read(), p)
    back = rioxarray.open_rasterio(out)
    assert back.rio.crs.to_epsg() == 32616
    np.testing.assert_allclose(back.x.values, da.x.values)
    np.testing.assert_allclose(back.y.values, da.y.values)


def test_scaled_uint8_probabilities(tmp_path: Path) -> None:
    field = make_field(37, 53, bands=4, chunks=None)
    q = (np.arange(2 * 37 * 53).reshape(2, 37, 53) % 255).astype(np.uint8)
    da = map_like(field, dsa.from_array(q, chunks=16), name="p", leading=("class", ["a", "b"]))
    out = write_cog(da, tmp_path / "q.tif", scale=1 / 254)
    back = rioxarray.open_rasterio(out, mask_and_scale=True)
    valid = q != 255
    np.testing.assert_allclose(back.values[valid], q[valid] / 254, rtol=1e-6)
    assert np.isnan(back.values[~valid]).all()


def test_bottom_up_input_keeps_map_coordinates(tmp_path: Path) -> None:
    da, cls = _class_map(bottom_up=True)
    assert da.y.values[1] > da.y.values[0]
    out = write_cog(da, tmp_path / "bu.tif", blocksize=64)
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        assert src.transform.e < 0  # written north-up
        np.testing.assert_array_equal(src.read(1), cls[::-1])
    back = rioxarray.open_rasterio(out).squeeze("band", drop=True)
    same = back.sel(y=da.y.values, x=da.x.values, method="nearest", tolerance=1e-6)
    np.testing.assert_array_equal(same.values, cls)


@pytest.mark.parametrize("chunks", [((10, 200, 90), (33, 150, 17)), 128, None])
def test_ragged_and_numpy_chunks(tmp_path: Path, chunks: object) -> None:
    field = make_field(H, W, bands=4, chunks=None)
    cls = _class_array()
    data = cls if chunks is None else dsa.from_array(cls, chunks=chunks)
    da = map_like(field, data, name="class", nodata=255)
    out = write_cog(da, tmp_path / "r.tif")
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), cls)


def test_compute_false_is_lazy_then_writes(tmp_path: Path) -> None:
    da, cls = _class_map()
    target = tmp_path / "lazy.tif"
    with raise_if_dask_computes():
        job = write_cog(da, target, class_names=NAMES, compute=False)
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    assert dask.compute(job)[0] == str(target)
    with rasterio.open(target) as src:
        np.testing.assert_array_equal(src.read(1), cls)
    assert _no_temp_files(tmp_path) == []


def test_write_on_local_cluster_with_worker_processes(tmp_path: Path, dask_client) -> None:
    da, cls = _class_map()
    out = write_cog(da, tmp_path / "dist.tif", class_names=NAMES, colors=COLORS, blocksize=64)
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), cls)
        assert src.colormap(1)[1][:3] == (0x33, 0xA0, 0x2C)
    assert read_class_names(out)[3] == "urban"
    assert _no_temp_files(tmp_path) == []
    # the chunks were written by the worker processes, not by this one
    pids = set(dask_client.run(os.getpid).values())
    assert os.getpid() not in pids


def test_overwrite_protection(tmp_path: Path) -> None:
    da, _ = _class_map()
    target = tmp_path / "o.tif"
    write_cog(da, target)
    before = target.read_bytes()
    with raise_if_dask_computes(), pytest.raises(OutputError, match="overwrite=True"):
        write_cog(da + 0, target)
    assert target.read_bytes() == before
    write_cog((da * 0).rio.write_nodata(255), target, overwrite=True)
    with rasterio.open(target) as src:
        assert src.read(1).max() == 0
    assert _no_temp_files(tmp_path) == []


@pytest.mark.parametrize("kind", ["parent_is_file", "missing_parent", "target_is_dir"])
def test_unwritable_output_fails_before_compute(tmp_path: Path, kind: str) -> None:
    da, _ = _class_map()
    if kind == "parent_is_file":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "out.tif"
    elif kind == "missing_parent":
        target = tmp_path / "nope" / "out.tif"
    else:
        target = tmp_path / "adir"
        target.mkdir()
    with raise_if_dask_computes(), pytest.raises(OutputError) as info:
        write_cog(da, target)
    assert str(target.parent.name) in str(info.value) or "exists" in str(info.value)
    if kind != "target_is_dir":
        assert not target.exists()
    assert _no_temp_files(tmp_path) == []


def test_failure_mid_compute_leaves_nothing(tmp_path: Path) -> None:
    da, _ = _class_map()

    def boom(block: np.ndarray, block_info=None) -> np.ndarray:
        if block_info[0]["chunk-location"] == (2, 1):
            raise RuntimeError("block failed")
        return block

    bad = da.copy(data=da.data.map_blocks(boom, dtype=da.dtype))
    target = tmp_path / "fail.tif"
    with dask.config.set(scheduler="threads"), pytest.raises(RuntimeError, match="block failed"):
        write_cog(bad, target)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_failure_on_cluster_leaves_nothing(tmp_path: Path, dask_client) -> None:
    da, _ = _class_map()

    def boom(block: np.ndarray, block_info=None) -> np.ndarray:
        if block_info[0]["chunk-location"] == (4, 2):
            raise RuntimeError("block failed")
        return block

    bad = da.copy(data=da.data.map_blocks(boom, dtype=da.dtype))
    with pytest.raises(RuntimeError, match="block failed"):
        write_cog(bad, tmp_path / "fail.tif")
    assert os.listdir(tmp_path) == []


def test_bad_inputs_fail_before_compute(tmp_path: Path) -> None:
    da, _ = _class_map()
    target = tmp_path / "x.tif"
    conf = da.astype("float32")
    with raise_if_dask_computes():
        with pytest.raises(MissingCRSError):
            write_cog(da.drop_vars("spatial_ref"), target)
        with pytest.raises(SchemaError, match="class map"):
            write_cog(conf, target, class_names=["a"])
        with pytest.raises(SchemaError, match="nodata"):
            write_cog(da, target, class_names={255: "oops"})
        with pytest.raises(DTypeError):
            write_cog(da, target, nodata=300)
        with pytest.raises(DTypeError):
            write_cog(da.astype("int16"), target, colors=["#000000"])
        with pytest.raises(DimensionError):
            write_cog(da.transpose("x", "y"), target)
        with pytest.raises(SchemaError, match="hex"):
            write_cog(da, target, colors=["red"])
        with pytest.raises(DTypeError):
            write_cog(da.astype("complex64"), target)
    assert os.listdir(tmp_path) == []


def test_read_class_names_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError):
        read_class_names(tmp_path / "none.tif")


def test_tiny_chunks_are_merged_into_tile_sized_parts(tmp_path: Path) -> None:
    da, cls = _class_map(chunks=16)
    job = write_cog(da, tmp_path / "tiny.tif", blocksize=64, compute=False)
    n_parts = sum(1 for k in dict(job.__dask_graph__()) if str(k).startswith("_write_part"))
    assert n_parts == 1  # 19 x 13 chunks of 16 px -> one 300 x 200 part
    dask.compute(job)
    with rasterio.open(tmp_path / "tiny.tif") as src:
        np.testing.assert_array_equal(src.read(1), cls)


def test_one_band_integer_raster_is_a_class_map(tmp_path: Path) -> None:
    da, cls = _class_map()
    out = write_cog(da.expand_dims(band=[1]), tmp_path / "one.tif", colors=COLORS, blocksize=64)
    with rasterio.open(out) as src:
        assert src.count == 1
        assert src.colormap(1)[4][:3] == (0, 0, 0)
        np.testing.assert_array_equal(src.read(1), cls)
