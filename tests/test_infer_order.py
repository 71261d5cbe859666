"""Memory at scale of CNN inference, seen through Dask's static task order.

Peak RSS per worker of :func:`geoembed.infer.predict` grows with the scene
(``tests/benchmarks/test_bench_memory.py``, ``infer``: +39-54 % at 9.4e6 px, +99 % at
2.6e7 px vs 1e6 px). The cause is the order in which Dask runs the blocks: output
blocks follow the tile grid (504 px for tile 256, overlap 2), not the 512-px input
blocks, so each output block reads a large part of one input block and thin strips
of its upper/left neighbours, and ``dask.order`` walks the blocks bottom-right first
inside each group of the reduction; an input block whose output block needs strips of
blocks computed later stays in memory meanwhile. :func:`_order_replay.peak_inputs`
replays that order (no task runs) and counts the input blocks alive at once.

The property (input blocks alive at once do not grow with the scene) does not hold
yet: the test is a strict xfail, so that a fix makes it fail until the mark goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _order_replay import lazy_field, peak_inputs

CHUNK = 512


def _count_blocks(b: np.ndarray) -> np.ndarray:
    return np.bincount(b.ravel().astype(np.int64), minlength=256)[None, None, :]


def _inference_counts(side: int, model: Path) -> Any:
    """Per-class pixel counts of the inference of a ``side x side`` lazy field (lazy)."""
    from geoembed.infer import predict

    ds = predict(lazy_field(side, chunk=CHUNK), model, tile=256, overlap=2, check_overlap=False)
    cls = ds["classes"].data
    counts = cls.map_blocks(_count_blocks, new_axis=2, chunks=(1, 1, 256), dtype=np.int64)
    return counts.sum(axis=(0, 1))


def _is_input(key: Any) -> bool:
    return isinstance(key, tuple) and str(key[0]).startswith("zeros")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    from geoembed.infer.models import conv_stack

    path = tmp_path_factory.mktemp("order") / "conv.onnx"
    return Path(conv_stack(path, bands=8, width=4, depth=2, n_classes=4, seed=0))


def test_replay_counts_input_blocks(model: Path) -> None:
    """The replay sees every input block, and a 2 x 2-block field holds at most all 4."""
    peak, n = peak_inputs(_inference_counts(1024, model), _is_input, CHUNK * CHUNK)
    assert n == 4
    assert 1 <= peak <= 4


@pytest.mark.xfail(
    strict=True,
    reason="known: Dask's order of the tile-grid inference graph holds input blocks in "
    "proportion to the scene's width (issue 15, item 5)",
)
def test_input_blocks_alive_do_not_grow_with_the_scene(model: Path) -> None:
    small, _ = peak_inputs(_inference_counts(1024, model), _is_input, CHUNK * CHUNK)
    large, n = peak_inputs(_inference_counts(3072, model), _is_input, CHUNK * CHUNK)
    assert n == 36
    # a row-major order holds 2-3 blocks at any size; allow one more than the small scene
    assert large <= small + 1, (small, large)
