"""Per-thread scratch buffers: reused under a name, never shared between threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from geoembed._scratch import scratch


def test_a_name_reuses_its_memory_and_grows_when_asked_for_more() -> None:
    a = scratch("test-a", (4, 8))
    b = scratch("test-a", (2, 3))
    assert np.shares_memory(a, b) and b.shape == (2, 3) and b.flags.c_contiguous
    assert not np.shares_memory(a, scratch("test-b", (4, 8)))
    assert not np.shares_memory(a, scratch("test-a", (4, 8), np.float64))
    big = scratch("test-a", (100, 100))
    assert big.shape == (100, 100) and big.dtype == np.float32


def test_threads_never_share_a_buffer() -> None:
    def fill(value: int) -> bool:
        buf = scratch("test-threads", (256, 256))
        for _ in range(200):
            buf[...] = value
            if not (buf == value).all():
                return False
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(fill, range(8)))
