"""Every job writes through one output set: train-cnn and the analysis commands too.

``similar``, ``change``, ``regress`` and ``train-cnn`` check all their outputs before any
task runs, replace with ``--overwrite`` only what geoembed wrote (GeoParquet tables,
JSON reports, ONNX models and their sidecars included), and make their outputs appear
together or not at all. Synthetic scene (NOT real data), real COG/Zarr/Parquet files.
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from geoembed.cli import main
from geoembed.errors import OutputError
from geoembed.export.atomic import TEMP_MARKER
from geoembed.export.outputs import is_geoembed_output

# write_zarr stores string band names, which Zarr v3 flags as not yet specified
pytestmark = pytest.mark.filterwarnings("ignore:The data type")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 x 96 synthetic scene: two years (Zarr), labelled points (GeoPackage, CSV-free)."""
    import dask

    from geoembed.datasets import synthetic_scene
    from geoembed.export import write_zarr

    d = tmp_path_factory.mktemp("scene")
    with dask.config.set(scheduler="threads"):
        first = synthetic_scene(96, 96, seed=0, chunks=48)
        write_zarr(first.field, d / "a.zarr")
        second = synthetic_scene(96, 96, seed=3, chunks=48).field
        write_zarr(second, d / "b.zarr")
        points = first.sample_points(12, seed=1)
        points.to_file(d / "points.gpkg")
        points.iloc[:6].to_file(d / "refs.gpkg")
        points["height"] = np.arange(len(points), dtype=float)
        points.to_file(d / "targets.gpkg")
    return d


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(*args: str) -> object:
    return CliRunner().invoke(main, ["-q", "--scheduler", "sync", *args])


def _similar(scene: Path, work: Path, *extra: str) -> list[str]:
    return [
        "similar", str(scene / "a.zarr"), "--like", str(scene / "refs.gpkg"),
        "-o", str(work / "sim.tif"), "--mask", str(work / "mask.tif"), "--threshold", "0.5",
        "--top", "5", "--top-out", str(work / "top.parquet"), "--report", str(work / "r.json"),
        *extra,
    ]  # fmt: skip


def _change(scene: Path, work: Path, *extra: str) -> list[str]:
    return [
        "change", str(scene / "a.zarr"), str(scene / "b.zarr"), "-o", str(work / "ch.tif"),
        "--mask", str(work / "mask.tif"), "--labels", str(scene / "points.gpkg"),
        "--label-column", "class_id", "--transitions", str(work / "tr.json"),
        "--report", str(work / "r.json"), *extra,
    ]  # fmt: skip


def _regress(scene: Path, work: Path, *extra: str) -> list[str]:
    return [
        "regress", str(scene / "a.zarr"), "--labels", str(scene / "targets.gpkg"),
        "--target-column", "height", "-k", "3", "-o", str(work / "v.tif"),
        "--spread", str(work / "s.tif"), "--report", str(work / "r.json"), "--cv", "random:3",
        *extra,
    ]  # fmt: skip


