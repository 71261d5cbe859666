"""An object store that answers 503 or resets connections: retries succeed, or one clear error.

A fault-injecting HTTP proxy (``tests/_fault_proxy.py``) stands between geoembed and
fake-gcs-server; ``STORAGE_EMULATOR_HOST`` points at it, so every read (GDAL's /vsigs/,
fsspec) and every write (parts, staged outputs, the commit's copies) goes through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _fault_proxy import fault_proxy

from geoembed._cloud import filesystem

_GEOEMBED = str(Path(sys.executable).parent / "geoembed")


def _env(endpoint: str, tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CPL_", "GS_", "GDAL_HTTP", "STORAGE_", "DASK_"))
    }
    return {**env, "STORAGE_EMULATOR_HOST": endpoint, "TMPDIR": str(tmp)}


def _classify(field: str, samples: str, out: str, env: dict[str, str], cwd: Path) -> Any:
    args = [
        *(_GEOEMBED, "-q", "--scheduler", "threads", "classify", field, "--training", samples),
        *("--label-column", "dw_label", "-k", "5", "-o", f"{out}/map.tif"),
        *("--confidence", f"{out}/conf.tif"),
    ]
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def inputs(gcs_bucket: str, aef_tif: Path, shared_data: Path) -> dict[str, str]:
    fs = filesystem(gcs_bucket)
    urls = {"field": f"{gcs_bucket}/in/field.tif", "samples": f"{gcs_bucket}/in/samples.csv"}
    fs.put_file(str(aef_tif), urls["field"])
    fs.put_file(str(shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"), urls["samples"])
    return urls


@pytest.mark.timeout(300)
def test_503s_and_resets_are_retried_and_the_map_is_identical(
    gcs_emulator: str, gcs_bucket: str, inputs: dict[str, str], tmp_path: Path
) -> None:
    direct = _classify(
        inputs["field"], inputs["samples"], f"{gcs_bucket}/direct", _env(gcs_emulator, tmp_path),
        tmp_path,
    )  # fmt: skip
    assert direct.returncode == 0, direct.stderr
    with fault_proxy(gcs_emulator, every=4) as proxy:
        res = _classify(
            inputs["field"], inputs["samples"], f"{gcs_bucket}/faulty",
            _env(proxy.url, tmp_path), tmp_path,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert proxy.injected["503"] >= 2 and proxy.injected["reset"] >= 2, proxy.injected
    fs = filesystem(gcs_bucket)
    fs.invalidate_cache()
    for name in ("map.tif", "conf.tif"):
        assert fs.cat(f"{gcs_bucket}/faulty/{name}") == fs.cat(f"{gcs_bucket}/direct/{name}")
    assert sorted(k.rpartition("/")[2] for k in fs.ls(f"{gcs_bucket}/faulty")) == [
        "conf.tif", "conf.tif.stac.json", "map.tif", "map.tif.stac.json"
    ]  # fmt: skip


@pytest.mark.timeout(300)
def test_a_store_that_always_fails_is_one_clear_error_within_a_deadline(
    gcs_emulator: str, gcs_bucket: str, inputs: dict[str, str], tmp_path: Path
) -> None:
    with fault_proxy(gcs_emulator, every=1, faults=("503",)) as proxy:
        t0 = time.monotonic()
        res = _classify(
            inputs["field"], inputs["samples"], f"{gcs_bucket}/out", _env(proxy.url, tmp_path),
            tmp_path,
        )  # fmt: skip
        took = time.monotonic() - t0
    assert res.returncode in (1, 2), res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "object-store request at http://127.0.0.1:" in lines[0] and "503" in lines[0], lines[0]
    assert took < 240, took
    fs = filesystem(gcs_bucket)
    fs.invalidate_cache()
    assert not fs.exists(f"{gcs_bucket}/out")
