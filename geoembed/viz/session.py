"""The label-classify-look loop in a notebook: :class:`MappingSession`.

A session holds a field and a :class:`~geoembed.viz.labeling.LabelCollector`. Each
:meth:`MappingSession.classify` fits kNN on the current labels, classifies the visible
extent (or the whole field, on whatever Dask scheduler is active), writes the class map
and its confidence as COGs served as tiles, and scores the labels by spatial
cross-validation. :meth:`MappingSession.suggest_points` proposes where to label next:
low-confidence pixels, spread out, across the predicted classes. The accuracy after each
batch of labels is kept in :attr:`MappingSession.history` and drawn by
:meth:`MappingSession.accuracy_plot`.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geoembed.colors import decode_class_names
from geoembed.errors import LabelError, SchemaError, require
from geoembed.viz.labeling import LabelCollector

__all__ = ["MappingSession", "suggest_points"]

#: longest side of the grid on which suggestions are searched
_SUGGEST_GRID = 256


class _CVKNN:
    """kNN for CV folds (a fold may hold fewer than ``k`` samples of a class)."""

    def __init__(self, k: int, n_classes: int) -> None:
        self.k = k
        self.n_classes = n_classes

    def fit(self, X: np.ndarray, y: np.ndarray) -> _CVKNN:
        from geoembed.classify.knn import KNNClassifier

        self.model = KNNClassifier(min(self.k, len(X))).fit(
            X, y, class_names=[str(i) for i in range(self.n_classes)], allow_small_classes=True
        )
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(X))


def _window(field: xr.DataArray, extent: Any) -> tuple[slice, slice]:
    """Row and column slices of ``field`` inside ``(left, bottom, right, top)`` (field CRS)."""
    left, bottom, right, top = (float(v) for v in extent)
    xs = field["x"].values
    ys = field["y"].values
    cols = np.flatnonzero((xs >= left) & (xs <= right))
    rows = np.flatnonzero((ys >= bottom) & (ys <= top))
    if cols.size == 0 or rows.size == 0:
        raise SchemaError(f"The extent {extent} does not overlap the field.")
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _every(window: slice, stride: int) -> slice:
    """Return the pixels of ``window`` on the grid of every ``stride``-th pixel (0, s...)."""
    start, stop = int(window.start), int(window.stop)
    return slice(stride * math.ceil(start / stride), stop, stride)


def suggest_points(
    classes: xr.DataArray,
    confidence: xr.DataArray,
    n: int = 10,
    *,
    avoid: Any = None,
    min_distance: float | None = None,
    class_names: list[str] | None = None,
    tolerance: float = 0.1,
) -> Any:
    """Propose where to label next: low confidence, spread out, across predicted classes.

    Candidates are the least confident tenth of the pixels (at least ``20 n``), on a
    grid of at most 256 px a side. Each next point is the least confident candidate at
    least ``min_distance`` from every point already chosen and from ``avoid``; among the
    candidates within ``tolerance`` of that confidence the predicted classes take turns,
    so suggestions spread across classes. The distance is halved when none is left.

    Parameters
    ----------
    classes, confidence : xarray.DataArray
        ``(y, x)`` class map and winning vote share of one classification (with a CRS).
    n : int
        Number of points.
    avoid : GeoDataFrame, optional
        Existing labels; suggestions keep away from them.
    min_distance : float, optional
        In the map's CRS units; default: the extent's diagonal / (2 sqrt(n)).
    class_names : list of str, optional
        Names of the class ids (default: ``classes.attrs["class_names"]``).
    tolerance : float
        How much less unsure (in vote share) a point of another class may be.

    Returns
    -------
    geopandas.GeoDataFrame
        ``n`` (or fewer) points in EPSG:4326 with ``predicted`` (class name) and
        ``confidence``, in the order chosen.
    """
    import geopandas as gpd

    if n < 1:
        raise SchemaError(f"n={n}: ask for at least one suggestion.")
    step = max(1, math.ceil(max(classes.sizes["y"], classes.sizes["x"]) / _SUGGEST_GRID))
    cls = np.asarray(classes.values[::step, ::step]).astype(np.int64)
    conf = np.asarray(confidence.values[::step, ::step]).astype(np.float64)
    xs = classes["x"].values[::step]
    ys = classes["y"].values[::step]
    valid = np.isfinite(conf)
    if not valid.any():
        raise LabelError("The confidence map holds no valid pixel; classify first.")
    r, c = np.nonzero(valid)
    order = np.lexsort((c, r, conf[r, c]))  # least confident first, ties by position
    keep = order[: max(n * 20, order.size // 10)]
    r, c = r[keep], c[keep]
    px = np.column_stack([xs[c], ys[r]])
    pconf, pcls = conf[r, c], cls[r, c]
    span = float(np.hypot(np.ptp(xs), np.ptp(ys))) or 1.0
    dist = min_distance if min_distance is not None else span / (2.0 * math.sqrt(n))
    taken = np.zeros(px.shape[0], dtype=bool)
    chosen: list[int] = []
    fixed = np.empty((0, 2))
    if avoid is not None and len(avoid):
        pts = avoid.to_crs(classes.rio.crs).geometry.representative_point()
        fixed = np.column_stack([pts.x.values, pts.y.values])
    turn = 0  # classes take turns: the class after the last one served goes first
    while len(chosen) < n and not taken.all():
        anchors = np.vstack([fixed, px[chosen]]) if chosen else fixed
        ok = ~taken
        if anchors.shape[0]:
            near = np.zeros(ok.shape, dtype=bool)
            for a in anchors:  # few anchors (labels and suggestions), many candidates
                near |= np.hypot(px[:, 0] - a[0], px[:, 1] - a[1]) < dist
            ok &= ~near
        eligible = np.flatnonzero(ok)  # sorted by confidence
        if eligible.size == 0:
            dist /= 2.0
            if dist < 1e-9:
                break
            continue
        best = pconf[eligible[0]]
        close = eligible[pconf[eligible] <= best + tolerance]
        classes_close = sorted({int(v) for v in pcls[close]})
        after = [k for k in classes_close if k > turn] or classes_close
        k = after[0]
        pick = int(close[pcls[close] == k][0])
        chosen.append(pick)
        taken[pick] = True
        turn = k
    names_map = decode_class_names(
        class_names if class_names is not None else classes.attrs.get("class_names")
    )
    names = [names_map.get(i, str(i)) for i in range(max(names_map, default=-1) + 1)]
    picked = np.array(chosen, dtype=np.int64)
    gdf = gpd.GeoDataFrame(
        {
            "predicted": [
                names[int(v)] if int(v) < len(names) else str(int(v)) for v in pcls[picked]
            ],
            "confidence": pconf[picked],
        },
        geometry=gpd.points_from_xy(px[picked, 0], px[picked, 1]),
        crs=classes.rio.crs,
    )
    return gdf.to_crs("EPSG:4326")


def _is_lazy(field: xr.DataArray) -> bool:
    """Whether ``field`` is a Dask array (computed on read, so worth caching)."""
    import dask.array as da

    return isinstance(field.data, da.Array)


class _FieldCache:
    """A field's values stored once in Zarr, at full resolution and at each stride asked for.

    Level ``s`` holds every ``s``-th pixel of the field (rows and columns 0, s, 2s...),
    built from level 1 (the field's own blocks, computed once), so that a quick look at
    screen resolution reads ``1/s^2`` of the values. The stores lie in one folder,
    removed by :meth:`remove` or when the cache is garbage collected.
    """

    def __init__(self, field: xr.DataArray, workdir: Path) -> None:
        self.field = field
        self.root = workdir / f"session-{uuid.uuid4().hex[:8]}-field-cache"
        self.levels: dict[int, xr.DataArray] = {}
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def level(self, stride: int) -> xr.DataArray:
        """Return the field at every ``stride``-th pixel, from the cache (stored first)."""
        if stride not in self.levels:
            if stride == 1:
                src = self.field
                label = "caching the field"
            else:
                src = self.level(1).isel(y=slice(None, None, stride), x=slice(None, None, stride))
                label = f"caching the field at 1/{stride} resolution"
            self.levels[stride] = self._store(src, stride, label)
        return self.levels[stride]

    def _store(self, src: xr.DataArray, stride: int, label: str) -> xr.DataArray:
        import dask.array as da

        from geoembed._compute import compute

        arr = src.data
        if stride > 1:  # whole-band blocks of about the field's own block size
            cy, cx = self.field.data.chunksize[-2:]
            arr = arr.rechunk((-1, cy, cx))
        path = self.root / f"level-{stride}.zarr"
        self.root.mkdir(parents=True, exist_ok=True)
        compute(
            da.to_zarr(arr, str(path), overwrite=True, compute=False),
            progress=True,
            label=label,
        )
        return src.copy(data=da.from_zarr(str(path)))

    def remove(self) -> None:
        """Delete the stored levels."""
        self.levels.clear()
        self._finalizer()


class MappingSession:
    """Label, classify, look, correct: the interactive mapping loop.

    Parameters
    ----------
    field : xarray.DataArray
        The embedding field (with a CRS).
    classes : optional
        Class table for a new :class:`LabelCollector` (ignored with ``collector``).
    collector : LabelCollector, optional
        Labels to use (and keep adding to).
    k : int
        Neighbours for kNN (lowered to the smallest class size while labels are few).
    workdir : path, optional
        Where the class and confidence COGs go (default: the tile server's scratch
        folder, removed when it closes).
    cache : bool
        Keep the field's blocks, computed once, in a Zarr store in ``workdir`` (and the
        field at each screen resolution asked for), so that each refresh reads stored
        values instead of producing the field again. A lazily computed field (a
        synthetic scene, a model's features, a remote COG) costs its full computation
        only at the first :meth:`classify`. The store is removed by :meth:`close`. Pass
        False when Dask workers cannot reach ``workdir`` (a remote cluster) or the field
        is cheap to read.
    """

    def __init__(
        self,
        field: xr.DataArray,
        classes: Any = None,
        *,
        collector: LabelCollector | None = None,
        k: int = 5,
        workdir: str | Path | None = None,
        cache: bool = True,
    ) -> None:
        if collector is None:
            if classes is None:
                raise LabelError("Give the classes to label (names or a class table).")
            collector = LabelCollector(classes)
        self.field = field
        self.collector = collector
        self.k = int(k)
        self._workdir = Path(workdir) if workdir is not None else None
        self.result: xr.Dataset | None = None
        self.report: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.paths: dict[str, Any] = {}
        self.map: Any = None
        self._ui: dict[str, Any] = {}
        self._use_cache = bool(cache)
        self._cache: _FieldCache | None = None

    def _work(self) -> Path:
        work = self._workdir
        if work is None:
            from geoembed.viz.tiles import tile_server

            work = tile_server().scratch
        work.mkdir(parents=True, exist_ok=True)
        return work

    def close(self) -> None:
        """Remove the session's cache of the field (also done when it is garbage collected)."""
        if self._cache is not None:
            self._cache.remove()
            self._cache = None

    # -- the loop -----------------------------------------------------------------------

    def _window(self, extent: Any) -> tuple[slice, slice]:
        """Rows and columns of the field to classify."""
        whole = (slice(0, self.field.sizes["y"]), slice(0, self.field.sizes["x"]))
        if extent is None or extent == "field":
            return whole
        if extent == "view":
            bounds = getattr(self.map, "bounds", None) if self.map is not None else None
            if not bounds:  # not drawn in a browser yet
                return whole
            from pyproj import Transformer

            (south, west), (north, east) = bounds
            to_f = Transformer.from_crs("EPSG:4326", self.field.rio.crs, always_xy=True)
            xs, ys = to_f.transform([west, east, west, east], [south, south, north, north])
            extent = (min(xs), min(ys), max(xs), max(ys))
        return _window(self.field, extent)

    def _extent(self, extent: Any, max_size: int | None) -> xr.DataArray:
        """Return the field over ``extent``, every ``s``-th pixel (no side over ``max_size``).

        Read from the session's cache (:class:`_FieldCache`) when there is one: the
        field's blocks are computed once, and each stride's level once, so a refresh
        reads stored values instead of producing the field again.
        """
        rows, cols = self._window(extent)
        stride = 1
        if max_size is not None:
            longest = max(rows.stop - rows.start, cols.stop - cols.start)
            stride = max(1, math.ceil(longest / int(max_size)))
        if self._cache is None:
            return self.field.isel(y=_every(rows, stride), x=_every(cols, stride))
        level = self._cache.level(stride)
        return level.isel(
            y=slice(math.ceil(rows.start / stride), math.ceil(rows.stop / stride)),
            x=slice(math.ceil(cols.start / stride), math.ceil(cols.stop / stride)),
        )

    def _source(self) -> xr.DataArray:
        """Return the field to sample labels from (the cached full resolution when caching)."""
        return self._cache.level(1) if self._cache is not None else self.field

    def classify(
        self, extent: Any = "view", *, cv: str | None = None, max_size: int | None = None
    ) -> xr.Dataset:
        """Classify with the current labels; refresh the map; score by spatial CV.

        Parameters
        ----------
        extent : "view", "field" or (left, bottom, right, top)
            The map's visible extent (the whole field before the map is drawn), the whole
            field, or a box in the field's CRS.
        cv : str, optional
            Cross-validation spec (:func:`geoembed.assess.make_folds`); default spatial
            (:func:`geoembed.jobs.classify.default_cv`).
        max_size : int, optional
            Classify every ``s``-th pixel so that the longest side is at most this (a
            quick look at screen resolution; the full resolution when None).

        Returns
        -------
        xarray.Dataset
            ``class`` and ``confidence`` of the classified extent (computed).
        """
        from geoembed.assess import cross_validate
        from geoembed.classify import classify_knn
        from geoembed.classify.field import fit_model
        from geoembed.export import write_cog
        from geoembed.jobs.classify import default_cv

        t0 = time.perf_counter()
        if self._cache is None and self._use_cache and _is_lazy(self.field):
            self._cache = _FieldCache(self.field, self._work())
        ts = self.collector.training(self._source())
        sizes = np.bincount(ts.y, minlength=len(ts.class_names))
        k = max(1, min(self.k, int(sizes.min())))
        model = fit_model(ts, k=k)
        sub = self._extent(extent, max_size)
        ds = classify_knn(sub, model).compute()
        self.result = ds
        work = self._work()
        tag = uuid.uuid4().hex[:8]
        self.paths = {
            "classes": write_cog(
                ds["classes"],
                work / f"session-{tag}-classes.tif",
                class_names=list(ts.class_names),
                colors=[self.collector.color_of(n) for n in ts.class_names],
            ),
            "confidence": write_cog(ds["confidence"], work / f"session-{tag}-confidence.tif"),
        }
        spec = cv or default_cv(ts)
        try:
            rep = cross_validate(lambda: _CVKNN(k, len(ts.class_names)), ts, cv=spec)
        except LabelError as exc:  # too few labels or groups for the folds yet
            rep = {"cv": spec, "error": str(exc)}
        self.report = rep
        self.history.append(
            {
                "labels": len(self.collector),
                "samples": int(ts.y.size),
                "cv": spec,
                "accuracy": rep.get("overall_accuracy_mean"),
                "accuracy_std": rep.get("overall_accuracy_std"),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        if self.map is not None:
            self._refresh_map()
        return ds

    def suggest_points(self, n: int = 10, **kwargs: Any) -> Any:
        """Where to label next (see :func:`suggest_points`); shown on the map as well."""
        if self.result is None:
            raise LabelError("Classify first: suggestions come from the last confidence map.")
        kwargs.setdefault("avoid", self.collector.labels)
        gdf = suggest_points(self.result["classes"], self.result["confidence"], n, **kwargs)
        self.suggestions = gdf
        if self.map is not None:
            self._show_suggestions(gdf)
        return gdf

    def accuracy_plot(self, ax: Any = None) -> Any:
        """Spatial-CV accuracy after each batch of labels (a matplotlib Figure)."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(4, 2.6), dpi=100)
        else:
            fig = ax.figure
        rows = [h for h in self.history if h["accuracy"] is not None]
        n = [h["labels"] for h in rows]
        acc = [h["accuracy"] for h in rows]
        err = [h["accuracy_std"] or 0.0 for h in rows]
        ax.errorbar(n, acc, yerr=err, marker="o", capsize=3, color="#1f77b4")
        ax.set_xlabel("labels")
        ax.set_ylabel("spatial-CV accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title("accuracy by label batch", fontsize=10)
        fig.tight_layout()
        return fig

    # -- the widget ---------------------------------------------------------------------

    def show(self, *, basemap: bool = False) -> Any:
        """Build the map with the field, drawing tools, a Classify button and the report.

        Returns
        -------
        ipywidgets.HBox
            Map on the left; buttons, accuracy report and accuracy plot on the right.
            The map itself is :attr:`map`.
        """
        ipywidgets = require("ipywidgets", extra="viz", feature="MappingSession")
        from geoembed.viz.leaflet import show_map

        m = show_map(self.field, name="field", opacity=1.0, basemap=basemap, max_size=2048)
        self.collector.attach(m)
        self.map = m
        run = ipywidgets.Button(description="Classify view", icon="play")
        run_all = ipywidgets.Button(description="Classify field")
        suggest = ipywidgets.Button(description="Suggest points", icon="map-marker")
        report = ipywidgets.HTML(value="<i>draw labels, then classify</i>")
        plot = ipywidgets.Output()
        # the view at about screen resolution (seconds); the whole field at full resolution
        run.on_click(lambda _: self._guarded(lambda: self.classify("view", max_size=1024)))
        run_all.on_click(lambda _: self._guarded(lambda: self.classify("field")))
        suggest.on_click(lambda _: self._guarded(lambda: self.suggest_points()))
        self._ui.update(report=report, plot=plot)
        side = ipywidgets.VBox(
            [ipywidgets.HBox([run, run_all]), suggest, report, plot],
            layout=ipywidgets.Layout(width="360px"),
        )
        if self.result is not None:
            self._refresh_map()
        return ipywidgets.HBox([m, side])

    def _guarded(self, fn: Any) -> None:
        try:
            fn()
        except Exception as exc:  # shown beside the map, not lost in the kernel log
            if "report" in self._ui:
                self._ui["report"].value = f"<b style='color:#b00'>{type(exc).__name__}</b>: {exc}"

    def _refresh_map(self) -> None:
        from geoembed.viz.leaflet import _legend, map_layer

        m = self.map
        for key in ("classes", "confidence"):
            old = self._ui.pop(f"layer_{key}", None)
            if old is not None and old in m.layers:
                m.remove(old)
        conf, _, _ = map_layer(self.paths["confidence"], name="confidence", opacity=0.0)
        cls, style, _ = map_layer(self.paths["classes"], name="classes", opacity=0.7)
        m.add(conf)
        m.add(cls)
        labels = self.collector._widgets.get("layer")
        if labels is not None and labels in m.layers:  # labels on top
            m.remove(labels)
            m.add(labels)
        self._ui["layer_confidence"], self._ui["layer_classes"] = conf, cls
        old_legend = self._ui.pop("legend", None)
        if old_legend is not None and old_legend in m.controls:
            m.remove(old_legend)
        legend = _legend(style, "classes")
        m.add(legend)
        self._ui["legend"] = legend
        self._update_report()

    def _update_report(self) -> None:
        if "report" not in self._ui or self.report is None:
            return
        rep = self.report
        h = self.history[-1]
        if "error" in rep:
            text = f"<b>{h['labels']} labels</b> — CV not possible yet: {rep['error']}"
        else:
            per_class = rep.get("pooled", {}).get("per_class", {})
            rows = "".join(
                f"<tr><td>{name}</td><td>{v.get('producers_accuracy') or 0:.2f}</td>"
                f"<td>{v.get('users_accuracy') or 0:.2f}</td></tr>"
                for name, v in per_class.items()
            )
            std = h["accuracy_std"]
            text = (
                f"<b>{h['labels']} labels, {h['samples']} samples</b><br>"
                f"{rep['cv']}: accuracy {h['accuracy']:.3f}"
                + (f" ± {std:.3f}" if std is not None else "")
                + f"<br>classified in {h['seconds']:.1f} s"
                + "<table><tr><th>class</th><th>producer's</th><th>user's</th></tr>"
                + rows
                + "</table>"
            )
        self._ui["report"].value = text
        plot = self._ui.get("plot")
        if plot is not None:
            import matplotlib.pyplot as plt

            plot.clear_output(wait=True)
            with plot:
                fig = self.accuracy_plot()
                plt.show()
                plt.close(fig)

    def _show_suggestions(self, gdf: Any) -> None:
        import ipyleaflet

        old = self._ui.pop("suggestions", None)
        if old is not None and old in self.map.layers:
            self.map.remove(old)
        markers = [
            ipyleaflet.CircleMarker(
                location=(pt.y, pt.x),
                radius=7,
                color="#ff00ff",
                fill_color="#ffffff",
                fill_opacity=0.6,
                weight=3,
            )
            for pt in gdf.geometry
        ]
        group = ipyleaflet.LayerGroup(layers=markers, name="suggested points")
        self.map.add(group)
        self._ui["suggestions"] = group
