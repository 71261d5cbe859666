"""Refuse a Dask cluster whose scheduler or workers run other versions than the client.

A client and workers from different images fail in ways that name neither: tasks pickled
by one dask cannot be read by another, a worker's older geoembed computes other bytes. The
check runs once the client is connected and before any task is submitted: the versions of
geoembed, dask and distributed (from the installed packages' metadata, as
``Client.get_versions`` reports them) must be equal on the client, the scheduler and every
worker connected at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geoembed.errors import VersionSkewError

__all__ = ["CHECKED_PACKAGES", "check_versions", "version_skew"]

#: packages whose versions must agree between the client, the scheduler and the workers
CHECKED_PACKAGES = ("geoembed", "dask", "distributed")


def _packages(entry: Any) -> Mapping[str, Any]:
    if isinstance(entry, Mapping):
        packages = entry.get("packages")
        if isinstance(packages, Mapping):
            return packages
    return {}


def version_skew(versions: Mapping[str, Any]) -> list[str]:
    """Describe every disagreement with the client in a ``get_versions()`` result.

    Parameters
    ----------
    versions : mapping
        ``{"client": ..., "scheduler": ..., "workers": {address: ...}}`` as returned by
        ``distributed.Client.get_versions``.

    Returns
    -------
    list of str
        One entry per package and role that differs, e.g.
        ``"geoembed 0.0.1 on worker tcp://10.0.0.5:4000"``; empty when all agree.
    """
    client = _packages(versions.get("client"))
    peers = [("the scheduler", versions.get("scheduler"))]
    workers = versions.get("workers")
    if isinstance(workers, Mapping):
        peers += [(f"worker {addr}", info) for addr, info in sorted(workers.items())]
    skew = []
    for package in CHECKED_PACKAGES:
        mine = client.get(package)
        for who, info in peers:
            theirs = _packages(info).get(package)
            if theirs != mine:
                shown = theirs if theirs is not None else "(not installed)"
                skew.append(f"{package} {shown} on {who}")
    return skew


def check_versions(client: Any, shown: str) -> None:
    """Raise :class:`~geoembed.errors.VersionSkewError` unless the cluster matches the client.

    Parameters
    ----------
    client : distributed.Client
        A connected client (nothing has been submitted yet).
    shown : str
        The scheduler address as it may be shown (credentials redacted).

    Raises
    ------
    VersionSkewError
        One line naming the first disagreements, this client's versions and the fix.
    """
    versions = client.get_versions(check=False, packages=list(CHECKED_PACKAGES))
    skew = version_skew(versions)
    if not skew:
        return
    mine = _packages(versions.get("client"))
    here = ", ".join(f"{p} {mine.get(p)}" for p in CHECKED_PACKAGES)
    more = f" and {len(skew) - 3} more" if len(skew) > 3 else ""
    raise VersionSkewError(
        f"the Dask cluster at {shown} runs other versions than this client: "
        f"{'; '.join(skew[:3])}{more} (this client: {here}). Nothing was submitted; run "
        "the client, the scheduler and the workers from the same image or environment."
    )
