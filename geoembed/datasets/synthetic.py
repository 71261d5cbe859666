"""A synthetic, AlphaEarth-like embedding scene for demos and tests (NOT real data).

:func:`synthetic_scene` builds a lazy 64-band field of unit-length float32 vectors over a
land-cover-like layout (farm parcels, forest, lakes and a river, towns, roads, bare
fields), its ground-truth class raster, and samplers for labelled points and polygons.

Everything is generated from *global* pixel indices with counter-based hashes, so a pixel
has the same value whatever the chunking, and a 20 000 x 20 000 scene costs nothing until
it is computed (each Dask block is generated on its own).

How the vector statistics were chosen
-------------------------------------
The constants below were derived offline (a one-off script, not shipped) from the real
AlphaEarth Satellite Embedding V1 vectors in the project's test data: the three Dynamic
World sample tables ``dw_samples_2024_{amazon_forest,california_coast,iowa_ag}.csv``
(720 labelled, de-quantized 64-d vectors each) and the Wisconsin int8 tile. The package
never reads those files. Measured there, and matched here:

* cosine similarity between class means (averaged over the three regions, central 80 % of
  each class): the :data:`_CLASS_MEAN_COS` table (water is the most distinct class,
  0.45-0.58; grass/crops/bare are close, 0.79-0.87);
* median cosine of a vector to its class mean: 0.86 (built) to 0.95 (water);
* cosine between 4-neighbours (Wisconsin): median 0.995; per-band standard deviation
  0.065-0.10; the variance lives in a few dimensions (participation ratio 5-7).

A 512 x 768 synthetic scene gives: median cosine to the class mean 0.86 (built) to 0.95
(water), class-mean cosines 0.45-0.90, neighbour cosine 0.992, per-band standard
deviation 0.075, participation ratio 6.8; nearest-prototype accuracy about 0.93 and
5-fold kNN (k=5) accuracy on sampled points about 0.93 (real labels, which are noisier,
give 0.70-0.75).

"The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google
DeepMind." Dynamic World labels: Google, World Resources Institute, CC-BY-4.0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, NamedTuple

import dask.array as dsa
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoembed.datasets import _regions as R
from geoembed.errors import SchemaError
from geoembed.schema import CLASS_NODATA, NAME, aef_band_names, map_like

__all__ = ["CLASSES", "ClassInfo", "SyntheticScene", "synthetic_scene"]

DESCRIPTION = "synthetic AlphaEarth-like scene (not real data)"


class ClassInfo(NamedTuple):
    """One land-cover class of the synthetic scene."""

    id: int
    name: str
    color: tuple[int, int, int]

    @property
    def hex(self) -> str:
        """Colour as ``#rrggbb``."""
        return "#{:02x}{:02x}{:02x}".format(*self.color)


#: Classes of the synthetic scene; colours follow the Dynamic World palette (road added).
CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(R.WATER, "water", (0x41, 0x9B, 0xDF)),
    ClassInfo(R.TREES, "trees", (0x39, 0x7D, 0x49)),
    ClassInfo(R.GRASS, "grass", (0x88, 0xB0, 0x53)),
    ClassInfo(R.CROPS, "crops", (0xE4, 0x96, 0x35)),
    ClassInfo(R.BUILT, "built", (0xC4, 0x28, 0x1B)),
    ClassInfo(R.ROAD, "road", (0x4D, 0x4D, 0x4D)),
    ClassInfo(R.BARE, "bare", (0xA5, 0x9B, 0x8F)),
)

