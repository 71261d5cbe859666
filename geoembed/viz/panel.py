"""Figures people look at: panel quicklooks of maps and confusion-matrix plots (matplotlib).

:func:`panel_png` draws several maps side by side (field preview, truth, kNN map, KMeans
map ...), each with its title, a legend of class names and colours (or a colour bar for
continuous maps) and a scale bar. :func:`map_png` does it for one COG (the
``geoembed quicklook`` command), and :func:`confusion_png` plots an accuracy report's
confusion matrix. Rendering reads only a decimated version of each map
(:func:`geoembed.viz._render.render`), so memory stays bounded for any scene size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoembed._version import __version__
from geoembed.errors import MissingInputError, OutputError, SchemaError, require
from geoembed.viz._render import Rendered, render

__all__ = ["confusion_plot_path", "confusion_png", "map_png", "panel_figure", "panel_png"]

#: legend entries shown in full; more classes are listed up to this many
_MAX_LEGEND = 20


def _check_out(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise OutputError(
            f"Cannot write the figure {out}: folder {out.parent} does not exist; create it first."
        )
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"Cannot write the figure {out}: folder {out.parent} is read-only.")
    return out


def _save(fig: Any, out: Path, dpi: int) -> Path:
    """Save atomically (a ``.partial`` file renamed into place) and close the figure."""
    import matplotlib.pyplot as plt

    tmp = out.with_name(f".{out.name}.partial")
    try:
        # the PNG's Software text marks it as geoembed's (so --overwrite may replace it)
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": f"geoembed {__version__}"})
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def _open_map(obj: Any) -> Any:
    """Open a COG path lazily as a (y, x) map (or a field); pass arrays through."""
    if not isinstance(obj, str | Path):
        return obj
    p = Path(obj)
    if not p.exists():
        raise MissingInputError(f"No map {str(p)!r}: check the path.")
    if p.suffix.lower() == ".zarr" or p.is_dir():
        from geoembed.io import open_embeddings

        return open_embeddings(p)
    import rioxarray
    import xarray as xr

    da = rioxarray.open_rasterio(p, chunks={"band": 1, "y": 2048, "x": 2048}, mask_and_scale=False)
    if not isinstance(da, xr.DataArray):
        raise SchemaError(f"{str(p)!r} holds several subdatasets; open one map.")
    if da.sizes.get("band", 1) == 1:
        da = da.squeeze("band", drop=True)
    return da


def _nice_length(span: float) -> float:
    """Return a round length (1, 2 or 5 x 10^n) of about a fifth of ``span``."""
    target = span / 5.0
    base = 10.0 ** math.floor(math.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * base <= target:
            return m * base
    return base


def _metres_per_unit(img: Rendered) -> float:
    from pyproj import CRS

    if img.crs is None:
        return 1.0
    crs = CRS.from_user_input(img.crs)
    if crs.is_geographic:
        _, bottom, _, top = img.bounds
        return 111_320.0 * math.cos(math.radians((bottom + top) / 2.0))
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return float(factor)


def _scale_bar(ax: Any, img: Rendered) -> None:
    """Draw a black-and-white scale bar in the lower left corner of ``ax``."""
    from matplotlib.patches import Rectangle

    left, bottom, right, top = img.bounds
    per_unit = _metres_per_unit(img)
    width_m = (right - left) * per_unit
    length_m = _nice_length(width_m)
    length = length_m / per_unit
    x0 = left + 0.05 * (right - left)
    y0 = bottom + 0.05 * (top - bottom)
    h = 0.018 * (top - bottom)
    half = length / 2.0
    ax.add_patch(Rectangle((x0, y0), half, h, facecolor="black", edgecolor="black", lw=0.8))
    ax.add_patch(Rectangle((x0 + half, y0), half, h, facecolor="white", edgecolor="black", lw=0.8))
    text = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    ax.text(
        x0 + length / 2.0,
        y0 + 1.8 * h,
        text,
        ha="center",
        va="bottom",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1.0},
    )


def _draw(ax: Any, obj: Any, title: str, *, scale_bar: bool, **render_kw: Any) -> Rendered:
    from matplotlib.patches import Patch

    img = render(_open_map(obj), **render_kw)
    left, bottom, right, top = img.bounds
    rgba = img.rgba
    if img.kind == "continuous":
        # a colour map instead of grey levels; the colour bar tells the range
        da = _open_map(obj)
        dec = render_kw.get("max_size", 1024)
        step = max(1, math.ceil(max(da.sizes["y"], da.sizes["x"]) / dec))
        values = np.asarray(da.isel(y=slice(None, None, step), x=slice(None, None, step)))
        if da.sizes["y"] > 1 and float(da["y"][1] - da["y"][0]) > 0:  # bottom-up
            values = values[::-1]
        values = np.where(np.isfinite(values), values, np.nan).astype(np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        im = ax.imshow(values, extent=(left, right, bottom, top), cmap="viridis", vmin=lo, vmax=hi)
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    else:
        ax.imshow(rgba, extent=(left, right, bottom, top), interpolation="nearest")
    if img.legend:
        items = list(img.legend.items())[:_MAX_LEGEND]
        handles = [Patch(facecolor=c, edgecolor="#333333", label=n) for n, c in items]
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
            borderaxespad=0.0,
        )
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if scale_bar:
        _scale_bar(ax, img)
    return img


def panel_figure(
    panels: Sequence[tuple[str, Any]] | Mapping[str, Any],
    *,
    title: str | None = None,
    note: str | None = None,
    max_size: int = 768,
    ncols: int | None = None,
) -> Any:
    """Draw a matplotlib Figure with one map per panel, titled, with legends and scale bars.

    Parameters
    ----------
    panels : sequence of (title, map) or mapping title -> map
        Maps: COG paths, ``(y, x)`` class or float maps, or ``(band, y, x)`` fields
        (PCA colours). Class maps use their own names and colours (COG tags, or
        ``attrs["class_names"]``/``attrs["colors"]``).
    title : str, optional
        Figure title.
    note : str, optional
        Small print under the panels (e.g. data attribution).
    max_size : int
        Longest side each map is rendered at.
    ncols : int, optional
        Panels per row (default: all in one row up to 4).

    Returns
    -------
    matplotlib.figure.Figure
    """
    require("matplotlib", extra="viz", feature="panel quicklooks")
    import matplotlib.pyplot as plt

    items = list(panels.items()) if isinstance(panels, Mapping) else list(panels)
    if not items:
        raise SchemaError("panel_figure needs at least one (title, map) panel.")
    ncols = ncols or min(len(items), 4)
    nrows = math.ceil(len(items) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.3 * ncols, 3.7 * nrows + (0.5 if title else 0.1)), squeeze=False
    )
    for i, (name, obj) in enumerate(items):
        _draw(axes.flat[i], obj, name, scale_bar=(i == 0), max_size=max_size)
    for ax in list(axes.flat)[len(items) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    if note:
        fig.text(0.01, 0.005, note, fontsize=7, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    return fig


def panel_png(
    panels: Sequence[tuple[str, Any]] | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    note: str | None = None,
    max_size: int = 768,
    ncols: int | None = None,
    dpi: int = 100,
) -> Path:
    """Write :func:`panel_figure` as a PNG (atomically); return the path."""
    out = _check_out(path)
    fig = panel_figure(panels, title=title, note=note, max_size=max_size, ncols=ncols)
    return _save(fig, out, dpi)


def map_png(
    source: Any,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    max_size: int = 1024,
    dpi: int = 100,
) -> Path:
    """One map as a PNG with title, legend (names and colours of the COG) and scale bar.

    Parameters
    ----------
    source : path or xarray.DataArray
        A class map COG (e.g. from ``geoembed classify``), a continuous map, or a field.
    path : path
        The PNG.
    title : str, optional
        Default: the file name.
    max_size, dpi
        Rendering size and resolution.

    Returns
    -------
    pathlib.Path
    """
    out = _check_out(path)
    name = title or (Path(str(source)).name if isinstance(source, str | Path) else "map")
    fig = panel_figure([(name, source)], max_size=max_size)
    return _save(fig, out, dpi)


def confusion_plot_path(report: str | os.PathLike[str] | None) -> Path | None:
    """Return where the confusion-matrix PNG beside a JSON report goes (``X.confusion.png``).

    None when there is no report, the report goes to an object store, or matplotlib is
    not installed (the ``viz`` extra): the JSON report holds the matrix either way.
    """
    import importlib.util

    if report is None or "://" in str(report):
        return None
    if importlib.util.find_spec("matplotlib") is None:
        return None
    p = Path(report)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.confusion.png")


def confusion_png(
    report: Mapping[str, Any], path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Plot the confusion matrix of an accuracy report (:func:`geoembed.assess.accuracy_report`).

    Parameters
    ----------
    report : dict
        An accuracy report, or a cross-validation report (its pooled accuracy is drawn).
    path : path
        The PNG.
    title : str, optional
        Default: the overall accuracy and kappa.

    Returns
    -------
    pathlib.Path
    """
    require("matplotlib", extra="viz", feature="confusion-matrix plots")
    import matplotlib.pyplot as plt

    rep = report.get("pooled", report)
    if "confusion_matrix" not in rep:
        raise SchemaError("The report holds no confusion matrix (an accuracy report has one).")
    out = _check_out(path)
    cm = np.asarray(rep["confusion_matrix"], dtype=np.float64)
    names = [str(n) for n in rep["class_names"]]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = max(3.5, 0.55 * len(names) + 2.0)
    fig, ax = plt.subplots(figsize=(side + 0.8, side))
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{cm[i, j]:g}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    oa, kappa = rep.get("overall_accuracy"), rep.get("kappa")
    default = "confusion matrix"
    if oa is not None:
        default += f" — OA {oa:.3f}" + (f", kappa {kappa:.3f}" if kappa is not None else "")
    ax.set_title(title or default, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of reference row")
    fig.tight_layout()
    return _save(fig, out, 100)
