"""Lazy readers: Zarr (v2/v3, local or cloud), GeoTIFF/COG (incl. AEF int8), xarray, Xee.

:func:`open_embeddings` is the one entry point; it returns the canonical embedding field
(see :mod:`geoembed.schema`). :func:`dequantize_aef` is the single place where AlphaEarth
int8 codes are decoded, and :func:`describe` is what ``geoembed info`` reports.
"""

from geoembed.io.aef import dequantize_aef
from geoembed.io.describe import describe, format_description
from geoembed.io.open import from_xarray, open_embeddings

__all__ = ["dequantize_aef", "describe", "format_description", "from_xarray", "open_embeddings"]
