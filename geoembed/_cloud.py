"""Object storage (``gs://``, ``s3://``, ``https://``): one place for clients and settings.

Every reader and writer of geoembed reaches object storage through this module, so the
endpoints, anonymous access and requester-pays settings are the same for fsspec (Zarr,
tables, vectors, models, outputs) and for GDAL (rasters through ``/vsigs/``, ``/vsis3/``,
``/vsicurl/``), on the client and on every Dask worker.

Settings come from the clients' own standard variables; nothing is configured twice:

``STORAGE_EMULATOR_HOST``
    A GCS emulator (``http://127.0.0.1:4443``), honoured by gcsfs and google-cloud-storage;
    GDAL gets ``CPL_GS_ENDPOINT`` and ``GS_NO_SIGN_REQUEST=YES`` from it.
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
    An S3-compatible endpoint (MinIO, moto, Ceph), honoured by botocore/s3fs; GDAL gets
    ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING=FALSE`` from it.
``GEOEMBED_REQUESTER_PAYS``
    A billing project for requester-pays buckets (GCS user project; on S3 any value
    turns on ``RequestPayer=requester``).

On GKE none of these is set: the real endpoints are used, with Workload Identity
credentials found by the clients themselves. Without credentials, reads are anonymous
(public data such as the AlphaEarth COGs).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from geoembed.errors import MissingInputError, OutputError, require

if os.environ.get("STORAGE_EMULATOR_HOST"):
    # gcsfs (from 2025.10) asks a gRPC service for each bucket's type at import-selected
    # class level; an emulator has none and every call would wait a minute for it
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

__all__ = [
    "OBJECT_SCHEMES",
    "export_gdal_env",
    "filesystem",
    "gdal_env",
    "gdal_path",
    "is_url",
    "require_input",
    "split_url",
]

#: URL schemes geoembed reads and writes with fsspec
OBJECT_SCHEMES = ("gs", "gcs", "s3", "http", "https")
_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "http": "aiohttp", "https": "aiohttp"}


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL (``gs://``, ``s3://``, ``https://``...), not a local path."""
    return isinstance(path, str | os.PathLike) and "://" in os.fspath(path)


