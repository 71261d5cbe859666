"""``describe``: what ``geoembed info`` reports about a field (metadata + a small sample)."""

from __future__ import annotations

import math
from typing import Any

import dask
import numpy as np
import xarray as xr

from geoembed.schema import check_embedding

__all__ = ["DEFAULT_SAMPLE", "describe", "format_description"]

#: default number of pixels read to estimate the nodata fraction and vector lengths
DEFAULT_SAMPLE = 65_536
#: most windows (each inside one chunk) the sample is spread over
_MAX_WINDOWS = 16
#: a unit-length embedding's vectors have lengths within 1 +/- this
UNIT_TOLERANCE = 0.01


def _crs_text(crs: Any) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _crs_units(crs: Any) -> str | None:
    if crs is None:
        return None
    try:
        from pyproj import CRS

        axes = CRS.from_user_input(crs).axis_info
        return axes[0].unit_name if axes else None
    except Exception:  # pragma: no cover - exotic CRS
        return None


def _windows(field: xr.DataArray, sample: int) -> list[tuple[slice, slice]]:
    """Up to ``_MAX_WINDOWS`` windows, each inside one chunk, ``sample`` pixels in all."""
    height, width = field.sizes["y"], field.sizes["x"]
    if sample >= height * width:
        return [(slice(0, height), slice(0, width))]
    if field.chunks is not None:
        ych, xch = field.chunks[1], field.chunks[2]
    else:
        ych, xch = (height,), (width,)
    ystarts = np.cumsum((0, *ych[:-1]))
    xstarts = np.cumsum((0, *xch[:-1]))
    n_chunks = len(ych) * len(xch)
    n_win = min(_MAX_WINDOWS, n_chunks)
    picks = sorted({round(float(v)) for v in np.linspace(0, n_chunks - 1, n_win)})
    side = max(1, math.ceil(math.sqrt(sample / len(picks))))
    windows = []
    for flat in picks:
        j, i = divmod(flat, len(xch))
        hy, hx = min(side, ych[j]), min(side, xch[i])
        y0 = int(ystarts[j] + (ych[j] - hy) // 2)
        x0 = int(xstarts[i] + (xch[i] - hx) // 2)
        windows.append((slice(y0, y0 + hy), slice(x0, x0 + hx)))
    return windows


def _sample_stats(field: xr.DataArray, sample: int) -> dict[str, Any]:
    windows = _windows(field, sample)
    data = field.data
    parts = [data[:, ys, xs] for ys, xs in windows]
    if isinstance(data, np.ndarray):
        blocks = parts
    else:
        blocks = dask.compute(*parts)
    vectors = np.concatenate([np.asarray(b).reshape(b.shape[0], -1) for b in blocks], axis=1)
    n = vectors.shape[1]
    valid = ~np.isnan(vectors).any(axis=0)
    stats: dict[str, Any] = {
        "sample_pixels": int(n),
        "sample_windows": len(windows),
        "nodata_fraction": float(1.0 - valid.mean()) if n else None,
        "vector_length": None,
        "unit_length": None,
    }
    if valid.any():
        lengths = np.linalg.norm(vectors[:, valid].astype(np.float64), axis=0)
        stats["vector_length"] = {
            "min": float(lengths.min()),
            "max": float(lengths.max()),
            "mean": float(lengths.mean()),
        }
        stats["unit_length"] = bool(np.all(np.abs(lengths - 1.0) <= UNIT_TOLERANCE))
    return stats


def describe(field: xr.DataArray, *, sample: int = DEFAULT_SAMPLE) -> dict[str, Any]:
    """Describe an embedding field: shape, bands, CRS, grid, chunks, and sample statistics.

    Metadata come without reading pixels; the nodata fraction and the vector lengths are
    estimated from about ``sample`` pixels read in one compute, spread over up to 16
    windows that each lie inside one chunk (the whole field when it is that small).

    Parameters
    ----------
    field : xarray.DataArray
        A canonical embedding field (e.g. from :func:`geoembed.io.open_embeddings`).
    sample : int, default 65536
        Pixels to read; ``0`` reads nothing (sample statistics are then ``None``).

    Returns
    -------
    dict
        JSON-ready. Keys: ``source``, ``bands`` (int), ``band_names``, ``height``,
        ``width``, ``dtype`` (in memory, float32), ``source_dtype`` and ``quantization``
        (e.g. ``"int8"`` / ``"aef"``), ``crs`` (``"EPSG:nnnn"`` when it has an EPSG code,
        else WKT), ``crs_units``, ``resolution`` (``[x, y]`` pixel size in CRS units,
        **positive**; the direction is in ``orientation``), ``orientation``
        (``"north-up"`` or ``"bottom-up"``), ``transform`` (GDAL order), ``bounds``
        (``[left, bottom, right, top]``), ``chunks`` (``[band, y, x]`` of the first chunk
        or ``None``), ``n_chunks``, ``chunk_mib``, ``nodata_fraction``, ``vector_length``
        (``{min, max, mean}`` over valid sampled pixels), ``unit_length`` (all sampled
        lengths within 1 +/- 0.01), ``sample_pixels``, ``sample_windows``.
    """
    check_embedding(field, source=field.attrs.get("source"))
    crs = field.rio.crs
    transform = field.rio.transform()
    res_x, res_y = float(transform.a), float(transform.e)
    left, bottom, right, top = (float(v) for v in field.rio.bounds())
    itemsize = field.dtype.itemsize
    chunks = None
    n_chunks = None
    chunk_mib = None
    if field.chunks is not None:
        chunks = [int(c[0]) for c in field.chunks]
        n_chunks = int(np.prod([len(c) for c in field.chunks]))
        chunk_mib = round(float(np.prod(chunks)) * itemsize / 2**20, 2)
    info: dict[str, Any] = {
        "source": field.attrs.get("source"),
        "bands": int(field.sizes["band"]),
        "band_names": [str(b) for b in field["band"].values],
        "height": int(field.sizes["y"]),
        "width": int(field.sizes["x"]),
        "dtype": str(field.dtype),
        "source_dtype": field.attrs.get("source_dtype", str(field.dtype)),
        "quantization": field.attrs.get("quantization", "none"),
        "crs": _crs_text(crs),
        "crs_units": _crs_units(crs),
        "resolution": [abs(res_x), abs(res_y)],
        "orientation": "bottom-up" if res_y > 0 else "north-up",
        "transform": [float(v) for v in transform.to_gdal()],
        "bounds": [left, bottom, right, top],
        "chunks": chunks,
        "n_chunks": n_chunks,
        "chunk_mib": chunk_mib,
    }
    if sample > 0:
        info.update(_sample_stats(field, sample))
    else:
        info.update(
            sample_pixels=0,
            sample_windows=0,
            nodata_fraction=None,
            vector_length=None,
            unit_length=None,
        )
    return info


def format_description(info: dict[str, Any]) -> str:
    """Readable multi-line text for :func:`describe`'s dict (what ``geoembed info`` prints)."""
    names = info["band_names"]
    shown = ", ".join(names) if len(names) <= 6 else f"{names[0]}..{names[-1]}"
    units = info.get("crs_units") or "CRS units"
    unit = {"metre": "m", "meter": "m", "degree": "deg"}.get(units, units)
    rx, ry = info["resolution"]
    res = f"{rx:g} {unit}" if rx == ry else f"{rx:g} x {ry:g} {unit}"
    crs = info["crs"] if len(str(info["crs"])) < 60 else str(info["crs"])[:57] + "..."
    quant = info.get("quantization")
    dtype = info["dtype"]
    if info.get("source_dtype") and info["source_dtype"] != dtype:
        dtype += f" (stored as {info['source_dtype']}"
        dtype += f", {quant} quantization, de-quantized on read)" if quant != "none" else ")"
    lines = [
        f"source:       {info.get('source')}",
        f"size:         {info['width']} x {info['height']} pixels (width x height)",
        f"bands:        {info['bands']} ({shown})",
        f"dtype:        {dtype}",
        f"crs:          {crs}",
        f"resolution:   {res} ({info['orientation']})",
        "bounds:       left {:.10g}, bottom {:.10g}, right {:.10g}, top {:.10g}".format(
            *info["bounds"]
        ),
    ]
    if info["chunks"] is not None:
        lines.append(
            f"chunks:       {info['chunks'][0]} x {info['chunks'][1]} x {info['chunks'][2]} "
            f"(band, y, x), {info['n_chunks']} chunks of {info['chunk_mib']} MiB"
        )
    else:
        lines.append("chunks:       none (in memory)")
    if info.get("sample_pixels"):
        nd = info["nodata_fraction"]
        lines.append(
            f"nodata:       {100 * nd:.2f} % of {info['sample_pixels']} sampled pixels "
            f"({info['sample_windows']} windows)"
        )
        vl = info.get("vector_length")
        if vl:
            tag = "unit-length" if info.get("unit_length") else "not unit-length"
            lines.append(
                f"vector length: {vl['min']:.4f} .. {vl['max']:.4f} (mean {vl['mean']:.4f}, "
                f"{tag}) on the sample"
            )
    return "\n".join(lines)
