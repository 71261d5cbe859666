"""The product's path on one machine: a scheduler and 3 workers that share no disk, a bucket.

``geoembed --scheduler tcp://... classify gs://.../field.zarr ... -o gs://.../map.tif`` runs
as a separate process, against worker processes that each have their own empty directory
and ``TMPDIR``; the map must be byte-identical to a local run of the same command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    assert sorted(k.rpartition("/")[2] for k in fs.ls(out)) == [
        "conf.tif",
        "map.tif",
        "report.json",
    ]
    assert fs.cat(f"{out}/map.tif") == (local / "map.tif").read_bytes()
    assert fs.cat(f"{out}/conf.tif") == (local / "conf.tif").read_bytes()
    # nothing was written on the client's disk or left in the workers' directories
    assert sorted(os.listdir(client_dir)) == []
    for d in remote_cluster["dirs"]:
        left = [p.name for p in d.rglob("*") if "geoembed" in p.name]
        assert left == [], left
