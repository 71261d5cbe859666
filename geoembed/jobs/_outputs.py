"""The one output helper of every job: checked paths, staged writers, one commit.

A job declares all its outputs first (:func:`plan_outputs`: path checks, ownership,
inputs, before any Dask task runs), writes each of them to its staged name (COGs and
Zarr stores through :mod:`geoembed.export`, JSON reports through :func:`write_report`,
point tables through :func:`write_points`) and makes them visible together with
:meth:`~geoembed.export.outputs.OutputSet.commit`. The rules themselves live in
:mod:`geoembed.export.outputs`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from geoembed._version import __version__
from geoembed.export.atomic import is_remote
from geoembed.export.outputs import GEOPARQUET_MARK, OutputSet

__all__ = ["compute_all", "marked", "plan_outputs", "write_points", "write_report", "written"]


def plan_outputs(
    wanted: Mapping[str, Any],
    *,
    overwrite: bool,
    inputs: Sequence[Any] = (),
    directories: Collection[str] = (),
    resume: bool = False,
) -> OutputSet:
    """Check every output of a job before any task runs and return its output set.

    Parameters
    ----------
    wanted : mapping
        ``{what: path or None}`` in the order the outputs are committed; None entries
        (outputs not asked for) are skipped.
    overwrite : bool
        Replace existing outputs that geoembed wrote.
    inputs : sequence
        The job's inputs (paths or URLs; anything else is ignored): no output may be one.
    directories : collection of str
        The ``what`` of the outputs that are directories (Zarr stores, model directories).
    resume : bool
        Stage under names a rerun of the same job finds again, so that writers given
        ``resume=True`` reuse the chunks a killed run had finished
        (:class:`~geoembed.export.outputs.OutputSet`).

    Returns
    -------
    OutputSet
        To be entered (``with outputs:``) around the writes and committed at the end.
    """
    outputs = OutputSet(overwrite=overwrite, inputs=inputs, resume=resume)
    for what, path in wanted.items():
        outputs.add(what, path, directory=what in directories)
    return outputs


def marked(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with geoembed's mark first (so that ``overwrite`` may replace it)."""
    return {"geoembed_version": __version__, **payload}


def write_report(outputs: OutputSet, what: str, payload: Mapping[str, Any]) -> None:
    """Write a JSON report to the staged name of output ``what`` (local or object store)."""
    text = json.dumps(marked(payload), indent=2, default=str)
    stage = outputs.stage(what)
    if isinstance(stage, str) and is_remote(stage):
        from geoembed.export.remote import write_remote_text

        write_remote_text(stage, text)
    else:
        Path(stage).write_text(text)


def write_points(outputs: OutputSet, what: str, frame: Any, crs: Any) -> None:
    """Write a table with ``x``/``y`` point coordinates as GeoParquet to output ``what``.

    The file carries geoembed's mark in its schema metadata (:data:`GEOPARQUET_MARK`),
    so that ``overwrite`` may replace it later.
    """
    import io

    import geopandas as gpd
    import pyarrow.parquet as pq

    gdf = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["x"], frame["y"]), crs=crs)
    buffer = io.BytesIO()
    gdf.to_parquet(buffer)  # the GeoParquet "geo" metadata, as geopandas writes it
    buffer.seek(0)
    table = pq.read_table(buffer)
    meta = {**(table.schema.metadata or {}), GEOPARQUET_MARK.encode(): __version__.encode()}
    table = table.replace_schema_metadata(meta)
    stage = outputs.stage(what)
    if isinstance(stage, str) and is_remote(stage):
        from geoembed._cloud import filesystem

        with filesystem(stage).open(stage, "wb") as fh:
            pq.write_table(table, fh)
    else:
        pq.write_table(table, str(stage))


def compute_all(*tasks: Any, progress: bool = False, label: str = "computing") -> Sequence[Any]:
    """Compute the job's lazy writes and results together (on the current client, if any)."""
    from geoembed.runtime import compute

    return compute(*tasks, progress=progress, label=label)


def written(outputs: OutputSet, names: Mapping[str, str]) -> dict[str, str]:
    """``{key: final path}`` for the outputs of ``names`` (``{key: what}``) that were asked for."""
    return {key: str(outputs.target(what)) for key, what in names.items() if what in outputs}
