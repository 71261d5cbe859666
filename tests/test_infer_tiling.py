"""Tile placement, blending weights and stitching, with a NumPy stand-in for the model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoembed.infer.tiling import edge_weights, run_tiles, tile_starts


def box3(batch: np.ndarray) -> np.ndarray:
    """3 x 3 sum with zero padding at the tile edge (receptive radius 1), plus the centre."""
    p = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ty, tx = batch.shape[-2:]
    out = sum(p[:, :, i : i + ty, j : j + tx] for i in range(3) for j in range(3))
    return np.concatenate([out, batch], axis=1).astype(np.float32)


@given(size=st.integers(1, 200), interior=st.integers(1, 64))
def test_tile_starts_cover_every_pixel_once_from_an_interior(size: int, interior: int) -> None:
    starts = tile_starts(size, interior)
    covered = np.zeros(max(size, interior), dtype=int)
    for s in starts:
        covered[s : s + interior] += 1
    assert (covered[:size] >= 1).all()
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert starts[-1] + interior >= size and (size <= interior or starts[-1] + interior == size)


@pytest.mark.parametrize("mode", ["linear", "cosine"])
def test_blend_ramps_of_neighbours_sum_to_one(mode: str) -> None:
    t, h = 40, 8
    w = edge_weights(t, 2 * h, h, mode)
    step = t - 2 * h
    total = np.zeros(3 * t)
    for k in range(4):
        seg = total[k * step : k * step + t]
        seg += w[: len(seg)]
    # away from the outer tiles' edges, every pixel's weights sum to one
    np.testing.assert_allclose(total[h + h // 2 : 3 * step], 1.0)
    assert w[: h // 2].max() == 0.0 and w[t // 2] == 1.0


@settings(deadline=None, max_examples=30)
@given(
    by=st.integers(1, 60),
    bx=st.integers(1, 60),
    tile=st.integers(6, 30),
    halo=st.integers(1, 2),
    batch=st.integers(1, 5),
    blend=st.sampled_from(["none", "linear", "cosine"]),
)
def test_run_tiles_equals_whole_block(
    by: int, bx: int, tile: int, halo: int, batch: int, blend: str
) -> None:
    rng = np.random.default_rng(by * 100 + bx)
    x = rng.normal(size=(2, by + 2 * halo, bx + 2 * halo)).astype(np.float32)
    whole = box3(x[None])[0][:, halo : halo + by, halo : halo + bx]
    got = run_tiles(
        x, box3, n_out=4, tile=tile, halo=halo, batch_size=batch, blend=blend, padding="reflect"
    )
    if blend == "none":
        np.testing.assert_array_equal(got, whole)
    elif halo >= 2:  # blending uses pixels from h/2 on: exact when radius 1 <= h/2
        np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5)


def test_run_tiles_strided_and_fixed_batch() -> None:
    s = 4

    def pool(batch: np.ndarray) -> np.ndarray:
        n, c, ty, tx = batch.shape
        return batch.reshape(n, c, ty // s, s, tx // s, s).mean(axis=(3, 5))

    calls = []

    def fixed(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return pool(batch)

    x = np.arange(3 * 48 * 40, dtype=np.float32).reshape(3, 48, 40)
    got = run_tiles(x, fixed, n_out=3, tile=16, halo=4, stride=s, batch_size=8, fixed_batch=2)
    whole = pool(x[None])[0][:, 1:-1, 1:-1]
    np.testing.assert_array_equal(got, whole)
    assert set(calls) == {2}


def test_cosine_weights_are_a_tukey_window() -> None:
    from scipy.signal.windows import tukey

    # tile 256 stepping 204 (overlap 52) with a 51-pixel halo: Tukey(alpha=0.4)
    np.testing.assert_allclose(edge_weights(256, 52, 51, "cosine"), tukey(256, 0.4), atol=1e-12)


@settings(deadline=None, max_examples=25)
@given(
    by=st.integers(3, 50),
    bx=st.integers(3, 50),
    tile=st.integers(8, 40),
    halo=st.integers(1, 3),
    blend=st.sampled_from(["none", "cosine"]),
    mode=st.sampled_from(["reflect", "nearest"]),
)
def test_missing_halo_is_padded_like_the_whole_block(
    by: int, bx: int, tile: int, halo: int, blend: str, mode: str
) -> None:
    from geoembed.infer.tiling import PAD_MODES

    rng = np.random.default_rng(by * 7 + bx)
    x = rng.normal(size=(2, by, bx)).astype(np.float32)
    kw = dict(n_out=4, tile=tile, halo=halo, blend=blend, padding=mode)
    padded = np.pad(x, ((0, 0), (halo, halo), (halo, halo)), mode=PAD_MODES[mode])
    full = run_tiles(padded, box3, **kw)
    virtual = run_tiles(x, box3, missing=(halo, halo, halo, halo), **kw)
    if blend == "none":
        np.testing.assert_array_equal(virtual, full)
    else:
        np.testing.assert_allclose(virtual, full, rtol=1e-6, atol=1e-6)
