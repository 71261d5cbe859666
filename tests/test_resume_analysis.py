"""``--resume`` for ``similar``, ``change`` and ``regress``: a killed command is finished.

The command runs in a subprocess that a Dask callback kills outright (``os._exit``, no
cleanup, like SIGKILL) after its first chunk part is written; the same command with
``--resume`` then computes only the missing chunks (counted) and writes the same bytes as
an uninterrupted run, leaving no temporary behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from geoembed.export.atomic import TEMP_MARKER

#: run the CLI with one thread; die without cleanup once KILL_AFTER parts are written
_KILLED = textwrap.dedent(
    """
    import atexit, os, sys
    from dask.callbacks import Callback

    done = [0]
    atexit.register(lambda: print(f"WRITE_PARTS {done[0]}", file=sys.stderr))

    class Kill(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            name = key[0] if isinstance(key, tuple) else key
            if str(name).startswith("_write_part"):
                done[0] += 1
                if done[0] >= int(os.environ["KILL_AFTER"]):
                    os._exit(137)

    Kill().register()
    from geoembed.cli import main
    main(sys.argv[1:], prog_name="geoembed")
    """
)

#: 1024 x 1024 x 64 in 512-pixel blocks of 64 MiB: 4 chunk parts per output COG
N, CHUNK = 1024, 512


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import geopandas as gpd
    import numpy as np

    from geoembed.export import write_zarr
    from geoembed.testing import make_field

    d = tmp_path_factory.mktemp("resume-analysis")
    paths = {"a": d / "a.zarr", "b": d / "b.zarr", "points": d / "points.gpkg"}
    fields = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        for key, seed in (("a", 1), ("b", 2)):
            fields[key] = make_field(N, N, bands=64, chunks=CHUNK, seed=seed).rename("embedding")
            write_zarr(fields[key], paths[key])
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, N, 30), rng.integers(0, N, 30)
    a = fields["a"]
    pts = gpd.points_from_xy(a.x.values[cols], a.y.values[rows])
    value = rows.astype(float) / N + rng.random(30)
    gpd.GeoDataFrame({"value": value}, geometry=pts, crs=a.rio.crs).to_file(paths["points"])
    return paths


def _args(command: str, inputs: dict[str, Path], out: Path) -> list[str]:
    if command == "similar":
        return ["similar", str(inputs["a"]), "--like", str(inputs["points"]), "-o", str(out)]
    if command == "change":
        return ["change", str(inputs["a"]), str(inputs["b"]), "-o", str(out)]
    return [
        *("regress", str(inputs["a"]), "--labels", str(inputs["points"])),
        *("--target-column", "value", "-o", str(out)),
    ]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", _KILLED, "--scheduler", "threads", "-q", *args]
    full = {**os.environ, "KILL_AFTER": "1000000", "DASK_NUM_WORKERS": "1", **env}
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300)


def _written(run: subprocess.CompletedProcess[str]) -> int:
    """Chunk parts the run computed and wrote (printed by the script at exit)."""
    return int(run.stderr.rpartition("WRITE_PARTS ")[2].split()[0])


def _parts(directory: Path) -> list[Any]:
    found = [p for p in directory.iterdir() if f"{TEMP_MARKER}resume-cog-" in p.name]
    return [
        q for p in found for q in p.iterdir() if q.name.startswith("part-") and "-o" not in q.name
    ]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["similar", "change", "regress"])
def test_killed_analysis_command_is_resumed(
    command: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    ref_dir, out_dir = tmp_path / "ref", tmp_path / "out"
    ref_dir.mkdir()
    out_dir.mkdir()
    ref = _run(_args(command, inputs, ref_dir / "r.tif"))
    assert ref.returncode == 0, ref.stderr
    target = out_dir / "r.tif"
    killed = _run([*_args(command, inputs, target), "--resume"], KILL_AFTER="2")
    assert killed.returncode == 137, killed.stderr
    assert not target.exists()
    left = _parts(out_dir)
    assert len(left) >= 2  # the killed run's finished chunks stay for the next run
    resumed = _run([*_args(command, inputs, target), "--resume"], KILL_AFTER="1000000")
    assert resumed.returncode == 0, resumed.stderr
    assert _written(ref) == 4
    assert _written(resumed) == 4 - len(left)  # only the chunks the killed run had not written
    assert target.read_bytes() == (ref_dir / "r.tif").read_bytes()
    assert sorted(os.listdir(out_dir)) == ["r.tif", "r.tif.stac.json"]


@pytest.mark.parametrize("command", ["similar", "change", "regress"])
def test_resume_of_a_finished_run_is_a_plain_run(command: str, tmp_path: Path) -> None:
    """``--resume`` with nothing to resume: the same bytes, no temporaries (small, fast)."""
    import geopandas as gpd
    import numpy as np
    from click.testing import CliRunner

    from geoembed.cli import main
    from geoembed.export import write_zarr
    from geoembed.testing import make_field

    paths = {"a": tmp_path / "a.zarr", "b": tmp_path / "b.zarr", "points": tmp_path / "p.gpkg"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        for key, seed in (("a", 1), ("b", 2)):
            field = make_field(64, 48, bands=4, chunks=None, seed=seed, nodata_patch=False)
            write_zarr(field.rename("embedding"), paths[key])
    rows, cols = np.arange(2, 64, 6), np.arange(1, 48, 4)[:11]
    pts = gpd.points_from_xy(field.x.values[cols], field.y.values[rows])
    frame = gpd.GeoDataFrame({"value": rows / 64.0}, geometry=pts, crs=field.rio.crs)
    frame.to_file(paths["points"])
    runs = []
    for name, extra in (("plain", []), ("resumed", ["--resume"])):
        out = tmp_path / name
        out.mkdir()
        args = ["--scheduler", "threads", "-q", *_args(command, paths, out / "r.tif"), *extra]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        assert sorted(os.listdir(out)) == ["r.tif", "r.tif.stac.json"]
        runs.append((out / "r.tif").read_bytes())
    assert runs[0] == runs[1]
