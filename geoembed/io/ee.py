"""Earth Engine at scale: explicit grids, request-sized chunks, retries on every worker.

:func:`open_ee` returns a lazy canonical field whose chunks are each one Earth Engine
``computePixels`` request on an explicit grid (Xee's ``crs`` / ``crs_transform`` /
``shape_2d`` parameters, see :func:`geoembed.io.xee.grid_for_bbox`):

* chunks are sized under Earth Engine's request limits (:data:`EE_MAX_REQUEST_BYTES`,
  :data:`EE_MAX_REQUEST_SIDE`), so no request is refused for its size;
* Earth Engine is initialised **lazily in each process** that runs a chunk (every Dask
  worker), from Application Default Credentials (which include Workload Identity on GKE
  and ``GOOGLE_APPLICATION_CREDENTIALS``), or a service-account key file;
* each request is retried by a :class:`RetryPolicy` (exponential backoff with jitter) on
  429 / quota / rate-limit answers, timeouts and transient server errors, with a per-process
  cap on concurrent requests; other errors fail at once as
  :class:`~geoembed.errors.EarthEngineError`.

The Earth Engine calls sit behind one small interface, :class:`PixelSource`
(``initialize`` + ``fetch``), so that tests can answer with a local fake.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed.errors import EarthEngineError, SchemaError

__all__ = [
    "EE_MAX_REQUEST_BYTES",
    "EE_MAX_REQUEST_SIDE",
    "EarthEnginePixels",
    "PixelSource",
    "RetryPolicy",
    "ee_chunk_side",
    "is_retryable",
    "open_ee",
]

log = logging.getLogger(__name__)

#: largest computePixels answer Earth Engine serves (48 MiB)
EE_MAX_REQUEST_BYTES = 48 * 2**20
#: largest side of a computePixels grid
EE_MAX_REQUEST_SIDE = 32768
#: fraction of the byte limit a chunk may use (headroom for encoding overhead)
_HEADROOM = 0.5

_RETRY_WORDS = (
    "429",
    "too many requests",
    "quota",
    "rate limit",
    "resource_exhausted",
    "resource exhausted",
    "too many concurrent",
    "timed out",
    "timeout",
    "deadline",
    "500",
    "502",
    "503",
    "504",
    "internal error",
    "service unavailable",
    "backend error",
)


def is_retryable(exc: BaseException) -> bool:
    """Whether an Earth Engine error is worth retrying (429, quota, timeout, 5xx).

    Looks at an HTTP status on the exception (``status``, ``code``, ``resp.status``) and
    at its message (``ee.EEException`` carries only a message).
    """
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    for holder in (exc, getattr(exc, "resp", None), getattr(exc, "response", None)):
        for attr in ("status", "status_code", "code"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and value > 0:
                return value == 429 or 500 <= value < 600
    text = str(exc).lower()
    return any(word in text for word in _RETRY_WORDS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for Earth Engine requests.

    Attempt ``n`` (from 1) that fails with a retryable error waits
    ``min(max_delay, base_delay * 2 ** (n - 1))`` scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``, then tries again, up to ``max_attempts`` attempts and
    never past ``deadline`` seconds since the first.

    Attributes
    ----------
    max_attempts : int, default 8
    base_delay : float, default 1.0
        Seconds before the first retry.
    max_delay : float, default 64.0
    jitter : float, default 0.5
    deadline : float, default 900.0
        Seconds a request may take with all its retries.
    max_concurrent : int, default 8
        Requests in flight at once in one process (a Dask worker); Earth Engine's
        concurrent-request quota is per project, so size it as quota / workers.
    """

    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 64.0
    jitter: float = 0.5
    deadline: float = 900.0
    max_concurrent: int = 8

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_concurrent < 1:
            raise SchemaError("RetryPolicy needs max_attempts >= 1 and max_concurrent >= 1.")
        if not (0 <= self.jitter < 1) or self.base_delay < 0 or self.max_delay < 0:
            raise SchemaError("RetryPolicy needs 0 <= jitter < 1 and non-negative delays.")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        base = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return base * r

    def call(
        self,
        fn: Callable[[], Any],
        *,
        what: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Any:
        """Run ``fn`` with retries; raise :class:`EarthEngineError` when it keeps failing."""
        start = time.monotonic()
        for attempt in range(1, self.max_attempts + 1):
            try:
                with _semaphore(self.max_concurrent):
                    return fn()
            except Exception as exc:
                if not is_retryable(exc):
                    raise EarthEngineError(
                        f"Earth Engine refused {what}: {exc}. This error is not transient "
                        "(check the asset id, bands, permissions and project)."
                    ) from exc
                wait = self.delay(attempt)
                late = time.monotonic() - start + wait > self.deadline
                if attempt == self.max_attempts or late:
                    raise EarthEngineError(
                        f"Earth Engine kept failing {what} after {attempt} attempts "
                        f"({time.monotonic() - start:.0f} s): {exc}. Lower the concurrency "
                        "(RetryPolicy.max_concurrent, fewer workers) or raise the project's "
                        "Earth Engine quota."
                    ) from exc
                log.info("%s: %s; retry %d in %.1f s", what, exc, attempt, wait)
                sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


_SEMAPHORES: dict[int, threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def _semaphore(limit: int) -> threading.BoundedSemaphore:
    with _SEMAPHORES_LOCK:
        if limit not in _SEMAPHORES:
            _SEMAPHORES[limit] = threading.BoundedSemaphore(limit)
        return _SEMAPHORES[limit]


class PixelSource(Protocol):
    """The Earth Engine call layer: what a chunk task needs, picklable to every worker."""

    def initialize(self) -> None:
        """Set up the client in this process (called once per process, lazily)."""

    def fetch(self, request: dict[str, Any]) -> np.ndarray:
        """Return the pixels of one request, ``(bands, height, width)`` float32.

        ``request`` holds ``grid`` (``crs``, ``crs_transform``, ``shape_2d`` as
        (width, height)) and ``bands`` (names).
        """


_INITIALISED: set[str] = set()
_INIT_LOCK = threading.Lock()


def _ensure_initialised(source: PixelSource) -> None:
    key = f"{type(source).__module__}.{type(source).__qualname__}:{getattr(source, 'key', '')}"
    if key in _INITIALISED:
        return
    with _INIT_LOCK:
        if key not in _INITIALISED:
            source.initialize()
            _INITIALISED.add(key)


@dataclass(frozen=True)
class EarthEnginePixels:
    """:class:`PixelSource` on the Earth Engine API (``ee.data.computePixels``).

    Holds only strings, so it pickles to every Dask worker, where Earth Engine is
    initialised on first use.

    Attributes
    ----------
    collection : str
        ImageCollection asset id.
    year : int or None
        Year to mosaic (``filterDate`` over the calendar year).
    project : str, optional
        Google Cloud project billed for the requests.
    service_account_key : str, optional
        Path of a service-account JSON key present on every worker; otherwise
        Application Default Credentials (``gcloud auth application-default login``,
        ``GOOGLE_APPLICATION_CREDENTIALS``, or Workload Identity on GKE).
    """

    collection: str
    year: int | None = None
    project: str | None = None
    service_account_key: str | None = None
    key: str = field(default="", compare=False)

    def initialize(self) -> None:
        """Initialise Earth Engine in this process from the configured credentials."""
        from geoembed.io.xee import require_ee

        ee, _ = require_ee("Reading Earth Engine images")
        scopes = [
            "https://www.googleapis.com/auth/earthengine",
            "https://www.googleapis.com/auth/cloud-platform",
        ]
        try:
            if self.service_account_key:
                import json

                with open(self.service_account_key) as fh:
                    email = json.load(fh)["client_email"]
                credentials = ee.ServiceAccountCredentials(email, self.service_account_key)
            else:
                import google.auth

                credentials, _ = google.auth.default(scopes=scopes)
            ee.Initialize(credentials=credentials, project=self.project)
        except Exception as exc:
            raise EarthEngineError(
                f"Earth Engine could not be initialised on this worker ({exc}). Give every "
                "worker credentials: Workload Identity on GKE, "
                "GOOGLE_APPLICATION_CREDENTIALS, or service_account_key=; and a project."
            ) from exc

    def fetch(self, request: dict[str, Any]) -> np.ndarray:
        """Call ``computePixels`` for one chunk; return ``(bands, height, width)``."""
        import ee

        images = ee.ImageCollection(self.collection)
        if self.year is not None:
            images = images.filterDate(f"{self.year}-01-01", f"{self.year + 1}-01-01")
        bands = list(request["bands"])
        grid = request["grid"]
        a, b, c, d, e, f = grid["crs_transform"]
        width, height = grid["shape_2d"]
        raw = ee.data.computePixels(
            {
                "expression": images.mosaic().select(bands),
                "fileFormat": "NUMPY_NDARRAY",
                "grid": {
                    "dimensions": {"width": width, "height": height},
                    "affineTransform": {
                        "scaleX": a,
                        "shearX": b,
                        "translateX": c,
                        "shearY": d,
                        "scaleY": e,
                        "translateY": f,
                    },
                    "crsCode": grid["crs"],
                },
            }
        )
        return np.stack([np.asarray(raw[name], dtype=np.float32) for name in bands])


def ee_chunk_side(bands: int, *, itemsize: int = 4) -> int:
    """Side of the square chunks (multiple of 64) that fit Earth Engine's request limit."""
    pixels = EE_MAX_REQUEST_BYTES * _HEADROOM / max(1, bands * itemsize)
    side = int(math.sqrt(pixels)) // 64 * 64
    return max(64, min(side, EE_MAX_REQUEST_SIDE))


def _fetch_block(
    _template: np.ndarray,
    *,
    block_info: Any,
    source: PixelSource,
    grid: dict[str, Any],
    bands: Sequence[str],
    policy: RetryPolicy,
) -> np.ndarray:
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    a, b, c, d, e, f = grid["crs_transform"]
    request = {
        "grid": {
            "crs": grid["crs"],
            "crs_transform": (a, b, c + a * x0 + b * y0, d, e, f + d * x0 + e * y0),
            "shape_2d": (x1 - x0, y1 - y0),
        },
        "bands": list(bands),
    }
    _ensure_initialised(source)
    what = f"the pixels of rows {y0}:{y1}, columns {x0}:{x1}"
    out = policy.call(lambda: source.fetch(request), what=what)
    out = np.asarray(out, dtype=np.float32)
    if out.shape != (len(bands), y1 - y0, x1 - x0):
        raise EarthEngineError(
            f"Earth Engine answered {what} with shape {out.shape}, not "
            f"{(len(bands), y1 - y0, x1 - x0)}."
        )
    return out


def open_ee(
    collection: str,
    *,
    bbox: Sequence[float] | None = None,
    geometry: Any = None,
    year: int | None = None,
    crs: str | None = None,
    scale: float = 10.0,
    band_names: Sequence[str] | None = None,
    chunks: int | None = None,
    retry: RetryPolicy | None = None,
    source: PixelSource | None = None,
    project: str | None = None,
    service_account_key: str | None = None,
) -> xr.DataArray:
    """Open an Earth Engine image collection over an area as a lazy canonical field.

    Nothing is requested here: every chunk is one ``computePixels`` request, made by the
    Dask task that computes it, on whichever worker runs it.

    Parameters
    ----------
    collection : str
        ImageCollection asset id (default bands: AlphaEarth's ``A00``..``A63`` for
        ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL``).
    bbox : (west, south, east, north), optional
        Area in degrees; or give ``geometry`` (shapely, EPSG:4326; its bounds are used).
    year : int, optional
        Calendar year mosaicked.
    crs : str, optional
        Output CRS (default: the UTM zone of the area's centre).
    scale : float, default 10
        Pixel size in ``crs`` units.
    band_names : sequence of str, optional
        Bands to read (required for collections other than AlphaEarth's).
    chunks : int, optional
        Chunk side in pixels; default and maximum: what fits a request
        (:func:`ee_chunk_side`).
    retry : RetryPolicy, optional
        Backoff, attempts and concurrency (default :class:`RetryPolicy()`).
    source : PixelSource, optional
        The call layer (default :class:`EarthEnginePixels`; tests pass a fake).
    project, service_account_key : str, optional
        Credentials for :class:`EarthEnginePixels`.

    Returns
    -------
    xarray.DataArray
        The canonical ``(band, y, x)`` float32 field, north-up, on the explicit grid.

    Raises
    ------
    SchemaError
        Before any request: no area, an unknown band list, chunks over the request limit.
    EarthEngineError
        In the task of a chunk that Earth Engine refused, or that kept failing.
    """
    from geoembed.io.aef_open import lonlat_bounds, utm_crs_of
    from geoembed.io.open import from_xarray
    from geoembed.io.xee import AEF_COLLECTION, grid_for_bbox
    from geoembed.schema import aef_band_names

    area = geometry if geometry is not None else bbox
    if area is None:
        raise SchemaError("open_ee() needs bbox= or geometry= for the area to read.")
    bounds = lonlat_bounds(area)
    if band_names is None:
        if collection != AEF_COLLECTION:
            raise SchemaError(
                f"open_ee() cannot know the bands of {collection!r} without a request; pass "
                "band_names=[...]."
            )
        band_names = aef_band_names(64)
    names = [str(b) for b in band_names]
    crs = crs or utm_crs_of(bounds)
    grid = grid_for_bbox(bounds, crs=crs, scale=scale)
    width, height = grid["shape_2d"]
    limit = ee_chunk_side(len(names))
    side = limit if chunks is None else int(chunks)
    if side < 1 or side > limit:
        raise SchemaError(
            f"chunks={chunks} for {len(names)} bands makes requests over Earth Engine's "
            f"{EE_MAX_REQUEST_BYTES // 2**20} MiB limit; use chunks <= {limit}."
        )
    policy = retry or RetryPolicy()
    pixels = source or EarthEnginePixels(
        collection, year, project=project, service_account_key=service_account_key
    )
    template = dsa.empty(
        (len(names), height, width), chunks=(len(names), side, side), dtype=np.float32
    )
    data = template.map_blocks(
        _fetch_block,
        dtype=np.float32,
        source=pixels,
        grid=grid,
        bands=tuple(names),
        policy=policy,
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )
    a, _, c, _, e, f = grid["crs_transform"]
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": names,
            "y": f + e * (np.arange(height) + 0.5),
            "x": c + a * (np.arange(width) + 0.5),
        },
        name="embedding",
    ).rio.write_crs(crs)
    return from_xarray(da, source=f"Earth Engine {collection} ({year})")
