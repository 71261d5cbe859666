"""Outputs in object storage (``gs://``, ``s3://``): checks, temporary keys, the final copy.

Object stores have no rename, and the pods of a cluster share no disk, so an output URL
follows the same protocol as a local path with object-store operations:

1. :func:`check_remote_output` runs before any Dask task: the bucket must exist, and an
   existing object is replaced only with ``overwrite=True`` and only when geoembed wrote
   it (same rule as on disk).
2. Writers build the output under a temporary key next to the target
   (:func:`remote_temp_sibling`, ``.<name>.geoembed-tmp-<tag>-<host>-<pid>-<random>``);
   workers upload their parts there.
3. A single object appears in one step (a completed upload or a server-side copy is
   atomic on GCS and S3). A directory output (Zarr) is copied with up to
   :data:`COPY_CONCURRENCY` server-side copies in flight, its root metadata
   (``zarr.json``, ``.zmetadata``, ``.zgroup``, ``.zattrs``) copied last, once every other
   object is in place, so a reader never opens a store whose chunks are still missing.
4. Temporary keys are deleted on success and on failure. A killed client cannot delete
   them: they carry geoembed's temporary marker, so the next write to the same target
   removes them once stale, ``geoembed clean URL`` lists and removes those of targets never
   written again (:mod:`geoembed.export.remote_sweep`), and a bucket lifecycle rule on the
   ``.geoembed-tmp-`` marker can too.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from geoembed._cloud import check_writable_bucket, filesystem, gdal_path
from geoembed.errors import OutputError

__all__ = [
    "ROOT_METADATA",
    "check_remote_output",
    "copy_output",
    "download_directory",
    "is_geoembed_remote",
    "remote_exists",
    "remote_remove",
    "remote_temp_sibling",
    "upload_directory",
    "write_remote_text",
]

#: metadata that make a Zarr store or a model directory visible; copied last
ROOT_METADATA = (
    "zarr.json",
    ".zmetadata",
    ".zgroup",
    ".zattrs",
    "model.json",
    ".geoembed-output.json",
)


def _split(url: str) -> tuple[str, str]:
    parent, _, name = url.rstrip("/").rpartition("/")
    return parent, name


def remote_temp_sibling(url: str, tag: str) -> str:
    """Return a unique temporary key next to ``url`` (see :func:`~.atomic.temp_sibling`)."""
    from geoembed.export.atomic import TEMP_MARKER, _host

    parent, name = _split(url)
    owner = f"{_host()}-{os.getpid()}"
    return f"{parent}/.{name}{TEMP_MARKER}{tag}-{owner}-{uuid.uuid4().hex[:12]}"


def remote_exists(url: str) -> bool:
    """Whether an object, or any object under the prefix ``url/``, exists."""
    fs = filesystem(url)
    fs.invalidate_cache()
    return bool(fs.exists(url))


#: server-side copies in flight at once when a directory output is committed: enough to
#: hide each request's latency, well under GCS's initial 1000 writes/s per prefix
COPY_CONCURRENCY = 32


def _objects(fs: Any, url: str) -> list[str]:
    """Keys (without scheme) of the object ``url`` or of every object under ``url/``."""
    fs.invalidate_cache()
    return sorted(str(k) for k in fs.find(url))


def _delete(fs: Any, keys: list[str]) -> None:
    """Delete ``keys`` in as few requests as the store allows.

    S3 takes 1000 keys per request, GCS 100 per batch request (emulators: one request
    per key); keys already gone are fine.
    """
    if not keys:
        return
    try:
        fs.rm(keys)
    except FileNotFoundError:
        pass
    fs.invalidate_cache()


def remote_remove(url: str, *, retries: int = 5, delay: float = 0.2) -> None:
    """Delete the object ``url`` or every object under it; missing is fine.

    One listing, then batched deletes. Tasks of a failed job may still be writing under
    ``url``: the prefix is listed again until it is empty (``retries`` times).
    """
    fs = filesystem(url)
    for attempt in range(retries):
        try:
            keys = _objects(fs, url)
            if not keys:
                return
            _delete(fs, keys)
        except FileNotFoundError:
            return
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(delay * 2**attempt)


def _read_json(url: str) -> Any:
    try:
        fs = filesystem(url)
        if fs.size(url) > 64 << 20:
            return None
        return json.loads(fs.cat_file(url))
    except (OSError, ValueError):
        return None


def is_geoembed_remote(url: str) -> bool:
    """Whether the existing object or prefix ``url`` was written by geoembed.

    Same marks as on disk (:func:`geoembed.export.outputs.is_geoembed_output`): the
    ``geoembed_version`` tag of a COG, attribute of a Zarr store or key of a JSON report,
    or the marker file of a directory.
    """
    from geoembed.export.outputs import MARKER_FILE

    fs = filesystem(url)
    if fs.isdir(url):
        marker = _read_json(f"{url}/{MARKER_FILE}")
        if isinstance(marker, dict) and marker.get("written_by") == "geoembed":
            return True
        meta = _read_json(f"{url}/zarr.json") or {}
        attrs = meta.get("attributes", {}) if isinstance(meta, dict) else {}
        return isinstance(attrs, dict) and "geoembed_version" in attrs
    if url.lower().endswith(".json"):
        from geoembed.export.outputs import is_geoembed_json

        return is_geoembed_json(_read_json(url))
    import rasterio

    try:
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(gdal_path(url)) as src:
            return "geoembed_version" in src.tags()
    except Exception:  # not a raster: not a geoembed COG
        return False


def check_remote_output(url: str, *, overwrite: bool = False, what: str = "output") -> str:
    """Check that the output URL can be written, before any computation.

    Parameters
    ----------
    url : str
        ``gs://bucket/key`` or ``s3://bucket/key``.
    overwrite : bool, default False
        Allow replacing an existing output that geoembed wrote.
    what : str
        How to name the output in messages.

    Returns
    -------
    str
        The URL, without a trailing slash.

    Raises
    ------
    OutputError
        Missing bucket, unsupported scheme, or an existing object that may not be replaced.
    """
    url = str(url).rstrip("/")
    check_writable_bucket(url, what)
    if remote_exists(url):
        if not overwrite:
            raise OutputError(
                f"The {what} {url!r} already exists. Pass overwrite=True to replace "
                "it, or choose another URL."
            )
        if not is_geoembed_remote(url):
            raise OutputError(
                f"Refusing to replace {url!r} with the {what}: it was not written by "
                "geoembed. geoembed only replaces its own outputs, even with overwrite=True; "
                "choose another URL or delete it yourself."
            )
    return url


def copy_output(stage: str, target: str, *, directory: bool) -> None:
    """Copy a finished temporary output to its final key (root metadata last).

    A single object is one server-side copy (atomic). For a directory, an existing
    target is removed first (``overwrite`` was checked before any task ran), then every
    object but the root metadata (:data:`ROOT_METADATA`) is copied, up to
    :data:`COPY_CONCURRENCY` server-side copies at a time, and only once they have all
    succeeded are the root metadata copied, one after the other: a reader never opens a
    store whose chunks are still missing. The stage is left as it is (its owner removes
    it with :func:`remote_remove`).
    """
    fs = filesystem(stage)
    if not directory:
        fs.invalidate_cache()
        fs.copy([stage], [target])
        return
    remote_remove(target)
    keys = _objects(fs, stage)
    prefix = fs._strip_protocol(stage).rstrip("/") + "/"
    scheme = stage.split("://", 1)[0]
    rel = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
    body = [r for r in rel if r not in ROOT_METADATA]
    last = [r for r in ROOT_METADATA if r in rel]
    if body:
        fs.copy(
            [f"{scheme}://{prefix}{r}" for r in body],
            [f"{target}/{r}" for r in body],
            batch_size=COPY_CONCURRENCY,
        )
    for r in reversed(last):  # zarr.json and .zmetadata: the very last ones
        fs.copy([f"{scheme}://{prefix}{r}"], [f"{target}/{r}"])
    fs.invalidate_cache()


def write_remote_text(url: str, text: str) -> None:
    """Write a small text object in one upload (it appears complete or not at all)."""
    filesystem(url).pipe_file(url, text.encode())


def upload_directory(local: Path, url: str) -> str:
    """Upload the files of the directory ``local`` under ``url``, root metadata last.

    Readers look for the root metadata (``model.json``, ``zarr.json``...) first, so a
    directory whose upload was interrupted is never taken for a complete one.
    """
    from geoembed._cloud import filesystem

    fs = filesystem(url)
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    for name in sorted(names, key=lambda n: n in ROOT_METADATA):
        fs.put_file(str(local / name), f"{url}/{name}")
    return url


def download_directory(url: str, local: Path) -> Path:
    """Download the objects directly under ``url`` into the new directory ``local``."""
    from geoembed._cloud import filesystem

    fs = filesystem(url)
    local.mkdir()
    for key in fs.ls(url, detail=False):
        fs.get_file(key, str(local / str(key).rpartition("/")[2]))
    return local
