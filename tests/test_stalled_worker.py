"""A worker that stops answering (SIGSTOP) ends the job with one error within a deadline."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cloud_fixtures import topology

_GEOEMBED = str(Path(sys.executable).parent / "geoembed")


def _run(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    res = subprocess.run([_GEOEMBED, *args], env=env, capture_output=True, text=True, timeout=180)
    return res, time.monotonic() - t0


@pytest.mark.timeout(240)
def test_a_stalled_worker_is_an_error_within_the_deadlines(aef_tif: Path, tmp_path: Path) -> None:
    from distributed import Client

    with topology(tmp_path / "cluster", n_workers=2) as cluster:
        address, env = cluster["address"], cluster["env"]
        job = ["cluster", str(aef_tif), "-k", "4", "--max-iter", "50", "-o"]

        # 1. stopped mid-job: the stall watchdog stops the job after --stall-timeout
        out = tmp_path / "mid.tif"
        cmd = [_GEOEMBED, "--scheduler", address, "--stall-timeout", "6", *job, str(out)]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        stopped = None
        with Client(address, timeout=30) as watcher:
            names = {w["name"]: a for a, w in watcher.scheduler_info()["workers"].items()}
            deadline = time.monotonic() + 120
            while stopped is None and time.monotonic() < deadline and proc.poll() is None:
                for addr, keys in watcher.processing().items():
                    if keys:
                        i = sorted(names).index(next(n for n, a in names.items() if a == addr))
                        stopped = (cluster["procs"][1 + i], addr)
                        stopped[0].send_signal(signal.SIGSTOP)
                        break
                time.sleep(0.01)
        t0 = time.monotonic()
        try:
            _, err = proc.communicate(timeout=120)
            took = time.monotonic() - t0
        finally:
            if stopped is not None:
                stopped[0].send_signal(signal.SIGCONT)
            proc.kill()
        assert stopped is not None, "no task was seen running"
        assert proc.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "the job stalled: no task finished for 6 s" in lines[0]
        assert stopped[1] in lines[0]  # names the stuck worker
        assert took < 6 + 30, took
        assert not out.exists()

        # 2. stopped before the job: the version check has the connect deadline too
        stopped[0].send_signal(signal.SIGSTOP)
        try:
            res, took = _run(
                ["--scheduler", address, "--connect-timeout", "4", *job, str(tmp_path / "b.tif")],
                env,
            )
        finally:
            stopped[0].send_signal(signal.SIGCONT)
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "did not finish within 9 s" in lines[0], res.stderr
        assert took < 4 + 5 + 20, took
