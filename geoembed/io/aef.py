"""AlphaEarth Foundations (AEF) int8 codes: detection and de-quantization, in one place.

The public AEF release stores each embedding component as an int8 code ``q``:

* ``q == -128`` marks a masked pixel (the README: "if it is present in one channel, it will
  be present in all channels"); geoembed masks the **whole pixel** when any band holds it,
  so a half-masked vector can never leak into a classifier;
* every other code de-quantizes to ``sign(q) * (q / 127.5) ** 2``, which gives unit-length
  64-d vectors (lengths 0.99..1.01).

:func:`dequantize_aef` works on NumPy, Dask and xarray inputs and stays lazy for the
latter two (one fused task per chunk, no float64 intermediates).
"""

from __future__ import annotations

import logging
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr
from dask.base import tokenize

from geoembed._aef_codes import (
    AEF_NODATA,
    AEF_SCALE,
    aef_codes_of,
    decode_codes,
    dequantize_block,
)
from geoembed.errors import QuantizationError

__all__ = [
    "AEF_NODATA",
    "AEF_SCALE",
    "aef_codes_of",
    "decode_codes",
    "dequantize_aef",
    "dequantize_block",
    "resolve_quantization",
]

log = logging.getLogger(__name__)

#: attributes describing the encoded source that must not survive de-quantization
_ENCODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned")


def _check_int8(dtype: Any, what: str) -> None:
    if np.dtype(dtype) != np.int8:
        raise QuantizationError(
            f"{what} has dtype {np.dtype(dtype)}; AEF de-quantization needs int8 codes. "
            "Drop quantization='aef' for data that are already de-quantized floats."
        )


def dequantize_aef(
    q: Any,
    *,
    band_axis: int = 0,
    band_dim: str = "band",
) -> Any:
    """De-quantize AlphaEarth int8 codes: mask ``-128`` per pixel, then ``sign(q)(q/127.5)²``.

    Parameters
    ----------
    q : numpy.ndarray, dask.array.Array or xarray.DataArray
        int8 codes. Dask and xarray inputs stay lazy.
    band_axis : int, default 0
        Band axis of a NumPy or Dask array.
    band_dim : str, default "band"
        Band dimension of a DataArray.

    Returns
    -------
    same kind as ``q``
        float32 values; every band of a pixel that holds ``-128`` in any band is NaN.
        A Dask array keeps its spatial chunks, with the band axis in one chunk.

    Raises
    ------
    QuantizationError
        When ``q`` is not int8.

    Examples
    --------
    >>> import numpy as np
    >>> dequantize_aef(np.array([[127, -128], [-64, 0]], dtype=np.int8))
    array([[ 0.99217224,         nan],
           [-0.25196466,         nan]], dtype=float32)
    """
    if isinstance(q, xr.DataArray):
        _check_int8(q.dtype, f"DataArray {q.name!r}")
        if band_dim not in q.dims:
            raise QuantizationError(
                f"DataArray {q.name!r} has dims {q.dims} and no {band_dim!r} dimension; "
                "pass band_dim= so that masked pixels are masked in every band."
            )
        data = dequantize_aef(q.data, band_axis=q.get_axis_num(band_dim))
        attrs = {k: v for k, v in q.attrs.items() if k not in _ENCODING_ATTRS}
        out = q.copy(data=data)
        out.attrs = attrs
        out.encoding = {}
        return out
    if isinstance(q, dsa.Array):
        _check_int8(q.dtype, "the Dask array")
        axis = band_axis % q.ndim
        if len(q.chunks[axis]) > 1:
            q = q.rechunk({axis: -1})
        return q.map_blocks(
            dequantize_block,
            axis=axis,
            dtype=np.float32,
            name=f"dequantize-aef-{tokenize(q, axis)}",
            meta=np.empty((0,) * q.ndim, dtype=np.float32),
        )
    arr = np.asarray(q)
    _check_int8(arr.dtype, "the array")
    return dequantize_block(arr, axis=band_axis % max(arr.ndim, 1))


def resolve_quantization(
    dtype: Any,
    nodata: Any,
    quantization: str | None,
    *,
    source: str,
) -> str | None:
    """Decide whether a source holds AEF int8 codes.

    Parameters
    ----------
    dtype : dtype
        Stored dtype.
    nodata : number or None
        Nodata value from the source's metadata (``_FillValue``, GDAL nodata).
    quantization : {"aef", None}
        What the caller asked for; ``None`` auto-detects.
    source : str
        How to name the input in messages.

    Returns
    -------
    "aef" or None

    Raises
    ------
    QuantizationError
        For an unknown ``quantization``, ``"aef"`` on a non-int8 source, or int8 data
        without nodata metadata when ``quantization`` is not given.
    """
    dtype = np.dtype(dtype)
    if quantization not in (None, "aef"):
        raise QuantizationError(
            f"unknown quantization={quantization!r} for {source}; use 'aef' for AlphaEarth "
            "int8 codes or leave it out to auto-detect."
        )
    if quantization == "aef":
        _check_int8(dtype, source)
        if nodata is not None and not _is_aef_nodata(nodata):
            log.warning(
                "%s declares nodata %r, but AEF codes use -128; masking -128 as quantization='aef' "
                "says.",
                source,
                nodata,
            )
        return "aef"
    if dtype == np.int8:
        if nodata is not None and _is_aef_nodata(nodata):
            return "aef"
        found = "no nodata value" if nodata is None else f"nodata {nodata!r}"
        raise QuantizationError(
            f"{source} holds int8 codes with {found}, so geoembed cannot tell how to decode "
            "them. If these are AlphaEarth (AEF) embeddings, pass quantization='aef' "
            "(-128 = masked, v = sign(q) * (q / 127.5) ** 2)."
        )
    return None


def _is_aef_nodata(nodata: Any) -> bool:
    try:
        return float(nodata) == AEF_NODATA
    except (TypeError, ValueError):
        return False