_BANDS = 64
#: Cosine similarity between class means of real AlphaEarth vectors (Dynamic World
#: classes water, trees, grass, crops, built, bare; mean over the three sample regions).
_CLASS_MEAN_COS = np.array(
    [
        [1.000, 0.447, 0.470, 0.480, 0.479, 0.584],
        [0.447, 1.000, 0.676, 0.663, 0.644, 0.685],
        [0.470, 0.676, 1.000, 0.785, 0.743, 0.871],
        [0.480, 0.663, 0.785, 1.000, 0.749, 0.818],
        [0.479, 0.644, 0.743, 0.749, 1.000, 0.746],
        [0.584, 0.685, 0.871, 0.818, 0.746, 1.000],
    ]
)
#: Roads have no Dynamic World class (they are "built" at 10 m): a mix of built and bare
#: with a direction of their own.
_ROAD_MIX = (0.70, 0.30, 0.40)  # built, bare, own direction (before normalising)
#: Seed of the fixed "embedding space" (prototype basis); the scene seed changes the
#: layout and the noise, not what a class looks like, as with a real embedding model.
_SPACE_SEED = 20240101
#: 1 / standard deviation of value noise minus 0.5 (measured), so texture amplitudes are norms
_TEXTURE_GAIN = 4.66
_N_PARCEL_DIMS = 12
_N_TEXTURE = 4  # smooth noise fields per texture scale (fine, coarse)
#: Per-class spread, as norms added to the unit prototype before re-normalising:
#: per-parcel offset, fine and coarse smooth texture, per-pixel noise. Tuned (offline, on
#: a 512 x 768 scene) so that the median cosine to the class mean matches the real value
#: of each class within 0.01 and the neighbour cosine is about 0.99.
_SPREAD = {
    #           parcel, fine texture, coarse texture, pixel
    R.WATER: (0.00, 0.21, 0.29, 0.08),
    R.TREES: (0.00, 0.31, 0.35, 0.09),
    R.GRASS: (0.30, 0.26, 0.26, 0.09),
    R.CROPS: (0.46, 0.25, 0.17, 0.08),
    R.BUILT: (0.43, 0.39, 0.30, 0.12),
    R.ROAD: (0.00, 0.42, 0.33, 0.12),
    R.BARE: (0.29, 0.25, 0.25, 0.09),
}


def _space() -> dict[str, np.ndarray]:
    """Prototypes and variation bases of the synthetic embedding space (fixed recipe)."""
    rng = np.random.default_rng(_SPACE_SEED)
    q, _ = np.linalg.qr(rng.standard_normal((_BANDS, _BANDS)))
    chol = np.linalg.cholesky(_CLASS_MEAN_COS)  # rows: class means in a 6-d basis
    base = chol @ q[:, :6].T  # (6, 64) unit vectors with the measured cosines
    water, trees, grass, crops, built, bare = base
    b, a, o = _ROAD_MIX
    road = b * built + a * bare + o * q[:, 6]
    protos = np.stack([water, trees, grass, crops, built, road, bare])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    # parcel offsets: decaying weights over the prototype span plus a few more directions
    w = 1.0 / np.sqrt(1.0 + np.arange(_N_PARCEL_DIMS))
    w /= np.sqrt(np.sum(w**2))
    parcel = w[:, None] * q[:, :_N_PARCEL_DIMS].T
    # texture directions: a fine and a coarse set of 4, inside the 12-d variation space
    texture = np.concatenate([q[:, 2 : 2 + _N_TEXTURE].T, q[:, 8 : 8 + _N_TEXTURE].T])
    texture *= np.sqrt(1.0 / _N_TEXTURE)
    spread = np.array([_SPREAD[c.id] for c in CLASSES], dtype=np.float32)
    return {
        "protos": protos.astype(np.float32),
        "parcel": parcel.astype(np.float32),
        "texture": texture.astype(np.float32),
        "spread": spread,
    }


