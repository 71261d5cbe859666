"""Shared fixtures: real data in ../shared/data, a LocalCluster with worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips locally when absent, fails loudly in CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"../shared/data is missing in CI (looked at {SHARED_DATA})")
        pytest.skip("../shared/data not present (real-data tests need it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def aef_tif(shared_data: Path) -> Path:
    """The real AlphaEarth int8 field (Wisconsin, 97 x 97 x 64, EPSG:32616)."""
    return shared_data / "aef" / "wisconsin_2024_aef_int8.tif"


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """A LocalCluster with two single-threaded worker processes on 127.0.0.1 (shared)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit="2GiB",
    ) as cluster:
        yield cluster


@pytest.fixture
def dask_client(dask_cluster: Any) -> Iterator[Any]:
    """A client on the shared LocalCluster; closed after the test."""
    from distributed import Client

    with Client(dask_cluster) as client:
        yield client


from _cloud_fixtures import (  # noqa: E402, F401  (object-store emulators, Dask topology)
    bucket,
    gcs_bucket,
    gcs_emulator,
    remote_cluster,
    s3_bucket,
    s3_emulator,
)
