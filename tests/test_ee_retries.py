"""open_ee with the Earth Engine call layer replaced by a local fake that answers pixels,
429s, quota errors and timeouts on a schedule (no network, no credentials)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from _ee_fake import DiskFakeEarthEngine, HttpError, truth

from geoembed.errors import EarthEngineError, SchemaError
from geoembed.io import ee as ee_mod
from geoembed.io.ee import EE_MAX_REQUEST_BYTES, RetryPolicy, ee_chunk_side, is_retryable, open_ee

BBOX = (-88.78, 44.29, -88.76, 44.30)
COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"


@dataclass
class FakeEarthEngine:
    """Answers requests like computePixels; ``schedule`` lists the failures of each request."""

    schedule: list[str] = field(default_factory=list)  # e.g. ["429", "timeout"], then pixels
    hang: float = 0.0
    key: str = field(default_factory=lambda: str(time.monotonic_ns()))
    inits: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[tuple, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __reduce__(self) -> Any:  # stay one object under the threaded scheduler
        raise TypeError("the fake is used in-process only")

    def initialize(self) -> None:
        self.inits += 1

    def fetch(self, request: dict[str, Any]) -> np.ndarray:
        grid = request["grid"]
        key = tuple(grid["crs_transform"])
        with self.lock:
            self.requests.append(request)
            n = self.attempts.get(key, 0)
            self.attempts[key] = n + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.hang)
            what = self.schedule[n] if n < len(self.schedule) else "ok"
            if what == "429":
                raise HttpError(429, "Too Many Requests")
            if what == "quota":
                raise Exception(
                    "Earth Engine memory or request quota exceeded (RESOURCE_EXHAUSTED)"
                )
            if what == "timeout":
                raise TimeoutError("Computation timed out.")
            if what == "403":
                raise HttpError(403, "Permission denied on asset")
            a, _, c, _, e, f = grid["crs_transform"]
            w, h = grid["shape_2d"]
            return truth(
                c + a * (np.arange(w) + 0.5), f + e * (np.arange(h) + 0.5), len(request["bands"])
            )
        finally:
            with self.lock:
                self.in_flight -= 1


FAST = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01, jitter=0.5)


def expected_field(field: Any) -> np.ndarray:
    return truth(field["x"].values, field["y"].values, field.sizes["band"])


def test_pixels_arrive_in_request_sized_chunks() -> None:
    fake = FakeEarthEngine()
    with dask.config.set(scheduler="threads"):
        field = open_ee(COLLECTION, bbox=BBOX, year=2024, chunks=64, retry=FAST, source=fake)
        assert fake.requests == []  # lazy: nothing asked yet
        assert field.rio.crs.to_epsg() == 32616
        values = field.values
    np.testing.assert_array_equal(values, expected_field(field))
    n_chunks = int(np.prod([len(c) for c in field.chunks[1:]]))
    assert len(fake.requests) == n_chunks
    for r in fake.requests:
        w, h = r["grid"]["shape_2d"]
        assert w <= 64 and h <= 64
        assert w * h * len(r["bands"]) * 4 <= EE_MAX_REQUEST_BYTES
    assert fake.inits == 1  # initialised lazily, once in this process


def test_429_quota_and_timeouts_are_retried() -> None:
    fake = FakeEarthEngine(schedule=["429", "quota", "timeout"])
    with dask.config.set(scheduler="threads"):
        field = open_ee(COLLECTION, bbox=BBOX, year=2024, chunks=64, retry=FAST, source=fake)
        values = field.values
    np.testing.assert_array_equal(values, expected_field(field))
    assert set(fake.attempts.values()) == {4}  # three failures, then the pixels


def test_backoff_grows_exponentially_with_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=0.25)
    import random

    rng = random.Random(0)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert base * 0.75 <= min(delays) and max(delays) <= base * 1.25
        assert max(delays) - min(delays) > 0.1 * base  # jittered, not fixed
    slept: list[float] = []
    calls = iter([HttpError(429, "x"), HttpError(503, "y"), "done"])

    def flaky() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert policy.call(flaky, what="r", sleep=slept.append) == "done"
    assert len(slept) == 2 and 0.75 <= slept[0] <= 1.25 and 1.5 <= slept[1] <= 2.5


def test_persistent_429_gives_up_with_a_clear_error() -> None:
    fake = FakeEarthEngine(schedule=["429"] * 10)
    with dask.config.set(scheduler="threads"):
        field = open_ee(COLLECTION, bbox=BBOX, year=2024, chunks=64, retry=FAST, source=fake)
        with pytest.raises(EarthEngineError, match="after 4 attempts"):
            field.compute()
    assert max(fake.attempts.values()) == 4


def test_permanent_errors_are_not_retried() -> None:
    fake = FakeEarthEngine(schedule=["403"])
    with dask.config.set(scheduler="threads"):
        field = open_ee(COLLECTION, bbox=BBOX, year=2024, chunks=64, retry=FAST, source=fake)
        with pytest.raises(EarthEngineError, match="not transient"):
            field.compute()
    assert set(fake.attempts.values()) == {1}


def test_concurrency_is_capped() -> None:
    fake = FakeEarthEngine(hang=0.02)
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, max_concurrent=2)
    with dask.config.set(scheduler="threads", num_workers=8):
        field = open_ee(COLLECTION, bbox=BBOX, year=2024, chunks=64, retry=policy, source=fake)
        field.compute()
    assert len(fake.requests) >= 6
    assert fake.max_in_flight == 2


def test_chunks_over_the_request_limit_are_refused() -> None:
    side = ee_chunk_side(64)
    assert side * side * 64 * 4 <= EE_MAX_REQUEST_BYTES
    with pytest.raises(SchemaError, match="limit"):
        open_ee(COLLECTION, bbox=BBOX, chunks=4 * side, source=FakeEarthEngine())
    with pytest.raises(SchemaError, match="band_names"):
        open_ee("USERS/x/other", bbox=BBOX, source=FakeEarthEngine())


def test_retryable_classification() -> None:
    assert is_retryable(HttpError(429, "x")) and is_retryable(HttpError(503, "x"))
    assert not is_retryable(HttpError(400, "Too many requests"))  # the status decides
    assert is_retryable(Exception("Too many concurrent aggregations."))
    assert not is_retryable(Exception("Image.select: Pattern 'B1' did not match any bands."))
    assert ee_mod.RetryPolicy().max_concurrent >= 1


def test_every_worker_initialises_once_and_retries(dask_client: Any, tmp_path: Path) -> None:
    fake = DiskFakeEarthEngine(str(tmp_path), schedule=("429", "timeout"))
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
    field = open_ee(COLLECTION, bbox=BBOX, year=2024, chunks=64, retry=policy, source=fake)
    values = field.compute().values  # on the two worker processes
    np.testing.assert_array_equal(values, expected_field(field))
    inits = sorted(p.name for p in tmp_path.glob("init-*"))
    worker_pids = set(dask_client.run(os.getpid).values())
    assert {int(n.split("-")[1]) for n in inits} <= worker_pids
    assert len(inits) == len(set(inits)) >= 1
    assert os.getpid() not in {int(n.split("-")[1]) for n in inits}  # not on the client
    attempts: dict[str, int] = {}
    for p in tmp_path.glob("attempt-*"):
        name, n = p.name[len("attempt-") :].rsplit("-", 1)
        attempts[name] = max(attempts.get(name, 0), int(n) + 1)
    n_chunks = int(np.prod([len(c) for c in field.chunks[1:]]))
    assert len(attempts) == n_chunks and set(attempts.values()) == {3}


def test_export_ee_job_commits_the_field_through_the_output_set(tmp_path: Path) -> None:
    """export-ee: retried requests, a validated Zarr with its STAC Item, geoembed's only."""
    from geoembed.errors import OutputError
    from geoembed.export.outputs import is_geoembed_output
    from geoembed.io import open_embeddings
    from geoembed.jobs.export_ee import run_export_ee

    out = tmp_path / "f.zarr"
    fake = FakeEarthEngine(schedule=["429"])
    kw: dict[str, Any] = {"bbox": BBOX, "year": 2024, "chunks": 64, "retry": FAST}
    with dask.config.set(scheduler="threads"):
        summary = run_export_ee(out, source=fake, **kw)
        back = open_embeddings(out).load()
    np.testing.assert_array_equal(back.values, expected_field(back))
    assert summary["crs"] == "EPSG:32616" and summary["bands"] == 64
    assert max(fake.attempts.values()) == 2  # each chunk: one 429, then the pixels
    assert is_geoembed_output(out) and (tmp_path / "f.zarr.stac.json").is_file()
    with pytest.raises(OutputError, match="already exists"):
        run_export_ee(out, source=FakeEarthEngine(), **kw)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="Refusing to replace"):
        run_export_ee(mine, source=FakeEarthEngine(), overwrite=True, **kw)
    assert (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr", "f.zarr.stac.json", "mine"]
