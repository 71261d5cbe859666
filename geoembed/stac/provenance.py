"""Provenance of a command's outputs: its inputs, parameters, versions and time.

:class:`Provenance` is what an :class:`~geoembed.export.outputs.OutputSet` writes into the
STAC Item of each output. Every field has a default, so a caller that passes nothing still
gets the inputs given to the output set, the parameters of the running ``geoembed``
command (from the command line) and the versions of geoembed and its key dependencies.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["HASH_LIMIT", "Provenance", "dependency_versions", "describe_input", "sha256_file"]

#: inputs larger than this are described by size and modification time, not a hash
HASH_LIMIT = 256 << 20
#: distributions whose versions every Item records (when installed)
KEY_DEPENDENCIES = (
    "numpy",
    "xarray",
    "dask",
    "rasterio",
    "rioxarray",
    "zarr",
    "scikit-learn",
    "pystac",
)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Provenance:
    """How a set of outputs was made.

    Parameters
    ----------
    command : str, optional
        The command (``"classify"``...). Default: the running ``geoembed`` sub-command,
        if any.
    parameters : mapping, optional
        The parameters that shaped the outputs. Default: those of the running
        ``geoembed`` sub-command (its command-line options), if any.
    inputs : iterable, optional
        Paths or URLs read by the command. Default: the ``inputs`` of the output set.
    """

    command: str | None = None
    parameters: Mapping[str, Any] | None = None
    inputs: Iterable[Any] | None = None
    #: free-form additions (``{"year": 2024}``...), written as they are
    extra: Mapping[str, Any] = field(default_factory=dict)

    def resolved(self, inputs: Iterable[Any]) -> Provenance:
        """Fill the defaults: the running CLI command and ``inputs`` when not given."""
        command, parameters = self.command, self.parameters
        if command is None or parameters is None:
            cli_command, cli_params = _click_context()
            command = command if command is not None else cli_command
            parameters = parameters if parameters is not None else cli_params
        return Provenance(
            command=command,
            parameters=dict(parameters or {}),
            inputs=list(self.inputs if self.inputs is not None else inputs),
            extra=dict(self.extra),
        )

    def properties(self) -> dict[str, Any]:
        """Return the ``geoembed:*`` properties of an Item (secrets redacted)."""
        from geoembed._version import __version__
        from geoembed.runtime.redact import redact_obj

        return {
            "geoembed:version": __version__,
            "geoembed:command": self.command,
            "geoembed:parameters": redact_obj(_jsonable(dict(self.parameters or {}))),
            "geoembed:inputs": [describe_input(i) for i in _flatten(self.inputs or ())],
            "geoembed:dependencies": dependency_versions(),
            **{f"geoembed:{k}": _jsonable(v) for k, v in self.extra.items()},
        }


def _click_context() -> tuple[str | None, dict[str, Any]]:
    try:
        import click
    except ImportError:  # click is a dependency; keep the library usable without it
        return None, {}
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None, {}
    return ctx.info_name, dict(ctx.params)


def _flatten(items: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, list | tuple):
            out.extend(_flatten(item))
        elif isinstance(item, str | os.PathLike):
            out.append(str(item))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 of a file's bytes (hex), read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def describe_input(item: str) -> dict[str, Any]:
    """Describe one input: a hash when cheap, else size and time, or a version.

    Parameters
    ----------
    item : str
        A local path or a ``gs://`` / ``s3://`` / ``https://`` URL.

    Returns
    -------
    dict
        ``href`` (secrets redacted) and, for a local file up to :data:`HASH_LIMIT`,
        ``sha256`` and ``size``; a larger file or a directory: ``size`` and ``modified``;
        an object-store URL: ``size`` and the store's ``etag``/``md5``/``generation``
        when it gives them. An input that cannot be read is described by ``href`` alone.
    """
    from geoembed.export.atomic import is_remote
    from geoembed.runtime.redact import redact_url

    out: dict[str, Any] = {"href": redact_url(item)}
    if is_remote(item) or "://" in item:
        out.update(_describe_url(item))
        return out
    p = Path(item).expanduser()
    try:
        if p.is_file():
            size = p.stat().st_size
            out["size"] = size
            if size <= HASH_LIMIT:
                out["sha256"] = sha256_file(p)
            else:
                out["modified"] = _mtime(p)
        elif p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file()]
            out["size"] = sum(f.stat().st_size for f in files)
            out["files"] = len(files)
            out["modified"] = _mtime(p)
    except OSError:
        pass
    return out


def _mtime(p: Path) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat(timespec="seconds")


def _describe_url(url: str) -> dict[str, Any]:
    if not url.startswith(("gs://", "s3://")):
        return {}
    try:
        from geoembed._cloud import filesystem

        info = filesystem(url).info(url)
    except Exception:  # unreachable or missing: the href alone identifies it
        return {}
    out: dict[str, Any] = {}
    if info.get("type") == "file" and info.get("size") is not None:
        out["size"] = int(info["size"])
    for key in ("ETag", "etag", "md5Hash", "generation", "VersionId"):
        if info.get(key):
            out[key.lower()] = str(info[key]).strip('"')
    return out


def dependency_versions() -> dict[str, str]:
    """Versions of geoembed's key dependencies (and GDAL), those installed."""
    versions = {}
    for name in KEY_DEPENDENCIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return versions
