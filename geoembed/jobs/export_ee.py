"""The export-ee job: an Earth Engine embedding image over a bbox -> a Zarr field.

Pixels come through :func:`geoembed.io.ee.open_ee` (one ``computePixels`` request per
chunk, made by the task that needs it, on whichever worker runs it, with retries and a
concurrency cap), and the store goes through the output set like every other output:
checked before any request, replaced with ``overwrite`` only when geoembed wrote it,
complete with its STAC Item or absent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from geoembed.jobs._outputs import plan_outputs

__all__ = ["run_export_ee"]


def run_export_ee(
    output: str | os.PathLike[str],
    *,
    bbox: Sequence[float],
    year: int,
    collection: str = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL",
    crs: str | None = None,
    scale: float = 10.0,
    band_names: Sequence[str] | None = None,
    project: str | None = None,
    chunks: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    source: Any = None,
    retry: Any = None,
) -> dict[str, Any]:
    """Export ``collection`` for ``year`` over ``bbox`` to a Zarr store.

    Parameters
    ----------
    output : path or str
        Zarr store to write (a path or a ``gs://`` / ``s3://`` URL).
    bbox : (west, south, east, north)
        Area in degrees (EPSG:4326).
    year : int
        Calendar year of the annual image.
    collection : str
        ImageCollection asset id (AlphaEarth's Satellite Embedding by default).
    crs : str, optional
        Output CRS (default: the UTM zone of the bbox's centre).
    scale : float
        Pixel size in ``crs`` units.
    band_names : sequence of str, optional
        Bands to export (required for collections other than AlphaEarth's).
    project : str, optional
        Google Cloud project for Earth Engine.
    chunks : int, optional
        Chunk side in pixels (default: the largest that fits one request).
    overwrite : bool
        Replace an existing store that geoembed wrote (never another folder).
    progress : bool
        Progress bar while writing.
    source, retry : optional
        The Earth Engine call layer and retry policy (see :func:`geoembed.io.ee.open_ee`;
        tests pass a local fake).

    Returns
    -------
    dict
        JSON-ready summary: output, collection, year, CRS, transform, size, bands.
    """
    from geoembed.export import write_zarr
    from geoembed.io.ee import open_ee

    if source is None:  # the real call layer: the ee extra, named before anything runs
        from geoembed.io.xee import require_ee

        require_ee("geoembed export-ee")
    outputs = plan_outputs(
        {"embedding field": output}, overwrite=overwrite, directories={"embedding field"}
    )
    field = open_ee(
        collection,
        bbox=bbox,
        year=year,
        crs=crs,
        scale=scale,
        band_names=band_names,
        chunks=chunks,
        retry=retry,
        source=source,
        project=project,
    )
    with outputs:
        write_zarr(field, outputs.stage("embedding field"), progress=progress)
        outputs.commit()
    return {
        "output": str(output),
        "collection": collection,
        "year": year,
        "crs": field.rio.crs.to_string(),
        "crs_transform": list(field.rio.transform())[:6],
        "width": int(field.sizes["x"]),
        "height": int(field.sizes["y"]),
        "bands": int(field.sizes["band"]),
    }
