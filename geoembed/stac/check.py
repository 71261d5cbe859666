"""Check a STAC Item against the output it describes (``geoembed verify``).

An Item is stale or tampered with when its output changed after it was written (another
size or checksum, another grid, CRS, data type or set of classes), when an asset it
lists is gone, or when it no longer validates. Each such finding is one line of
``problems``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["check_item"]

_GRID_FIELDS = ("proj:code", "proj:wkt2", "proj:shape", "proj:transform")


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _compare(recorded: dict[str, Any], actual: dict[str, Any], key: str) -> list[str]:
    """One line per field whose recorded value differs from the output's."""
    problems = []
    for name in (*_GRID_FIELDS, "file:size", "file:checksum"):
        if name in recorded or (name in actual and name != "file:checksum"):
            want, have = recorded.get(name), actual.get(name)
            if not _close(want, have):
                problems.append(
                    f"asset {key!r}: {name} is {_short(have)} in the output but "
                    f"{_short(want)} in the Item"
                )
    bands_want = [_band(b) for b in recorded.get("raster:bands", [])]
    bands_have = [_band(b) for b in actual.get("raster:bands", [])]
    if bands_want != bands_have:
        problems.append(
            f"asset {key!r}: bands (data type, nodata) are {bands_have} in the output but "
            f"{bands_want} in the Item"
        )
    classes_want = _classes(recorded)
    classes_have = _classes(actual)
    if classes_want != classes_have:
        problems.append(
            f"asset {key!r}: class names are {classes_have} in the output but "
            f"{classes_want} in the Item"
        )
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _band(band: dict[str, Any]) -> tuple[Any, Any]:
    return band.get("data_type"), band.get("nodata")


def _classes(fields: dict[str, Any]) -> dict[int, str]:
    return {
        int(c["value"]): str(c.get("title") or c.get("name"))
        for c in fields.get("classification:classes", [])
    }


def _actual_fields(path: Path, asset: dict[str, Any]) -> dict[str, Any]:
    from geoembed.stac.item import ZARR_MEDIA_TYPE, _file_fields, _raster_asset, _zarr_asset

    if asset.get("type") == ZARR_MEDIA_TYPE:
        return _zarr_asset(path)[0]
    fields = _file_fields(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        raster = _raster_asset(path)
        if raster is not None:
            fields.update(raster[0])
    return fields


def check_item(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a STAC Item written by geoembed against its assets.

    Parameters
    ----------
    path : str or path-like
        The Item (``NAME.stac.json``).

    Returns
    -------
    dict
        ``path``, ``format`` (``"STAC Item"``), ``id``, ``assets`` (their hrefs),
        ``extensions_validated`` and ``extensions_unavailable`` (schemas no local folder
        holds, see :mod:`geoembed.stac.validate`), ``problems`` (one line each) and
        ``valid``.
    """
    from geoembed.stac.item import read_item
    from geoembed.stac.validate import validate_item

    p = Path(path)
    report: dict[str, Any] = {"path": str(p), "format": "STAC Item"}
    try:
        item = read_item(p)
    except (OSError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:200]
        return {**report, "valid": False, "problems": [f"cannot be read as JSON: {msg}"]}
    validation = validate_item(item)
    problems = list(validation.problems)
    report.update(
        id=item.get("id"),
        extensions_validated=validation.extensions_validated,
        extensions_unavailable=validation.extensions_unavailable,
    )
    assets = item.get("assets")
    if not isinstance(assets, dict):
        assets = {}
    report["assets"] = {k: a.get("href") for k, a in assets.items() if isinstance(a, dict)}
    if not assets:
        problems.append("the Item lists no asset")
    for key, asset in assets.items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            problems.append(f"asset {key!r} has no href")
            continue
        href = asset["href"]
        if "://" in href:
            problems.append(f"asset {key!r}: {href!r} is not beside the Item; cannot check it")
            continue
        target = (p.parent / href).resolve()
        if not target.exists():
            problems.append(
                f"asset {key!r}: {href!r} does not exist (moved or deleted after the Item "
                "was written)"
            )
            continue
        try:
            actual = _actual_fields(target, asset)
        except Exception as exc:  # an unreadable output is a finding, not a crash
            msg = " ".join(str(exc).split())[:200]
            problems.append(f"asset {key!r}: {href!r} cannot be read ({msg})")
            continue
        problems.extend(_compare(asset, actual, key))
    report["problems"] = problems
    report["valid"] = not problems
    return report