COMMANDS = {"similar": _similar, "change": _change, "regress": _regress}
OUTPUTS = {
    "similar": ["mask.tif", "r.json", "sim.tif", "top.parquet"],
    "change": ["ch.tif", "mask.tif", "r.json", "tr.json"],
    "regress": ["r.json", "s.tif", "v.tif"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_analysis_overwrite_replaces_own_outputs_together(
    scene: Path, tmp_path: Path, command: str
) -> None:
    args = COMMANDS[command](scene, tmp_path)
    first = _run(*args)
    assert first.exit_code == 0, first.output
    names = OUTPUTS[command]
    listing = sorted(names + [f"{n}.stac.json" for n in names])  # each with its STAC Item
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert all(is_geoembed_output(tmp_path / n) for n in names), names
    again = _run(*args)  # without --overwrite: refused, nothing touched
    assert again.exit_code == 2 and "already exists" in again.output
    before = _tree(tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({"geoembed_version": "0", "old": True}))
    second = _run(*args, "--overwrite")
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temporaries left
    report = json.loads((tmp_path / "r.json").read_text())
    assert "old" not in report and report["outputs"]
    assert {k: v for k, v in _tree(tmp_path).items() if k != "r.json"}.keys() == {
        k for k in before if k != "r.json"
    }


@pytest.mark.parametrize(
    ("command", "foreign"),
    [("similar", "top.parquet"), ("similar", "r.json"), ("change", "tr.json"),
     ("change", "mask.tif"), ("regress", "r.json"), ("regress", "s.tif")],
)  # fmt: skip
def test_analysis_overwrite_never_replaces_foreign_files(
    scene: Path, tmp_path: Path, command: str, foreign: str
) -> None:
    target = tmp_path / foreign
    if foreign.endswith(".parquet"):  # a real Parquet table, but not geoembed's
        import pyarrow as pa

        pq.write_table(pa.table({"x": [1.0], "y": [2.0]}), target)
    else:
        target.write_text('{"mine": true}')
    before = _tree(tmp_path)
    res = _run(*COMMANDS[command](scene, tmp_path, "--overwrite"))
    assert res.exit_code == 2, res.output
    assert "Refusing to replace" in res.output
    assert _tree(tmp_path) == before  # checked before any task: nothing written


def test_analysis_failure_leaves_no_output(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the last output (the report) is written: no output appears."""
    import geoembed.jobs._outputs as job_outputs

    def disk_full(outputs: object, what: str, payload: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    for name in ("geoembed.jobs.similar", "geoembed.jobs.regress"):
        monkeypatch.setattr(f"{name}.write_report", disk_full)
    assert job_outputs.write_report is not disk_full  # only the jobs' reference is replaced
    for command in ("similar", "regress"):
        res = _run(*COMMANDS[command](scene, tmp_path))
        assert res.exit_code != 0
        assert "disk is full" in res.output, res.output
        assert list(tmp_path.iterdir()) == [], command  # the COGs were staged, then removed


def test_written_parquet_is_geoparquet_with_the_mark(scene: Path, tmp_path: Path) -> None:
    import geopandas as gpd

    res = _run(*_similar(scene, tmp_path))
    assert res.exit_code == 0, res.output
    table = gpd.read_parquet(tmp_path / "top.parquet")
    assert len(table) == 5 and table.crs is not None and table.geometry.geom_type.eq("Point").all()
    assert b"geoembed_version" in (pq.read_schema(tmp_path / "top.parquet").metadata or {})
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]


# --- train-cnn ----------------------------------------------------------------------------

FAST = dict(patch=16, block=24, n_patches=8, batch_size=4, width=4, epochs=1, threads=1)


@pytest.fixture(scope="module")
def labelled(scene: Path) -> tuple[object, object]:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from geoembed.datasets import synthetic_scene

    s = synthetic_scene(96, 96, seed=0, chunks=48, nodata_patch=False)
    truth = s.truth.astype("int16").rio.write_nodata(-1)
    return s.field, truth


def test_train_cnn_overwrite_replaces_only_its_own_model(
    labelled: tuple[object, object], tmp_path: Path
) -> None:
    from geoembed.train import train_cnn

    field, truth = labelled
    out = tmp_path / "m.onnx"
    first = train_cnn(field, out, labels_raster=truth, progress=False, seed=0, **FAST)
    assert is_geoembed_output(out) and is_geoembed_output(out.with_suffix(".json"))
    assert first.model_path == out
    with pytest.raises(OutputError, match="overwrite"):
        train_cnn(field, out, labels_raster=truth, progress=False, **FAST)
    second = train_cnn(
        field, out, labels_raster=truth, progress=False, seed=1, overwrite=True, **FAST
    )
    spec = json.loads(out.with_suffix(".json").read_text())
    assert spec["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() == second.spec["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.json", "m.json.stac.json", "m.onnx", "m.onnx.stac.json"
    ]  # fmt: skip


@pytest.mark.parametrize("foreign", ["model", "sidecar"])
def test_train_cnn_overwrite_never_replaces_a_foreign_model(
    labelled: tuple[object, object], tmp_path: Path, foreign: str
) -> None:
    from geoembed.train import train_cnn

    field, truth = labelled
    out = tmp_path / "m.onnx"
    if foreign == "model":
        out.write_bytes(b"my own model")
    else:  # a user's sidecar for a model geoembed did not export
        out.with_suffix(".json").write_text(json.dumps({"geoembed_model": 1, "sha256": "0"}))
    before = _tree(tmp_path)
    with pytest.raises(OutputError, match="Refusing to replace"):
        train_cnn(field, out, labels_raster=truth, progress=False, overwrite=True, **FAST)
    assert _tree(tmp_path) == before


def test_train_cnn_sidecar_of_a_replaced_model_is_not_geoembeds(
    labelled: tuple[object, object], tmp_path: Path
) -> None:
    """A geoembed sidecar whose model was replaced by another file is no longer ours."""
    from geoembed.train import train_cnn

    field, truth = labelled
    out = tmp_path / "m.onnx"
    train_cnn(field, out, labels_raster=truth, progress=False, **FAST)
    out.write_bytes(b"something else")
    assert not is_geoembed_output(out.with_suffix(".json")) and not is_geoembed_output(out)


# --- library errors name parameters; the CLI shows its flags ------------------------------


def test_cli_spells_library_parameter_names_as_its_flags() -> None:
    from geoembed.cli import as_cli_flags

    command = main.get_command(None, "classify")  # type: ignore[arg-type]
    msg = "give exactly one of labels=, training= or model= (got none); label_column=."
    assert as_cli_flags(msg, command) == (
        "give exactly one of --labels, --training or --model (got none); --label-column."
    )
    assert as_cli_flags("k=0 is too small; seed=3", command) == "k=0 is too small; seed=3"
    assert as_cli_flags("labels= missing", None) == "labels= missing"
    infer = main.get_command(None, "infer")  # type: ignore[arg-type]
    assert as_cli_flags("in providers= 'tpu'; use", infer) == "in --providers 'tpu'; use"


def test_train_cnn_cli_error_names_the_flag(scene: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    res = _run(
        "train-cnn", str(scene / "a.zarr"), "--labels", str(scene / "points.gpkg"),
        "-o", str(tmp_path / "m.onnx"),
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--label-column" in res.output and "label_column=" not in res.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "params"),
    [
        ("classify", "geoembed.jobs.classify:ClassifyParams"),
        ("cluster", "geoembed.jobs.cluster:ClusterParams"),
        ("infer", "geoembed.jobs.infer:InferParams"),
        ("similar", "geoembed.jobs.similar:SimilarParams"),
        ("change", "geoembed.jobs.change:ChangeParams"),
        ("regress", "geoembed.jobs.regress:RegressParams"),
    ],
)
def test_cli_defaults_are_the_jobs_defaults(command: str, params: str) -> None:
    """Every option of a command that sets a job parameter has the parameter's default."""
    import dataclasses
    import importlib

    import click

    module, name = params.split(":")
    fields = {
        f.name: f.default
        for f in dataclasses.fields(getattr(importlib.import_module(module), name))
        if f.default is not dataclasses.MISSING
    }
    cmd = main.get_command(None, command)  # type: ignore[arg-type]
    shared = {
        p.name: p.default
        for p in cmd.params
        if isinstance(p, click.Option) and p.name in fields and not p.is_flag
    }
    assert len(shared) >= 2, (command, sorted(fields))  # the comparison is not empty
    for option, default in shared.items():
        want = fields[option]
        assert default == want or (_unset(default) and _unset(want)), (option, default, want)


def _unset(value: object) -> bool:
    """An option left out: None, an empty tuple, False, or click's own "unset" marker."""
    return value is None or value == () or value is False or "UNSET" in repr(value)


def test_run_infer_on_an_opened_field_commits_every_output(tmp_path: Path) -> None:
    """The infer job from Python: a DataArray in, the class map and features together."""
    pytest.importorskip("onnxruntime")
    import dask
    import rioxarray

    from geoembed.infer import predict
    from geoembed.infer.models import conv_stack
    from geoembed.jobs.infer import InferOutputs, InferParams, run_infer
    from geoembed.testing import make_field

    model = conv_stack(tmp_path / "m.onnx", bands=64, depth=1, n_classes=3)
    field = make_field(40, 48, chunks=24)
    out = InferOutputs(classes=tmp_path / "c.tif", features=tmp_path / "f.zarr")
    with dask.config.set(scheduler="threads"):
        summary = run_infer(field, out, InferParams(model, tile=16, overlap=4))
        want = predict(field, model, tile=16, overlap=4)["classes"].values
    assert summary["source"] == "<DataArray>" and set(summary["outputs"]) == {"classes", "features"}
    assert (rioxarray.open_rasterio(tmp_path / "c.tif").isel(band=0).values == want).all()
    assert is_geoembed_output(tmp_path / "f.zarr")
    with pytest.raises(OutputError, match="already exists"):
        run_infer(field, out, InferParams(model, tile=16, overlap=4))


# --- the demo: one folder, built aside, swapped in whole ----------------------------------


def test_demo_folder_is_replaced_whole_and_only_when_it_holds_only_the_demo(
    tmp_path: Path,
) -> None:
    from geoembed.errors import OutputError
    from geoembed.export.outputs import MARKER_FILE
    from geoembed.jobs.demo import run_demo

    out = tmp_path / "demo"
    opts = dict(size=64, chunks=32, points_per_class=6, k=3)
    first = run_demo(out, seed=0, **opts)
    names = sorted(p.name for p in out.iterdir())
    assert MARKER_FILE in names and "summary.json" in names and is_geoembed_output(out)
    second = run_demo(out, seed=1, **opts)
    assert sorted(p.name for p in out.iterdir()) == names
    assert second["scene"]["seed"] == 1 != first["scene"]["seed"]
    assert json.loads((out / "summary.json").read_text())["scene"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "demo.stac.json"]  # no temps
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    with pytest.raises(OutputError, match=r"notes\.txt"):
        run_demo(out, **opts)
    assert _tree(out) == before


def test_cli_spells_switches_and_group_options_as_flags() -> None:
    from geoembed.cli import as_cli_flags

    command = main.get_command(None, "classify")  # type: ignore[arg-type]
    msg = "x.tif already exists. Pass overwrite=True to replace it; or allow_single_class=True."
    assert as_cli_flags(msg, command) == (
        "x.tif already exists. Pass --overwrite to replace it; or --allow-single-class."
    )
    # a switch given another value, or a non-switch option, keeps the library spelling
    assert as_cli_flags("overwrite=False; k=True", command) == "overwrite=False; k=True"
    assert as_cli_flags("give scheduler= or workers=.", main) == "give --scheduler or --workers."


def test_library_errors_name_parameters_and_the_cli_its_flags(tmp_path: Path) -> None:
    from geoembed.jobs.demo import run_demo

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not geoembed's")
    with pytest.raises(OutputError) as info:
        run_demo(foreign, size=64, progress=False)
    assert "(out=)" in str(info.value) and "--out" not in str(info.value)
    result = CliRunner().invoke(main, ["-q", "demo", "--out", str(foreign), "--size", "64"])
    assert result.exit_code == 2, result.output
    assert "(--out)" in result.output and "out=" not in result.output
    assert (foreign / "notes.txt").read_text() == "not geoembed's"

    target = tmp_path / "map.tif"
    target.write_bytes(b"x")
    from geoembed.export.atomic import check_output_path

    with pytest.raises(OutputError) as info:
        check_output_path(target, overwrite=False, what="COG")
    assert "overwrite=True" in str(info.value) and "--overwrite" not in str(info.value)
