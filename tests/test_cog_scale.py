"""COGs bigger than any worker: write them to gs:// from workers with a small memory limit.

A real ``distributed.LocalCluster`` (2 worker processes x 1 thread x 600 MiB
for the class map, 900 MiB for the probabilities) writes to
fake-gcs-server (a) a uint8 class map and (b) a 4-band float32 probability raster, each
larger in raw size than a worker's memory limit. While it writes, a thread samples the
resident memory of every worker process and the bytes under the workers' scratch
directory (``GEOEMBED_TMPDIR``). The assembling worker reads the parts in place through
``/vsigs/`` (it downloads none), so the scratch disk holds at most the finished COG plus
one chunk part per worker. The COGs are validated on read-back (``rio_cogeo``) and a few
windows are compared with the source.

Run with ``make test-slow`` (or ``pytest -m slow tests/test_cog_scale.py -s`` to see the
figures).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

from geoembed._cloud import filesystem, gdal_path

pytestmark = pytest.mark.slow

#: per worker; a worker process holds about 300 MiB once geoembed and its dependencies
#: are imported, before any task
_MEMORY_LIMIT = {"class_map": 600 << 20, "probabilities": 900 << 20}
_CHUNK = 2048


def _class_block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """A class map with field-like structure: smooth regions of 9 classes, sharp edges."""
    assert block_info is not None
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    y = np.arange(y0, y1, dtype=np.float32)[:, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, :]
    v = np.sin(x / 410.0) + np.cos(y / 370.0) + 0.5 * np.sin((x + y) / 97.0)
    return (np.floor((v + 2.5) * 1.8).astype(np.uint8) % 9).astype(np.uint8)


def _prob_block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Per-class probabilities: smooth logits, softmax, 3 decimals (computed in place)."""
    assert block_info is not None
    (_b0, b1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    y = np.arange(y0, y1, dtype=np.float32)[:, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, :]
    out = np.empty((b1, y1 - y0, x1 - x0), dtype=np.float32)
    for k in range(b1):
        np.add(np.sin(x / (300.0 + 70 * k)) * 2, np.cos(y / (250.0 + 40 * k)) * 2, out=out[k])
    out -= out.max(axis=0)
    np.exp(out, out=out)
    out /= out.sum(axis=0)
    return np.round(out, 3, out=out)


def _raster(data: dsa.Array) -> xr.DataArray:
    h, w = data.shape[-2:]
    coords: dict[str, Any] = {
        "y": 5_000_000.0 - 10.0 * np.arange(h) - 5.0,
        "x": 400_000.0 + 10.0 * np.arange(w) + 5.0,
    }
    dims: tuple[str, ...] = ("y", "x")
    if data.ndim == 3:
        coords["class"] = [f"c{k}" for k in range(data.shape[0])]
        dims = ("class", "y", "x")
    return xr.DataArray(data, dims=dims, coords=coords).rio.write_crs(32616)


def _class_map() -> xr.DataArray:
    shape = (28672, 24576)  # 672 MiB of uint8
    data = dsa.map_blocks(_class_block, chunks=((_CHUNK,) * 14, (_CHUNK,) * 12), dtype=np.uint8)
    assert data.shape == shape
    return _raster(data)


def _probabilities() -> xr.DataArray:
    n, c = 8192, _CHUNK // 2  # 4 x 8192 x 8192 float32 = 1 GiB in chunks of 16 MiB
    chunks = ((4,), (c,) * (n // c), (c,) * (n // c))
    return _raster(dsa.map_blocks(_prob_block, chunks=chunks, dtype=np.float32))


class _Sampler:
    """Peak RSS of each worker process and peak bytes under a directory, sampled in a thread.

    ``peak_assembly`` is the peak RSS of the worker while it runs the final (assembly) task.
    """

    def __init__(self, client: Any, scratch: Path, every: float = 0.05) -> None:
        import psutil

        self.client = client
        self.pids: dict[str, int] = client.run(os.getpid)
        self.procs = {pid: psutil.Process(pid) for pid in self.pids.values()}
        self.scratch = scratch
        self.every = every
        self.peak_rss = dict.fromkeys(self.procs, 0)
        self.peak_assembly = 0
        self.peak_disk = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _disk(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.scratch):
            for f in files:
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
                except OSError:
                    pass  # removed while walking
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            processing = self.client.processing()
            assembling = {
                self.pids.get(addr)
                for addr, keys in processing.items()
                if any("_finalize" in str(k) for k in keys)
            }
            for pid, p in self.procs.items():
                try:
                    rss = p.memory_info().rss
                except Exception:  # a process that exited: its peak so far stays
                    continue
                self.peak_rss[pid] = max(self.peak_rss[pid], rss)
                if pid in assembling:
                    self.peak_assembly = max(self.peak_assembly, rss)
            self.peak_disk = max(self.peak_disk, self._disk())
            time.sleep(self.every)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def small_workers(
    kind: str, gcs_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Path]]:
    """2 worker processes x 1 thread x ``_MEMORY_LIMIT``, scratch under one directory."""
    from distributed import Client, LocalCluster

    scratch = tmp_path / "scratch"
    monkeypatch.setenv("GEOEMBED_TMPDIR", str(scratch))  # inherited by the workers
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=_MEMORY_LIMIT[kind],
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, scratch


def _windows(da: xr.DataArray) -> list[tuple[slice, slice]]:
    h, w = da.sizes["y"], da.sizes["x"]
    return [
        (slice(0, 300), slice(0, 300)),
        (slice(h // 2 - 700, h // 2 + 300), slice(w // 3, w // 3 + 1000)),
        (slice(h - 513, h), slice(w - 1029, w)),
    ]


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("kind", ["class_map", "probabilities"])
def test_a_cog_larger_than_a_worker_is_assembled_within_memory_and_scratch_bounds(
    kind: str, gcs_bucket: str, small_workers: tuple[Any, Path]
) -> None:
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from geoembed.export.cog import write_cog

    client, scratch = small_workers
    da = _class_map() if kind == "class_map" else _probabilities()
    raw = int(da.size * da.dtype.itemsize)
    limit = _MEMORY_LIMIT[kind]
    assert raw > limit
    url = f"{gcs_bucket}/{kind}.tif"
    t0 = time.monotonic()
    with _Sampler(client, scratch) as sampler:
        assert write_cog(da, url) == url
    wall = time.monotonic() - t0
    assert client.run(os.getpid) == sampler.pids, "a worker was restarted"

    fs = filesystem(url)
    fs.invalidate_cache()
    size = int(fs.size(url))
    assert [k.rpartition("/")[2] for k in fs.ls(gcs_bucket, detail=False)] == [f"{kind}.tif"]
    peak = {pid: rss >> 20 for pid, rss in sampler.peak_rss.items()}
    print(
        f"\n{kind}: raw {raw / 2**20:.0f} MiB, COG {size / 2**20:.1f} MiB, peak RSS per worker "
        f"{peak} MiB (limit {limit >> 20} MiB; assembling worker "
        f"{sampler.peak_assembly >> 20} MiB), peak scratch disk "
        f"{sampler.peak_disk / 2**20:.1f} MiB, wall {wall:.1f} s, load {os.getloadavg()}"
    )
    assert max(sampler.peak_rss.values()) < limit, peak
    assert 0 < sampler.peak_assembly < limit
    # the parts stay in the bucket: scratch holds the COG and, per worker, one chunk's parts
    chunk = da.data.chunksize
    chunk_parts = 2 * int(np.prod(chunk)) * da.dtype.itemsize
    assert sampler.peak_disk < size + chunk_parts + (8 << 20), sampler.peak_disk
    assert sampler.peak_disk < raw

    path = gdal_path(url)
    valid, errors, _warnings = cog_validate(path, strict=True, quiet=True)
    assert valid, errors
    with rasterio.open(path) as src:
        assert (src.count, src.height, src.width) == (
            1 if da.ndim == 2 else da.shape[0],
            da.sizes["y"],
            da.sizes["x"],
        )
        assert src.overviews(1), "no overviews"
        for rows, cols in _windows(da):
            got = src.read(window=((rows.start, rows.stop), (cols.start, cols.stop)))
            want = da.isel(y=rows, x=cols).values
            np.testing.assert_array_equal(got.reshape(want.shape), want)