def _embedding_block(
    r0: int, r1: int, c0: int, c1: int, layout: R.Layout, space: dict[str, np.ndarray]
) -> np.ndarray:
    """Compute the ``(64, r1-r0, c1-c0)`` float32 vectors of one block.

    Only element-wise NumPy operations in a fixed order are used (no BLAS), so every
    pixel gets bit-identical values whatever block it is computed in. Temporaries are
    single bands, so peak memory is about 1.2 x the output block.
    """
    rows = np.arange(r0, r1, dtype=np.int64)[:, None]
    cols = np.arange(c0, c1, dtype=np.int64)[None, :]
    cls, parcel = R.labels_at(rows, cols, layout)
    valid = cls != R.NODATA
    safe = np.where(valid, cls, 0)
    spread = space["spread"]
    protos = space["protos"]

    # per-parcel offsets: one random latent vector per parcel id, projected to 64-d
    uniq, inverse = np.unique(parcel, return_inverse=True)
    inverse = inverse.reshape(parcel.shape)
    z = R.normals(R.hash_u64(layout.seed, 11, uniq), _N_PARCEL_DIMS)
    basis = space["parcel"]
    offsets = np.zeros((_BANDS, uniq.size), dtype=np.float32)
    for k in range(_N_PARCEL_DIMS):
        offsets += basis[k][:, None] * z[k][None, :]
    offsets[:, uniq == 0] = 0.0
    amp_parcel = spread[safe, 0] * (parcel != 0)

    # smooth texture (zero-mean value noise) at two scales, along a few directions each
    scales = (max(3.0, layout.parcel / 6.0), max(8.0, float(layout.parcel)))
    fields = []
    for s, scale in enumerate(scales):
        amp = spread[safe, 1 + s] * np.float32(_TEXTURE_GAIN)
        for k in range(_N_TEXTURE):
            t = R.value_noise(rows, cols, scale, layout.key(100 + 10 * s + k)) - 0.5
            fields.append(t.astype(np.float32) * amp)
    directions = space["texture"]

    out = np.empty((_BANDS, *cls.shape), dtype=np.float32)
    for j in range(_BANDS):
        band = protos[:, j][safe]
        band += offsets[j][inverse] * amp_parcel
        for k, t in enumerate(fields):
            band += directions[k, j] * t
        out[j] = band

    # per-pixel noise from a counter-based hash of the global pixel index
    key = R.hash_u64(layout.seed, 12, rows + (1 << 40), cols + (1 << 40))
    amp = spread[safe, 3] / np.float32(np.sqrt(_BANDS))
    for j, n in enumerate(R.iter_unit_noise(key, _BANDS)):
        out[j] += n * amp

    norm2 = out[0] * out[0]
    for j in range(1, _BANDS):
        norm2 += out[j] * out[j]
    out /= np.sqrt(norm2)[None]
    out[:, ~valid] = np.nan
    return out


def _truth_block(r0: int, r1: int, c0: int, c1: int, layout: R.Layout) -> np.ndarray:
    rows = np.arange(r0, r1, dtype=np.int64)[:, None]
    cols = np.arange(c0, c1, dtype=np.int64)[None, :]
    return R.labels_at(rows, cols, layout)[0]


def _lazy(
    name: str,
    shape: tuple[int, ...],
    chunks: tuple[tuple[int, ...], ...],
    dtype: Any,
    func: Any,
    *args: Any,
    shared: dict[str, Any] | None = None,
) -> dsa.Array:
    """Build a Dask array whose every block is ``func(r0, r1, c0, c1, *args)``.

    ``shared`` entries become graph keys of their own, so that a value passed to every
    block (by naming its key in ``args``) is serialised once, not once per task.
    """
    ychunks, xchunks = chunks[-2], chunks[-1]
    ystarts = np.concatenate([[0], np.cumsum(ychunks)]).astype(int)
    xstarts = np.concatenate([[0], np.cumsum(xchunks)]).astype(int)
    lead = (0,) * (len(shape) - 2)
    dsk: dict[Any, Any] = dict(shared or {})
    for i in range(len(ychunks)):
        for j in range(len(xchunks)):
            dsk[(name, *lead, i, j)] = (
                func,
                int(ystarts[i]),
                int(ystarts[i + 1]),
                int(xstarts[j]),
                int(xstarts[j + 1]),
                *args,
            )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    return dsa.Array(graph, name, chunks=chunks, dtype=dtype, shape=shape)


