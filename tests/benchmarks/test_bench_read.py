"""Read throughput of an AEF int8 field: geoembed vs plain rioxarray / xarray-zarr.

Builds, in a temp dir, a synthetic AEF-like int8 field (64 bands, -128 nodata patch) as
a GeoTIFF tiled 512 x 512 (deflate) and as a Zarr v3 store (512 x 512 chunks, zstd), then
times, side by side in this process on the threaded scheduler (rounds of every method
in turn, so that a drifting background load hits them alike):

* ``geoembed``: ``open_embeddings(src).sum().compute()`` (masks -128 per pixel and
  de-quantizes to float32 on read);
* ``plain + dequant``: ``rioxarray.open_rasterio(chunks=...)`` / ``xr.open_zarr`` with the
  same de-quantization written by hand the usual way
  (``xr.where(q == -128, nan, sign(q) * (q / 127.5) ** 2)``);
* ``geoembed codes, decoded in the tasks``: the codes under ``open_embeddings``, decoded
  inside each task tile by tile, as the kNN/KMeans/estimator tasks do, then summed;
* ``plain raw sum``: the int8 codes summed as stored (the I/O + decompression floor).

Sizes: 4096 x 4096 x 64 (1 GiB of codes); ``GEOEMBED_BENCH_SCALE=small``: 1024 x 1024.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _results
import dask
import dask.array as dsa
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from rasterio.transform import from_origin

from geoembed.io import open_embeddings
from geoembed.io.aef import AEF_NODATA, aef_codes_of, decode_codes

pytestmark = [
    pytest.mark.bench,
    pytest.mark.timeout(3600),
    pytest.mark.filterwarnings("ignore:Consolidated metadata"),
    pytest.mark.filterwarnings("ignore:The data type"),
]

SMALL = os.environ.get("GEOEMBED_BENCH_SCALE", "").lower() == "small"
SIZE = 1024 if SMALL else 4096
BANDS = 64
TILE = 512
REPEATS = _results.REPEATS  # rounds, interleaved (median recorded); sources in page cache
CRS = "EPSG:32616"
TRANSFORM = from_origin(358410.0, 4906600.0, 10.0, 10.0)


def _codes_block(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng([y0, x0])
    block = rng.integers(-127, 128, size=(BANDS, h, w), dtype=np.int8)
    # a nodata patch in the top-left tile region, as in real AEF tiles at coasts/edges
    ys = slice(max(0, 100 - y0), max(0, min(h, 300 - y0)))
    xs = slice(max(0, 100 - x0), max(0, min(w, 400 - x0)))
    block[:, ys, xs] = -128
    return block


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_read")
    tif = root / "aef_int8.tif"
    profile = {
        "driver": "GTiff",
        "dtype": "int8",
        "count": BANDS,
        "height": SIZE,
        "width": SIZE,
        "crs": CRS,
        "transform": TRANSFORM,
        "nodata": -128,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "zlevel": 1,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    t0 = time.perf_counter()
    with rasterio.open(tif, "w", **profile) as dst:
        for y0 in range(0, SIZE, TILE):
            for x0 in range(0, SIZE, TILE):
                window = rasterio.windows.Window(x0, y0, TILE, TILE)
                dst.write(_codes_block(y0, x0, TILE, TILE), window=window)
        dst.descriptions = tuple(f"A{i:02d}" for i in range(BANDS))
    store = root / "aef_int8.zarr"
    blocks = [
        [
            dsa.from_delayed(
                dask.delayed(_codes_block)(y0, x0, TILE, TILE), (BANDS, TILE, TILE), np.int8
            )
            for x0 in range(0, SIZE, TILE)
        ]
        for y0 in range(0, SIZE, TILE)
    ]
    da = xr.DataArray(
        dsa.concatenate([dsa.concatenate(row, axis=2) for row in blocks], axis=1),
        dims=("band", "y", "x"),
        coords={
            "band": np.array([f"A{i:02d}" for i in range(BANDS)], dtype=object),
            "y": TRANSFORM.f + TRANSFORM.e * (np.arange(SIZE) + 0.5),
            "x": TRANSFORM.c + TRANSFORM.a * (np.arange(SIZE) + 0.5),
        },
        name="embedding",
    ).rio.write_crs(CRS)
    da.encoding["_FillValue"] = -128
    da.to_dataset().to_zarr(store, zarr_format=3, mode="w", consolidated=True)
    print(f"\nbuilt {SIZE} x {SIZE} x {BANDS} int8 sources in {time.perf_counter() - t0:.1f} s")
    return {"tif": tif, "zarr": store}


def _dequant_by_hand(q: xr.DataArray) -> xr.DataArray:
    v = q / 127.5
    return xr.where(q == -128, np.nan, np.sign(q) * v**2)


def _interleaved(fns: list[Callable[[], Any]]) -> list[tuple[float, Any]]:
    """Best time and last value of each function over REPEATS rounds (A B C A B C ...).

    Interleaving keeps every method and the raw floor under the same background load,
    which drifts on a shared machine; the runs go to :data:`_RUNS` in ``fns`` order.
    """
    runs: list[list[float]] = [[] for _ in fns]
    values: list[Any] = [None] * len(fns)
    for _ in range(REPEATS):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            values[i] = fn()
            runs[i].append(time.perf_counter() - t0)
    _RUNS.extend(runs)
    return [(min(r), v) for r, v in zip(runs, values)]


#: the runs of every method of the current test, in the order they were given
_RUNS: list[list[float]] = []


#: pixels decoded at a time by the consumer stand-in: the kernels' tile (kNN query tiles
#: of at most 1024 rows, KMeans predict tiles of 1024 / 2048 px)
CONSUMER_TILE = 1024


def _decoded_sum(block: np.ndarray) -> np.ndarray:
    """What geoembed's kNN/KMeans tasks do with AEF codes: decode a tile at a time.

    Each tile is decoded into one reused float32 buffer (as the KMeans kernel's
    ``_load_tile`` does), then summed; NaN are skipped only in tiles that hold nodata
    (the codes say so with one int8 pass), as the kernels find nodata only where it is.
    """
    flat = block.reshape(block.shape[0], -1)
    buf = np.empty((flat.shape[0], CONSUMER_TILE), np.float32)
    total = 0.0
    for p0 in range(0, flat.shape[1], CONSUMER_TILE):
        part = flat[:, p0 : p0 + CONSUMER_TILE]
        v = decode_codes(part, out=buf[:, : part.shape[1]])
        total += float(np.nansum(v) if part.min() == AEF_NODATA else np.sum(v))
    return np.array([[[total]]])


def _consumer_sum(path: Path) -> float:
    """Read the codes under ``open_embeddings(path)`` and decode them inside the tasks."""
    codes = aef_codes_of(open_embeddings(path).data)
    assert codes is not None, "open_embeddings no longer exposes the AEF codes"
    parts = codes.map_blocks(_decoded_sum, chunks=(1, 1, 1), dtype=np.float64)
    return float(parts.sum().compute())


def _record(source: str) -> None:
    """Record read+decode vs the raw int8 read (calls: geoembed, ..., consumer, raw)."""
    _results.record(
        "read",
        f"{source}: open_embeddings read+decode (float32 field) vs raw int8 read (speed)",
        value=_RUNS[0],
        baseline=_RUNS[-1],
        summary="aef_decode_vs_raw",
    )
    _results.record(
        "read",
        f"{source}: read codes + decode in the consumer's tasks vs raw int8 read (speed)",
        value=_RUNS[-2],
        baseline=_RUNS[-1],
        summary="aef_decode_vs_raw",
    )
    _RUNS.clear()


def _report(title: str, rows: list[tuple[str, float]]) -> None:
    mpix = SIZE * SIZE / 1e6
    ref = rows[0][1]
    print(f"\n{title}: {SIZE} x {SIZE} x {BANDS} int8 ({mpix:.1f} Mpix), threads scheduler")
    print(f"{'method':<44}{'time s':>9}{'Mpix/s':>9}{'geoembed speed ratio':>22}")
    for name, seconds in rows:
        print(f"{name:<44}{seconds:>9.2f}{mpix / seconds:>9.2f}{seconds / ref:>22.2f}")


def test_bench_read_geotiff(sources: dict[str, Path]) -> None:
    _RUNS.clear()
    tif = sources["tif"]
    field = open_embeddings(tif)
    chunks = {"band": -1, "y": field.chunks[1][0], "x": field.chunks[2][0]}
    with dask.config.set(scheduler="threads"):
        (t_geo, s_geo), (t_plain, s_plain), (t_nolock, _), (t_cons, s_cons), (t_raw, _) = (
            _interleaved(
                [
                    lambda: float(open_embeddings(tif).sum().compute()),
                    lambda: float(
                        _dequant_by_hand(rioxarray.open_rasterio(tif, chunks=chunks))
                        .sum()
                        .compute()
                    ),
                    lambda: float(
                        _dequant_by_hand(rioxarray.open_rasterio(tif, chunks=chunks, lock=False))
                        .sum()
                        .compute()
                    ),
                    lambda: _consumer_sum(tif),
                    lambda: int(
                        rioxarray.open_rasterio(tif, chunks=chunks, lock=False).sum().compute()
                    ),
                ]
            )
        )
    _record("GeoTIFF")
    assert s_cons == pytest.approx(s_geo, rel=1e-4)
    # per-value masking gives the same sum as per-pixel masking here (patch is all -128)
    assert s_geo == pytest.approx(s_plain, rel=1e-4)
    _report(
        f"GeoTIFF tiled {TILE} (deflate), chunks {chunks['y']} x {chunks['x']}",
        [
            ("geoembed open_embeddings().sum()", t_geo),
            ("rioxarray.open_rasterio + dequant by hand", t_plain),
            ("rioxarray.open_rasterio(lock=False) + dequant", t_nolock),
            ("geoembed codes, decoded in the tasks", t_cons),
            ("rioxarray.open_rasterio raw int8 sum (floor)", t_raw),
        ],
    )


def test_bench_read_zarr(sources: dict[str, Path]) -> None:
    _RUNS.clear()
    store = sources["zarr"]
    with dask.config.set(scheduler="threads"):
        (t_geo, s_geo), (t_plain, s_plain), (t_masked, _), (t_cons, s_cons), (t_raw, _) = (
            _interleaved(
                [
                    lambda: float(open_embeddings(store).sum().compute()),
                    lambda: float(
                        _dequant_by_hand(
                            xr.open_zarr(store, decode_coords="all", mask_and_scale=False)[
                                "embedding"
                            ]
                        )
                        .sum()
                        .compute()
                    ),
                    lambda: float(
                        _dequant_by_hand(xr.open_zarr(store, decode_coords="all")["embedding"])
                        .sum()
                        .compute()
                    ),
                    lambda: _consumer_sum(store),
                    lambda: int(
                        xr.open_zarr(store, mask_and_scale=False)["embedding"].sum().compute()
                    ),
                ]
            )
        )
    _record("Zarr")
    assert s_cons == pytest.approx(s_geo, rel=1e-4)
    assert s_geo == pytest.approx(s_plain, rel=1e-4)
    _report(
        f"Zarr v3 chunks {TILE} (zstd)",
        [
            ("geoembed open_embeddings().sum()", t_geo),
            ("xr.open_zarr(mask_and_scale=False) + dequant", t_plain),
            ("xr.open_zarr (CF-masked float) + dequant", t_masked),
            ("geoembed codes, decoded in the tasks", t_cons),
            ("xr.open_zarr raw int8 sum (floor)", t_raw),
        ],
    )
