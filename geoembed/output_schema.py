"""The output data model: names, dims, dtypes, nodata and attributes of every output.

Every output lies on the grid of the embedding field it was computed from (the same
``y``/``x`` coordinates and rioxarray ``spatial_ref``), unless a producer was asked for
another grid (a CNN's output stride):

==================  =================  =========================  ==========================
output (name)       dims               dtype                      nodata
==================  =================  =========================  ==========================
``classes``         ``(y, x)``         :func:`class_dtype`        :data:`CLASS_NODATA`
``confidence``      ``(y, x)``         float32                    NaN
``probabilities``   ``(class, y, x)``  float32 (uint8 scaled)     NaN (255)
``clusters``        ``(y, x)``         :func:`class_dtype`        :data:`CLASS_NODATA`
``distance``        ``(y, x)``         float32                    NaN
``distances``       ``(cluster, y, x)`` float32                   NaN
``similarity``      ``(y, x)``         float32                    NaN
``change``          ``(y, x)``         float32                    NaN
``value``/``spread`` ``(y, x)``        float32                    NaN
``features``        ``(band, y, x)``   float32                    NaN
==================  =================  =========================  ==========================

Class maps (classes and clusters) carry their legend in ``attrs["class_names"]`` (a list
in class-id order) and ``attrs["colors"]`` (``"#rrggbb"`` strings), both readable with
:func:`geoembed.colors.decode_class_names` / :func:`~geoembed.colors.decode_class_colors`:
the COG writer turns them into the ``class_names`` tag and the colour table. The
``class`` coordinate of probabilities holds the class names, so a class map and its
probabilities fit in one :class:`xarray.Dataset` (which is why the map is not called
``class``: a variable cannot share its name with another variable's dimension).

One constructor per kind wraps a NumPy or Dask array; nothing is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from geoembed.colors import decode_class_colors, decode_class_names, default_color, to_hex
from geoembed.errors import SchemaError

__all__ = [
    "BAND_DIM",
    "CHANGE",
    "CLASSES",
    "CLASS_DIM",
    "CLASS_NODATA",
    "CLUSTERS",
    "CLUSTER_DIM",
    "CONFIDENCE",
    "DISTANCE",
    "DISTANCES",
    "FEATURES",
    "OUTPUT_DIMS",
    "PROBABILITIES",
    "PROBABILITY_UINT8_NODATA",
    "SIMILARITY",
    "SPREAD",
    "VALUE",
    "class_dtype",
    "class_map",
    "cluster_map",
    "confidence_map",
    "continuous_map",
    "distance_map",
    "distances_map",
    "feature_map",
    "legend_attrs",
    "map_like",
    "probability_map",
    "similarity_map",
    "threshold_mask",
]

#: nodata value of class maps, by dtype (class ids are 0..nodata-1)
CLASS_NODATA: dict[str, int] = {"uint8": 255, "uint16": 65535, "int16": -1}

#: nodata of probabilities stored as uint8 (0..254 for 0..1)
PROBABILITY_UINT8_NODATA = 255

CLASS_DIM = "class"
CLUSTER_DIM = "cluster"
BAND_DIM = "band"

CLASSES = "classes"
CONFIDENCE = "confidence"
PROBABILITIES = "probabilities"
CLUSTERS = "clusters"
DISTANCE = "distance"
DISTANCES = "distances"
SIMILARITY = "similarity"
CHANGE = "change"
VALUE = "value"
SPREAD = "spread"
FEATURES = "features"

#: dims of each output, by name
OUTPUT_DIMS: dict[str, tuple[str, ...]] = {
    CLASSES: ("y", "x"),
    CONFIDENCE: ("y", "x"),
    PROBABILITIES: (CLASS_DIM, "y", "x"),
    CLUSTERS: ("y", "x"),
    DISTANCE: ("y", "x"),
    DISTANCES: (CLUSTER_DIM, "y", "x"),
    SIMILARITY: ("y", "x"),
    CHANGE: ("y", "x"),
    VALUE: ("y", "x"),
    SPREAD: ("y", "x"),
    FEATURES: (BAND_DIM, "y", "x"),
}

#: how a producer places data on a grid: ``place(field, data, name=, leading=, nodata=,
#: attrs=)`` (default :func:`map_like`; CNN inference passes its strided grid)
Place = Callable[..., xr.DataArray]


def class_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned dtype whose nodata value (its max) is not a class id."""
    if n_classes < CLASS_NODATA["uint8"]:
        return np.dtype("uint8")
    if n_classes < CLASS_NODATA["uint16"]:
        return np.dtype("uint16")
    raise SchemaError(f"{n_classes} classes is more than a uint16 class map can hold (65535).")


