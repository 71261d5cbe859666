"""Tests of panel quicklooks, ``geoembed quicklook`` and confusion-matrix plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("matplotlib")

from geoembed.assess import accuracy_report
from geoembed.cli import main
from geoembed.datasets import synthetic_scene
from geoembed.errors import OutputError, SchemaError
from geoembed.export import write_cog
from geoembed.viz import confusion_png, map_png, panel_figure, panel_png
from geoembed.viz.panel import _nice_length, confusion_plot_path


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(120, 160, seed=5, chunks=64)


@pytest.fixture(scope="module")
def truth_cog(scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("panel") / "truth.tif"
    return write_cog(scene.truth, out, class_names=scene.class_names, colors=scene.colors)


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_panel_has_titles_legends_and_scale_bar(scene, truth_cog) -> None:
    import matplotlib.pyplot as plt

    conf = (scene.truth.astype("float32") / 7.0).rio.write_crs(scene.truth.rio.crs)
    fig = panel_figure(
        [("field", scene.field), ("truth", truth_cog), ("confidence", conf)],
        title="demo",
        note="synthetic",
    )
    try:
        titles = [ax.get_title() for ax in fig.axes[:3]]
        assert titles == ["field", "truth", "confidence"]
        legend = fig.axes[1].get_legend()
        assert [t.get_text() for t in legend.get_texts()] == scene.class_names
        colours = [
            tuple(round(255 * v) for v in h.get_facecolor()[:3]) for h in legend.legend_handles
        ]
        assert colours == [tuple(scene.colors[i]) for i in range(len(scene.class_names))]
        assert fig.axes[0].get_legend() is None  # a field has no legend
        assert any(t.endswith(" m") or t.endswith(" km") for t in _texts(fig))  # scale bar
        assert len(fig.axes) == 4  # the confidence panel has a colour bar
    finally:
        plt.close(fig)


def test_scale_bar_lengths() -> None:
    assert _nice_length(1600.0) == 200.0
    assert _nice_length(12_000.0) == 2000.0
    assert _nice_length(5_000.0) == 1000.0
    assert _nice_length(30.0) == 5.0


def test_panel_png_is_written_atomically(scene, truth_cog, tmp_path: Path) -> None:
    out = panel_png({"truth": truth_cog, "field": scene.field}, tmp_path / "p.png", title="t")
    img = _rgb(out)
    assert img.shape[1] > img.shape[0] > 200
    # the class colours are on the picture
    flat = {tuple(px) for px in img.reshape(-1, 3)[::7]}
    assert sum(tuple(scene.colors[i]) in flat for i in range(7)) >= 4
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(OutputError, match="does not exist"):
        panel_png({"t": truth_cog}, tmp_path / "no" / "p.png")
    with pytest.raises(SchemaError, match="at least one"):
        panel_figure([])


def test_quicklook_command(truth_cog, tmp_path: Path) -> None:
    out = tmp_path / "map.png"
    res = CliRunner().invoke(main, ["quicklook", str(truth_cog), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1000
    res = CliRunner().invoke(main, ["quicklook", str(truth_cog), "-o", str(out)])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = CliRunner().invoke(
        main, ["quicklook", str(truth_cog), str(truth_cog), "-o", str(out), "--overwrite"]
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["quicklook", str(tmp_path / "x.tif"), "-o", str(out)])
    assert res.exit_code != 0 and "x.tif" in res.output


def test_quicklook_replaces_only_a_figure_geoembed_drew(truth_cog, tmp_path: Path) -> None:
    from geoembed.export.outputs import is_geoembed_output

    ours, theirs = tmp_path / "ours.png", tmp_path / "theirs.png"
    res = CliRunner().invoke(main, ["quicklook", str(truth_cog), "-o", str(ours)])
    assert res.exit_code == 0, res.output
    assert is_geoembed_output(ours) and (tmp_path / "ours.png.stac.json").is_file()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(theirs)  # a user's own picture
    before = theirs.read_bytes()
    assert not is_geoembed_output(theirs)
    res = CliRunner().invoke(main, ["quicklook", str(truth_cog), "-o", str(theirs), "--overwrite"])
    assert res.exit_code == 2 and "did not write" in res.output
    assert theirs.read_bytes() == before
    res = CliRunner().invoke(main, ["quicklook", str(truth_cog), "-o", str(ours), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ours.png", "ours.png.stac.json", "theirs.png"
    ]  # fmt: skip


def test_classify_report_is_rerun_with_overwrite(tmp_path: Path) -> None:
    """The confusion PNG beside the report is geoembed's, so --overwrite replaces it."""
    import dask

    from geoembed.export import write_zarr

    with dask.config.set(scheduler="threads"):
        s = synthetic_scene(96, 96, seed=0, chunks=48)
        write_zarr(s.field, tmp_path / "f.zarr")
        s.sample_points(12, seed=1).to_file(tmp_path / "p.gpkg")
    args = [
        "-q", "--scheduler", "threads", "classify", str(tmp_path / "f.zarr"),
        "--labels", str(tmp_path / "p.gpkg"), "--label-column", "class_id",
        "-o", str(tmp_path / "m.tif"), "--report", str(tmp_path / "r.json"), "--overwrite",
    ]  # fmt: skip
    for _ in range(2):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
    assert (tmp_path / "r.confusion.png").is_file()


def test_map_png_names_from_the_cog(scene, truth_cog, tmp_path: Path) -> None:
    out = map_png(truth_cog, tmp_path / "m.png", title="truth")
    assert out.is_file()


def test_confusion_png(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    ref = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2])
    rep = accuracy_report(ref, pred, class_names=["water", "trees", "crops"])
    out = confusion_png(rep, tmp_path / "c.png")
    assert _rgb(out).shape[0] > 200
    fig = plt.figure()
    plt.close(fig)
    with pytest.raises(SchemaError, match="no confusion matrix"):
        confusion_png({"kind": "other"}, tmp_path / "d.png")
    assert confusion_plot_path(tmp_path / "r.json") == tmp_path / "r.confusion.png"
    assert confusion_plot_path("gs://b/r.json") is None
    assert confusion_plot_path(None) is None


def test_classify_report_has_a_confusion_plot(aef_tif: Path, shared_data: Path, tmp_path) -> None:
    rep = tmp_path / "r.json"
    res = CliRunner().invoke(
        main,
        [
            "--scheduler",
            "threads",
            "-q",
            "classify",
            str(aef_tif),
            "--training",
            str(shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"),
            "--label-column",
            "dw_label",
            "-o",
            str(tmp_path / "map.tif"),
            "--report",
            str(rep),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(rep.read_text())
    png = tmp_path / "r.confusion.png"
    assert report["outputs"]["confusion_plot"] == str(png)
    assert _rgb(png).shape[0] > 200
    # the class map itself: names and colours from the COG
    out = tmp_path / "map.png"
    res = CliRunner().invoke(main, ["quicklook", str(tmp_path / "map.tif"), "-o", str(out)])
    assert res.exit_code == 0, res.output


def test_panel_of_a_field_read_back_from_zarr_is_decimated(scene, tmp_path: Path) -> None:
    """The demo's panel: a field opened from geoembed's Zarr, drawn smaller than it is."""
    import dask

    from geoembed.export import write_zarr
    from geoembed.io import open_embeddings

    with dask.config.set(scheduler="threads"):
        write_zarr(scene.field, tmp_path / "f.zarr")
        field = open_embeddings(tmp_path / "f.zarr")
        out = panel_png([("field", field)], tmp_path / "p.png", max_size=48)
    assert _rgb(out).shape[0] > 100
