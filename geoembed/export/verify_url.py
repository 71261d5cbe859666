"""``verify`` of an output in object storage or on a web server (``gs://``, ``https://``...).

A COG is checked in place through GDAL's virtual file systems (range reads: header, IFDs
and the blocks asked for), a Zarr store through fsspec (metadata, the key listing and,
with ``full``, every chunk). A STAC Item (``NAME.stac.json``) records the size and
checksum of the output it describes, so checking it reads that output in full: the Item
and its assets are copied into a temporary directory (removed on every exit path; disk
bounded by the output's size) and checked there. Leftover temporaries of killed runs are
only looked for on local disk (``stale_temporaries`` is empty for a URL).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from geoembed.errors import OutputError

__all__ = ["verify_url"]

_ZARR_KEYS = ("zarr.json", ".zgroup", ".zarray")


def _exists(fs: Any, url: str) -> bool:
    try:
        return bool(fs.exists(url))
    except PermissionError as exc:
        raise OutputError(
            f"Cannot verify {url!r}: access denied ({exc}). Grant this account read access "
            "(on GKE: the Workload Identity service account)."
        ) from exc
    except OSError as exc:
        raise OutputError(f"Cannot verify {url!r}: it cannot be reached ({exc}).") from exc


def _is_zarr(fs: Any, url: str) -> bool:
    return any(_exists(fs, f"{url}/{key}") for key in _ZARR_KEYS)


def _copy_item(fs: Any, url: str, local: Path) -> Path:
    """Copy the Item at ``url`` and the assets beside it that it names into ``local``."""
    from geoembed.stac.item import read_item

    name = url.rpartition("/")[2]
    fs.get_file(url, str(local / name))
    base = url.rpartition("/")[0]
    try:
        item = read_item(local / name)
    except (OSError, ValueError):
        return local / name  # check_item reports it
    assets = item.get("assets")
    for asset in assets.values() if isinstance(assets, dict) else ():
        href = asset.get("href") if isinstance(asset, dict) else None
        if not isinstance(href, str) or "://" in href:
            continue
        rel = href.removeprefix("./")
        if "/" in rel or rel in ("", ".", ".."):
            continue  # only outputs beside the Item; check_item reports the others
        source = f"{base}/{rel}"
        if not _exists(fs, source):
            continue  # check_item reports the missing asset
        if fs.isdir(source):
            fs.get(source, str(local / rel), recursive=True)
        else:
            fs.get_file(source, str(local / rel))
    return local / name


def _item_report(fs: Any, url: str) -> dict[str, Any]:
    from geoembed.stac import check_item

    local = Path(tempfile.mkdtemp(prefix="geoembed-verify-"))
    try:
        report = check_item(_copy_item(fs, url, local))
    finally:
        shutil.rmtree(local, ignore_errors=True)
    report["path"] = url
    return report


def verify_url(url: str, *, full: bool = False, stac: bool = False) -> dict[str, Any]:
    """Report whether the output at ``url`` is complete and valid.

    Same report as :func:`geoembed.export.verify` (see there); ``stale_temporaries`` is
    always empty for a URL.

    Raises
    ------
    OutputError
        When nothing is at ``url``, or it cannot be reached or read.
    """
    from geoembed._cloud import filesystem, gdal_path
    from geoembed.export.verify import _verify_cog, _verify_zarr, _with_stac_report
    from geoembed.stac import ITEM_SUFFIX

    url = url.rstrip("/")
    fs = filesystem(url)
    fs.invalidate_cache()
    if not _exists(fs, url) and not _is_zarr(fs, url):
        raise OutputError(f"Nothing to verify: {url!r} does not exist.")
    if url.endswith(ITEM_SUFFIX):
        report = _item_report(fs, url)
    else:
        if _is_zarr(fs, url):
            report = _verify_zarr(url, full=full)
        else:
            report = _verify_cog(url, full=full, gdal_name=gdal_path(url))
        item_url = url + ITEM_SUFFIX
        item = _item_report(fs, item_url) if _exists(fs, item_url) else None
        _with_stac_report(report, item, item_url.rpartition("/")[2], stac=stac)
    report["path"] = url
    report["stale_temporaries"] = []
    return report
