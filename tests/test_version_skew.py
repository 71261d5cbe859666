"""A cluster whose workers or scheduler run other versions is refused before any task."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from _cloud_fixtures import topology

from geoembed.errors import VersionSkewError
from geoembed.runtime.versions import version_skew

_GEOEMBED = str(Path(sys.executable).parent / "geoembed")


def _v(**packages: str | None) -> dict[str, object]:
    return {"packages": {"python": "3.11.7", **packages}}


_SAME = {"geoembed": "0.1.0", "dask": "2026.8.0", "distributed": "2026.8.0"}


def test_version_skew_names_each_package_and_role() -> None:
    same = {"client": _v(**_SAME), "scheduler": _v(**_SAME), "workers": {"tcp://a": _v(**_SAME)}}
    assert version_skew(same) == []
    skewed = {
        "client": _v(**_SAME),
        "scheduler": _v(**{**_SAME, "dask": "2025.1.0"}),
        "workers": {
            "tcp://b:2": _v(**{**_SAME, "geoembed": None}),
            "tcp://a:1": _v(**_SAME),
        },
    }
    assert version_skew(skewed) == [
        "geoembed (not installed) on worker tcp://b:2",
        "dask 2025.1.0 on the scheduler",
    ]


def _skewed_site(root: Path, version: str) -> Path:
    """A directory that, first on ``PYTHONPATH``, makes a process see another geoembed."""
    site = root / "site"
    info = site / f"geoembed-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: geoembed\nVersion: {version}\n")
    return site


@pytest.mark.timeout(180)
def test_a_worker_with_another_geoembed_is_refused_before_any_task(tmp_path: Path) -> None:
    from distributed import Client

    from geoembed.export import write_zarr
    from geoembed.runtime import dask_client
    from geoembed.testing import make_field

    field = tmp_path / "field.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # string band names: not yet in the Zarr v3 spec
        write_zarr(make_field(32, 32, bands=8, chunks=None, seed=1).chunk(16), field)
    site = _skewed_site(tmp_path, "0.0.1")
    skew = {1: {"PYTHONPATH": str(site)}}
    with topology(tmp_path / "cluster", n_workers=2, worker_env=skew) as cluster:
        address = cluster["address"]
        res = subprocess.run(
            [
                *(_GEOEMBED, "--scheduler", address, "cluster", str(field)),
                *("-k", "2", "-o", str(tmp_path / "map.tif")),
            ],
            env=cluster["env"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert "geoembed 0.0.1 on worker tcp://127.0.0.1:" in lines[0]
        assert "same image" in lines[0] and "Traceback" not in res.stderr
        assert not (tmp_path / "map.tif").exists()
        with pytest.raises(VersionSkewError, match=r"geoembed 0\.0\.1 on worker"):
            with dask_client(address):
                pass
        with Client(address, timeout=30) as client:
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert sum(executed.values()) == 0, executed  # refused before any task ran
