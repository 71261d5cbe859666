"""The DaskJob in ``k8s/daskjob.yaml`` runs as written, on processes instead of pods.

Every command line and environment comes from the manifest; only what a pod has and this
machine does not is substituted: the Secret ``geoembed-dask-tls`` (certificates generated
here), the ``/scratch`` volume (an empty directory per process), the scheduler's service
name and port (127.0.0.1 and a free port) and the dashboard ports (free ports). The bucket
``gs://my-bucket`` is created on the GCS emulator, so the client's arguments run unchanged:
mutual TLS between client, scheduler and 3 workers, the field and labels read from the
bucket, the map and report written back, the map byte-identical to a local run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _cloud_fixtures import _emulator_env, _stop, free_port

pytest.importorskip("yaml")

from geoembed._cloud import filesystem
from geoembed.runtime.k8s import load_manifest

K8S = Path(__file__).resolve().parents[1] / "k8s"
_BIN = Path(sys.executable).parent
_SERVICE = "geoembed-job-scheduler.geoembed.svc.cluster.local:8786"


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` substitution in args and env values."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def _set_option(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with the value after ``option`` replaced (the option must be there)."""
    i = args.index(option)
    return [*args[: i + 1], value, *args[i + 2 :]]


def _pod_env(container: dict[str, Any], local: dict[str, str]) -> dict[str, str]:
    """A container's environment with the pod's paths and service names made local."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        value = str(item["value"])
        for pod_path, here in local.items():
            value = value.replace(pod_path, here)
        env[item["name"]] = _expand(value, env)
    return env


def _base_env() -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DASK_", "STORAGE_", "AWS_", "GCSFS_", "TMPDIR", "CPL_"))
    }
    return {**keep, **_emulator_env()}


def _write_secret(directory: Path) -> Any:
    """The Secret ``geoembed-dask-tls`` as files (``ca.crt``, ``tls.crt``, ``tls.key``)."""
    from distributed import Security

    sec = Security.temporary()
    directory.mkdir(parents=True)
    (directory / "ca.crt").write_text(sec.tls_ca_file)
    (directory / "tls.crt").write_text(sec.tls_client_cert)
    (directory / "tls.key").write_text(sec.tls_client_key)
    for f in directory.iterdir():
        f.chmod(0o440)  # the manifest's defaultMode 288
    return sec


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["containers"][0])


@contextmanager
def job_cluster(root: Path, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Start the manifest's scheduler and its worker replicas (at most 3) as processes."""
    from distributed import Client

    secret = root / "dask-tls"
    sec = _write_secret(secret)
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    cluster = manifest["spec"]["cluster"]["spec"]
    procs: list[subprocess.Popen[bytes]] = []
    dirs: list[Path] = []

    def start(name: str, container: dict[str, Any], args: list[str], extra: dict[str, str]) -> None:
        d = root / name
        (d / "scratch" / "tmp").mkdir(parents=True)
        scratch = str(d / "scratch")
        local = {"/etc/dask-tls": str(secret), "/scratch": scratch, _SERVICE: address[6:]}
        env = {**_base_env(), **extra, **_pod_env(container, local)}
        args = [_expand(a.replace("/scratch", str(d / "scratch")), env) for a in args]
        dirs.append(d)
        with (d / "log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [str(_BIN / args[0]), *args[1:], "--host", "127.0.0.1"],
                    cwd=d / "scratch",
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    try:
        sched = _container(cluster["scheduler"]["spec"])
        args = _set_option(list(sched["args"]), "--port", str(port))
        args = _set_option(args, "--dashboard-address", f"127.0.0.1:{free_port()}")
        start("scheduler", sched, args, {})
        worker = _container(cluster["worker"]["spec"])
        n = min(int(cluster["worker"]["replicas"]), 3)  # this machine has 2 cores
        for i in range(n):
            args = _set_option(list(worker["args"]), "--dashboard-address", "127.0.0.1:0")
            # the operator names every worker pod (the address is in the manifest's env)
            extra = {"DASK_WORKER_NAME": f"geoembed-job-worker-{i}"}
            start(f"worker-{i}", worker, args, extra)
        deadline = 120.0
        import time

        end = time.monotonic() + deadline
        with Client(address, security=sec, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < n:
                if time.monotonic() > end or any(p.poll() is not None for p in procs):
                    logs = "\n".join((d / "log").read_text()[-1500:] for d in dirs)
                    raise RuntimeError(f"the DaskJob's cluster did not start:\n{logs}")
                time.sleep(0.2)
        yield {"address": address, "security": sec, "secret": secret, "dirs": dirs}
    finally:
        for p in reversed(procs):
            _stop(p)


def _labels_gpkg(field_tif: Path, out: Path) -> Path:
    """Points on pixel centres of the field with a ``class`` column (3 classes)."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import Point

    with rasterio.open(field_tif) as src:
        t, crs = src.transform, src.crs
    rows = range(4, 95, 7)
    pts = [Point(t @ (c + 0.5, r + 0.5)) for r in rows for c in rows]
    classes = [(r // 30 + c // 40) % 3 for r in rows for c in rows]
    gpd.GeoDataFrame({"class": classes}, geometry=pts, crs=crs).to_file(out)
    return out


def _fresh_bucket(url: str) -> None:
    fs = filesystem(url)
    name = url.split("://", 1)[1]
    fs.invalidate_cache()
    if fs.exists(name):
        fs.rm(name, recursive=True)
    fs.mkdir(name)


@pytest.mark.timeout(420)
def test_the_daskjob_command_runs_as_written_and_matches_a_local_run(
    gcs_emulator: str, aef_tif: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner
    from distributed import Client
    from test_cloud_io import _field_zarr

    from geoembed.cli import main

    manifest = load_manifest(K8S / "daskjob.yaml")
    job = _container(manifest["spec"]["job"]["spec"])
    args = [str(a) for a in job["args"]]
    assert args[0] == "geoembed"
    urls = [a for a in args if a.startswith("gs://")]
    bucket = urls[0].rsplit("/", 1)[0]
    assert all(u.startswith(bucket + "/") for u in urls), urls

    # the inputs the job names, made from the real field
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    local_files = {
        f"{bucket}/field.zarr": _field_zarr(aef_tif, inputs),
        f"{bucket}/labels.gpkg": _labels_gpkg(aef_tif, inputs / "labels.gpkg"),
    }
    _fresh_bucket(bucket)
    fs = filesystem(bucket)
    for url, path in local_files.items():
        assert url in args, f"{url} is no longer an input of the DaskJob; update this test"
        fs.put(str(path), url, recursive=path.is_dir())

    # the same command on this machine, paths instead of URLs
    local = tmp_path / "local"
    local.mkdir()
    here = {**{u: str(p) for u, p in local_files.items()}, bucket: str(local)}
    local_args = [here.get(a, a.replace(bucket, str(local))) for a in args[3:]]
    res = CliRunner().invoke(main, ["-q", "--scheduler", "threads", *local_args])
    assert res.exit_code == 0, res.output

    with job_cluster(tmp_path / "pods", manifest) as cluster:
        client_dir = tmp_path / "job"
        (client_dir / "scratch" / "tmp").mkdir(parents=True)
        pod = {
            "/etc/dask-tls": str(cluster["secret"]),
            "/scratch": str(client_dir / "scratch"),
            _SERVICE: cluster["address"][6:],
        }
        env = {**_base_env(), **_pod_env(job, pod)}
        assert env["DASK_SCHEDULER_ADDRESS"] == cluster["address"]
        command = [_expand(a, env) for a in args]
        with Client(cluster["address"], security=cluster["security"]) as client:
            before = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
            proc = subprocess.run(
                [str(_BIN / command[0]), *command[1:]],
                env=env,
                cwd=client_dir / "scratch",
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, proc.stderr + proc.stdout
            after = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
        assert after - before >= 4  # the tasks ran on the job's workers
    fs.invalidate_cache()
    outputs = sorted(k.rpartition("/")[2] for k in fs.ls(bucket))
    assert outputs == [  # the inputs, the outputs and their STAC Items
        "field.zarr", "labels.gpkg", "map.tif", "map.tif.stac.json", "report.json",
        "report.json.stac.json",
    ]  # fmt: skip
    assert fs.cat(f"{bucket}/map.tif") == (local / "map.tif").read_bytes()
    report = json.loads(fs.cat(f"{bucket}/report.json"))
    mine = json.loads((local / "report.json").read_text())
    assert report["geoembed_version"] == mine["geoembed_version"]
    assert report.get("cross_validation") == mine.get("cross_validation")
    # nothing left on the job's scratch volume or on the workers' volumes
    for d in [client_dir, *cluster["dirs"]]:
        left = [p.name for p in (d / "scratch").rglob("*") if "geoembed" in p.name]
        assert left == [], (d, left)
