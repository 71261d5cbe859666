"""Output-path checks and temporary-name helpers shared by the writers.

Every writer follows the same protocol:

1. :func:`check_output_path` runs before any Dask task: the parent directory must exist
   and be writable, and the target must not exist unless ``overwrite=True``.
2. The output is built under a temporary name next to the target (same filesystem, so
   the final :func:`os.replace` is atomic), named by :func:`temp_sibling`.
3. After validation the temporary output is moved into place with :func:`replace_path`;
   on failure it is removed with :func:`remove_path`.

Temporary names carry the host name and process id of the process that made them
(``.<name>.geoembed-tmp-<tag>-<host>-<pid>-<random>``), so a later run can tell the
leftovers of a killed process from the work in progress of a live one (see
:mod:`geoembed.export.outputs`). An existing target is replaced only when geoembed wrote
it (:func:`geoembed.export.outputs.is_geoembed_output`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from geoembed.errors import OutputError

__all__ = [
    "SCRATCH_ENV",
    "TEMP_MARKER",
    "atomic_directory",
    "check_output_path",
    "disk_full_as_enospc",
    "disk_full_error",
    "is_remote",
    "remove_path",
    "replace_path",
    "scratch_dir",
    "temp_sibling",
]

#: part of every temporary name made by geoembed writers
TEMP_MARKER = ".geoembed-tmp-"


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL (``gs://``, ``s3://``...) rather than a local path."""
    return "://" in str(path)


def check_output_path(
    path: str | os.PathLike[str], *, overwrite: bool = False, what: str = "output"
) -> Path:
    """Check that ``path`` can be written, before any computation.

    Parameters
    ----------
    path : str or path-like
        The final output path.
    overwrite : bool, default False
        Allow replacing an existing output (it is replaced only after the new one is
        complete and valid).
    what : str
        How to name the output in messages.

    Returns
    -------
    pathlib.Path
        The absolute path.

    Raises
    ------
    OutputError
        When the parent is missing, is not a directory or is not writable, or when the
        target exists and ``overwrite`` is false. The message says how to fix it.
    """
    if is_remote(path):
        raise OutputError(
            f"Cannot write the {what} to {str(path)!r}: only local paths are supported. "
            "Write to a local path (or a mounted bucket) and upload the finished file."
        )
    target = Path(path).expanduser().absolute()
    parent = target.parent
    if not parent.exists():
        raise OutputError(
            f"Cannot write the {what} to {str(path)!r}: the directory {str(parent)!r} does "
            f"not exist. Create it first (mkdir -p {parent})."
        )
    if not parent.is_dir():
        raise OutputError(
            f"Cannot write the {what} to {str(path)!r}: {str(parent)!r} is a file, not a "
            "directory. Choose an output path inside a directory."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"Cannot write the {what} to {str(path)!r}: the directory {str(parent)!r} is not "
            "writable. Choose another output directory or fix its permissions."
        )
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputError(
                f"The {what} {str(path)!r} already exists. Pass overwrite=True to "
                "replace it, or choose another path."
            )
        from geoembed.export.outputs import require_geoembed_output

        require_geoembed_output(target, what=what, given=str(path))
    # A probe catches what os.access cannot see (read-only mounts, quotas, ACLs).
    probe = temp_sibling(target, "probe")
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(
            f"Cannot write the {what} to {str(path)!r}: creating a file in {str(parent)!r} "
            f"failed ({exc.strerror or exc}). Choose another output directory."
        ) from exc
    return target


def _host() -> str:
    """Return this machine's name, made safe for a file name."""
    name = socket.gethostname() or "localhost"
    return "".join(c if c.isalnum() or c in "._" else "_" for c in name)


#: free space below which a failed write is blamed on a full disk
_FULL_BYTES = 1 << 20


