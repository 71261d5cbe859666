"""The output-safety contract of every geoembed command, in one place.

* **geoembed only replaces what geoembed wrote.** An existing output is replaced (with
  ``overwrite=True``) only when it carries geoembed's mark: the ``geoembed_version`` tag
  of a COG, the ``geoembed_version`` attribute of a Zarr store, the ``geoembed_version``
  key of a JSON report, or the marker file :data:`MARKER_FILE` inside a directory that
  geoembed created (model directories). A folder or file that geoembed did not write is
  never replaced, whatever the flags; nor is an input of the same command.
* **All outputs of a command appear together, or none does.** An :class:`OutputSet`
  checks every output before any task runs, hands each writer a temporary name next to
  its target (:meth:`OutputSet.stage`), and :meth:`OutputSet.commit` renames them all in
  one final step, rolling back what it renamed if a rename fails or is interrupted.
* **Temporary files are removed on every exit path.** Leaving the ``with OutputSet``
  block by an exception (a failed task, ``KeyboardInterrupt``, the ``SystemExit`` the CLI
  raises on SIGTERM) removes every temporary of the set. A process killed outright
  (SIGKILL) cannot clean up; its temporaries carry its host and process id, so the next
  run writing to the same directory removes them (:func:`remove_stale_temporaries`) and
  ``geoembed verify DIR`` reports them.
* **A full disk is one clear error**: :class:`~geoembed.errors.OutputError`, with nothing
  partial left behind.
* **Every output describes itself.** Each output gets a STAC Item beside it
  (``map.tif`` → ``map.tif.stac.json``, see :mod:`geoembed.stac`) with its grid, bands,
  classes, checksums and provenance (:class:`~geoembed.stac.Provenance`). The Items are
  outputs of the set like the others: checked before any task runs, built from the
  staged outputs at :meth:`OutputSet.commit` and renamed in the same step, so an
  interrupted command leaves neither an output nor an Item.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from geoembed._rio_env import local_env
from geoembed._version import __version__
from geoembed.errors import OutputError, OutputValidationError
from geoembed.export.atomic import (
    TEMP_MARKER,
    _host,
    check_output_path,
    is_remote,
    remove_path,
    temp_sibling,
)

if TYPE_CHECKING:
    from geoembed.stac.provenance import Provenance

__all__ = [
    "GEOPARQUET_MARK",
    "MARKER_FILE",
    "OutputSet",
    "StaleTemporary",
    "is_geoembed_output",
    "owner_gone",
    "remove_stale_temporaries",
    "require_geoembed_output",
    "stale_temporaries",
    "sweep_discarded",
    "unowned_temporaries",
    "write_marker",
]

#: marker file inside every directory geoembed creates (model directories)
MARKER_FILE = ".geoembed-output.json"
#: schema metadata key of the GeoParquet tables geoembed writes (its version)
GEOPARQUET_MARK = "geoembed_version"
#: parses ``.geoembed-tmp-<tag>-<host>-<pid>-<random>`` in a temporary name
_TEMP_RE = re.compile(
    re.escape(TEMP_MARKER) + r"(?P<tag>[a-z]+)-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{12}"
)
_MAX_JSON_BYTES = 64 << 20
_MAX_ONNX_BYTES = 2 << 30
#: output sets discarded in this process; swept again once the Dask workers are gone
_DISCARDED: list[OutputSet] = []
_DISCARDED_LOCK = threading.Lock()
_SWEEP_AT_EXIT = False


def write_marker(directory: Path, what: str) -> None:
    """Mark ``directory`` as created by geoembed (so that it may replace it later)."""
    marker = {
        "written_by": "geoembed",
        "geoembed_version": __version__,
        "what": what,
        "host": _host(),
        "pid": os.getpid(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2))


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _zarr_attrs(path: Path) -> dict[str, Any]:
    meta = _read_json(path / "zarr.json")
    if isinstance(meta, dict):
        attrs = meta.get("attributes")
        return attrs if isinstance(attrs, dict) else {}
    attrs = _read_json(path / ".zattrs")
    return attrs if isinstance(attrs, dict) else {}


def _cog_tags(path: Path) -> dict[str, str]:
    import rasterio

    try:
        with local_env(GDAL_PAM_ENABLED="NO"), rasterio.open(path) as src:
            return dict(src.tags())
    except Exception:  # not a raster, unreadable...: not a geoembed COG
        return {}


def is_geoembed_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an output that geoembed wrote (and so may replace).

    Parameters
    ----------
    path : str or path-like
        A file or directory.

    Returns
    -------
    bool
        True for a directory holding :data:`MARKER_FILE`, a Zarr store or a model
        directory written by geoembed, a COG with the ``geoembed_version`` tag, a JSON
        report with a ``geoembed_version`` key, a GeoParquet table with the
        :data:`GEOPARQUET_MARK` schema metadata, an ONNX model exported by geoembed
        (producer ``geoembed``) or the sidecar JSON of one (same sha256). False for
        anything else, symbolic links included. A PNG figure is geoembed's when it carries
        the ``Software: geoembed ...`` text that :mod:`geoembed.viz.panel` writes.
    """
    p = Path(path)
    if p.is_symlink() or not p.exists():
        return False
    if p.is_dir():
        marker = _read_json(p / MARKER_FILE)
        if isinstance(marker, dict) and marker.get("written_by") == "geoembed":
            return True
        if "geoembed_version" in _zarr_attrs(p):
            return True
        meta = _read_json(p / "model.json")  # model directories saved before the marker
        return isinstance(meta, dict) and str(meta.get("format", "")).startswith("geoembed.")
    if p.suffix.lower() == ".json":
        payload = _read_json(p)
        if is_geoembed_json(payload):
            return True
        return isinstance(payload, dict) and _sidecar_of_geoembed_onnx(p, payload)
    if p.suffix.lower() == ".parquet":
        return _parquet_marked(p)
    if p.suffix.lower() == ".onnx":
        return _onnx_by_geoembed(p)
    if p.suffix.lower() == ".png":  # figures: the PNG Software text geoembed writes
        return _png_by_geoembed(p)
    if p.suffix.lower() == ".skops":  # estimator files: geoembed's zip comment
        import zipfile

        try:
            with zipfile.ZipFile(p) as archive:
                return archive.comment == b"written by geoembed"
        except (OSError, zipfile.BadZipFile):
            return False
    return "geoembed_version" in _cog_tags(p)


