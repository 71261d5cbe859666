"""Progress: one bar with its total from the first frame; log lines when not on a TTY."""

from __future__ import annotations

import io
import logging
import re
import sys

import dask.array as dsa
import pytest

from geoembed.runtime import compute
from geoembed.runtime.progress import LineProgress, progress_bar


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _array():
    return (dsa.ones((400, 400), chunks=100) * 2).sum()


def test_not_a_tty_gives_log_lines_with_the_total(caplog, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        (value,) = compute(_array(), progress=True, label="summing")
    assert value == 2 * 400 * 400
    lines = [r.getMessage() for r in caplog.records]
    first = re.match(r"summing: started \((\d+) task\)", lines[0])
    assert first and int(first.group(1)) >= 16  # 16 blocks and their reductions
    assert lines[-1].startswith("summing: done (")
    assert all("\r" not in line and "\x1b" not in line for line in lines)
    assert sys.stderr.getvalue() == ""  # nothing drawn into a log file


def test_tty_bar_has_its_total_in_the_first_frame(monkeypatch) -> None:
    tty = _TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    compute(_array(), progress=True, label="summing")
    frames = [f for f in re.split(r"[\r\n]", tty.getvalue()) if "summing" in f]
    assert frames, tty.getvalue()
    assert re.search(r"0/\d+", frames[0]), frames[0]  # 0 of a known total


def test_progress_bar_kinds(monkeypatch, caplog) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        with progress_bar(20, "passes", unit="pass") as bar:
            assert isinstance(bar, LineProgress)
            for _ in range(20):
                bar.update(1)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == "passes: started (20 pass)"
    assert sum("%" in m for m in msgs) == 9  # 10 %, 20 % ... 90 %
    assert msgs[-1].startswith("passes: done (20 pass")
    monkeypatch.setattr(sys, "stderr", _TTY())
    from tqdm import tqdm

    bar = progress_bar(5, "x")
    assert isinstance(bar, tqdm) and bar.total == 5
    bar.close()


def test_distributed_bar_total_from_the_start(dask_client, caplog, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        (value,) = compute(_array(), progress=True, label="on workers")
    assert value == 2 * 400 * 400
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("on workers")]
    first = re.match(r"on workers: started \((\d+) task\)", msgs[0])
    assert first and int(first.group(1)) >= 16
    assert msgs[-1].startswith("on workers: done (")


@pytest.mark.parametrize("total", [None, 0])
def test_line_progress_without_a_total(total, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        with LineProgress(total, "open-ended") as bar:
            bar.update(3)
    assert caplog.records[-1].getMessage().startswith("open-ended: done (3 it")


def test_kmeans_passes_show_one_bar(caplog, monkeypatch) -> None:
    import dask

    from geoembed.cluster import KMeans
    from geoembed.testing import make_field

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    field = make_field(40, 40, chunks=20)
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        with dask.config.set({"geoembed.progress": True}):
            km = KMeans(n_clusters=3, random_state=0, max_iter=7).fit(field)
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("KMeans passes")]
    assert msgs[0] == "KMeans passes: started (7 pass)"  # max_iter, known before pass 1
    assert msgs[-1].startswith(f"KMeans passes: done ({km.n_iter_} pass")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        KMeans(n_clusters=3, random_state=0, max_iter=7).fit(field)  # no bar unless asked
    assert not caplog.records


@pytest.mark.parametrize(("index", "steps"), [("ivf", 5), ("hnsw", 4)])
def test_approximate_index_build_shows_one_bar(index, steps, caplog, monkeypatch) -> None:
    import dask
    import numpy as np

    pytest.importorskip("faiss")
    import geoembed.classify.approximate as approximate

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(approximate, "_ADD_BATCH", 300)  # 1000 vectors: 4 batches
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    label = f"building the faiss {index} index"
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        with dask.config.set({"geoembed.progress": True}):
            model = approximate.ApproximateKNNClassifier(3, index=index).fit(X, y)
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith(label)]
    assert msgs[0] == f"{label}: started ({steps} step)"  # train (IVF) + add batches
    assert msgs[-1].startswith(f"{label}: done ({steps} step")
    assert model.faiss_index.ntotal == 1000  # every batch was added
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        approximate.ApproximateKNNClassifier(3, index=index).fit(X, y)  # no bar unless asked
    assert not caplog.records


def test_classify_cli_shows_the_index_build(tmp_path, caplog, monkeypatch) -> None:
    pytest.importorskip("faiss")
    from click.testing import CliRunner

    from geoembed.cli import main
    from geoembed.datasets import synthetic_scene
    from geoembed.export import write_zarr

    scene = synthetic_scene(64, 64, seed=2, chunks=32)
    src = write_zarr(scene.field, tmp_path / "field.zarr")
    pts = scene.sample_points(10, seed=1)
    pts.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    args = ["--scheduler", "threads", "classify", str(src), "--labels"]
    args += [str(tmp_path / "labels.gpkg"), "--label-column", "class", "--approximate", "ivf"]
    args += ["-o", str(tmp_path / "map.tif")]
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    msgs = [r.getMessage() for r in caplog.records]
    assert any(re.match(r"building the faiss ivf index: started \(\d+ step\)", m) for m in msgs)
    assert any(re.match(r"classifying: started \(\d+ task\)", m) for m in msgs)


def test_infer_cli_shows_a_bar_with_its_total(tmp_path, caplog) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from click.testing import CliRunner

    from geoembed.cli import main
    from geoembed.export import write_zarr
    from geoembed.infer.models import conv_stack
    from geoembed.testing import make_field

    src = write_zarr(make_field(48, 40, bands=8, chunks=24, seed=1), tmp_path / "f.zarr")
    model = conv_stack(tmp_path / "m.onnx", bands=8, depth=1, n_classes=3)
    args = ["--scheduler", "threads", "infer", str(src), "--model", str(model), "--tile", "32"]
    args += ["--overlap", "4"]
    with caplog.at_level(logging.INFO, logger="geoembed.progress"):
        res = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "c.tif")])
    assert res.exit_code == 0, res.output
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("infer")]
    m = re.match(r"infer: started \((\d+) task\)", msgs[0])
    assert m and int(m.group(1)) > 0, msgs
    assert msgs[-1].startswith(f"infer: done ({m.group(1)} task")