@dataclass(frozen=True)
class SyntheticScene:
    """A synthetic AlphaEarth-like scene (NOT real data) and its ground truth.

    Build it with :func:`synthetic_scene`.

    Attributes
    ----------
    field : xarray.DataArray
        Lazy canonical embedding field ``(band, y, x)``: 64 unit-length float32 bands
        ``A00``..``A63``, NaN on the nodata patch; ``attrs["description"]`` says it is
        synthetic.
    truth : xarray.DataArray
        Lazy ``(y, x)`` uint8 class ids on the same grid, 255 on nodata.
    classes : tuple of ClassInfo
        ``(id, name, color)`` of every class (:data:`CLASSES`).
    layout : Layout
        The parameters of the land-cover layout (seed, feature sizes, nodata patch).
    """

    field: xr.DataArray
    truth: xr.DataArray
    classes: tuple[ClassInfo, ...]
    layout: R.Layout
    _transform: tuple[float, float, float, float] = dc_field(repr=False)  # x0, y0, res, yres

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return [c.name for c in self.classes]

    @property
    def colors(self) -> dict[int, tuple[int, int, int]]:
        """Class colours ``{id: (r, g, b)}`` (a rasterio colormap)."""
        return {c.id: c.color for c in self.classes}

    @property
    def crs(self) -> Any:
        """The CRS of the field (a rasterio CRS)."""
        return self.field.rio.crs

    def labels_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Ground-truth class ids at pixel indices, without computing the truth raster."""
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        return R.labels_at(rows, cols, self.layout)[0]

    def _xy(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, res, yres = self._transform
        return x0 + (cols + 0.5) * res, y0 + (rows + 0.5) * yres

    def _candidates(
        self, n_per_class: int, seed: int, accept: Any = None
    ) -> dict[int, list[tuple[int, int]]]:
        """Rejection-sample pixel positions per class from the label function."""
        h, w = self.layout.height, self.layout.width
        rng = np.random.default_rng([seed, 7])
        found: dict[int, list[tuple[int, int]]] = {c.id: [] for c in self.classes}
        seen: set[int] = set()
        batch = int(min(max(4096, 50 * n_per_class * len(self.classes)), 1 << 20))
        budget = int(min(30 * h * w, max(200 * n_per_class * len(self.classes), 1 << 20)))
        drawn = 0
        while drawn < budget and any(len(v) < n_per_class for v in found.values()):
            idx = rng.integers(0, h * w, size=batch)
            drawn += batch
            rows, cols = np.divmod(idx, w)
            labels = self.labels_at(rows, cols)
            for r, c, lab in zip(rows.tolist(), cols.tolist(), labels.tolist()):
                if lab == R.NODATA or len(found[lab]) >= n_per_class:
                    continue
                flat = r * w + c
                if flat in seen:
                    continue
                seen.add(flat)
                if accept is not None and not accept(r, c, lab):
                    continue
                found[lab].append((r, c))
        short = {self.classes[k].name: len(v) for k, v in found.items() if len(v) < n_per_class}
        if short:
            warnings.warn(
                f"synthetic scene {h} x {w}: found fewer than {n_per_class} samples for "
                f"{short}; use a larger scene or fewer samples per class.",
                stacklevel=3,
            )
        return found

    def sample_points(self, n_per_class: int, *, seed: int = 0) -> Any:
        """Labelled points at pixel centres, ``n_per_class`` per class, off nodata.

        The label function is evaluated at random pixels only, so this is cheap for any
        scene size (the truth raster is never computed).

        Parameters
        ----------
        n_per_class : int
            Points per class (fewer, with a warning, when a tiny scene has too few pixels).
        seed : int
            Sampling seed.

        Returns
        -------
        geopandas.GeoDataFrame
            Columns ``class`` (name), ``class_id``, ``row``, ``col`` and point geometry in
            the field's CRS.
        """
        import geopandas as gpd

        found = self._candidates(n_per_class, seed)
        rows = np.array([r for k in sorted(found) for r, _ in found[k]], dtype=np.int64)
        cols = np.array([c for k in sorted(found) for _, c in found[k]], dtype=np.int64)
        ids = np.array([k for k in sorted(found) for _ in found[k]], dtype=np.int64)
        xs, ys = self._xy(rows, cols)
        names = np.array(self.class_names, dtype=object)[ids]
        return gpd.GeoDataFrame(
            {"class": names, "class_id": ids, "row": rows, "col": cols},
            geometry=gpd.points_from_xy(xs, ys),
            crs=self.crs,
        )

    def sample_polygons(self, n_per_class: int, *, seed: int = 0, size_px: int = 5) -> Any:
        """Small labelled polygons, each fully inside one class region.

        Each polygon is a ``size_px`` x ``size_px`` block of pixels of a single class
        (for thin classes such as roads, a 1-pixel-wide strip of ``size_px`` pixels),
        inset by a quarter pixel so that exactly those pixel centres fall inside it.
        Polygons do not overlap.

        Parameters
        ----------
        n_per_class : int
            Polygons per class.
        seed : int
            Sampling seed.
        size_px : int
            Side of the square in pixels.

        Returns
        -------
        geopandas.GeoDataFrame
            Columns ``polygon_id``, ``class``, ``class_id``, ``n_pixels`` and polygon
            geometry in the field's CRS.
        """
        import geopandas as gpd
        from shapely.geometry import box

        if size_px < 1:
            raise SchemaError(f"size_px must be >= 1, got {size_px}.")
        h, w = self.layout.height, self.layout.width
        taken: set[tuple[int, int]] = set()
        shapes: dict[tuple[int, int, int], tuple[int, int]] = {}
        thin = {R.ROAD}
        s = size_px

        def accept(r: int, c: int, lab: int) -> bool:
            options = [(s, s)] + ([(1, s), (s, 1)] if lab in thin else [])
            for hh, ww in options:
                r0, c0 = r - hh // 2, c - ww // 2
                if r0 < 0 or c0 < 0 or r0 + hh > h or c0 + ww > w:
                    continue
                rr, cc = np.mgrid[r0 : r0 + hh, c0 : c0 + ww]
                cells = set(zip(rr.ravel().tolist(), cc.ravel().tolist()))
                if cells & taken:
                    continue
                if np.all(self.labels_at(rr, cc) == lab):
                    taken.update(cells)
                    shapes[(r, c, lab)] = (hh, ww)
                    return True
            return False

        found = self._candidates(n_per_class, seed, accept)
        x0, y0, res, yres = self._transform
        recs: list[tuple[int, str, int, int]] = []
        geoms = []
        for k in sorted(found):
            for r, c in found[k]:
                hh, ww = shapes[(r, c, k)]
                r0, c0 = r - hh // 2, c - ww // 2
                xa, ya = x0 + (c0 + 0.25) * res, y0 + (r0 + 0.25) * yres
                xb, yb = x0 + (c0 + ww - 0.25) * res, y0 + (r0 + hh - 0.25) * yres
                geoms.append(box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)))
                recs.append((len(recs), self.classes[k].name, k, hh * ww))
        return gpd.GeoDataFrame(
            {
                "polygon_id": np.array([r[0] for r in recs], dtype=np.int64),
                "class": np.array([r[1] for r in recs], dtype=object),
                "class_id": np.array([r[2] for r in recs], dtype=np.int64),
                "n_pixels": np.array([r[3] for r in recs], dtype=np.int64),
            },
            geometry=geoms,
            crs=self.crs,
        )

    @property
    def prototypes(self) -> np.ndarray:
        """``(n_classes, 64)`` unit class prototypes of the synthetic embedding space."""
        return _space()["protos"].copy()


def _norm_chunks(chunks: int | tuple[int, int]) -> tuple[int, int]:
    cy, cx = (chunks, chunks) if isinstance(chunks, int) else chunks
    if int(cy) < 1 or int(cx) < 1:
        raise SchemaError(f"chunks must be positive, got {chunks!r}.")
    return int(cy), int(cx)


def _split(n: int, c: int) -> tuple[int, ...]:
    full, rest = divmod(n, c)
    return (c,) * full + ((rest,) if rest else ())


def synthetic_scene(
    height: int,
    width: int,
    *,
    seed: int = 0,
    chunks: int | tuple[int, int] = 512,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5100000.0),
    res: float = 10.0,
    nodata_patch: bool = True,
) -> SyntheticScene:
    """Generate a synthetic AlphaEarth-like embedding scene, lazily (NOT real data).

    The scene imitates AlphaEarth Satellite Embedding V1: 64 bands ``A00``..``A63`` of
    unit-length float32 vectors at 10 m, over a land-cover-like layout (rectangular farm
    parcels with per-parcel variation, forest, lakes and a river, towns with a street grid,
    roads, bare fields). Class prototypes and spreads were tuned to statistics of real
    AlphaEarth vectors (see the module docstring); the layout and values are invented.

    Nothing is computed here: the field and truth are Dask arrays whose blocks are each
    generated from the global pixel indices and ``seed``, so results do not depend on
    ``chunks`` and a 20 000 x 20 000 scene costs only a task graph until computed.

    Parameters
    ----------
    height, width : int
        Size in pixels.
    seed : int
        Layout and noise seed (class prototypes are fixed, like a real embedding model).
    chunks : int or (int, int)
        Spatial chunk size (band is always one chunk). 512 gives 64 MiB blocks.
    crs : str
        A projected CRS.
    origin : (float, float)
        Upper-left corner ``(x, y)`` in CRS units; the grid is north-up.
    res : float
        Pixel size in CRS units.
    nodata_patch : bool
        Put a rectangular patch of NaN pixels (truth 255) near the top-right corner.

    Returns
    -------
    SyntheticScene
        With ``.field``, ``.truth``, ``.classes``, ``.sample_points()`` and
        ``.sample_polygons()``.

    Examples
    --------
    >>> scene = synthetic_scene(512, 768, seed=1)
    >>> scene.field.shape
    (64, 512, 768)
    >>> points = scene.sample_points(50)
    """
    if int(height) < 2 or int(width) < 2:
        raise SchemaError(f"synthetic_scene needs at least 2 x 2 pixels, got {height} x {width}.")
    if not res > 0:
        raise SchemaError(f"res must be positive, got {res}.")
    height, width, seed = int(height), int(width), int(seed)
    cy, cx = _norm_chunks(chunks)
    layout = R.Layout.for_scene(height, width, seed, nodata_patch)
    space = _space()
    ych, xch = _split(height, cy), _split(width, cx)
    token = tokenize(layout, crs, origin, res, ych, xch)
    space_key = f"synthetic-space-{tokenize(space)}"
    emb = _lazy(
        f"synthetic-embedding-{token}",
        (_BANDS, height, width),
        ((_BANDS,), ych, xch),
        np.float32,
        _embedding_block,
        layout,
        space_key,
        shared={space_key: space},
    )
    x0, y0 = float(origin[0]), float(origin[1])
    xs = x0 + (np.arange(width) + 0.5) * res
    ys = y0 - (np.arange(height) + 0.5) * res
    field_da = xr.DataArray(
        emb,
        dims=("band", "y", "x"),
        coords={"band": aef_band_names(_BANDS), "y": ys, "x": xs},
        name=NAME,
        attrs={
            "description": DESCRIPTION,
            "synthetic": 1,
            "seed": seed,
            "units": "unit-length embedding",
        },
    )
    field_da = field_da.rio.write_crs(crs)
    field_da = field_da.rio.write_transform(field_da.rio.transform(recalc=True))
    tru = _lazy(
        f"synthetic-truth-{token}", (height, width), (ych, xch), np.uint8, _truth_block, layout
    )
    truth = map_like(
        field_da,
        tru,
        name="class",
        nodata=CLASS_NODATA["uint8"],
        attrs={
            "description": f"ground truth of a {DESCRIPTION}",
            "class_names": ",".join(c.name for c in CLASSES),
        },
    )
    return SyntheticScene(
        field=field_da,
        truth=truth,
        classes=CLASSES,
        layout=layout,
        _transform=(x0, y0, float(res), -float(res)),
    )
