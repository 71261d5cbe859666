"""Counter-based hashing, value noise and the land-cover layout of the synthetic scene.

Everything here is a pure function of *global* pixel indices (row, column in the full
scene) and a seed, evaluated element by element with NumPy: the same pixel gets the same
value whether it is computed inside a 64 x 64 block, a 512 x 512 block, or as one of a
few sampled points. No random-number *stream* is used, so nothing depends on chunking or
on the order in which blocks are computed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Layout",
    "hash_u64",
    "iter_normals",
    "iter_unit_noise",
    "labels_at",
    "normals",
    "uniform",
    "value_noise",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = (np.uint64(s) for s in (30, 27, 31, 32))
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK16 = np.uint64(0xFFFF)
_TWO32 = float(2**32)

# land-cover ids used by the layout (the public table lives in synthetic.py)
WATER, TREES, GRASS, CROPS, BUILT, ROAD, BARE = range(7)
NODATA = 255


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, applied element-wise to a uint64 array (wraps on overflow)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def hash_u64(*keys: np.ndarray | int) -> np.ndarray:
    """Hash any number of integer keys (arrays broadcast together) to uint64.

    Each key is folded in with a SplitMix64 step, so ``hash_u64(a, b)`` and
    ``hash_u64(b, a)`` differ.
    """
    with np.errstate(over="ignore"):
        h = np.zeros((), dtype=np.uint64)
        for k in keys:
            kk = np.asarray(k).astype(np.uint64)
            h = _mix(h * _GOLDEN + kk + _GOLDEN)
    return h


def uniform(h: np.ndarray) -> np.ndarray:
    """Uniform float64 in (0, 1) from the high 32 bits of a uint64 hash."""
    return ((h >> _S32).astype(np.float64) + 0.5) / _TWO32


def iter_normals(key: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """Yield ``n`` standard-normal float32 arrays from a per-element uint64 ``key``.

    A counter-based SplitMix64 sequence per element (state ``key + i * golden``) gives
    two 32-bit uniforms per step, turned into two normals with Box-Muller.
    """
    done = 0
    with np.errstate(over="ignore"):
        for i in range((n + 1) // 2):
            h = _mix(key + np.uint64(i + 1) * _GOLDEN)
            u1 = ((h >> _S32).astype(np.float64) + 0.5) / _TWO32
            u2 = ((h & _MASK32).astype(np.float64) + 0.5) / _TWO32
            r = np.sqrt(-2.0 * np.log(u1))
            t = 2.0 * np.pi * u2
            yield (r * np.cos(t)).astype(np.float32)
            done += 1
            if done < n:
                yield (r * np.sin(t)).astype(np.float32)
                done += 1


def iter_unit_noise(key: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """Yield ``n`` zero-mean, unit-variance float32 arrays (uniform) from a uint64 ``key``.

    Four 16-bit uniforms per SplitMix64 step and no transcendental functions: about six
    times cheaper than :func:`iter_normals`, for per-pixel noise whose shape does not
    matter.
    """
    scale = np.float32(2.0 * np.sqrt(3.0) / 65536.0)
    offset = np.float32(np.sqrt(3.0) - np.sqrt(3.0) / 65536.0)
    done = 0
    with np.errstate(over="ignore"):
        for i in range((n + 3) // 4):
            h = _mix(key + np.uint64(i + 1) * _GOLDEN)
            for q in range(4):
                if done == n:
                    return
                u = ((h >> np.uint64(16 * q)) & _MASK16).astype(np.float32)
                yield u * scale - offset
                done += 1


def normals(key: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` standard-normal float32 arrays from a per-element uint64 ``key``."""
    return list(iter_normals(key, n))


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def value_noise(rows: np.ndarray, cols: np.ndarray, scale: float, key: int) -> np.ndarray:
    """Smooth lattice noise in [0, 1] with feature size ``scale`` pixels.

    ``rows`` and ``cols`` are global pixel indices (broadcastable arrays); lattice values
    are hashed from ``(key, lattice row, lattice column)``.
    """
    fy = (rows + 0.5) / scale
    fx = (cols + 0.5) / scale
    iy = np.floor(fy)
    ix = np.floor(fx)
    ty = _smooth(fy - iy)
    tx = _smooth(fx - ix)
    iy = iy.astype(np.int64) + (1 << 40)
    ix = ix.astype(np.int64) + (1 << 40)
    v00 = uniform(hash_u64(key, iy, ix))
    v01 = uniform(hash_u64(key, iy, ix + 1))
    v10 = uniform(hash_u64(key, iy + 1, ix))
    v11 = uniform(hash_u64(key, iy + 1, ix + 1))
    top = v00 + (v01 - v00) * tx
    bottom = v10 + (v11 - v10) * tx
    return top + (bottom - top) * ty


