"""Temporaries that killed runs leave in a bucket: the next write sweeps them, and so does
``geoembed clean``; objects geoembed did not mark as its own are never touched."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoembed._cloud import filesystem
from geoembed.export.remote_sweep import parse_age, remote_temporaries

#: a client that stages a Zarr output under geoembed's temporary name, then is killed
_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, xarray as xr
    from geoembed.export import write_zarr
    from geoembed.export.remote import remote_temp_sibling
    da = xr.DataArray(np.arange(64 * 64, dtype="uint8").reshape(64, 64), dims=("y", "x"),
                      name="class").chunk(32)
    stage = remote_temp_sibling(sys.argv[1], "out")
    write_zarr(da, stage, compute=False)  # metadata and coordinates written, no chunks
    print(stage, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _killed_client(target: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, target], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.strip()


def _keys(url: str) -> list[str]:
    fs = filesystem(url)
    fs.invalidate_cache()
    return sorted(str(k).rpartition("/")[2] for k in fs.ls(url, detail=False))


def _user_objects(parent: str) -> None:
    fs = filesystem(parent)
    fs.pipe_file(f"{parent}/.map.zarr.notes", b"a user's file")
    fs.pipe_file(f"{parent}/other.zarr.partial/zarr.json", b'{"attributes": {}}')
    fs.pipe_file(f"{parent}/.other.tif.geoembed-tmp-out-otherpod-7-0123456789ab", b"x")


def test_the_next_write_removes_the_temporaries_a_killed_client_left(
    bucket: str, tmp_path: Path
) -> None:
    import numpy as np
    import xarray as xr

    from geoembed.export import write_zarr

    parent = f"{bucket}/out"
    target = f"{parent}/map.zarr"
    stage = _killed_client(target)
    _user_objects(parent)
    # another pod writing the same target right now: its fresh temporary is kept
    live = f"{parent}/.map.zarr.geoembed-tmp-out-otherpod-12-abcdef012345"
    filesystem(live).pipe_file(f"{live}/zarr.json", b"{}")
    stage_name = stage.rpartition("/")[2] + ".partial"
    assert stage_name in _keys(parent)

    da = xr.DataArray(np.ones((64, 64), dtype="uint8"), dims=("y", "x"), name="class")
    write_zarr(da.chunk(32), target)  # not a resume, not an overwrite

    left = _keys(parent)
    assert stage_name not in left
    assert live.rpartition("/")[2] in left
    assert {".map.zarr.notes", "other.zarr.partial", "map.zarr"} <= set(left)
    assert ".other.tif.geoembed-tmp-out-otherpod-7-0123456789ab" in left  # another target
    assert xr.open_zarr(target)["class"].values.sum() == 64 * 64


def test_clean_lists_stale_temporaries_and_deletes_only_with_delete(
    bucket: str, tmp_path: Path
) -> None:
    from geoembed.cli import main

    parent = f"{bucket}/jobs/a"
    stage = _killed_client(f"{parent}/map.zarr")
    _user_objects(parent)
    time.sleep(2.5)
    live = f"{bucket}/jobs/b/.map.tif.geoembed-tmp-cog-otherpod-3-abcdef012345"
    filesystem(live).pipe_file(f"{live}/part-0.tif", b"x")
    before = _keys(parent)

    runner = CliRunner()
    dry = runner.invoke(main, ["clean", f"{bucket}/jobs", "--older-than", "2s"])
    assert dry.exit_code == 0, dry.output
    assert f"{stage}.partial" in dry.output and "stale" in dry.output
    assert "otherpod-7" in dry.output  # marked by geoembed, nobody wrote it for 2 s
    assert "recent, kept" in dry.output and live in dry.output
    assert "other.zarr.partial" not in dry.output  # not written by geoembed
    assert "nothing removed (dry run)" in dry.output
    assert _keys(parent) == before

    done = runner.invoke(main, ["clean", f"{bucket}/jobs", "--older-than", "2s", "--delete"])
    assert done.exit_code == 0, done.output
    assert set(_keys(parent)) == {".map.zarr.notes", "other.zarr.partial"}
    assert [t.url for t in remote_temporaries(f"{bucket}/jobs")] == [live]


def test_clean_refuses_a_local_path_and_a_bad_age(tmp_path: Path) -> None:
    from geoembed.cli import main

    runner = CliRunner()
    local = runner.invoke(main, ["clean", str(tmp_path)])
    assert local.exit_code == 2 and "geoembed verify DIR" in local.output
    bad = runner.invoke(main, ["clean", "gs://b/p", "--older-than", "soon"])
    assert bad.exit_code == 2 and "s, m, h, d or w" in bad.output
    assert parse_age("1d") == timedelta(days=1) and parse_age("90s") == timedelta(seconds=90)
    with pytest.raises(ValueError):
        parse_age("1y")