def split_url(url: str) -> tuple[str, str, str]:
    """Return ``(scheme, bucket, key)`` of an object URL (``gcs`` is spelled ``gs``)."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    scheme = "gs" if scheme == "gcs" else scheme
    return scheme, parsed.netloc, parsed.path.lstrip("/")


def _emulator_gcs() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def _endpoint_s3() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def storage_options(scheme: str) -> dict[str, Any]:
    """Return the fsspec options for ``scheme``, derived from the standard variables.

    Parameters
    ----------
    scheme : str
        ``gs``, ``s3``, ``http``...

    Returns
    -------
    dict
        Keyword arguments for ``fsspec.filesystem(scheme, **options)``.
    """
    payer = os.environ.get("GEOEMBED_REQUESTER_PAYS")
    if scheme in ("gs", "gcs"):
        opts: dict[str, Any] = {}
        if _emulator_gcs() is not None:
            opts["token"] = "anon"  # the emulator takes no credentials
        if payer:
            opts["requester_pays"] = payer
        return opts
    if scheme == "s3":
        opts = {}
        endpoint = _endpoint_s3()
        if endpoint:
            opts["endpoint_url"] = endpoint
        if payer:
            opts["requester_pays"] = True
        return opts
    return {}


@lru_cache(maxsize=16)
def _filesystem(scheme: str, key: tuple[tuple[str, str], ...]) -> Any:
    import fsspec

    if scheme == "gs" and _emulator_gcs() is not None:
        # the plain class: the experimental one (selected when gcsfs is imported) asks a
        # gRPC service for each bucket's type, which emulators lack (a minute per call)
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(**storage_options(scheme))
    return fsspec.filesystem(scheme, **storage_options(scheme))


def filesystem(url: str) -> Any:
    """Return the fsspec filesystem for ``url`` (cached per process and settings).

    Raises
    ------
    geoembed.errors.OptionalDependencyError
        When the client library of the scheme is not installed (``geoembed[cloud]``).
    """
    scheme = split_url(url)[0]
    package = _PACKAGES.get(scheme)
    if package is not None:
        require(package, extra="cloud", feature=f"Reading and writing {scheme}:// URLs")
    key = tuple(
        (v, os.environ.get(v, ""))
        for v in (
            "STORAGE_EMULATOR_HOST",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "GEOEMBED_REQUESTER_PAYS",
        )
    )
    return _filesystem(scheme, key)


#: GDAL's HTTP settings for every object-store read: retry 429/5xx answers and dropped
#: connections with exponential backoff (8 retries from 0.5 s), give up on a peer that
#: does not connect within 20 s and on any one request that takes longer than 60 s
_GDAL_HTTP = {
    "GDAL_HTTP_MAX_RETRY": "8",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_CONNECTTIMEOUT": "20",
    "GDAL_HTTP_TIMEOUT": "60",
}


def gdal_env() -> dict[str, str]:
    """GDAL configuration options for object storage, derived from the same variables.

    Returns
    -------
    dict
        Options for ``rasterio.Env(**gdal_env())``; empty when nothing needs setting.
    """
    env: dict[str, str] = dict(_GDAL_HTTP)
    gcs = _emulator_gcs()
    if gcs is not None:
        env["CPL_GS_ENDPOINT"] = gcs.rstrip("/") + "/"
        env["GS_NO_SIGN_REQUEST"] = "YES"
    s3 = _endpoint_s3()
    if s3 is not None:
        parsed = urlparse(s3 if "://" in s3 else f"https://{s3}")
        env["AWS_S3_ENDPOINT"] = parsed.netloc
        env["AWS_HTTPS"] = "NO" if parsed.scheme == "http" else "YES"
        env["AWS_VIRTUAL_HOSTING"] = "FALSE"
    payer = os.environ.get("GEOEMBED_REQUESTER_PAYS")
    if payer:
        env["AWS_REQUEST_PAYER"] = "requester"
        env["GS_USER_PROJECT"] = payer
    return env


def export_gdal_env() -> None:
    """Put :func:`gdal_env` into this process's environment, where GDAL reads it.

    Runs when geoembed is imported (so on every Dask worker that runs a geoembed task) and
    again before each URL is handed to GDAL; a variable already set is left alone.
    """
    for name, value in gdal_env().items():
        os.environ.setdefault(name, value)


def gdal_path(url: str) -> str:
    """Return the GDAL virtual-file-system name of ``url`` (``gs://b/k`` -> ``/vsigs/b/k``).

    Public objects need no credentials over ``https://``; for a public ``s3://`` bucket
    without AWS credentials set ``AWS_NO_SIGN_REQUEST=YES``.
    """
    export_gdal_env()
    scheme, bucket, key = split_url(url)
    if scheme == "gs":
        return f"/vsigs/{bucket}/{key}"
    if scheme == "s3":
        return f"/vsis3/{bucket}/{key}"
    if scheme in ("http", "https"):
        return f"/vsicurl/{url}"
    return url


def require_input(url: str, what: str) -> None:
    """Raise :class:`~geoembed.errors.MissingInputError` unless the object ``url`` exists.

    A Zarr store or other prefix counts as existing when it holds at least one object.

    Parameters
    ----------
    url : str
        ``gs://``, ``s3://`` or ``https://`` URL.
    what : str
        How to name the input in the message (``"labels"``, ``"training table"``...).
    """
    fs = filesystem(url)
    try:
        found = fs.exists(url)
    except PermissionError as exc:
        raise MissingInputError(
            f"The {what} {url!r} cannot be read: access denied ({exc}). Grant this account "
            "read access (on GKE: the Workload Identity service account), or set "
            "GEOEMBED_REQUESTER_PAYS=PROJECT for a requester-pays bucket."
        ) from exc
    except OSError as exc:
        raise MissingInputError(
            f"The {what} {url!r} cannot be reached ({exc}). Check the URL and the network."
        ) from exc
    if not found:
        raise MissingInputError(
            f"The {what} {url!r} does not exist. Check the bucket and object name "
            f"(list them with: gcloud storage ls / aws s3 ls {url.rsplit('/', 1)[0]}/)."
        )


def open_input(url: str, what: str, mode: str = "rb") -> Any:
    """Open an input object for reading (after :func:`require_input`)."""
    require_input(url, what)
    return filesystem(url).open(url, mode)


def check_writable_bucket(url: str, what: str) -> None:
    """Raise :class:`~geoembed.errors.OutputError` when the bucket of ``url`` is missing."""
    scheme, bucket, key = split_url(url)
    if scheme not in ("gs", "s3"):
        raise OutputError(
            f"Cannot write the {what} to {url!r}: outputs go to local paths, gs:// or s3://."
        )
    if not bucket or not key or key.endswith("/"):
        raise OutputError(
            f"Cannot write the {what} to {url!r}: give a bucket and an object name "
            f"({scheme}://BUCKET/path/name)."
        )
    fs = filesystem(url)
    try:
        found = fs.exists(f"{scheme}://{bucket}")
    except OSError as exc:
        raise OutputError(
            f"Cannot write the {what} to {url!r}: the bucket cannot be reached ({exc})."
        ) from exc
    if not found:
        raise OutputError(
            f"Cannot write the {what} to {url!r}: the bucket {bucket!r} does not exist or "
            "is not visible to this account. Create it or fix the URL."
        )


export_gdal_env()


#: modules whose exceptions are failed object-store requests
_CLIENT_MODULES = ("gcsfs", "s3fs", "aiohttp", "botocore", "aiobotocore", "google.auth")


def storage_failure(exc: BaseException) -> str | None:
    """Describe an object-store request that failed after the client's retries, in one line.

    Parameters
    ----------
    exc : BaseException
        An exception that reached the command (its causes are searched too).

    Returns
    -------
    str or None
        The message, naming the error, the endpoint in use and what to do; None when
        ``exc`` did not come from an object-store client.
    """
    from geoembed.runtime.redact import redact_url

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        module = type(e).__module__ or ""
        if module.split(".")[0] in {m.split(".")[0] for m in _CLIENT_MODULES}:
            first = (str(e).strip().splitlines() or [""])[0]
            endpoint = _emulator_gcs() or _endpoint_s3()
            where = f" at {redact_url(endpoint)}" if endpoint else ""
            return redact_url(
                f"an object-store request{where} failed after its retries "
                f"({type(e).__name__}: {first}). The store may be unavailable or "
                "overloaded, or the network down: run the command again later; nothing "
                "was written to the outputs."
            )
        stack.extend([e.__cause__, e.__context__])
    return None