def is_geoembed_json(payload: Any) -> bool:
    """Whether a JSON document is geoembed's: a report, or a STAC Item it wrote."""
    if not isinstance(payload, dict):
        return False
    if "geoembed_version" in payload:
        return True
    props = payload.get("properties")
    return (
        payload.get("type") == "Feature" and isinstance(props, dict) and "geoembed:version" in props
    )


def _png_by_geoembed(path: Path) -> bool:
    """Tell whether a PNG carries the ``Software: geoembed ...`` text geoembed's figures have."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            text = getattr(img, "text", {}) or {}
    except Exception:  # not a PNG, or unreadable: not geoembed's
        return False
    return str(text.get("Software", "")).startswith("geoembed ")


def _parquet_marked(path: Path) -> bool:
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
    except Exception:  # not a Parquet file, or pyarrow missing: not geoembed's
        return False
    return GEOPARQUET_MARK.encode() in meta


def _onnx_by_geoembed(path: Path) -> bool:
    """Tell whether ``geoembed train-cnn`` exported this ONNX model (producer, metadata)."""
    try:
        import onnx

        if path.stat().st_size > _MAX_ONNX_BYTES:
            return False
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file, or onnx missing: not geoembed's
        return False
    props = {p.key: p.value for p in proto.metadata_props}
    return proto.producer_name == "geoembed" and "geoembed_model" in props


def _sidecar_of_geoembed_onnx(path: Path, payload: dict[str, Any]) -> bool:
    """Tell whether this sidecar JSON describes the geoembed-exported ONNX model next to it."""
    import hashlib

    model = path.with_suffix(".onnx")
    if not model.is_file() or model.is_symlink() or not _onnx_by_geoembed(model):
        return False
    return payload.get("sha256") == hashlib.sha256(model.read_bytes()).hexdigest()


def require_geoembed_output(
    target: Path, *, what: str = "output", given: str | None = None
) -> None:
    """Raise :class:`OutputError` unless the existing ``target`` was written by geoembed.

    Parameters
    ----------
    target : pathlib.Path
        An existing path that a command is about to replace.
    what : str
        How to name the output in the message.
    given : str, optional
        The path as the user gave it (default: ``target``).
    """
    if is_geoembed_output(target):
        return
    shown = given if given is not None else str(target)
    if target.is_symlink():
        kind = "a symbolic link"
    elif target.is_dir():
        n = sum(1 for _ in target.iterdir())
        kind = f"a directory geoembed did not create ({n} entries)"
    else:
        kind = "a file geoembed did not write"
    raise OutputError(
        f"Refusing to replace {shown!r} with the {what}: it is {kind}. geoembed only replaces "
        "its own outputs, even with overwrite=True, and leaves everything else "
        "untouched. Give the output a new path (a file name, or a new sub-directory for a "
        "directory output) or move the existing one away yourself."
    )


@dataclass(frozen=True)
class StaleTemporary:
    """A temporary left by a geoembed process that no longer runs.

    Attributes
    ----------
    path : pathlib.Path
        The temporary file or directory.
    tag : str
        What it was (``out``: a staged output, ``cog``: COG parts, ``dir``: a directory
        being built, ``old``: a replaced output kept until the commit finished).
    host, pid
        The process that made it.
    """

    path: Path
    tag: str
    host: str
    pid: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: gone for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_temporaries(directory: str | os.PathLike[str]) -> list[StaleTemporary]:
    """Temporaries in ``directory`` whose geoembed process is gone (killed, crashed).

    Only names carrying geoembed's temporary marker with a host and process id are
    considered; a temporary made on another host (a shared volume) or by a process that
    still runs is never stale.

    Parameters
    ----------
    directory : str or path-like
        The directory of an output.

    Returns
    -------
    list of StaleTemporary
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for entry in sorted(d.iterdir()):
        first = _TEMP_RE.search(entry.name)
        if first is not None and owner_gone(entry.name):
            found.append(StaleTemporary(entry, first["tag"], first["host"], int(first["pid"])))
    return found


