"""Refresh time of the notebook mapping loop (``MappingSession.classify``).

A synthetic 2000 x 2000 scene (64 bands, 512 px chunks; its blocks are generated, which
costs about what reading a remote COG or running a model would), 3 labels a class.
Side by side in this process on the threaded scheduler:

* ``baseline`` (``cache=False``): every refresh produces the field's blocks again, for
  the training samples and for the view;
* ``cached``: the first refresh stores the blocks in Zarr (and the view's stride level);
  later refreshes read them.

Rows: the first refresh of each, then later refreshes of the view at screen resolution
(``max_size=1024``, what the widget's "Classify view" button asks for) after a new label.
``GEOEMBED_BENCH_SCALE=small``: 1000 x 1000.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import _results
import pytest

pytest.importorskip("ipyleaflet")
pytest.importorskip("rio_tiler")

from geoembed.datasets import synthetic_scene
from geoembed.viz import LabelCollector, MappingSession

pytestmark = pytest.mark.bench

SIZE = 1000 if os.environ.get("GEOEMBED_BENCH_SCALE") == "small" else 2000


def _timed(sess: MappingSession, **kw: object) -> float:
    t0 = time.perf_counter()
    sess.classify("field", **kw)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def test_bench_session_refresh(tmp_path: Path) -> None:
    scene = synthetic_scene(SIZE, SIZE, seed=3, chunks=512)
    pts = scene.sample_points(3, seed=1).to_crs("EPSG:4326")
    more = scene.sample_points(1, seed=2).to_crs("EPSG:4326")
    runs: dict[bool, tuple[float, list[float]]] = {}
    for cache in (False, True):
        lc = LabelCollector(scene.class_names)
        for geom, cid in zip(pts.geometry, pts["class_id"]):
            lc.add(geom, int(cid))
        sess = MappingSession(scene.field, collector=lc, workdir=tmp_path, cache=cache)
        first = _timed(sess, max_size=1024)
        later = []
        for geom, cid in list(zip(more.geometry, more["class_id"]))[: _results.REPEATS]:
            lc.add(geom, int(cid))
            later.append(_timed(sess, max_size=1024))
        runs[cache] = (first, later)
        sess.close()
    (b_first, b_later), (c_first, c_later) = runs[False], runs[True]
    _results.record(
        "session",
        f"first refresh {SIZE}x{SIZE} view",
        value=[c_first],
        baseline=[b_first],
        note="cached run stores the field's blocks",
    )
    row = _results.record(
        "session",
        f"later refresh {SIZE}x{SIZE} view at <=1024 px",
        value=c_later,
        baseline=b_later,
    )
    print(
        f"\nsession refresh {SIZE}x{SIZE}: first {b_first:.1f} s -> {c_first:.1f} s, "
        f"later {min(b_later):.1f} s -> {min(c_later):.1f} s ({row['ratio']:.1f} x)"
    )
