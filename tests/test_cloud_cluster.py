"""The product's path on one machine: a scheduler and 3 workers that share no disk, a bucket.

``geoembed --scheduler tcp://... classify gs://.../field.zarr ... -o gs://.../map.tif`` runs
as a separate process, against worker processes that each have their own empty directory
and ``TMPDIR``; the map must be byte-identical to a local run of the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from _cloud_fixtures import topology
from _rasters import utm_raster
from test_cloud_io import _classify, local_inputs, upload_inputs  # noqa: F401

from geoembed._cloud import filesystem

_GEOEMBED = str(Path(sys.executable).parent / "geoembed")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_GEOEMBED, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _executed(address: str) -> dict[str, int]:
    """Tasks each worker of the cluster has executed so far."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        return dict(client.run(lambda dask_worker: dask_worker.state.executed_count))


def _args(urls: dict[str, str], out: str) -> list[str]:
    return [
        *("classify", urls["field"], "--training", urls["samples"]),
        *("--label-column", "dw_label", "-k", "5", "-o", f"{out}/map.tif"),
        *("--confidence", f"{out}/conf.tif", "--report", f"{out}/report.json", "--json"),
    ]


def test_classify_on_a_cluster_with_no_shared_disk_matches_local(
    bucket: str,
    remote_cluster: dict[str, Any],
    local_inputs: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    _classify(
        str(local_inputs["field"]), str(local_inputs["samples"]), str(local / "map.tif"),
        "--confidence", str(local / "conf.tif"),
    )  # fmt: skip
    urls = upload_inputs(local_inputs, bucket)
    out = f"{bucket}/maps"
    client_dir = tmp_path / "client"  # the client's own empty directory
    client_dir.mkdir()
    env = {**remote_cluster["env"], "TMPDIR": str(client_dir)}
    before = _executed(remote_cluster["address"])
    res = _cli(["-q", "--scheduler", remote_cluster["address"], *_args(urls, out)], env, client_dir)
    assert res.returncode == 0, res.stderr + res.stdout
    summary = json.loads(res.stdout)
    after = _executed(remote_cluster["address"])
    assert sum(after.values()) - sum(before.values()) >= 4, (before, after)  # ran there
    assert summary["outputs"]["class_map"] == f"{out}/map.tif"
    fs = filesystem(bucket)
    fs.invalidate_cache()
    names = ["conf.tif", "map.tif", "report.json"]  # each with its STAC Item
    listed = sorted(k.rpartition("/")[2] for k in fs.ls(out))
    assert listed == sorted([*names, *(f"{n}.stac.json" for n in names)])
    assert fs.cat(f"{out}/map.tif") == (local / "map.tif").read_bytes()
    assert fs.cat(f"{out}/conf.tif") == (local / "conf.tif").read_bytes()
    # nothing was written on the client's disk or left in the workers' directories
    assert sorted(os.listdir(client_dir)) == []
    for d in remote_cluster["dirs"]:
        left = [p.name for p in d.rglob("*") if "geoembed" in p.name]
        assert left == [], left


def _raster() -> xr.DataArray:
    """1536 x 1536 float32 in 144 chunks: a write long enough to kill a worker in it."""
    return utm_raster(1536, seed=7)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_of_a_worker_while_parts_upload_gives_identical_bytes(
    gcs_bucket: str, tmp_path: Path
) -> None:
    from distributed import Client

    from geoembed.export import write_cog

    local = write_cog(_raster(), tmp_path / "ref.tif", blocksize=128)
    url = f"{gcs_bucket}/fault/conf.tif"
    fs = filesystem(gcs_bucket)
    with topology(tmp_path / "cluster") as cluster, Client(cluster["address"]) as client:
        victim = cluster["procs"][1]  # a worker (procs[0] is the scheduler)
        killed: list[int] = []

        def kill_when_parts_appear() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                fs.invalidate_cache()
                try:
                    uploaded = fs.find(f"{gcs_bucket}/fault")
                except OSError:
                    uploaded = []
                if sum("part-" in k for k in uploaded) >= 3:
                    victim.send_signal(signal.SIGKILL)
                    killed.append(victim.pid)
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_when_parts_appear, daemon=True)
        watcher.start()
        assert write_cog(_raster(), url, blocksize=128) == url
        watcher.join()
        assert killed, "no worker was killed while the parts were uploading"
        assert len(client.scheduler_info()["workers"]) == 2
    fs.invalidate_cache()
    assert fs.cat(url) == Path(local).read_bytes()
    assert [k.rpartition("/")[2] for k in fs.find(f"{gcs_bucket}/fault")] == ["conf.tif"]


def test_infer_on_a_cluster_reads_the_model_from_the_bucket(
    gcs_bucket: str, remote_cluster: dict[str, Any], tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    import warnings

    from geoembed.export import write_zarr
    from geoembed.infer import write_sidecar
    from geoembed.infer.models import conv_stack
    from geoembed.testing import make_field

    field = make_field(40, 50, bands=8, chunks=None, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        write_zarr(field.chunk({"y": 20, "x": 25}), tmp_path / "field.zarr")
    model = Path(conv_stack(tmp_path / "m.onnx", bands=8, depth=2, n_classes=3))
    write_sidecar(model.with_suffix(".json"), classes=["a", "b", "c"], receptive_radius=2)
    fs = filesystem(gcs_bucket)
    fs.put(str(tmp_path / "field.zarr"), f"{gcs_bucket}/in/field.zarr", recursive=True)
    for name in ("m.onnx", "m.json"):
        fs.put_file(str(tmp_path / name), f"{gcs_bucket}/models/{name}")
    tail = ["--tile", "16", "--overlap", "4"]
    local = _cli(
        [
            *("-q", "--scheduler", "threads", "infer", str(tmp_path / "field.zarr")),
            *("--model", str(model), *tail, "-o", str(tmp_path / "a.tif")),
        ],
        {**os.environ},
        tmp_path,
    )
    assert local.returncode == 0, local.stderr
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    env = {**remote_cluster["env"], "TMPDIR": str(client_dir)}
    res = _cli(
        [
            *("-q", "--scheduler", remote_cluster["address"], "infer"),
            *(f"{gcs_bucket}/in/field.zarr", "--model", f"{gcs_bucket}/models/m.onnx"),
            *(*tail, "-o", f"{gcs_bucket}/maps/a.tif"),
        ],
        env,
        client_dir,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    fs.invalidate_cache()
    assert fs.cat(f"{gcs_bucket}/maps/a.tif") == (tmp_path / "a.tif").read_bytes()
