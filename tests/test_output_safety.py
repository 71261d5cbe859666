"""Never lose a user's data: the output-safety contract, through the real CLI.

geoembed only replaces what it wrote (never a foreign folder or file, never an input);
all outputs of a command appear together or not at all; temporaries are removed on every
exit path (failure, SIGINT, SIGTERM) and, after a SIGKILL, by the next run; a full disk
is one clear error. Commands run as subprocesses of the installed ``geoembed`` script on
a synthetic scene (NOT real data) written to Zarr first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geoembed.errors import OutputError, OutputValidationError
from geoembed.export import verify
from geoembed.export.atomic import TEMP_MARKER, temp_sibling
from geoembed.export.outputs import (
    MARKER_FILE,
    OutputSet,
    is_geoembed_output,
    remove_stale_temporaries,
    stale_temporaries,
)

# write_zarr stores string band names, which Zarr v3 flags as not yet specified
pytestmark = pytest.mark.filterwarnings("ignore:The data type")

GEOEMBED = Path(sys.executable).with_name("geoembed")
LABELS = ["--label-column", "class_id"]


def _scene(directory: Path, size: int, chunks: int) -> Path:
    """Write a synthetic field (Zarr), its points (GeoPackage) and a COG of the field."""
    import dask

    from geoembed.datasets import synthetic_scene
    from geoembed.export import write_cog, write_zarr

    directory.mkdir(parents=True, exist_ok=True)
    with dask.config.set(scheduler="threads"):
        scene = synthetic_scene(size, size, seed=0, chunks=chunks)
        write_zarr(scene.field, directory / "field.zarr")
        scene.sample_points(20, seed=1).to_file(directory / "points.gpkg")
        if size <= 256:
            write_cog(scene.field, directory / "field.tif")
    return directory


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 x 256 synthetic scene: field.zarr, field.tif (a geoembed COG), points.gpkg."""
    return _scene(tmp_path_factory.mktemp("small"), 256, 128)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """768 x 768 synthetic scene, slow enough to interrupt while it is written."""
    return _scene(tmp_path_factory.mktemp("large"), 768, 256)


def _cli(*args: str, cwd: Path, scheduler: str = "threads") -> subprocess.CompletedProcess:
    cmd = [str(GEOEMBED), "-q", "--scheduler", scheduler, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240)


def _start(*args: str, cwd: Path, scheduler: str = "local") -> subprocess.Popen:
    cmd = [str(GEOEMBED), "-q", "--scheduler", scheduler, "--workers", "2", *args]
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones included) with the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TEMP_MARKER in p.name)