def disk_full_error(path: str | os.PathLike[str], exc: BaseException) -> OSError | None:
    """Return an ``ENOSPC`` error when a write to ``path`` failed because the disk is full.

    GDAL reports a full disk on stderr and then fails later with an unrelated message (a
    truncated directory when the file is read back), so the free space is checked while
    the failed write still holds its space.

    Parameters
    ----------
    path : str or path-like
        A file or directory on the filesystem written to.
    exc : BaseException
        The error the write raised.

    Returns
    -------
    OSError or None
        ``OSError(ENOSPC, ...)`` to raise from ``exc``, or None when the disk is not full.
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return None  # already says so
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= _FULL_BYTES:
        return None
    return OSError(errno.ENOSPC, f"No space left on device writing {str(path)!r} ({exc})")


@contextlib.contextmanager
def disk_full_as_enospc(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an error of the block as ``ENOSPC`` when the disk of ``path`` is full.

    See :func:`disk_full_error`; any other error passes through unchanged.
    """
    try:
        yield
    except Exception as exc:
        full = disk_full_error(path, exc)
        if full is not None:
            raise full from exc
        raise


#: environment variable naming the local directory for geoembed's scratch files
SCRATCH_ENV = "GEOEMBED_TMPDIR"


def scratch_dir() -> str | None:
    """Return the local directory for this process's scratch files, or None for the default.

    Writers to object storage encode COG parts and build the assembled COG on local disk
    (see :mod:`geoembed.export.cog_assembly` for the bound). The directory is
    ``$GEOEMBED_TMPDIR`` when set (created if missing), else None: Python's and GDAL's
    default (``$TMPDIR``, then ``/tmp``). Read in the process that writes, so each Dask
    worker uses its own setting (on GKE: the pod's scratch volume).

    Raises
    ------
    OutputError
        When ``$GEOEMBED_TMPDIR`` names a path that is not a writable directory.
    """
    path = os.environ.get(SCRATCH_ENV)
    if not path:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{SCRATCH_ENV}={path!r} cannot be used for scratch files ({exc}); point it at a "
            "writable local directory, or unset it to use $TMPDIR."
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(
            f"{SCRATCH_ENV}={path!r} is not writable; point it at a writable local "
            "directory, or unset it to use $TMPDIR."
        )
    return path


def temp_sibling(target: Path, tag: str) -> Path:
    """Return a unique hidden temporary name next to ``target`` (same filesystem).

    The name holds ``tag`` (letters only), this host and this process id, so that
    :func:`geoembed.export.outputs.stale_temporaries` can tell when its owner is gone.
    """
    owner = f"{_host()}-{os.getpid()}"
    return target.parent / f".{target.name}{TEMP_MARKER}{tag}-{owner}-{uuid.uuid4().hex[:12]}"


def remove_path(path: Path, *, retries: int = 5, delay: float = 0.1) -> None:
    """Remove a file or directory tree, retrying while late writers finish.

    Tasks of a failed Dask job can still be running when the error reaches the caller;
    they never re-create the temporary directory, so once it is gone it stays gone.
    """
    for attempt in range(retries):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(delay)


def replace_path(tmp: Path, target: Path, *, overwrite: bool, what: str = "output") -> None:
    """Move a finished temporary output to its final name.

    Files are moved with :func:`os.replace` (atomic). A directory replacing an existing
    directory (``overwrite=True``) is swapped in two renames, so the old output stays
    readable until the new one is in place.

    Raises
    ------
    OutputError
        When the target appeared meanwhile and ``overwrite`` is false.
    """
    exists = target.exists() or target.is_symlink()
    if exists and not overwrite:
        raise OutputError(
            f"The {what} {str(target)!r} appeared while it was being written. Pass "
            "overwrite=True to replace it, or choose another path."
        )
    if exists and target.is_dir() and not target.is_symlink():
        old = temp_sibling(target, "old")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)
            raise
        remove_path(old)
        return
    if exists and tmp.is_dir():
        target.unlink()
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool, what: str = "output") -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``target`` on success.

    Yields the temporary directory (next to ``target``, same filesystem), which already
    holds geoembed's ownership marker (:data:`geoembed.export.outputs.MARKER_FILE`). When the block
    finishes it replaces ``target`` with :func:`replace_path`; when it raises, the
    temporary directory is removed and ``target`` is left as it was.
    """
    from geoembed.export.outputs import write_marker

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target, "dir")
    tmp.mkdir()
    try:
        write_marker(tmp, what)
        yield tmp
        replace_path(tmp, target, overwrite=overwrite, what=what)
    except BaseException:
        remove_path(tmp)
        raise