def _fbm(rows: np.ndarray, cols: np.ndarray, scale: float, key: int, octaves: int) -> np.ndarray:
    total = np.zeros(np.broadcast_shapes(np.shape(rows), np.shape(cols)))
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total = total + amp * value_noise(rows, cols, scale / 2.0**o, key * 16 + o)
        norm += amp
        amp *= 0.5
    return total / norm


@dataclass(frozen=True)
class Layout:
    """Parameters of the land-cover layout of one scene (derived from its size and seed).

    Attributes
    ----------
    seed : int
        Scene seed.
    height, width : int
        Scene size in pixels.
    macro : float
        Feature size (pixels) of forest / farmland / town zones.
    parcel : int
        Side of the parcel grid cell (pixels); each cell is split into two fields.
    river_width : float
        River width in pixels.
    nodata : tuple of int or None
        ``(row0, row1, col0, col1)`` of the nodata patch, or None.
    """

    seed: int
    height: int
    width: int
    macro: float
    parcel: int
    river_width: float
    nodata: tuple[int, int, int, int] | None

    @classmethod
    def for_scene(cls, height: int, width: int, seed: int, nodata_patch: bool) -> Layout:
        """Choose feature sizes that show every class in small and large scenes alike."""
        side = min(height, width)
        macro = float(np.clip(side / 2.5, 48.0, 1500.0))
        parcel = int(np.clip(round(side / 12), 12, 64))
        river_width = float(np.clip(side / 110, 3.0, 12.0))
        patch = None
        if nodata_patch:
            r0 = int(0.08 * height)
            c0 = int(0.70 * width)
            patch = (
                r0,
                min(height, r0 + max(1, int(0.12 * height))),
                c0,
                min(width, c0 + max(1, int(0.18 * width))),
            )
        return cls(seed, height, width, macro, parcel, river_width, patch)

    def key(self, name: int) -> int:
        """Return a per-scene integer key for one noise layer."""
        return int(hash_u64(self.seed, name) >> np.uint64(8))


#: rotation of the parcel grid against the pixel grid (radians, about 17 degrees)
GRID_ANGLE = 0.3


