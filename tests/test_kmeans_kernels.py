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

import numpy as np
import pytest

from geoembed._aef_codes import decode_codes
from geoembed.cluster import _kernels
from geoembed.cluster._kernels import (
    assign,
    fixed_point_scale,
    label_sums,
    prepare,
    prepare_columns,
)


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