def owner_gone(name: str) -> bool:
    """Whether the temporary ``name`` names its owners and all ran here and are gone.

    A name without an owner, or one made on another host (a shared volume, another pod)
    or by a process that still runs, is never taken for a dead run's.
    """
    owners = list(_TEMP_RE.finditer(name))
    host = _host()
    return bool(owners) and all(m["host"] == host and not _pid_alive(int(m["pid"])) for m in owners)


def unowned_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Temporaries in ``directory`` that name no owner (made by an earlier geoembed).

    They cannot be told from the work of a running process, so they are only reported
    (by ``geoembed verify DIR``), never removed automatically.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    return [e for e in sorted(d.iterdir()) if TEMP_MARKER in e.name and not _TEMP_RE.search(e.name)]


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that killed geoembed processes left in ``directory``.

    A replaced output that a killed commit had moved aside (tag ``old``) is moved back
    when its target is missing, so a kill in the middle of a commit never loses the old
    output; otherwise it is removed like any other leftover.

    Returns
    -------
    list of pathlib.Path
        What was removed or restored.
    """
    done = []
    for stale in stale_temporaries(directory):
        name = stale.path.name
        if stale.tag == "old" and name.startswith("."):
            target = stale.path.with_name(name[1 : name.index(TEMP_MARKER)])
            if not target.exists() and not target.is_symlink():
                os.replace(stale.path, target)
                done.append(stale.path)
                continue
        remove_path(stale.path)
        done.append(stale.path)
    return done


def _input_paths(inputs: Iterable[Any]) -> list[Path]:
    paths = []
    for item in inputs:
        if isinstance(item, list | tuple):
            paths.extend(_input_paths(item))
        elif isinstance(item, str | os.PathLike) and not is_remote(item):
            p = Path(item).expanduser()
            if p.exists():
                paths.append(p.resolve())
    return paths


def _is_disk_full(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "no space left on device" in str(e).lower():
            return True
        stack.extend([e.__cause__, e.__context__])
    return False


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver them.

    Python runs signal handlers in the main thread whichever thread the signal reached,
    so the handlers themselves are swapped (masking the main thread would not do).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in held}
    for s in held:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


@dataclass
class _Output:
    what: str
    target: Path | str
    given: str
    directory: bool
    stage: Path | str | None = None
    #: an object-store URL (``target`` and ``stage`` are then strings)
    remote: bool = False
    #: for a STAC Item: the ``what`` of the output it describes
    item_of: str | None = None


class OutputSet:
    """All outputs of one command: checked first, built aside, made visible together.

    Parameters
    ----------
    overwrite : bool, default False
        Allow replacing existing outputs, when geoembed wrote them.
    inputs : iterable, optional
        The command's inputs (paths; anything else is ignored). No output may be an
        input, or contain one.
    provenance : Provenance, optional
        How the outputs were made, written into their STAC Items (default: the
        ``inputs``, and the command and parameters of the running ``geoembed`` command
        line; see :class:`~geoembed.stac.Provenance`). Also :meth:`set_provenance`.
    stac : bool, default True
        Write a STAC Item beside each output (``NAME.stac.json``).
    resume : bool, default False
        Stage every output under a name that the same command run again finds
        (:func:`geoembed.export.resume.resume_sibling`) instead of a unique one, so that
        writers given ``resume=self.resume`` can reuse the chunks an interrupted (killed)
        run had finished. The temporaries are still removed on every exit path this
        process sees; only a killed process leaves them, for the next ``--resume``.

    Examples
    --------
    >>> outputs = OutputSet(overwrite=True, inputs=[source])  # doctest: +SKIP
    >>> outputs.add("class map", "map.tif")  # doctest: +SKIP
    >>> with outputs:  # doctest: +SKIP
    ...     write_cog(classes, outputs.stage("class map"))
    ...     outputs.commit()
    """

    def __init__(
        self,
        *,
        overwrite: bool = False,
        inputs: Iterable[Any] = (),
        provenance: Provenance | None = None,
        stac: bool = True,
        resume: bool = False,
    ) -> None:
        self.overwrite = overwrite
        self.resume = resume
        inputs = list(inputs)
        self._given_inputs = inputs
        self._inputs = _input_paths(inputs)
        self._remote_inputs = _input_urls(inputs)
        self._outputs: dict[str, _Output] = {}
        self._provenance = provenance
        self.stac = stac
        self.committed = False

    def set_provenance(self, provenance: Provenance) -> None:
        """Record how the outputs were made (see :class:`~geoembed.stac.Provenance`).

        Call it any time before :meth:`commit`; the parameters known only once the job
        ran (a cross-validation choice, a fitted threshold) can be given then.
        """
        self._provenance = provenance

    def add(
        self, what: str, path: str | os.PathLike[str] | None, *, directory: bool = False
    ) -> Path | str | None:
        """Check one output, before any task runs; return its absolute path (or URL).

        Parameters
        ----------
        what : str
            How to name it in messages ("class map", "model directory"...); also the
            key for :meth:`stage` and :meth:`target`.
        path : str or path-like or None
            The output path, or a ``gs://`` / ``s3://`` URL (see
            :mod:`geoembed.export.remote`); None: not asked for, returns None.
        directory : bool, default False
            Whether the output is a directory (Zarr store, model directory).

        Raises
        ------
        OutputError
            Unwritable directory; existing output without ``overwrite``; an existing path
            that geoembed did not write; an input of the command; a path shared with
            another output; a file where a directory goes or the reverse.
        """
        if path is None:
            return None
        if what in self._outputs:
            raise OutputError(f"the {what} was given twice.")
        given = str(path)
        if is_remote(path):
            return self._add_remote(what, given, directory)
        if not is_remote(path):  # inputs first: their message names both paths
            self._check_not_input(Path(path).expanduser().absolute(), what, given)
        target = check_output_path(path, overwrite=self.overwrite, what=what)
        resolved = target.resolve()
        for other in self._outputs.values():
            if not other.remote and Path(other.target).resolve() == resolved:
                raise OutputError(
                    f"The {what} and the {other.what} share the path {given!r}; give each its own."
                )
        if target.exists() and target.is_dir() != directory:
            have, want = ("directory", "file") if target.is_dir() else ("file", "directory")
            raise OutputError(
                f"The {what} {given!r} is a {want}, but a {have} exists there. Choose another path."
            )
        remove_stale_temporaries(target.parent)
        self._outputs[what] = _Output(what, target, given, directory)
        if self.stac:
            self._add_item(what)
        return target

    def _add_item(self, what: str) -> None:
        """Register the STAC Item of output ``what`` as one more output of the set."""
        from geoembed.stac.item import item_path

        out = self._outputs[what]
        key = _item_key(what)
        given = str(item_path(out.given))
        if out.remote:
            from geoembed.export.remote import check_remote_output

            url = check_remote_output(
                str(item_path(str(out.target))), overwrite=self.overwrite, what=key
            )
            self._outputs[key] = _Output(key, url, given, False, remote=True, item_of=what)
            return
        target = Path(item_path(Path(out.target)))
        self._check_not_input(target, key, given)
        for other in self._outputs.values():
            if not other.remote and Path(other.target).resolve() == target.resolve():
                raise OutputError(
                    f"The {key} and the {other.what} share the path {given!r}; give each its "
                    "own output path."
                )
        check_output_path(target, overwrite=self.overwrite, what=key)
        self._outputs[key] = _Output(key, target, given, False, item_of=what)

    def _add_remote(self, what: str, given: str, directory: bool) -> str:
        from geoembed.export.remote import check_remote_output

        url = given.rstrip("/")
        for inp in self._remote_inputs:
            if inp == url or inp.startswith(url + "/"):
                raise OutputError(
                    f"The {what} {given!r} is (or contains) {inp!r}, an input of this "
                    "command; writing it would destroy the input. Choose another URL."
                )
        for other in self._outputs.values():
            if other.remote and other.target == url:
                raise OutputError(
                    f"The {what} and the {other.what} share the URL {given!r}; give each its own."
                )
        target = check_remote_output(url, overwrite=self.overwrite, what=what)
        from geoembed.export.remote_sweep import sweep_target

        sweep_target(target, keep_resumable=self.resume)
        self._outputs[what] = _Output(what, target, given, directory, remote=True)
        if self.stac:
            self._add_item(what)
        return target

    def _check_not_input(self, target: Path, what: str, given: str) -> None:
        resolved = target.resolve()
        for inp in self._inputs:
            if resolved == inp or (target.exists() and os.path.samefile(target, inp)):
                raise OutputError(
                    f"The {what} {given!r} is also an input of this command ({str(inp)!r}); "
                    "writing it would destroy the input. Choose another output path."
                )
            if inp.is_relative_to(resolved):
                raise OutputError(
                    f"The {what} {given!r} contains {str(inp)!r}, an input of this command; "
                    "replacing it would destroy the input. Choose another output path."
                )

    def __contains__(self, what: str) -> bool:
        return what in self._outputs

    def target(self, what: str) -> Path | str:
        """Return the final path (or URL) of output ``what``."""
        return self._outputs[what].target

    def stage(self, what: str) -> Path | str:
        """Return the temporary path the writer of ``what`` writes to (not created here).

        For an object-store output this is a temporary key (a URL) next to the target.
        """
        out = self._outputs[what]
        if out.stage is None and self.resume:
            out.stage = _resume_stage(out)
        if out.stage is None:
            if out.remote:
                from geoembed.export.remote import remote_temp_sibling

                out.stage = remote_temp_sibling(str(out.target), "out")
            else:
                out.stage = temp_sibling(Path(out.target), "out")
        return out.stage

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            if not self.committed:
                self.discard()
            return
        self.discard()
        if isinstance(exc, Exception) and _is_disk_full(exc):
            dirs = sorted({str(Path(o.target).parent) for o in self._outputs.values()})
            raise OutputError(
                f"The disk is full: writing the outputs to {', '.join(dirs)} ran out of "
                "space. Nothing was written and the temporary files were removed; free "
                "some space or choose another output directory."
            ) from exc

    def _temporaries(self, out: _Output) -> list[Path | str]:
        if out.stage is None:
            return []
        if out.remote:
            return _remote_temporaries(str(out.stage))
        stage = Path(out.stage)
        prefixes = (stage.name, f".{stage.name}")
        parent = stage.parent
        try:
            return [p for p in parent.iterdir() if p.name.startswith(prefixes)]
        except OSError:
            return []

    def discard(self) -> None:
        """Remove every temporary of this set (staged outputs and the writers' parts)."""
        if not self.committed:
            global _SWEEP_AT_EXIT
            with _DISCARDED_LOCK:
                if self not in _DISCARDED:
                    _DISCARDED.append(self)
                if not _SWEEP_AT_EXIT:
                    # after the thread pools of Dask's local schedulers are joined
                    atexit.register(sweep_discarded)
                    _SWEEP_AT_EXIT = True
        for out in self._outputs.values():
            for path in self._temporaries(out):
                _remove(path)

    def commit(self) -> dict[str, Path | str]:
        """Move every staged output into place in one step; roll back on failure.

        Returns
        -------
        dict
            ``{what: final path}`` (the URL for an object-store output), the STAC Items
            included (``"STAC item of the <what>"``).

        Raises
        ------
        OutputValidationError
            When a staged output is missing (nothing is moved).
        """
        missing = [o.what for o in self._outputs.values() if o.item_of is None and not _staged(o)]
        if missing:
            raise OutputValidationError(
                f"Not written: {', '.join(missing)}; no output was replaced. Run the command again."
            )
        self._stage_items()
        done: list[tuple[_Output, Path | str | None]] = []
        with _signals_deferred():
            try:
                for out in self._outputs.values():
                    assert out.stage is not None
                    replace = _replace_remote if out.remote else _replace_local
                    done.append((out, replace(out)))
            except BaseException:
                for out, backup in reversed(done):
                    (_undo_remote if out.remote else _undo_local)(out, backup)
                raise
            self.committed = True
            for out, backup in done:
                if out.remote:
                    _remove(str(out.stage))
                if backup is not None:
                    _remove(backup)
        return {o.what: o.target for o in self._outputs.values()}

    def _stage_items(self) -> None:
        """Build and stage the STAC Item of every staged output (before any rename)."""
        items = [o for o in self._outputs.values() if o.item_of is not None]
        if not items:
            return
        from geoembed.stac.item import build_item, write_item
        from geoembed.stac.provenance import Provenance

        provenance = (self._provenance or Provenance()).resolved(self._given_inputs)
        properties = provenance.properties()
        accuracy = self._accuracy()
        if accuracy:
            properties["geoembed:accuracy"] = accuracy
        created = datetime.now(UTC)
        for item in items:
            assert item.item_of is not None
            out = self._outputs[item.item_of]
            assert out.stage is not None
            name = (
                str(out.target).rstrip("/").rpartition("/")[2]
                if out.remote
                else Path(out.target).name
            )
            try:
                payload = build_item(
                    out.stage,
                    name=name,
                    what=out.what,
                    directory=out.directory,
                    properties=properties,
                    created=created,
                )
            except OSError:
                raise
            except Exception as exc:  # an output the Item cannot describe: say which
                raise OutputError(
                    f"Cannot describe the {out.what} {out.given!r} in its STAC Item: "
                    f"{' '.join(str(exc).split())[:300]}. Nothing was written."
                ) from exc
            write_item(payload, self.stage(item.what))

    def _accuracy(self) -> dict[str, Any] | None:
        """Return the cross-validation figures of a staged JSON report of the set, if any."""
        for out in self._outputs.values():
            if out.item_of is not None or out.directory or out.stage is None:
                continue
            if not str(out.target).lower().endswith(".json"):
                continue
            payload = _read_staged_json(out)
            cv = payload.get("cross_validation") if isinstance(payload, dict) else None
            if isinstance(cv, dict):
                pooled = cv.get("pooled")
                if not isinstance(pooled, dict):
                    pooled = cv
                figures = {
                    k: v
                    for k, v in pooled.items()
                    if isinstance(v, int | float | str) and not isinstance(v, bool)
                }
                for key in ("cv", "spec", "scheme", "n_folds"):
                    if key in cv and not isinstance(cv[key], dict | list):
                        figures.setdefault(key, cv[key])
                return figures
        return None


def _item_key(what: str) -> str:
    return f"STAC item of the {what}"


def _read_staged_json(out: _Output) -> Any:
    if out.remote:
        from geoembed.export.remote import _read_json as read_remote_json

        return read_remote_json(str(out.stage))
    return _read_json(Path(str(out.stage)))


def _resume_stage(out: _Output) -> Path | str:
    """Return the staged name a resumed run finds again (a finished stage is rebuilt)."""
    from geoembed.export.resume import resume_sibling

    stage = resume_sibling(out.target, "out")
    if out.remote:
        from geoembed.export.remote import remote_exists, remote_remove

        if remote_exists(stage):  # staged by a run killed before its commit
            remote_remove(stage)
        return stage
    remove_path(Path(stage))
    return Path(stage)


def sweep_discarded() -> None:
    """Remove again the temporaries of discarded output sets of this process.

    Dask tasks of a failed or interrupted job can still be writing when the error reaches
    the caller; the CLI calls this once its Dask workers are gone, and it runs again at
    interpreter exit, after the thread pools of Dask's local schedulers are joined.
    """
    with _DISCARDED_LOCK:
        sets = list(_DISCARDED)
        _DISCARDED.clear()
    for outputs in sets:
        for out in outputs._outputs.values():
            for path in outputs._temporaries(out):
                _remove(path)


def _input_urls(inputs: Iterable[Any]) -> list[str]:
    urls = []
    for item in inputs:
        if isinstance(item, list | tuple):
            urls.extend(_input_urls(item))
        elif isinstance(item, str | os.PathLike) and is_remote(item):
            urls.append(str(item).rstrip("/"))
    return urls


def _remove(path: Path | str) -> None:
    if isinstance(path, str) and is_remote(path):
        from geoembed.export.remote import remote_remove

        remote_remove(path)
    else:
        remove_path(Path(path))


def _remote_temporaries(stage: str) -> list[Path | str]:
    from geoembed._cloud import filesystem

    parent, _, name = stage.rpartition("/")
    scheme = stage.split("://", 1)[0]
    fs = filesystem(stage)
    fs.invalidate_cache()
    try:
        entries = fs.ls(parent, detail=False)
    except (FileNotFoundError, OSError):
        return []
    found: list[Path | str] = []
    for entry in entries:
        base = entry.rstrip("/").rpartition("/")[2]
        if base.startswith((name, f".{name}")):
            found.append(f"{scheme}://{entry.rstrip('/')}")
    return found


def _staged(out: _Output) -> bool:
    if out.stage is None:
        return False
    if out.remote:
        from geoembed.export.remote import remote_exists

        return remote_exists(str(out.stage))
    stage = Path(out.stage)
    return stage.exists() or stage.is_symlink()


def _replace_local(out: _Output) -> Path | None:
    stage, target = Path(str(out.stage)), Path(out.target)
    backup = None
    if target.exists() or target.is_symlink():
        backup = temp_sibling(target, "old")
        os.replace(target, backup)
    try:
        os.replace(stage, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    return backup


def _undo_local(out: _Output, backup: Path | str | None) -> None:
    target = Path(out.target)
    undo = temp_sibling(target, "undo")
    os.replace(target, undo)
    if backup is not None:
        os.replace(backup, target)
    remove_path(undo)


def _replace_remote(out: _Output) -> str | None:
    """Copy the staged object(s) to the target; keep a copy of a replaced output."""
    from geoembed.export.remote import copy_output, remote_exists, remote_temp_sibling

    target = str(out.target)
    backup = None
    if remote_exists(target):
        backup = remote_temp_sibling(target, "old")
        copy_output(target, backup, directory=out.directory)
    copy_output(str(out.stage), target, directory=out.directory)
    return backup


def _undo_remote(out: _Output, backup: Path | str | None) -> None:
    from geoembed.export.remote import copy_output, remote_remove

    target = str(out.target)
    if backup is None:
        remote_remove(target)
    else:
        copy_output(str(backup), target, directory=out.directory)
        remote_remove(str(backup))