def labels_at(rows: np.ndarray, cols: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Class id and parcel id at global pixel indices.

    Parameters
    ----------
    rows, cols : numpy.ndarray
        Integer global pixel indices; broadcast together (e.g. a column and a row vector
        for a block, or two 1-d arrays for points).
    layout : Layout
        Scene layout.

    Returns
    -------
    classes : numpy.ndarray of uint8
        Class ids, 255 on the nodata patch.
    parcels : numpy.ndarray of uint64
        Parcel id for pixels in fields or town blocks, 0 elsewhere (forest, water, roads).
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    shape = np.broadcast_shapes(rows.shape, cols.shape)
    r = rows.astype(np.float64)
    c = cols.astype(np.float64)
    lay = layout
    p = lay.parcel

    # zones: smooth noise at the macro scale, edges roughened by a finer octave
    zone = _fbm(r, c, lay.macro, lay.key(1), 3)
    town = _fbm(r, c, lay.macro * 0.8, lay.key(2), 2)
    lakes = _fbm(r, c, lay.macro * 0.6, lay.key(3), 3)

    # parcel grid: cells of p x p, each split into two fields at a hashed position. The
    # grid is turned by GRID_ANGLE: an axis-aligned grid of p | 512 px cells drew straight
    # field edges across the whole scene on every chunk boundary, which looked like
    # chunk seams in quicklooks.
    ca, sa = np.cos(GRID_ANGLE), np.sin(GRID_ANGLE)
    gu = (r + 0.5) * ca + (c + 0.5) * sa
    gv = (c + 0.5) * ca - (r + 0.5) * sa
    ci = np.floor(gu / p).astype(np.int64)
    cj = np.floor(gv / p).astype(np.int64)
    hc = hash_u64(lay.key(4), ci + (1 << 40), cj + (1 << 40))
    split = 0.3 + 0.4 * uniform(hc)
    vertical = (hc & np.uint64(1)) == 1
    fr = (gu - ci * p) / p
    fc = (gv - cj * p) / p
    half = np.where(vertical, fc >= split, fr >= split).astype(np.uint64)
    parcel = hash_u64(lay.key(5), ci + (1 << 40), cj + (1 << 40), half) | np.uint64(1)
    u = uniform(hash_u64(parcel, 7))

    # zone of a parcel is read at its cell centre so that fields stay rectangular
    cu = ci * p + p / 2.0
    cv = cj * p + p / 2.0
    cr = cu * ca - cv * sa
    cc = cu * sa + cv * ca
    in_town = _fbm(cr, cc, lay.macro * 0.8, lay.key(2), 2) > 0.62
    cls = np.full(shape, CROPS, dtype=np.uint8)
    cls = np.where(u < 0.24, GRASS, cls)
    cls = np.where((u >= 0.24) & (u < 0.33), BARE, cls)
    cls = np.where(in_town, np.where(u < 0.78, BUILT, GRASS), cls).astype(np.uint8)

    # forest: organic shapes where the zone noise is low
    cls = np.where(zone < 0.42, TREES, cls)
    has_parcel = (cls != TREES) | np.zeros(shape, dtype=bool)

    # roads: two pixels wide on selected grid lines; a full grid inside towns
    w_road = 2 if p >= 16 else 1
    on_h = (gu - ci * p) < w_road
    on_v = (gv - cj * p) < w_road
    road_row = uniform(hash_u64(lay.key(6), ci + (1 << 40))) < 0.22
    road_col = uniform(hash_u64(lay.key(7), cj + (1 << 40))) < 0.22
    town_px = town > 0.62
    road = (on_h & road_row) | (on_v & road_col) | (town_px & (on_h | on_v) & (cls != TREES))
    cls = np.where(road, ROAD, cls)

    # water: lakes, and a meandering river with grassy banks
    tau = 2.0 * np.pi
    ph1, ph2 = (uniform(hash_u64(lay.key(8), k)) * tau for k in (1, 2))
    amp1 = 0.10 * lay.height
    lam1 = max(lay.width, 64) * 0.9
    lam2 = max(lay.width, 64) * 0.23
    centre = (
        0.62 * lay.height
        + amp1 * np.sin(tau * c / lam1 + ph1)
        + 0.25 * amp1 * np.sin(tau * c / lam2 + ph2)
    )
    slope = amp1 * tau / lam1 * np.cos(tau * c / lam1 + ph1) + 0.25 * amp1 * tau / lam2 * np.cos(
        tau * c / lam2 + ph2
    )
    dist = np.abs(r + 0.5 - centre) / np.sqrt(1.0 + slope * slope)
    river = dist < lay.river_width / 2.0
    banks = (dist < lay.river_width / 2.0 + 2.0) & ~river & (cls != ROAD)
    lake = lakes > 0.72
    cls = np.where(banks, GRASS, cls)
    water = river | lake
    cls = np.where(water, WATER, cls)

    parcel = np.where(has_parcel & ~water & ~road & ~banks, parcel, np.uint64(0))

    if lay.nodata is not None:
        r0, r1, c0, c1 = lay.nodata
        patch = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        cls = np.where(patch, NODATA, cls)
    return np.broadcast_to(cls, shape).astype(np.uint8), np.broadcast_to(parcel, shape).astype(
        np.uint64
    )
