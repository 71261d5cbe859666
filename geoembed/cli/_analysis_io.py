"""Output helpers of the analysis commands (similar, change, regress).

Every output path is checked before any Dask task runs; tables and JSON reports are
written to a hidden temporary sibling and renamed into place (atomic, like the COGs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from geoembed.errors import OutputError

__all__ = ["check_outputs", "write_geoparquet", "write_json"]


def check_outputs(paths: dict[str, Any], overwrite: bool) -> dict[str, Path]:
    """Check every given output path (None skipped); two outputs may not share a path."""
    from geoembed.export.atomic import check_output_path

    checked: dict[str, Path] = {}
    for what, path in paths.items():
        if path is None:
            continue
        target = check_output_path(path, overwrite=overwrite, what=what)
        if target in checked.values():
            raise OutputError(f"two outputs share the path {str(path)!r}; give each its own.")
        checked[what] = target
    return checked


def write_json(payload: dict[str, Any], target: Path) -> None:
    """Write a JSON report atomically."""
    from geoembed.export.atomic import temp_sibling

    tmp = temp_sibling(target, "json")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_geoparquet(frame: Any, crs: Any, target: Path) -> None:
    """Write a table with ``x``/``y`` point coordinates as GeoParquet, atomically."""
    import geopandas as gpd

    from geoembed.export.atomic import temp_sibling

    gdf = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["x"], frame["y"]), crs=crs)
    tmp = temp_sibling(target, "parquet")
    try:
        gdf.to_parquet(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
