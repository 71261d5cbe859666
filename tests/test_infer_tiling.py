"""The global tile grid, blending weights and stitching, with a NumPy stand-in for the model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoembed.infer.tiling import (
    PAD_MODES,
    AxisTiling,
    block_edges,
    edge_weights,
    run_region,
    source_index,
    tile_starts,
)


def box3(batch: np.ndarray) -> np.ndarray:
    """3 x 3 sum with zero padding at the tile edge (receptive radius 1), plus the centre."""
    p = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ty, tx = batch.shape[-2:]
    out = sum(p[:, :, i : i + ty, j : j + tx] for i in range(3) for j in range(3))
    return np.concatenate([out, batch], axis=1).astype(np.float32)


def tile_position(batch: np.ndarray) -> np.ndarray:
    """A model that is NOT translation-exact: adds the row index within the tile."""
    rows = np.arange(batch.shape[2], dtype=np.float32)[:, None]
    return (batch[:, :1] + rows).astype(np.float32)


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


def test_cosine_weights_are_a_tukey_window() -> None:
    from scipy.signal.windows import tukey

    # tile 256 stepping 204 (overlap 52) with a 51-pixel halo: Tukey(alpha=0.4)
    np.testing.assert_allclose(edge_weights(256, 52, 51, "cosine"), tukey(256, 0.4), atol=1e-12)


@given(size=st.integers(1, 40), lo=st.integers(-100, 0), width=st.integers(1, 200))
def test_source_index_pads_like_numpy(size: int, lo: int, width: int) -> None:
    x = np.arange(size)
    for mode, np_mode in PAD_MODES.items():
        padded = np.pad(x, (-lo, max(0, lo + width - size)), mode=np_mode)
        idx = np.arange(lo, lo + width)
        np.testing.assert_array_equal(x[source_index(idx, size, mode)], padded[:width])


@settings(deadline=None)
@given(
    size=st.integers(1, 300),
    tile=st.integers(5, 64),
    halo=st.integers(0, 8),
    blend=st.sampled_from(["none", "cosine"]),
    lo=st.integers(0, 299),
    width=st.integers(1, 300),
)
def test_axis_grid_covers_every_pixel_and_finds_its_tiles(
    size: int, tile: int, halo: int, blend: str, lo: int, width: int
) -> None:
    if tile - 2 * halo < 1 or (blend != "none" and halo == 0):
        return
    ax = AxisTiling(size=size, tile=tile, halo=halo, blend=blend)
    starts = ax.starts
    span_lo, span_hi = ax.spans
    assert (np.diff(span_lo) >= 0).all() and (np.diff(span_hi) >= 0).all()
    written = np.zeros(size, int)
    for a, b in zip(span_lo, span_hi):
        written[a:b] += 1
    assert (written >= 1).all()
    if blend == "none":
        assert (written == 1).all()  # each pixel from exactly one tile interior
        assert (span_lo - starts >= halo).all() and (starts + tile - span_hi >= halo).all()
    lo = min(lo, size - 1)
    hi = min(size, lo + width)
    brute = [k for k in range(len(starts)) if span_lo[k] < hi and span_hi[k] > lo]
    assert list(ax.tiles_for(lo, hi)) == brute


@given(size=st.integers(1, 2000), chunk=st.integers(1, 700), period=st.integers(1, 300))
def test_block_edges(size: int, chunk: int, period: int) -> None:
    edges = block_edges(size, chunk, period, offset=period // 3)
    assert edges[0] == 0 and edges[-1] == size
    assert (np.diff(edges) > 0).all()


def _regions(edges_y: list[int], edges_x: list[int]) -> list[tuple[tuple[int, int], ...]]:
    return [
        ((edges_y[i], edges_y[i + 1]), (edges_x[j], edges_x[j + 1]))
        for i in range(len(edges_y) - 1)
        for j in range(len(edges_x) - 1)
    ]


def _stitch(x: np.ndarray, run, n_out: int, ey, ex, **kw) -> np.ndarray:
    """Run region by region, each from its window only, and stitch."""
    ny, nx = x.shape[1:]
    padding = kw.get("padding", "reflect")
    ty = AxisTiling(size=ny, **{k: kw[k] for k in ("tile", "halo", "blend", "step")})
    tx = AxisTiling(size=nx, **{k: kw[k] for k in ("tile", "halo", "blend", "step")})
    out = np.full((n_out, ny, nx), np.nan, np.float32)
    for (y0, y1), (x0, x1) in _regions(ey, ex):
        (wy0, wy1), (wx0, wx1) = ty.window(y0, y1, padding), tx.window(x0, x1, padding)
        window = x[:, wy0:wy1, wx0:wx1].copy()
        out[:, y0:y1, x0:x1] = run_region(
            window,
            (wy0, wx0),
            run,
            ty=ty,
            tx=tx,
            region=((y0, y1), (x0, x1)),
            n_out=n_out,
            batch_size=kw.get("batch_size", 3),
            padding=padding,
        )
    return out


@settings(deadline=None, max_examples=40)
@given(
    ny=st.integers(1, 70),
    nx=st.integers(1, 70),
    tile=st.integers(6, 30),
    halo=st.integers(1, 2),
    blend=st.sampled_from(["none", "linear", "cosine"]),
    padding=st.sampled_from(["reflect", "nearest"]),
    cuts=st.lists(st.integers(1, 69), max_size=4),
    batch=st.integers(1, 5),
)
def test_any_split_into_regions_gives_the_same_bytes(
    ny: int, nx: int, tile: int, halo: int, blend: str, padding: str, cuts: list, batch: int
) -> None:
    rng = np.random.default_rng(ny * 100 + nx)
    x = rng.normal(size=(2, ny, nx)).astype(np.float32)
    kw = dict(tile=tile, halo=halo, blend=blend, step=None, padding=padding, batch_size=batch)
    one = _stitch(x, tile_position, 1, [0, ny], [0, nx], **kw)
    ey = sorted({0, ny, *(c for c in cuts if c < ny)})
    ex = sorted({0, nx, *(c for c in cuts[::-1] if c < nx)})
    split = _stitch(x, tile_position, 1, ey, ex, **kw)
    assert not np.isnan(one).any()  # every pixel gets a positive total weight
    assert split.tobytes() == one.tobytes()
    if blend == "none":
        # box3 is translation-exact with radius 1 <= halo: equals the padded whole image
        whole = box3(np.pad(x, ((0, 0), (halo, halo), (halo, halo)), PAD_MODES[padding])[None])
        got = _stitch(x, box3, 4, ey, ex, **kw)
        np.testing.assert_array_equal(got, whole[0][:, halo : halo + ny, halo : halo + nx])


def test_strided_model_and_fixed_batch() -> None:
    s = 4

    def pool(batch: np.ndarray) -> np.ndarray:
        n, c, ty, tx = batch.shape
        return batch.reshape(n, c, ty // s, s, tx // s, s).mean(axis=(3, 5))

    calls = []

    def fixed(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return pool(batch)

    x = np.arange(3 * 48 * 40, dtype=np.float32).reshape(3, 48, 40)
    ty, tx = (AxisTiling(size=n, tile=16, halo=4, stride=s) for n in (48, 40))
    got = run_region(
        x,
        (0, 0),
        fixed,
        ty=ty,
        tx=tx,
        region=((8, 40), (4, 36)),
        n_out=3,
        batch_size=8,
        fixed_batch=2,
    )
    np.testing.assert_array_equal(got, pool(x[None])[0][:, 2:10, 1:9])
    assert set(calls) == {2}


def test_csmask_tile_placement() -> None:
    # ukis-csmask pads 51 pixels and cuts a 256-pixel tile every 204 pixels
    ax = AxisTiling(size=512, tile=256, halo=51, blend="cosine", step=204)
    assert list(ax.starts) == [-51, 153, 357]
    assert list(ax.tiles_for(0, 256)) == [0, 1] and list(ax.tiles_for(256, 512)) == [1, 2]
    assert ax.window(256, 512, "reflect") == (153, 512)


@pytest.mark.parametrize("padding", ["reflect", "nearest"])
@pytest.mark.parametrize("size", [1, 2, 5, 40])
def test_tile_copies_by_runs_equal_fancy_indexing(padding: str, size: int) -> None:
    """Tiles cut by slice runs (interior, mirrored and repeated edges) equal x[:, r][:, :, c],
    from one array and from a window split into a grid of input-block parts."""
    from geoembed.infer.tiling import Window, _copy_tile, _runs

    rng = np.random.default_rng(size)
    x = rng.standard_normal((3, size, size + 3)).astype(np.float32)
    for start in (-25, -7, -1, 0, 3, size - 4, size - 1):
        rows = source_index(np.arange(16) + start, size, padding)
        cols = source_index(np.arange(16) + start + 2, size + 3, padding)
        dst = np.full((3, 16, 16), np.nan, np.float32)
        _copy_tile(dst, x, _runs(rows), _runs(cols))
        assert np.array_equal(dst, x[:, rows][:, :, cols]), (start, size, padding)
        ye = sorted({0, size, *rng.integers(0, size + 1, 3).tolist()})
        xe = sorted({0, size + 3, *rng.integers(0, size + 4, 3).tolist()})
        grid = [
            [x[:, a:b, c:d] for c, d in itertools.pairwise(xe)] for a, b in itertools.pairwise(ye)
        ]
        win = Window(grid)
        dst[:] = np.nan
        win.copy_tile(dst, _runs(rows), _runs(cols))
        assert np.array_equal(dst, x[:, rows][:, :, cols]), (start, size, padding, ye, xe)
        nan = x.copy()
        nan[1, : size // 2, 1] = np.nan
        parts = [
            [nan[:, a:b, c:d] for c, d in itertools.pairwise(xe)] for a, b in itertools.pairwise(ye)
        ]
        rs, cs = slice(size // 3, size), slice(1, size + 2)
        got = Window(parts).nodata(rs, cs)
        assert np.array_equal(got, np.isnan(nan[:, rs, cs]).any(axis=0))
        if 0 <= start and start + 18 <= size:
            assert len(_runs(rows)) == len(_runs(cols)) == 1  # interior: one slice


def test_thin_window_pieces_do_not_keep_the_input_block_alive() -> None:
    """A halo strip cut from an input block is a copy; a view would pin the whole block."""
    import gc
    import weakref

    from geoembed.infer.blocks import _window_piece

    block = np.random.default_rng(0).random((4, 64, 64), dtype=np.float32)  # owns its data
    expected = block[:, 60:64].copy()
    ref = weakref.ref(block)
    strip = _window_piece(block, slice(60, 64), slice(0, 64))
    big = _window_piece(block, slice(2, 64), slice(0, 64))
    assert np.array_equal(strip, expected)
    assert np.shares_memory(big, block)  # most of the block: a view (nothing to free)
    del block, big
    gc.collect()
    assert ref() is None, "the strip keeps the input block alive"