def map_like(
    field: xr.DataArray,
    data: Any,
    *,
    name: str,
    leading: tuple[str, Sequence[Any]] | None = None,
    nodata: float | int | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Wrap ``data`` as an output on the same grid (and CRS) as ``field``.

    Parameters
    ----------
    field : xarray.DataArray
        The embedding field whose ``y``/``x`` coordinates and CRS are copied.
    data : array-like
        ``(y, x)`` array, or ``(n, y, x)`` when ``leading`` is given (NumPy or Dask).
    name : str
        Name of the output (``"classes"``, ``"confidence"``, ...).
    leading : (str, sequence), optional
        Name and coordinate values of a leading dimension, e.g. ``("class", names)``.
    nodata : number, optional
        Written with ``rio.write_nodata`` (encoded in attributes, not applied).
    attrs : dict, optional
        Extra attributes.

    Returns
    -------
    xarray.DataArray
    """
    coords: dict[str, Any] = {"y": field["y"], "x": field["x"]}
    dims: tuple[str, ...] = ("y", "x")
    if leading is not None:
        dims = (leading[0], "y", "x")
        coords[leading[0]] = list(leading[1])
    out = xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=dict(attrs or {}))
    crs = field.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
    if "spatial_ref" in field.coords and "GeoTransform" in field["spatial_ref"].attrs:
        out["spatial_ref"].attrs["GeoTransform"] = field["spatial_ref"].attrs["GeoTransform"]
    if nodata is not None:
        out = out.rio.write_nodata(nodata)
    return out


def legend_attrs(
    class_names: Sequence[Any] | Mapping[Any, Any] | str | None,
    colors: Sequence[Any] | Mapping[Any, Any] | str | None = None,
    *,
    default_colors: bool = False,
    n_classes: int | None = None,
) -> dict[str, Any]:
    """``class_names`` (and ``colors``) attributes of a class map, through the colour codec.

    Parameters
    ----------
    class_names : list, mapping or encoded tag, or None
        Names in class-id order, or ``{id: name}`` (None: no ``class_names``).
    colors : list, mapping or encoded tag, optional
        Colours in any form :func:`geoembed.colors.parse_color` accepts.
    default_colors : bool, default False
        Give every class without a colour the palette's (KMeans maps).
    n_classes : int, optional
        With ``default_colors``: colour ids ``0..n_classes-1`` even if unnamed.

    Returns
    -------
    dict
        ``class_names``: list of str when the ids are ``0..n-1`` (else the ``{id: name}``
        mapping with str keys); ``colors``: list (or mapping) of ``"#rrggbb"``.
    """
    names = decode_class_names(class_names)
    out: dict[str, Any] = {"class_names": _dense(names)} if class_names is not None else {}
    cmap = {k: to_hex(v) for k, v in decode_class_colors(colors).items()}
    if default_colors:
        ids = set(names) | set(cmap) | set(range(n_classes or 0))
        cmap = {k: cmap.get(k, to_hex(default_color(k))) for k in sorted(ids)}
    if cmap:
        out["colors"] = _dense(cmap)
    return out


def _dense(mapping: Mapping[int, str]) -> list[str] | dict[str, str]:
    ids = sorted(mapping)
    if ids == list(range(len(ids))):
        return [mapping[i] for i in ids]
    return {str(i): mapping[i] for i in ids}


def _as_class_ids(data: Any, dtype: np.dtype, nodata: int) -> Any:
    """Cast ``data`` to ``dtype`` class ids; NaN (a float map's nodata) becomes ``nodata``."""
    if np.issubdtype(data.dtype, np.floating):
        if isinstance(data, xr.DataArray):
            return data.fillna(nodata).astype(dtype)
        mod = np if isinstance(data, np.ndarray) else _dask_array()
        return mod.where(mod.isnan(data), nodata, data).astype(dtype)
    return data if data.dtype == dtype else data.astype(dtype)


def _dask_array() -> Any:
    import dask.array as dsa

    return dsa


def _as_float32(data: Any) -> Any:
    return data if data.dtype == np.float32 else data.astype(np.float32)


def _finish(
    field: xr.DataArray,
    data: Any,
    *,
    name: str,
    leading: tuple[str, Sequence[Any] | None] | None,
    nodata: float | int | None,
    attrs: dict[str, Any],
    place: Place | None,
) -> xr.DataArray:
    """Name, leading dimension, attributes and nodata of an output, on ``field``'s grid.

    A DataArray keeps the producer's grid (and, when the leading dimension's values are
    None, its own coordinate along it); other data is placed by ``place`` (default
    :func:`map_like`).
    """
    if isinstance(data, xr.DataArray):
        out = data.rename(name)
        if leading is not None:
            dim, values = leading
            if out.dims[0] != dim:
                out = out.rename({out.dims[0]: dim})
            if values is not None:
                out = out.assign_coords({dim: list(values)})
        out.attrs.update(attrs)
        return out.rio.write_nodata(nodata, encoded=False) if nodata is not None else out
    lead = None if leading is None else (leading[0], list(leading[1] or ()))
    fn = place or map_like
    return fn(field, data, name=name, leading=lead, nodata=nodata, attrs=attrs)


def class_map(
    field: xr.DataArray,
    data: Any,
    *,
    class_names: Sequence[Any] | Mapping[Any, Any] | str | None,
    colors: Sequence[Any] | Mapping[Any, Any] | str | None = None,
    n_classes: int | None = None,
    name: str = CLASSES,
    attrs: Mapping[str, Any] | None = None,
    default_colors: bool = False,
    place: Place | None = None,
) -> xr.DataArray:
    """Build a ``(y, x)`` class map: ids ``0..C-1``, :func:`class_dtype`, :data:`CLASS_NODATA`.

    Parameters
    ----------
    field : xarray.DataArray
        The embedding field (grid and CRS).
    data : array-like
        ``(y, x)`` class ids (NumPy, Dask or a DataArray already on the grid); a float
        array's NaN becomes the nodata value.
    class_names : list, mapping or encoded tag, or None
        Class names in class-id order, or ``{id: name}`` (None: unnamed classes, then
        ``n_classes`` is required).
    colors : list, mapping or encoded tag, optional
        Class colours (``attrs["colors"]``, the COG's colour table).
    n_classes : int, optional
        Number of classes that sets the dtype (default: the number of names).
    name : str, default "classes"
    attrs : mapping, optional
        Extra attributes (model parameters...).
    default_colors : bool, default False
        Palette colours for classes without one.
    place : callable, optional
        How to put the data on a grid (default :func:`map_like`).

    Returns
    -------
    xarray.DataArray
    """
    if class_names is None and n_classes is None:
        raise SchemaError(f"{name}: pass class_names or n_classes.")
    n = int(n_classes) if n_classes is not None else len(decode_class_names(class_names))
    legend = legend_attrs(class_names, colors, default_colors=default_colors, n_classes=n)
    dtype = class_dtype(n)
    nodata = CLASS_NODATA[dtype.name]
    all_attrs = dict(attrs or {}, **legend)
    return _finish(
        field,
        _as_class_ids(data, dtype, nodata),
        name=name,
        leading=None,
        nodata=nodata,
        attrs=all_attrs,
        place=place,
    )


def cluster_map(
    field: xr.DataArray,
    data: Any,
    *,
    n_clusters: int,
    class_names: Sequence[Any] | Mapping[Any, Any] | str | None = None,
    colors: Sequence[Any] | Mapping[Any, Any] | str | None = None,
    attrs: Mapping[str, Any] | None = None,
    place: Place | None = None,
) -> xr.DataArray:
    """Build a ``(y, x)`` KMeans map named ``clusters``: a class map with palette colours.

    Every cluster gets a colour (palette colours for those not given), so its COG
    carries a colour table; ``class_names`` only when given.
    """
    return class_map(
        field,
        data,
        class_names=class_names,
        colors=colors,
        n_classes=n_clusters,
        name=CLUSTERS,
        attrs=dict(attrs or {}, n_clusters=int(n_clusters)),
        default_colors=True,
        place=place,
    )


def threshold_mask(
    values: xr.DataArray, threshold: float, *, class_names: Sequence[str], name: str
) -> xr.DataArray:
    """Lazy uint8 class map of ``values >= threshold``: 1 at or above, 0 below, 255 at NaN.

    ``class_names`` names the two classes (below, at or above); the threshold is kept in
    ``attrs["threshold"]``.
    """
    nodata = CLASS_NODATA["uint8"]
    flags = xr.where(values >= threshold, 1, 0).where(values.notnull(), nodata)
    return class_map(
        values,
        flags.data.astype(np.uint8),
        class_names=list(class_names),
        name=name,
        attrs={"threshold": float(threshold)},
    )


def continuous_map(
    field: xr.DataArray,
    data: Any,
    *,
    name: str,
    attrs: Mapping[str, Any] | None = None,
    place: Place | None = None,
) -> xr.DataArray:
    """Build a ``(y, x)`` float32 output (NaN nodata) named ``name`` (regression, change...)."""
    return _finish(
        field,
        _as_float32(data),
        name=name,
        leading=None,
        nodata=np.nan,
        attrs=dict(attrs or {}),
        place=place,
    )


def confidence_map(
    field: xr.DataArray,
    data: Any,
    *,
    attrs: Mapping[str, Any] | None = None,
    place: Place | None = None,
) -> xr.DataArray:
    """Build the ``(y, x)`` float32 ``confidence`` of a class map (NaN at nodata)."""
    return continuous_map(field, data, name=CONFIDENCE, attrs=attrs, place=place)


def distance_map(
    field: xr.DataArray, data: Any, *, attrs: Mapping[str, Any] | None = None
) -> xr.DataArray:
    """Build the ``(y, x)`` float32 ``distance`` of each pixel to its own cluster centre."""
    return continuous_map(field, data, name=DISTANCE, attrs=attrs)


def similarity_map(
    field: xr.DataArray, data: Any, *, attrs: Mapping[str, Any] | None = None
) -> xr.DataArray:
    """Build the ``(y, x)`` float32 ``similarity`` to reference vectors."""
    return continuous_map(field, data, name=SIMILARITY, attrs=attrs)


def _stack(
    field: xr.DataArray,
    data: Any,
    *,
    name: str,
    dim: str,
    labels: Sequence[Any] | None,
    attrs: Mapping[str, Any] | None,
    place: Place | None,
    nodata: float | int | None = np.nan,
) -> xr.DataArray:
    n = int(data.shape[0])
    if labels is not None and n != len(labels):
        raise SchemaError(f"{name} has {n} layers along {dim!r} but {len(labels)} labels.")
    values: list[str] | None
    if labels is None and isinstance(data, xr.DataArray):
        values = None  # keep its own coordinate
    else:
        values = [str(v) for v in (labels if labels is not None else range(n))]
    return _finish(
        field,
        data,
        name=name,
        leading=(dim, values),
        nodata=nodata,
        attrs=dict(attrs or {}),
        place=place,
    )


def probability_map(
    field: xr.DataArray,
    data: Any,
    *,
    class_names: Sequence[Any],
    attrs: Mapping[str, Any] | None = None,
    place: Place | None = None,
) -> xr.DataArray:
    """``(class, y, x)`` ``probabilities``; the ``class`` coordinate holds the class names.

    float32 with NaN nodata; uint8 data (probabilities scaled to 0..254) keeps its dtype
    with nodata :data:`PROBABILITY_UINT8_NODATA`.
    """
    if data.dtype == np.uint8:
        nodata: float | int = PROBABILITY_UINT8_NODATA
    else:
        data, nodata = _as_float32(data), np.nan
    names = [str(c) for c in class_names]
    return _stack(
        field,
        data,
        name=PROBABILITIES,
        dim=CLASS_DIM,
        labels=names,
        attrs=dict(attrs or {}, class_names=names),
        place=place,
        nodata=nodata,
    )


def distances_map(
    field: xr.DataArray, data: Any, *, attrs: Mapping[str, Any] | None = None
) -> xr.DataArray:
    """``(cluster, y, x)`` float32 ``distances`` of each pixel to every centre."""
    return _stack(
        field,
        _as_float32(data),
        name=DISTANCES,
        dim=CLUSTER_DIM,
        labels=None,
        attrs=attrs,
        place=None,
    )


def feature_map(
    field: xr.DataArray,
    data: Any,
    *,
    band_names: Sequence[str],
    attrs: Mapping[str, Any] | None = None,
    place: Place | None = None,
) -> xr.DataArray:
    """``(band, y, x)`` float32 ``features`` (rename to ``embedding`` for a canonical field)."""
    return _stack(
        field,
        _as_float32(data),
        name=FEATURES,
        dim=BAND_DIM,
        labels=band_names,
        attrs=attrs,
        place=place,
        nodata=None,
    )
