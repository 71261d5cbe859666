"""Temporaries that killed geoembed runs left in object storage: find them, remove them.

A client killed mid-write (SIGKILL, a preempted pod) cannot delete the temporary keys of
its output (:func:`~geoembed.export.remote.remote_temp_sibling`, the resumable names of
:mod:`geoembed.export.resume`, the ``.partial`` store of a staged Zarr output). Each
carries geoembed's marker (``.<name>.geoembed-tmp-...``), so it can be told from a
user's objects. In a bucket, whether its owner still runs cannot be asked (the next run
is usually another pod), so a temporary is **stale** when

* its name holds this host and a process id that no longer runs, or
* none of its objects was written for ``older_than`` (default :data:`STALE_AFTER`):
  a live write uploads its chunks and parts continuously.

Every write to an object-store target removes the stale temporaries *of that target*
before any task runs (:func:`sweep_target`); a resumed write keeps the resumable ones,
which it is about to reuse. ``geoembed clean URL`` lists (and with ``--delete``
removes) the stale temporaries anywhere under a prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from geoembed.export.atomic import TEMP_MARKER
from geoembed.export.outputs import owner_gone

__all__ = [
    "STALE_AFTER",
    "RemoteTemporary",
    "parse_age",
    "remote_temporaries",
    "sweep_target",
]

#: a temporary none of whose objects changed for this long belongs to a dead run
STALE_AFTER = timedelta(hours=6)

_RESUME = f"{TEMP_MARKER}resume-"


@dataclass(frozen=True)
class RemoteTemporary:
    """A geoembed temporary in object storage (one object or a prefix of objects).

    Attributes
    ----------
    url : str
        ``gs://`` / ``s3://`` URL of the object or prefix.
    target : str
        Name of the output it was made for (``map.tif``, ``classes.zarr``).
    resumable : bool
        A resumable name (``--resume`` finds it again).
    objects : int
        Number of objects.
    nbytes : int
        Their total size.
    modified : datetime or None
        When the newest of them was written (UTC).
    stale : bool
        Whether its run is gone (see the module docstring).
    """

    url: str
    target: str
    resumable: bool
    objects: int
    nbytes: int
    modified: datetime | None
    stale: bool


def parse_age(text: str) -> timedelta:
    """Parse an age such as ``90s``, ``30m``, ``6h``, ``1d`` or ``2w``.

    Raises
    ------
    ValueError
        With the accepted forms, when ``text`` is not one of them.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if m is None:
        raise ValueError(
            f"{text!r} is not an age: give a number and a unit, s, m, h, d or w (e.g. 1d, 6h)."
        )
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m[2]]
    return timedelta(**{unit: float(m[1])})


def _modified(info: dict[str, Any]) -> datetime | None:
    """Return the write time of an object from its fsspec listing entry (gcsfs or s3fs)."""
    for key in ("LastModified", "updated", "mtime", "timeCreated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str) and value:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _target_of(name: str) -> str | None:
    """Return the output name a temporary was made for (None: not a temporary)."""
    if not name.startswith(".") or TEMP_MARKER not in name:
        return None
    return name[1 : name.index(TEMP_MARKER)] or None


def _geoembed_partial(url: str) -> bool:
    """Whether ``url`` is the ``.partial`` store of a :func:`~geoembed.export.write_zarr`."""
    from geoembed.export.remote import _read_json

    for meta, attrs in (("zarr.json", "attributes"), (".zattrs", None)):
        doc = _read_json(f"{url}/{meta}")
        if isinstance(doc, dict):
            values = doc.get(attrs, {}) if attrs else doc
            return isinstance(values, dict) and "geoembed_version" in values
    return False


def _group(
    entries: dict[str, dict[str, Any]], root: str
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Group object keys by their outermost path component that is a geoembed temporary."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    base = root.rstrip("/")
    for key, info in entries.items():
        if not key.startswith(base + "/") and key != base:
            continue
        parts = key[len(base) :].lstrip("/").split("/")
        for i, part in enumerate(parts):
            partial = part.endswith(".partial") and i < len(parts) - 1  # a Zarr store
            if _target_of(part) is not None or partial:
                head = "/".join([base, *parts[: i + 1]])
                groups.setdefault(head, []).append((key, info))
                break
    return groups


def remote_temporaries(
    prefix: str,
    *,
    older_than: timedelta = STALE_AFTER,
    recursive: bool = True,
    target: str | None = None,
    now: datetime | None = None,
) -> list[RemoteTemporary]:
    """List the geoembed temporaries under ``prefix`` (a ``gs://`` or ``s3://`` URL).

    Parameters
    ----------
    prefix : str
        A bucket or a "directory" of it.
    older_than : datetime.timedelta
        Age after which a temporary whose owner cannot be asked is stale.
    recursive : bool, default True
        Look in every sub-prefix (one listing of all objects under ``prefix``); False:
        only temporaries directly under it.
    target : str, optional
        Only the temporaries of the output of this name (``map.tif``).
    now : datetime, optional
        The current time (tests).

    Returns
    -------
    list of RemoteTemporary
        Sorted by URL. Objects whose names lack geoembed's marker are never listed.
    """
    from geoembed._cloud import filesystem

    fs = filesystem(prefix)
    fs.invalidate_cache()
    scheme = prefix.split("://", 1)[0]
    root = fs._strip_protocol(prefix).rstrip("/")
    if recursive:
        entries = fs.find(root, detail=True)
    else:  # one listing of the keys that start with the temporary names
        want = f".{target}{TEMP_MARKER}" if target else "."
        try:
            entries = fs.find(root, prefix=want, detail=True)
        except FileNotFoundError:
            entries = {}
    now = now or datetime.now(UTC)
    found = []
    for head, objects in sorted(_group(entries, root).items()):
        name = head.rpartition("/")[2]
        of = _target_of(name)
        if of is None:  # ``NAME.partial``: only a store geoembed wrote is its own
            if not _geoembed_partial(f"{scheme}://{head}"):
                continue
            of = name.removesuffix(".partial")
        if target is not None and of != target:
            continue
        times = [t for t in (_modified(info) for _, info in objects) if t is not None]
        newest = max(times) if times else None
        old = newest is not None and now - newest > older_than
        found.append(
            RemoteTemporary(
                url=f"{scheme}://{head}",
                target=of,
                resumable=_RESUME in name or name.endswith(".partial"),
                objects=len(objects),
                nbytes=sum(int(info.get("size") or 0) for _, info in objects),
                modified=newest,
                stale=old or owner_gone(name),
            )
        )
    return found


def sweep_target(
    target: str, *, keep_resumable: bool = False, older_than: timedelta = STALE_AFTER
) -> list[str]:
    """Remove the stale temporaries of the output ``target`` (before a write to it).

    Parameters
    ----------
    target : str
        The ``gs://`` / ``s3://`` URL of an output about to be written.
    keep_resumable : bool, default False
        Keep resumable temporaries (a ``--resume`` run reuses them).
    older_than : datetime.timedelta
        See :func:`remote_temporaries`.

    Returns
    -------
    list of str
        The URLs removed.
    """
    from geoembed.export.remote import remote_remove

    parent, _, name = target.rstrip("/").rpartition("/")
    if "://" not in parent or not name:
        return []
    removed = []
    for tmp in remote_temporaries(parent, older_than=older_than, recursive=False, target=name):
        if not tmp.stale or (keep_resumable and tmp.resumable):
            continue
        remote_remove(tmp.url)
        removed.append(tmp.url)
    return removed