def _wait_for_temporary(proc: subprocess.Popen, directory: Path, timeout: float = 180) -> bool:
    """Wait until the running command has started writing an output in ``directory``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if [n for n in _temporaries(directory) if f"{TEMP_MARKER}probe-" not in n]:
            return True
        time.sleep(0.02)
    return False


def _error_line(res: subprocess.CompletedProcess) -> str:
    lines = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


# --- geoembed only replaces what geoembed wrote ---------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("infer", "{field}", "--model", "m.onnx", "-o", ".", "--overwrite"),
        ("infer", "{field}", "--model", "m.onnx", "--features", "keep", "--overwrite"),
        ("classify", "{field}", "--labels", "{points}", *LABELS, "-o", "m.tif",
         "--save-model", ".", "--overwrite"),
        ("classify", "{field}", "--labels", "{points}", *LABELS, "-o", "m.tif",
         "--save-model", "keep", "--overwrite"),
        ("cluster", "{field}", "-k", "3", "-o", "c.tif", "--save-model", "keep", "--overwrite"),
        ("classify", "{field}", "--labels", "{points}", *LABELS, "-o", "keep/f", "--overwrite"),
    ],
    ids=["infer-o-dot", "infer-features-dir", "classify-model-dot", "classify-model-dir",
         "cluster-model-dir", "classify-foreign-file"],
)  # fmt: skip
def test_overwrite_never_replaces_foreign_folders_or_files(
    small: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    work = tmp_path / "x"
    (work / "keep").mkdir(parents=True)
    (work / "keep" / "f").write_text("hi")
    (work / "notes.txt").write_text("mine")
    before = _tree(work)
    fmt = {"field": str(small / "field.zarr"), "points": str(small / "points.gpkg")}
    res = _cli(*(a.format(**fmt) for a in args), cwd=work)
    assert res.returncode == 2, res.stderr
    assert "Refusing to replace" in _error_line(res)
    assert _tree(work) == before  # nothing written, nothing removed
    assert "Traceback" not in res.stderr


def test_input_as_output_is_refused_naming_both(small: Path) -> None:
    field = small / "field.tif"
    assert is_geoembed_output(field)  # so only the input check can stop it
    before = _tree(small)
    res = _cli(
        "classify", "field.tif", "--labels", "points.gpkg", *LABELS, "-o", str(field),
        "--overwrite", cwd=small,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    line = _error_line(res)
    assert "is also an input" in line and str(field) in line
    # the same file under another spelling, or through a symbolic link
    link = small / "link.tif"
    link.symlink_to(field)
    try:
        for out in (small / "." / "field.tif", link):
            outputs = OutputSet(overwrite=True, inputs=[str(field)])
            with pytest.raises(OutputError, match="also an input"):
                outputs.add("class map", out)
    finally:
        link.unlink()
    # an output directory that holds an input (model dir containing the field) is refused
    res = _cli(
        "classify", str(small / "field.zarr"), "--labels", "points.gpkg", *LABELS,
        "-o", "m.tif", "--save-model", str(small), "--overwrite", cwd=small,
    )  # fmt: skip
    assert res.returncode == 2 and "input" in _error_line(res)
    assert _tree(small) == before


def test_overwrite_replaces_own_outputs_together(small: Path, tmp_path: Path) -> None:
    common = ("classify", str(small / "field.zarr"), "--labels", str(small / "points.gpkg"),
              *LABELS, "-o", "map.tif", "--confidence", "conf.tif", "--report", "report.json",
              "--save-model", "model", "--cv", "none")  # fmt: skip
    first = _cli(*common, "-k", "3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    outputs = ["conf.tif", "map.tif", "model", "report.json"]
    names = sorted([*outputs, *(f"{n}.stac.json" for n in outputs)])  # each with its Item
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert all(is_geoembed_output(tmp_path / n) for n in names)
    assert (tmp_path / "model" / MARKER_FILE).is_file()
    second = _cli(*common, "-k", "5", "--overwrite", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporaries left
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"]["k"] == 5
    assert json.loads((tmp_path / "model" / "model.json").read_text())["params"]["k"] == 5


# --- options are validated before anything is written ------------------------------------


def test_demo_rejects_bad_options_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = _cli("demo", "--out", "d", "-k", "0", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "resume" not in res.stderr and "-k" in res.stderr
    assert not (tmp_path / "d").exists()
    from click.testing import CliRunner

    from geoembed.cli import main

    monkeypatch.chdir(tmp_path)
    for bad in (["-k", "41"], ["--size", "0"], ["--chunks", "0"]):
        res = CliRunner().invoke(main, ["--scheduler", "sync", "demo", "--out", "d", *bad])
        assert res.exit_code == 2, (bad, res.output)
        assert not (tmp_path / "d").exists()
    from geoembed.errors import LabelError
    from geoembed.jobs.demo import run_demo

    with pytest.raises(LabelError, match="k=0"):
        run_demo(tmp_path / "lib", k=0)
    assert not (tmp_path / "lib").exists()
    # a non-empty folder the demo did not create is never taken over
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.json").write_text("{}")
    res = _cli("demo", "--out", "mine", "--size", "64", "--chunks", "32", cwd=tmp_path)
    assert res.returncode == 2 and "did not write" in _error_line(res)
    assert (tmp_path / "mine" / "summary.json").read_text() == "{}"


def test_zarr_leftover_message_tells_cli_users_what_to_do(tmp_path: Path) -> None:
    import numpy as np
    import xarray as xr

    from geoembed.export import write_zarr

    da = xr.DataArray(np.zeros((4, 4), "float32"), dims=("y", "x"), name="v")
    (tmp_path / "v.zarr.partial").mkdir()
    with pytest.raises(OutputError, match="from the command line, run the command again"):
        write_zarr(da, tmp_path / "v.zarr")


# --- one output set: commit, rollback, discard ----------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _marked_json(path: Path, value: int) -> None:
    path.write_text(json.dumps({"geoembed_version": "test", "value": value}))


def test_commit_failure_rolls_back_every_renamed_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.json", "b.json"):
        _marked_json(tmp_path / name, 1)
    outputs = OutputSet(overwrite=True)
    outputs.add("first", tmp_path / "a.json")
    outputs.add("second", tmp_path / "b.json")
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        # the rename of the second staged output fails (e.g. a dying disk)
        if str(src) == str(outputs.stage("second")):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    with pytest.raises(OSError, match="Input/output"):
        with outputs:
            _marked_json(outputs.stage("first"), 2)
            _marked_json(outputs.stage("second"), 2)
            monkeypatch.setattr(os, "replace", failing_replace)
            outputs.commit()
    monkeypatch.undo()
    assert json.loads((tmp_path / "a.json").read_text())["value"] == 1  # old, not mixed
    assert json.loads((tmp_path / "b.json").read_text())["value"] == 1
    assert _temporaries(tmp_path) == []


def test_missing_staged_output_replaces_nothing(tmp_path: Path) -> None:
    _marked_json(tmp_path / "a.json", 1)
    outputs = OutputSet(overwrite=True)
    outputs.add("first", tmp_path / "a.json")
    outputs.add("second", tmp_path / "b.json")
    with pytest.raises(OutputValidationError, match="second"), outputs:
        _marked_json(outputs.stage("first"), 2)
        outputs.commit()
    assert json.loads((tmp_path / "a.json").read_text())["value"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_stale_temporaries_of_dead_processes_only(tmp_path: Path) -> None:
    target = tmp_path / "map.tif"
    mine = temp_sibling(target, "out")  # this (live) process
    mine.mkdir()
    dead = _dead_pid()
    host = mine.name.split(TEMP_MARKER)[1].split("-")[1]
    stale = tmp_path / f".map.tif{TEMP_MARKER}cog-{host}-{dead}-0123456789ab"
    stale.mkdir()
    (stale / "part.tif").write_bytes(b"x")
    other_host = tmp_path / f".map.tif{TEMP_MARKER}cog-elsewhere-{dead}-0123456789ab"
    other_host.mkdir()
    # a replaced output moved aside by a commit that was killed: restored, not deleted
    old = tmp_path / f".model{TEMP_MARKER}old-{host}-{dead}-0123456789ab"
    old.mkdir()
    (old / "model.json").write_text("{}")
    assert [t.path for t in stale_temporaries(tmp_path)] == sorted([old, stale])
    report = verify(tmp_path)
    assert report["format"] == "directory" and not report["valid"]
    assert len(report["stale_temporaries"]) == 2
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([old, stale])
    assert (tmp_path / "model" / "model.json").is_file()
    assert mine.is_dir() and other_host.is_dir() and not stale.exists()
    assert verify(tmp_path)["valid"]
    # a temporary of an older geoembed (no owner in its name) is reported, never removed
    legacy = tmp_path / f".map.tif{TEMP_MARKER}cog-0123456789ab"
    legacy.mkdir()
    report = verify(tmp_path)
    assert report["unowned_temporaries"] == [str(legacy)] and not report["valid"]
    assert remove_stale_temporaries(tmp_path) == [] and legacy.is_dir()


def test_full_disk_is_one_clear_error_and_leaves_nothing(small: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mount.stderr.decode().strip()})")
    try:
        res = _cli(
            "classify", str(small / "field.zarr"), "--labels", str(small / "points.gpkg"),
            *LABELS, "-o", "disk/map.tif", "--confidence", "disk/conf.tif",
            "--probabilities", "disk/proba.tif", cwd=tmp_path,
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert "The disk is full" in _error_line(res)
        # (GDAL prints the failed writes too; the CLI itself adds one line)
        assert "Traceback (most recent call last)" not in res.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# --- signals: old outputs or new outputs, never a mix, never temporaries ------------------


def _fingerprint(directory: Path, names: list[str]) -> dict[str, str | None]:
    """Content id of each output (None when absent); model dirs and reports by parameter."""
    out: dict[str, str | None] = {}
    for name in names:
        p = directory / name
        if not p.exists():
            out[name] = None
        elif p.is_dir():
            out[name] = json.dumps(json.loads((p / "model.json").read_text())["params"])
        elif p.suffix == ".json":
            out[name] = json.dumps(json.loads(p.read_text())["model"])
        else:
            out[name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


_PREPARED: dict[tuple[str, ...], tuple[Path, dict, dict]] = {}


def _prepare(
    factory: pytest.TempPathFactory, args: list[str], old: list[str], new: list[str],
    names: list[str],
) -> tuple[Path, dict, dict]:  # fmt: skip
    """Old outputs (a folder to copy) and the fingerprints of the old and new outputs."""
    key = (*args, "|", *old, "|", *new)
    if key not in _PREPARED:
        old_dir, ref = factory.mktemp("old"), factory.mktemp("ref")
        assert _cli(*args, *old, cwd=old_dir).returncode == 0
        shutil.copytree(old_dir, ref, dirs_exist_ok=True)
        done = _cli(*args, *new, "--overwrite", cwd=ref)  # what a complete new run gives
        assert done.returncode == 0, done.stderr
        before, after = _fingerprint(old_dir, names), _fingerprint(ref, names)
        assert all(before[n] != after[n] for n in names)
        _PREPARED[key] = (old_dir, before, after)
    return _PREPARED[key]


def _interrupt(
    args: list[str], new: list[str], names: list[str], cwd: Path, sig: signal.Signals,
    delay: float, before: dict, after: dict | None = None,
) -> str:  # fmt: skip
    """Run ``args + new`` over the old outputs in ``cwd``; signal it during the write.

    ``delay`` seconds after the first temporary appears, or (negative ``delay``) as soon
    as the commit has renamed the first output. Afterwards every output must be the old
    one, or every output the new one (as a complete run gives it; without ``after``: all
    changed), and no temporary may be left. Returns which: ``"old"`` or ``"new"``.
    """
    assert _fingerprint(cwd, names) == before
    first = (cwd / names[0]).stat().st_ino
    proc = _start(*args, *new, "--overwrite", cwd=cwd)
    try:
        seen = _wait_for_temporary(proc, cwd)
        if delay >= 0:
            time.sleep(delay)
        else:  # at the commit: as soon as the first output has been renamed into place
            while proc.poll() is None and (cwd / names[0]).stat().st_ino == first:
                time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    result = _fingerprint(cwd, names)
    context = (seen, proc.returncode, err.decode()[-2000:])
    assert _temporaries(cwd) == [], context
    # geoembed's clean exits: SIGINT prints "interrupted" (130), SIGTERM 128 + 15
    interrupted = 128 + sig
    if result == before:
        assert proc.returncode == interrupted, context
        return "old"
    assert proc.returncode in (0, interrupted), context
    if after is not None:
        assert result == after, context
    else:
        assert all(result[n] not in (None, before[n]) for n in names), context
    return "new"


def test_sigterm_during_classify_write_leaves_old_outputs(small: Path, tmp_path: Path) -> None:
    args = ["classify", str(small / "field.zarr"), "--labels", str(small / "points.gpkg"),
            *LABELS, "-o", "map.tif", "--report", "report.json", "--cv", "none"]  # fmt: skip
    names = ["map.tif", "report.json"]
    assert _cli(*args, "-k", "3", cwd=tmp_path).returncode == 0
    before = _fingerprint(tmp_path, names)
    _interrupt(args, ["-k", "5"], names, tmp_path, signal.SIGTERM, 0.0, before)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.0, 1.0, -1.0], ids=["0s", "1s", "at-commit"])
@pytest.mark.parametrize("extras", [False, True], ids=["map-only", "model-report"])
def test_signal_during_classify_write(
    large: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sig: signal.Signals,
    delay: float,
    extras: bool,
) -> None:
    args = ["classify", str(large / "field.zarr"), "--labels", str(large / "points.gpkg"),
            *LABELS, "-o", "map.tif", "--confidence", "conf.tif", "--cv", "none"]  # fmt: skip
    names = ["map.tif", "conf.tif"]
    if extras:
        args += ["--report", "report.json", "--save-model", "model"]
        names += ["report.json", "model"]
    old_dir, before, after = _prepare(tmp_path_factory, args, ["-k", "3"], ["-k", "5"], names)
    shutil.copytree(old_dir, tmp_path, dirs_exist_ok=True)
    print("outcome:", _interrupt(args, ["-k", "5"], names, tmp_path, sig, delay, before, after))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.0, 1.0, -1.0], ids=["0s", "1s", "at-commit"])
def test_signal_during_cluster_write(
    large: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sig: signal.Signals,
    delay: float,
) -> None:
    args = ["cluster", str(large / "field.zarr"), "-o", "c.tif", "--distance", "d.tif",
            "--save-model", "model", "--mode", "sample"]  # fmt: skip
    names = ["c.tif", "d.tif", "model"]
    old_dir, before, after = _prepare(tmp_path_factory, args, ["-k", "3"], ["-k", "5"], names)
    shutil.copytree(old_dir, tmp_path, dirs_exist_ok=True)
    print("outcome:", _interrupt(args, ["-k", "5"], names, tmp_path, sig, delay, before, after))


@pytest.mark.parametrize("scheduler", ["threads", pytest.param("local", marks=pytest.mark.slow)])
def test_sigkill_leaves_temporaries_that_verify_reports_and_next_run_removes(
    small: Path, tmp_path: Path, scheduler: str
) -> None:
    args = ["cluster", str(small / "field.zarr"), "-k", "3", "--mode", "sample",
            "-o", "c.tif", "--save-model", "model"]  # fmt: skip
    proc = _start(*args, cwd=tmp_path, scheduler=scheduler)
    try:
        assert _wait_for_temporary(proc, tmp_path), "the write finished before it was seen"
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job: CLI, scheduler, workers
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if scheduler == "local":
        time.sleep(0.5)  # worker processes of the killed group exit
    left = _temporaries(tmp_path)
    assert left, "SIGKILL cannot clean up: something should be left"
    assert not (tmp_path / "c.tif").exists()
    res = _cli("verify", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 1
    assert "temporary left by a killed geoembed run" in res.stderr
    res = _cli(*args, cwd=tmp_path)  # the next run (threads: no cluster to start)
    assert res.returncode == 0, res.stderr
    assert _temporaries(tmp_path) == []
    assert verify(tmp_path)["valid"]


def test_interrupt_during_commit_is_delivered_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.json", "b.json"):
        _marked_json(tmp_path / name, 1)
    outputs = OutputSet(overwrite=True)
    outputs.add("first", tmp_path / "a.json")
    outputs.add("second", tmp_path / "b.json")
    real_replace = os.replace

    def interrupted_replace(src: object, dst: object) -> None:
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between two renames

    with pytest.raises(KeyboardInterrupt):
        with outputs:
            _marked_json(outputs.stage("first"), 2)
            _marked_json(outputs.stage("second"), 2)
            monkeypatch.setattr(os, "replace", interrupted_replace)
            outputs.commit()
    monkeypatch.undo()
    assert outputs.committed  # the commit finished before the interrupt was delivered
    assert json.loads((tmp_path / "a.json").read_text())["value"] == 2
    assert json.loads((tmp_path / "b.json").read_text())["value"] == 2
    assert _temporaries(tmp_path) == []
