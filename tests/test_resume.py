"""``resume``: a write killed outright (SIGKILL) is finished by the next run, identically.

The killed process cannot clean up; its finished chunk parts stay under a name derived
from the target and a hash of what is written (:mod:`geoembed.export.resume`), and the
resumed run computes only the missing chunks (counted here), builds the same bytes as an
uninterrupted write and leaves no temporary behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from geoembed.export.atomic import TEMP_MARKER

_GEOEMBED = str(Path(sys.executable).parent / "geoembed")

#: a 2048 x 2048 float32 raster in 256 chunks of 128, the same in every process
_RASTER = (
    f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
    "from _rasters import utm_raster\n"
    "def raster():\n    return utm_raster(2048, seed=11)\n"
)


def _raster() -> Any:
    space: dict[str, Any] = {}
    exec(_RASTER, space)  # the same definition the killed process runs
    return space["raster"]()


def _complete_parts(directory: Path) -> int:
    """Chunks whose every part (full resolution and overviews) is in ``directory``."""
    names = {p.name for p in directory.iterdir() if p.name.endswith(".tif")}
    return sum(1 for n in names if "-o" not in n and n.startswith("part-"))


def _parts_dir(out: Path) -> Path | None:
    found = [p for p in out.iterdir() if f"{TEMP_MARKER}resume-cog-" in p.name]
    return found[0] if found else None


def test_write_cog_killed_then_resumed_computes_only_missing_chunks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from geoembed.export import write_cog

    ref = write_cog(_raster(), tmp_path / "ref.tif", blocksize=128)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "conf.tif"
    script = _RASTER + textwrap.dedent(
        f"""
        import dask
        from geoembed.export import write_cog
        with dask.config.set(scheduler="threads", num_workers=1):
            write_cog(raster(), {str(target)!r}, blocksize=128, resume=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    killed_with = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            parts = _parts_dir(out)
            if parts is not None and _complete_parts(parts) >= 20:
                proc.send_signal(signal.SIGKILL)
                killed_with = _complete_parts(parts)
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert killed_with, "the write finished before it could be killed"
    assert not target.exists()  # nothing at the target
    parts = _parts_dir(out)
    assert parts is not None
    # a part is complete or absent (each is renamed into place); all parts of a chunk
    # are present only when its full-resolution part, written last, is
    already = _complete_parts(parts)
    assert 0 < already < 256
    with caplog.at_level(logging.INFO, logger="geoembed.export.cog"):
        assert write_cog(_raster(), target, blocksize=128, resume=True) == target
    assert f"{already} of 256 chunks were written by an earlier run" in caplog.text
    assert target.read_bytes() == Path(ref).read_bytes()
    assert sorted(os.listdir(out)) == ["conf.tif"]  # the parts were removed


def test_resume_never_reuses_parts_of_another_raster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import dask
    from dask.delayed import Delayed

    from geoembed.export import write_cog

    a = _raster()
    b = a + 1  # same grid, chunks and settings, other values
    target = tmp_path / "x.tif"
    job = write_cog(a, target, blocksize=128, resume=True, compute=False)
    graph = dict(job.dask)
    writes = sorted(k for k in graph if str(k).startswith("_write_part"))
    assert len(writes) == 256
    dask.compute(*(Delayed(k, graph) for k in writes[:5]))  # as if killed after 5 chunks
    leftover = _parts_dir(tmp_path)
    assert leftover is not None and _complete_parts(leftover) == 5
    with caplog.at_level(logging.INFO, logger="geoembed.export.cog"):
        write_cog(b, target, blocksize=128, resume=True)
    assert "0 of 256 chunks were written by an earlier run" in caplog.text
    ref = write_cog(b, tmp_path / "ref.tif", blocksize=128)
    assert target.read_bytes() == Path(ref).read_bytes()


def _classify_args(field: str, labels: str, out: str) -> list[str]:
    return [
        *("classify", field, "--labels", labels, "--label-column", "class", "-k", "5"),
        *("-o", f"{out}/map.tif", "--confidence", f"{out}/conf.tif", "--json"),
    ]


def test_cli_resume_of_a_finished_run_is_a_plain_run(tmp_path: Path) -> None:
    """``--resume`` with nothing to resume: the same outputs, no temporaries."""
    from click.testing import CliRunner

    from geoembed.cli import main
    from geoembed.datasets import synthetic_scene
    from geoembed.export import write_zarr

    scene = synthetic_scene(96, 96, seed=4, chunks=48)
    field = tmp_path / "field.zarr"
    write_zarr(scene.field, field)
    labels = tmp_path / "labels.gpkg"
    scene.sample_points(15).to_file(labels)
    runs = {}
    for name, extra in (("plain", []), ("resumed", ["--resume"])):
        out = tmp_path / name
        out.mkdir()
        args = ["-q", "--scheduler", "threads", *_classify_args(str(field), str(labels), str(out))]
        res = CliRunner().invoke(main, [*args, *extra])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["outputs"]["class_map"] == str(out / "map.tif")
        names = ["conf.tif", "map.tif"]  # each with its STAC Item, nothing temporary
        assert sorted(os.listdir(out)) == sorted([*names, *(f"{n}.stac.json" for n in names)])
        runs[name] = [(out / n).read_bytes() for n in ("map.tif", "conf.tif")]
    assert runs["plain"] == runs["resumed"]


def _labels(field: Any, out: Path) -> Path:
    """Points on pixel centres, classed by the field's vertical stripes."""
    import geopandas as gpd
    from shapely.geometry import Point

    t = field.rio.transform()
    h, w = field.sizes["y"], field.sizes["x"]
    rows, cols = range(7, h, 97), range(5, w, 61)
    pts = [Point(t @ (c + 0.5, r + 0.5)) for r in rows for c in cols]
    classes = [c * 4 // w for _ in rows for c in cols]
    gpd.GeoDataFrame({"class": classes}, geometry=pts, crs=field.rio.crs).to_file(out)
    return out


def _aef_tif(field: Any, out: Path) -> Path:
    """The field quantized like AlphaEarth (int8, nodata -128), tiled 512 x 768 chunks."""
    import numpy as np
    import rasterio

    values = np.nan_to_num(field.values, nan=-1.0)
    codes = np.clip(np.round(values * 127), -127, 127).astype("int8")
    codes[:, np.isnan(field.values).any(axis=0)] = -128
    profile = {
        "driver": "GTiff",
        "height": codes.shape[1],
        "width": codes.shape[2],
        "count": codes.shape[0],
        "dtype": "int8",
        "crs": field.rio.crs,
        "transform": field.rio.transform(),
        "nodata": -128,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(codes)
        dst.descriptions = tuple(f"A{i:02d}" for i in range(codes.shape[0]))
    return out


def _resume_parts(fs: Any, prefix: str) -> dict[str, int]:
    """Complete chunks under each resumable parts prefix (by output name)."""
    fs.invalidate_cache()
    try:
        keys = fs.find(prefix)
    except OSError:
        return {}
    counts: dict[str, int] = {}
    for key in keys:
        folder, _, name = key.rpartition("/")
        if f"{TEMP_MARKER}resume-cog-" in folder and name.startswith("part-") and "-o" not in name:
            what = folder.rpartition("/")[2].lstrip(".").partition(TEMP_MARKER)[0]
            counts[what] = counts.get(what, 0) + 1
    return counts


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_client_sigkilled_mid_job_then_resume_on_the_cluster(
    gcs_bucket: str, remote_cluster: dict[str, Any], tmp_path: Path
) -> None:
    from click.testing import CliRunner
    from distributed import Client

    from geoembed._cloud import filesystem
    from geoembed.cli import main
    from geoembed.testing import make_field

    field = make_field(1024, 1536, bands=64, chunks=256, seed=5)
    tif = _aef_tif(field, tmp_path / "field.tif")
    _labels(field, tmp_path / "labels.gpkg")
    fs = filesystem(gcs_bucket)
    fs.put_file(str(tif), f"{gcs_bucket}/in/field.tif")
    fs.put_file(str(tmp_path / "labels.gpkg"), f"{gcs_bucket}/in/labels.gpkg")
    local = tmp_path / "local"
    local.mkdir()
    args = _classify_args(str(tif), str(tmp_path / "labels.gpkg"), str(local))
    res = CliRunner().invoke(main, ["-q", "--scheduler", "threads", *args])
    assert res.exit_code == 0, res.output

    out = f"{gcs_bucket}/maps"
    remote = _classify_args(f"{gcs_bucket}/in/field.tif", f"{gcs_bucket}/in/labels.gpkg", out)
    command = [_GEOEMBED, "-v", "--scheduler", remote_cluster["address"], *remote, "--resume"]
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    env = {**remote_cluster["env"], "TMPDIR": str(client_dir)}
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=client_dir, stdout=log, stderr=log)
    killed = False
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if _resume_parts(fs, out).get("map.tif", 0) >= 1:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert killed, (
        f"the job ended before its client was killed: {(tmp_path / 'killed.log').read_text()}"
    )
    with Client(remote_cluster["address"], timeout=30) as client:
        end = time.monotonic() + 60  # the scheduler drops the dead client's tasks
        while any(client.processing().values()) and time.monotonic() < end:
            time.sleep(0.2)
    time.sleep(1)
    fs.invalidate_cache()
    names = [k.rpartition("/")[2] for k in fs.find(out)]
    assert "map.tif" not in names and "conf.tif" not in names  # nothing at the targets
    done = _resume_parts(fs, out)
    assert 0 < done["map.tif"] < 4, done

    resumed = subprocess.run(command, env=env, cwd=client_dir, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for what in ("map.tif", "conf.tif"):
        n = done.get(what, 0)
        assert f"resuming {what}: {n} of 4 chunks were written by an earlier run" in resumed.stderr
    fs.invalidate_cache()
    assert fs.cat(f"{out}/map.tif") == (local / "map.tif").read_bytes()
    assert fs.cat(f"{out}/conf.tif") == (local / "conf.tif").read_bytes()
    # the two maps, each with its STAC Item, and no temporary key
    expected = ["conf.tif", "conf.tif.stac.json", "map.tif", "map.tif.stac.json"]
    assert sorted(k.rpartition("/")[2] for k in fs.find(out)) == expected


def test_zarr_output_of_a_killed_command_is_resumed_from_its_staged_store(
    tmp_path: Path,
) -> None:
    """The staged name is found again: only the chunks missing from ``.partial`` are written."""
    import warnings

    import dask
    import xarray as xr
    from dask.delayed import Delayed

    from geoembed.export import write_zarr
    from geoembed.export.outputs import OutputSet
    from geoembed.testing import make_field

    field = make_field(64, 96, bands=4, chunks=16, seed=2).rename("embedding")
    target = tmp_path / "features.zarr"

    def staged() -> tuple[OutputSet, Any]:
        outputs = OutputSet(resume=True)
        outputs.add("feature map", target, directory=True)
        return outputs, outputs.stage("feature map")

    def chunk_writes(job: Any) -> list[Any]:
        return sorted(k for k in dict(job.dask) if str(k).startswith("_write_chunk"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        _killed, stage = staged()
        job = write_zarr(field, stage, compute=False, resume=True)
        writes = chunk_writes(job)
        assert len(writes) == 24
        graph = dict(job.dask)
        dask.compute(*(Delayed(k, graph) for k in writes[:10]))  # killed after 10 chunks
        # (the process is gone: no discard, no commit)
        second, again = staged()
        assert again == stage
        job = write_zarr(field, again, compute=False, resume=True)
        assert len(chunk_writes(job)) == 24 - 10  # only the missing chunks
        with second:
            dask.compute(job)
            second.commit()
    assert sorted(os.listdir(tmp_path)) == ["features.zarr", "features.zarr.stac.json"]
    xr.testing.assert_equal(xr.open_zarr(target)["embedding"].load(), field.load())
