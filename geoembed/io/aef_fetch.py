"""``fetch_aef``: copy an area of the public AlphaEarth COGs into a local or cloud Zarr store.

The int8 codes are kept by default (four times smaller than float32, and exactly the
release's values): the field read by :func:`geoembed.io.aef_open.open_aef_field` is encoded
back with :func:`encode_aef`, the exact inverse of the de-quantization (every code
``q != -128`` satisfies ``encode(decode(q)) == q``; masked pixels become ``-128``).
The store is written by :func:`geoembed.export.write_zarr`: atomic, validated, and an
interrupted fetch resumes where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geoembed.io.aef import AEF_NODATA, AEF_SCALE

__all__ = ["encode_aef", "encode_block", "fetch_aef"]


def encode_block(v: np.ndarray) -> np.ndarray:
    """Encode de-quantized AEF values back to int8 codes (NaN -> ``-128``)."""
    with np.errstate(invalid="ignore"):
        q = np.rint(np.sign(v) * np.sqrt(np.abs(v, dtype=np.float64)) * AEF_SCALE)
    q = np.where(np.isnan(v), AEF_NODATA, np.clip(q, -127, 127))
    return q.astype(np.int8)


def encode_aef(field: xr.DataArray) -> xr.DataArray:
    """Encode a de-quantized AEF field as int8 codes, lazily (one task per chunk).

    Parameters
    ----------
    field : xarray.DataArray
        A canonical field of de-quantized AEF values (NaN = masked).

    Returns
    -------
    xarray.DataArray
        int8 codes with nodata ``-128`` (``attrs["nodata"]``), same dims, coords and chunks;
        :func:`geoembed.open_embeddings` decodes them again.
    """
    data = field.data.map_blocks(encode_block, dtype=np.int8)
    out = field.copy(data=data)
    out.attrs = {k: v for k, v in field.attrs.items() if k != "_FillValue"}
    out.attrs.update({"nodata": AEF_NODATA, "quantization": "aef"})
    out.encoding = {}
    return out


def fetch_aef(
    area: Any,
    year: int,
    output: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] = "gcs",
    crs: Any = None,
    resolution: float | None = None,
    bbox_crs: Any = None,
    dequantize: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the AEF embeddings of an area and a year to a Zarr store.

    Parameters
    ----------
    area, year, source, crs, resolution, bbox_crs
        As :func:`geoembed.io.aef_open.open_aef_field` takes them.
    output : path or URL
        The Zarr store to write (local, ``gs://`` or ``s3://``).
    dequantize : bool, default False
        Store float32 values instead of the int8 codes.
    overwrite : bool, default False
        Replace a store that geoembed wrote.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    dict
        Summary: output, shape, CRS, dtype, whether an interrupted fetch was resumed.

    Raises
    ------
    SchemaError, DataRequestError, MissingInputError, OutputError
        Before any task runs.
    """
    from geoembed._cloud import is_url
    from geoembed.export import write_zarr
    from geoembed.export.outputs import OutputSet
    from geoembed.io.aef_open import open_aef_field

    outputs = OutputSet(overwrite=overwrite)
    target = outputs.add("embedding store", output, directory=True)
    assert target is not None
    field = open_aef_field(
        area, year, source=source, crs=crs, resolution=resolution, bbox_crs=bbox_crs
    )
    stored = field if dequantize else encode_aef(field)
    resume = False
    if not is_url(str(target)):
        partial = Path(target).with_name(Path(target).name + ".partial")
        resume = partial.exists() and not overwrite and not Path(target).exists()
    written = write_zarr(
        stored.rename("embedding"),
        target,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
    )
    return {
        "output": str(written),
        "source": str(source),
        "year": int(year),
        "shape": [int(n) for n in stored.shape],
        "crs": str(field.rio.crs),
        "dtype": str(stored.dtype),
        "resumed": resume,
    }
