"""Build GeoTIFF variants of the real AEF tile (masked, bottom-up, no nodata, ...) in tmp dirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import Affine


def read_codes(src: Path) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    with rasterio.open(src) as ds:
        return ds.read(), dict(ds.profile), list(ds.descriptions)


def write_tif(
    dst: Path,
    data: np.ndarray,
    profile: dict[str, Any],
    *,
    descriptions: list[str] | None = None,
    bottom_up: bool = False,
    **overrides: Any,
) -> Path:
    prof = dict(profile)
    prof.update(count=data.shape[0], dtype=str(data.dtype), **overrides)
    if bottom_up:
        t = prof["transform"]
        height = data.shape[1]
        # positive y-resolution: origin at the lower-left corner, rows run south -> north
        prof["transform"] = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * height)
        data = data[:, ::-1, :]
    with rasterio.open(dst, "w", **prof) as ds:
        ds.write(data)
        if descriptions:
            ds.descriptions = tuple(descriptions)
    return dst


def aef_variant(
    src: Path,
    dst: Path,
    *,
    bottom_up: bool = False,
    mask_pixels: list[tuple[int, int]] | None = None,
    mask_band_pixels: list[tuple[int, int, int]] | None = None,
    nodata: float | None = -128,
    descriptions: bool = True,
    n_bands: int | None = None,
) -> Path:
    """Write a variant of the real int8 tile.

    ``mask_pixels`` get -128 in every band, ``mask_band_pixels`` (band, row, col) in one band.
    Row/col refer to the north-up original.
    """
    data, prof, desc = read_codes(src)
    data = data.copy()
    for r, c in mask_pixels or []:
        data[:, r, c] = -128
    for b, r, c in mask_band_pixels or []:
        data[b, r, c] = -128
    if n_bands is not None:
        if n_bands <= data.shape[0]:
            data, desc = data[:n_bands], desc[:n_bands]
        else:
            extra = n_bands - data.shape[0]
            data = np.concatenate([data, data[:extra]], axis=0)
            desc = desc + [f"X{i:02d}" for i in range(extra)]
    prof["nodata"] = nodata
    return write_tif(
        dst, data, prof, descriptions=desc if descriptions else None, bottom_up=bottom_up
    )


def formula(q: np.ndarray) -> np.ndarray:
    """Reference de-quantization in float64."""
    q = q.astype(np.float64)
    return np.sign(q) * (q / 127.5) ** 2
