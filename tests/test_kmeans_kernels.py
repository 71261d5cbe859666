"""The KMeans kernels give per-pixel results whatever the layout, tiling and piece sizes.

The assign kernel reads a ``(band, y, x)`` block as stored (strided views, int8 AEF
codes decoded per tile, nodata found from each pixel's squared norm), re-checks near
ties in one batch: each is compared with the plain path (the block decoded, compressed
to its valid pixels and transposed), bit for bit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import dask.array as dsa
import numpy as np
import pytest

from geoembed._aef_codes import aef_codes_of, decode_codes, dequantize_block
from geoembed.cluster import _kernels
from geoembed.cluster._init import read_pixels
from geoembed.cluster._kernels import (
    assign,
    fixed_point,
    fixed_point_scale,
    label_sums,
    prepare,
    prepare_columns,
)
from geoembed.cluster._lloyd import Sample, matrix_pass, sample_pass
from geoembed.io.aef import dequantize_aef


def _codes(ny: int, nx: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = centres[rng.integers(0, 12, ny * nx)] + 0.3 * rng.normal(size=(ny * nx, 64)) / 8
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = np.clip(np.rint(np.sign(v) * np.sqrt(np.abs(v)) * 127.5), -127, 127).astype(np.int8)
    codes = np.ascontiguousarray(q.T.reshape(64, ny, nx))
    codes[:, 3, 4] = -128  # a masked pixel
    codes[9, 5, 6] = -128  # masked in one band only
    return codes


def _reference(block: np.ndarray, centers: np.ndarray, metric: str) -> np.ndarray:
    """Labels of the valid pixels, the plain way: decode, compress, transpose; -1 at nodata."""
    x = decode_codes(block) if block.dtype == np.int8 else block.astype(np.float32)
    rows = x.reshape(x.shape[0], -1).T
    valid = ~np.isnan(rows).any(axis=1)
    out = np.full(rows.shape[0], -1, dtype=np.int64)
    out[valid] = assign(prepare(np.ascontiguousarray(rows[valid]), metric), centers, metric)
    return out


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 7, 40, 120])
def test_block_labels_match_the_plain_path_for_codes_floats_and_strided_views(metric, k):
    codes = _codes(40, 700)
    floats = decode_codes(codes)
    rng = np.random.default_rng(k)
    pixels = floats.reshape(64, -1)[:, rng.choice(40 * 700, k, replace=False)].T
    centers = prepare(np.nan_to_num(pixels), metric)
    centers[0] = prepare(floats[:, 7, 7][None], metric)[0]  # a pixel exactly on a centre
    blocks = {
        "codes": codes,
        "codes, strided": codes[:, 5:30, 100:600],
        "float": floats,
        "float, strided": floats[:, 2:37, 33:633],
        "float, rows wider than a tile": floats[:, :3, :],
    }
    for name, block in blocks.items():
        want = _reference(block, centers, metric)
        got = assign(block, centers, metric, columns=True, invalid=-1, normalize=True)
        assert np.array_equal(got, want), name
    assert (_reference(codes, centers, metric)[[3 * 700 + 4, 5 * 700 + 6]] == -1).all()


def test_cosine_labels_of_raw_columns_are_those_of_the_normalised_pixels():
    """The columns path scores raw pixels (no normalisation): any length, ties, zeros."""
    rng = np.random.default_rng(5)
    centers = prepare(rng.normal(size=(9, 64)).astype(np.float32), "cosine")
    centers[8] = centers[3]  # a duplicate centre: every pixel nearest to it is a tie
    mid = centers[0].astype(np.float64) + centers[1]  # equidistant from centres 0 and 1
    rows = np.concatenate([rng.normal(size=(5998, 64)), mid[None], np.zeros((1, 64))])
    lengths = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), size=(rows.shape[0], 1)))
    rows = (rows * lengths).astype(np.float32)
    want = assign(prepare(rows, "cosine"), centers, "cosine")
    block = np.ascontiguousarray(rows.T).reshape(64, 60, 100)
    got = assign(block, centers, "cosine", columns=True, normalize=True)
    assert np.array_equal(got, want)
    assert got[5998] == 0 and got[5999] == 0  # the tie and the zero vector: lowest index


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("d", [64, 512])
def test_labels_are_the_float64_decision_at_every_gap_near_the_margin(metric, d):
    """Pixels between two centres at gaps from 1e-9 to 1e-2: the float32 path never errs."""
    rng = np.random.default_rng(d)
    centers = prepare(rng.normal(size=(6, d)).astype(np.float32), metric)
    c64 = centers.astype(np.float64)
    mid = (c64[0] + c64[1]) / 2
    gaps = np.exp(rng.uniform(np.log(1e-9), np.log(1e-2), size=(20_000, 1)))
    rows = mid + gaps * rng.choice([-1.0, 1.0], size=(20_000, 1)) * (c64[0] - c64[1])
    rows += 1e-3 * rng.normal(size=rows.shape) * (metric == "euclidean")
    x = prepare(rows.astype(np.float32), metric)
    want = np.argmin(_kernels._exact_rows(x, c64, metric), axis=1)
    assert np.array_equal(assign(x, centers, metric), want)
    cols = np.ascontiguousarray(rows.astype(np.float32).T)
    assert np.array_equal(assign(cols, centers, metric, columns=True, normalize=True), want)


def test_labels_do_not_depend_on_the_tile(monkeypatch):
    x = prepare_columns(decode_codes(_codes(30, 500)).reshape(64, -1), "euclidean")
    x = np.nan_to_num(x)
    centers = np.ascontiguousarray(x[:, ::997].T[:9])
    want = assign(x, centers, "euclidean", columns=True)
    for tile in (1, 37, 256, 4096, 20000):
        monkeypatch.setattr(_kernels, "_tile_pixels", lambda k, d, tile=tile: tile)
        assert np.array_equal(assign(x, centers, "euclidean", columns=True), want), tile
        assert np.array_equal(assign(np.ascontiguousarray(x.T), centers, "euclidean"), want)


def test_near_ties_are_decided_exactly_in_one_batch():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(6, 64)).astype(np.float32)
    centers[5] = centers[2]  # a duplicate centre: every pixel near it is a tie
    mid = ((centers[0].astype(np.float64) + centers[1]) / 2).astype(np.float32)
    x = np.concatenate([rng.normal(size=(3000, 64)), centers, mid[None]]).astype(np.float32)
    d64 = ((x[:, None, :].astype(np.float64) - centers[None].astype(np.float64)) ** 2).sum(-1)
    want = np.argmin(d64, axis=1)  # float64, ties to the lowest index
    assert np.array_equal(assign(x, centers, "euclidean"), want)
    assert np.array_equal(
        assign(np.ascontiguousarray(x.T), centers, "euclidean", columns=True), want
    )
    assert assign(x, centers, "euclidean")[3000 + 5] == 2


@pytest.mark.parametrize("k", [3, 65])
def test_sums_are_exact_whatever_the_layout_and_pieces(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(64, 70_000)).astype(np.float32)
    labels = rng.integers(0, k, 70_000)
    scale = fixed_point_scale(70_000, float(np.abs(x).max()))
    ref, counts = label_sums(x, labels, k, scale, columns=True)
    assert np.array_equal(counts, np.bincount(labels, minlength=k))
    rows, _ = label_sums(np.ascontiguousarray(x.T), labels, k, scale)
    assert np.array_equal(rows, ref)
    half = label_sums(x[:, :33_333], labels[:33_333], k, scale, columns=True)[0]
    rest = label_sums(x[:, 33_333:], labels[33_333:], k, scale, columns=True)[0]
    assert np.array_equal(half + rest, ref)


@pytest.mark.parametrize("concurrent", [False, True])
@pytest.mark.parametrize("k", [1, 10, 300, _kernels._BINCOUNT_K + 1])
def test_sums_equal_integer_arithmetic_on_either_path(k, concurrent, monkeypatch):
    """By-band bincounts and the sorted groups (above _BINCOUNT_K, or while other tasks
    compute in the process) give the exact sums.

    The reference adds the truncated fixed-point values as Python-exact int64; magnitudes
    from 1e-3 to 30 and 70 000 pixels (more than one BATCH) exercise every bit.
    """
    if concurrent:
        monkeypatch.setattr(_kernels, "concurrent_tasks", lambda: 2)
    rng = np.random.default_rng(k)
    n = 70_000
    x = (rng.normal(size=(n, 64)) * rng.choice([1e-3, 1.0, 30.0], size=(n, 1))).astype(np.float32)
    labels = rng.integers(0, k, n)
    scale = fixed_point_scale(n, float(np.abs(x).max()))
    want = np.zeros((k, 64), dtype=np.int64)
    np.add.at(want, labels, np.trunc(x.astype(np.float64) * 2.0**scale).astype(np.int64))
    xt = np.ascontiguousarray(x.T)
    got, counts = label_sums(xt, labels, k, scale, columns=True)
    assert np.array_equal(got, want)
    assert np.array_equal(counts, np.bincount(labels, minlength=k))
    assert np.array_equal(label_sums(x, labels, k, scale)[0], want)
    q = fixed_point(xt, scale)
    assert np.array_equal(label_sums(q, labels, k, scale, columns=True, truncated=True)[0], want)


def test_a_value_off_the_grid_still_raises():
    x = np.ones((4, 10), dtype=np.float32)
    x[2, 7] = 2.0**40
    with pytest.raises(OverflowError, match="sample_size"):
        label_sums(x, np.zeros(10, dtype=np.int64), 2, 0, columns=True)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_the_sample_pass_in_pieces_on_threads_equals_one_matrix_pass(metric):
    rng = np.random.default_rng(5)
    x = prepare(rng.normal(size=(40_000, 64)).astype(np.float32), metric)
    centers = prepare(x[rng.choice(40_000, 12, replace=False)], metric)
    scale = fixed_point_scale(10**6, float(np.abs(x).max()))
    sq = fixed_point_scale(10**6, 64 * 8.0 * float(np.abs(x).max()) ** 2)
    want = matrix_pass(x, centers, metric=metric, scale=scale, sq_scale=sq)
    sample = Sample.of(x, scale, threads=3)
    with ThreadPoolExecutor(3) as pool:
        got = sample_pass(sample, centers, metric=metric, sq_scale=sq, pool=pool)
    alone = sample_pass(sample, centers, metric=metric, sq_scale=sq)
    for res in (got, alone):
        assert np.array_equal(res.sums, want.sums)
        assert np.array_equal(res.counts, want.counts)
        assert res.sumsq == want.sumsq
    # later passes add only the pixels that moved (a few, then most, then none)
    with ThreadPoolExecutor(3) as pool:
        for step in (1e-3, 1e-2, 1.0, 0.0):
            moved = prepare(
                centers + step * rng.normal(size=centers.shape).astype(np.float32), metric
            )
            want = matrix_pass(x, moved, metric=metric, scale=scale)
            got = sample_pass(sample, moved, metric=metric, pool=pool)
            assert np.array_equal(got.sums, want.sums)
            assert np.array_equal(got.counts, want.counts)


def test_sampled_pixels_of_aef_codes_are_decoded_as_the_whole_chunk_would_be():
    codes = _codes(60, 70)
    field = dequantize_aef(dsa.from_array(codes, chunks=(-1, 32, 32)))
    assert aef_codes_of(field) is not None  # the codes path is taken
    decoded_first = dsa.from_array(dequantize_block(codes, axis=0), chunks=(-1, 32, 32))
    index = np.sort(np.random.default_rng(0).choice(60 * 70, 900, replace=False))
    index = np.union1d(index, [3 * 70 + 4, 5 * 70 + 6])  # the masked pixels
    got = read_pixels(field, index)
    want = read_pixels(decoded_first, index)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # NaN where masked, in every band
    assert np.isnan(got[np.searchsorted(index, 5 * 70 + 6)]).all()


def test_the_thread_guard_limits_a_blas_loaded_after_its_first_use():
    """The cached threadpoolctl controller is rebuilt when a new shared object is loaded."""
    code = textwrap.dedent(
        """
        import numpy
        from threadpoolctl import threadpool_info
        from geoembed import _threads
        with _threads.single_thread_blas():
            pass
        key = _threads._loaded_objects_key()
        with _threads.single_thread_blas():
            assert _threads._loaded_objects_key() == key  # nothing new: the cache is used
        import faiss  # loads shared objects of its own (its BLAS, OpenMP)
        assert _threads._loaded_objects_key() != key
        with _threads.single_thread_blas():
            blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert all(p["num_threads"] == 1 for p in blas), blas
        print("ok")
        """
    )
    env_run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert env_run.returncode == 0 and "ok" in env_run.stdout, env_run.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_pass_block_gives_the_stats_of_its_pixels_prepared_in_their_own_dtype(dtype):
    """The reused piece keeps a float block's dtype: float64 is normalised in float64."""
    from geoembed.cluster._lloyd import _block_stats

    rng = np.random.default_rng(9)
    block = rng.normal(size=(64, 70, 300)).astype(dtype)
    centers = prepare(rng.normal(size=(7, 64)).astype(np.float32), "cosine")
    scale = fixed_point_scale(block[0].size, 1.0)
    got = _block_stats(block, centers, metric="cosine", scale=scale, sq_scale=None)
    xt = prepare_columns(block.reshape(64, -1), "cosine")
    labels = assign(xt, centers, "cosine", columns=True)
    sums, counts = label_sums(xt, labels, 7, scale, columns=True)
    assert np.array_equal(got[: 7 * 64, 0, 0], sums.ravel())
    assert np.array_equal(got[7 * 64 : 7 * 64 + 7, 0, 0], counts)


def test_tasks_in_a_pool_are_counted_once_and_the_main_thread_never():
    from geoembed import _threads

    with _threads.single_thread_blas(), _threads.single_thread_blas():
        assert _threads.concurrent_tasks() == 0  # the main thread (client, sync scheduler)
    barrier = threading.Barrier(3)

    def task() -> int:
        with _threads.single_thread_blas(), _threads.single_thread_blas():
            barrier.wait(timeout=30)
            seen = _threads.concurrent_tasks()
            barrier.wait(timeout=30)
        return seen

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda _: task(), range(3))) == [3, 3, 3]
    assert _threads.concurrent_tasks() == 0
