"""Collect training labels by drawing on a map: a class picker and ipyleaflet's DrawControl.

:class:`LabelCollector` holds labelled geometries (points, polygons, rectangles) in
EPSG:4326 with their class. The notebook widget (:meth:`LabelCollector.attach`) and code
(:meth:`LabelCollector.add`) go through the same methods, so a notebook can draw its
labels programmatically exactly as a user draws them. The labels go straight into
:func:`geoembed.labels.training_from_geometries` (:meth:`LabelCollector.training`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from geoembed.colors import decode_class_colors, default_color, to_hex
from geoembed.errors import LabelError, OutputError, require
from geoembed.labels.classes import ClassTable, load_class_table

__all__ = ["LabelCollector"]

#: the class column of :attr:`LabelCollector.labels`
CLASS_COLUMN = "class"
_DRAWN_KINDS = ("Point", "Polygon", "MultiPolygon")


def _as_table(classes: Any, colors: Any = None) -> ClassTable:
    """Make a class table from a table, ``"dynamic_world"``, a list of names or ``{id: name}``."""
    if isinstance(classes, Sequence) and not isinstance(classes, str):
        if all(isinstance(c, str) for c in classes):
            classes = {i: c for i, c in enumerate(classes)}
    table = load_class_table(classes)
    given = decode_class_colors(colors) if colors is not None else {}
    hexes = tuple(
        to_hex(given[i]) if i in given else c if c is not None else to_hex(default_color(i))
        for i, c in zip(table.ids, table.colors)
    )
    return ClassTable(table.ids, table.names, hexes)


class LabelCollector:
    """Labelled geometries drawn on a map (or added by code), by class.

    Parameters
    ----------
    classes : ClassTable, str, list of str or mapping
        The classes to label: a class table (:func:`geoembed.labels.load_class_table`),
        e.g. ``"dynamic_world"``, or a list of names (ids 0, 1, ...). Colours missing from
        the table get the default palette. Editable later (:meth:`add_class`,
        :meth:`set_color`).
    labels : GeoDataFrame or path, optional
        Labels to start from (a file written by :meth:`save`, or any GeoDataFrame with a
        ``class`` column of names or ids).
    colors : list or mapping, optional
        Colours by class id (e.g. ``scene.colors``), over those of the table.

    Examples
    --------
    >>> lc = LabelCollector(["water", "trees"])
    >>> lc.add({"type": "Point", "coordinates": [9.5, 47.1]}, "water")
    0
    >>> lc.labels[["class", "class_id"]].values.tolist()
    [['water', 0]]
    """

    def __init__(self, classes: Any, labels: Any = None, *, colors: Any = None) -> None:
        self._table = _as_table(classes, colors)
        self._features: list[dict[str, Any]] = []
        self._current = self._table.names[0]
        self._listeners: list[Callable[[LabelCollector], None]] = []
        self._widgets: dict[str, Any] = {}
        if labels is not None:
            self._load(labels)

    # -- classes ------------------------------------------------------------------------

    @property
    def class_table(self) -> ClassTable:
        """The classes (ids, names, ``#rrggbb`` colours)."""
        return self._table

    @property
    def current_class(self) -> str:
        """The class that new drawings get."""
        return self._current

    @current_class.setter
    def current_class(self, name: str) -> None:
        self._current = self._name(name)
        picker = self._widgets.get("picker")
        if picker is not None and picker.value != self._current:
            picker.value = self._current

    def _name(self, cls: str | int) -> str:
        if isinstance(cls, int | float) and not isinstance(cls, bool):
            if int(cls) in self._table.ids:
                return self._table.names[self._table.ids.index(int(cls))]
        else:
            for n in self._table.names:
                if n.lower() == str(cls).lower():
                    return n
        raise LabelError(
            f"Class {cls!r} is not in the class table ({', '.join(self._table.names)}); "
            "add it first with add_class()."
        )

    def color_of(self, cls: str | int) -> str:
        """``#rrggbb`` of a class (by name or id)."""
        name = self._name(cls)
        color = self._table.colors[self._table.names.index(name)]
        return color or "#000000"

    def add_class(self, name: str, color: Any = None, class_id: int | None = None) -> int:
        """Add a class; return its id (next free id by default)."""
        if any(n.lower() == name.lower() for n in self._table.names):
            raise LabelError(f"Class {name!r} already exists.")
        cid = int(class_id) if class_id is not None else max(self._table.ids, default=-1) + 1
        hexc = to_hex(color) if color is not None else to_hex(default_color(cid))
        self._table = ClassTable(
            (*self._table.ids, cid), (*self._table.names, name), (*self._table.colors, hexc)
        )
        self._refresh_widgets()
        return cid

    def set_color(self, cls: str | int, color: Any) -> None:
        """Change the colour of a class."""
        k = self._table.names.index(self._name(cls))
        colors = list(self._table.colors)
        colors[k] = to_hex(color)
        self._table = ClassTable(self._table.ids, self._table.names, tuple(colors))
        self._changed()

    # -- labels -------------------------------------------------------------------------

    def add(self, geometry: Any, cls: str | int | None = None) -> int:
        """Add one labelled geometry; return its position.

        Parameters
        ----------
        geometry : shapely geometry, GeoJSON geometry or Feature dict
            A point, polygon or rectangle in longitude/latitude (EPSG:4326).
        cls : str or int, optional
            Class name or id; default :attr:`current_class`.

        Returns
        -------
        int
        """
        from shapely.geometry import mapping, shape

        if isinstance(geometry, Mapping):
            geom = dict(geometry.get("geometry", geometry))
        else:
            geom = dict(mapping(geometry))
        if geom.get("type") not in _DRAWN_KINDS:
            raise LabelError(
                f"Cannot use a {geom.get('type')!r} geometry as a label; draw a point, a "
                "polygon or a rectangle."
            )
        shp = shape(geom)
        if shp.is_empty or not shp.is_valid:
            raise LabelError("The drawn geometry is empty or self-intersecting; draw it again.")
        lon_min, lat_min, lon_max, lat_max = shp.bounds
        if not (-180 <= lon_min <= lon_max <= 180 and -90 <= lat_min <= lat_max <= 90):
            raise LabelError(
                "The geometry is not in longitude/latitude degrees (EPSG:4326); reproject it first."
            )
        name = self._name(cls if cls is not None else self._current)
        self._features.append({"geometry": geom, "class": name})
        self._changed()
        return len(self._features) - 1

    def undo(self) -> bool:
        """Remove the last label; return False when there was none."""
        if not self._features:
            return False
        self._features.pop()
        self._changed()
        return True

    def clear(self) -> None:
        """Remove every label."""
        self._features.clear()
        self._changed()

    def __len__(self) -> int:
        return len(self._features)

    @property
    def labels(self) -> Any:
        """The labels as a GeoDataFrame in EPSG:4326: ``class`` (name), ``class_id``, geometry."""
        import geopandas as gpd
        from shapely.geometry import shape

        names = [f["class"] for f in self._features]
        ids = [self._table.ids[self._table.names.index(n)] for n in names]
        return gpd.GeoDataFrame(
            {CLASS_COLUMN: names, "class_id": ids},
            geometry=[shape(f["geometry"]) for f in self._features],
            crs="EPSG:4326",
        )

    def counts(self) -> dict[str, int]:
        """Labels per class name (every class, zeros included)."""
        out = dict.fromkeys(self._table.names, 0)
        for f in self._features:
            out[f["class"]] += 1
        return out

    def training(self, field: Any, **kwargs: Any) -> Any:
        """Sample ``field`` under the labels (:func:`geoembed.labels.training_from_geometries`).

        Parameters
        ----------
        field : xarray.DataArray
            The embedding field.
        **kwargs
            Passed on (``samples_per_class``, ``all_touched``...).

        Returns
        -------
        TrainingSet
        """
        from geoembed.labels import training_from_geometries

        if not self._features:
            raise LabelError("No labels yet: draw points or polygons first (or call add()).")
        kwargs.setdefault("class_table", self._table)
        return training_from_geometries(field, self.labels, label_column=CLASS_COLUMN, **kwargs)

    # -- files --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the labels as GeoPackage (``.gpkg``) or GeoJSON (``.geojson``/``.json``).

        The class table travels with them: a ``classes`` layer in a GeoPackage, a
        ``geoembed_classes`` member in GeoJSON.
        """
        out = Path(path)
        suffix = out.suffix.lower()
        if suffix not in (".gpkg", ".geojson", ".json"):
            raise OutputError(f"Cannot save labels as {out.name!r}: use .gpkg or .geojson.")
        if not out.parent.is_dir():
            raise OutputError(f"Cannot save labels to {out}: folder {out.parent} does not exist.")
        if out.exists() and not overwrite:
            raise OutputError(f"{out} exists; pass overwrite=True to replace it.")
        tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
        try:
            if suffix == ".gpkg":
                self.labels.to_file(
                    tmp,
                    driver="GPKG",
                    layer="labels",
                    engine="pyogrio",
                    layer_metadata={"geoembed_classes": json.dumps(self._table.to_dict())},
                )
            else:
                doc = json.loads(self.labels.to_json())
                doc["geoembed_classes"] = self._table.to_dict()
                tmp.write_text(json.dumps(doc))
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], classes: Any = None) -> LabelCollector:
        """Read labels written by :meth:`save` (or any file with a ``class`` column).

        Parameters
        ----------
        path : path
            GeoPackage or GeoJSON.
        classes : optional
            Class table; default the one saved with the labels, else the names found.
        """
        import geopandas as gpd

        p = Path(path)
        if not p.is_file():
            raise LabelError(f"No label file {str(p)!r}.")
        if classes is None:
            if p.suffix.lower() == ".gpkg":
                import pyogrio

                meta = pyogrio.read_info(p, layer="labels").get("layer_metadata") or {}
                if "geoembed_classes" in meta:
                    classes = json.loads(meta["geoembed_classes"])
            else:
                doc = json.loads(p.read_text())
                classes = doc.get("geoembed_classes")
        layer = {"layer": "labels"} if p.suffix.lower() == ".gpkg" else {}
        gdf = gpd.read_file(p, **layer)
        if classes is None:
            classes = sorted({str(v) for v in gdf[CLASS_COLUMN]})
        out = cls(classes)
        out._load(gdf)
        return out

    def _load(self, labels: Any) -> None:
        import geopandas as gpd

        gdf = labels if isinstance(labels, gpd.GeoDataFrame) else gpd.read_file(labels)
        if CLASS_COLUMN not in gdf.columns:
            raise LabelError(f"The labels have no {CLASS_COLUMN!r} column; found {list(gdf)}.")
        gdf = gdf.to_crs("EPSG:4326") if gdf.crs is not None else gdf
        from shapely.geometry import mapping

        for geom, value in zip(gdf.geometry, gdf[CLASS_COLUMN]):
            self._features.append({"geometry": dict(mapping(geom)), "class": self._name(value)})
        self._changed()

    # -- widget -------------------------------------------------------------------------

    def on_change(self, callback: Callable[[LabelCollector], None]) -> None:
        """Call ``callback(collector)`` after every change of labels or classes."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        self._refresh_widgets()
        for cb in self._listeners:
            cb(self)

    def geojson(self) -> dict[str, Any]:
        """Return the labels as a GeoJSON FeatureCollection with each feature's colour."""
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": f["geometry"],
                    "properties": {"class": f["class"], "color": self.color_of(f["class"])},
                }
                for f in self._features
            ],
        }

    def _handle_draw(self, target: Any, action: str, geo_json: Mapping[str, Any]) -> None:
        """DrawControl callback: a drawn shape becomes a label of the current class."""
        if action != "created":
            return
        try:
            self.add(geo_json)
        finally:
            draw = self._widgets.get("draw")
            if draw is not None:
                draw.clear()  # the label layer shows it, in its class colour

    def attach(self, m: Any, position: str = "topleft") -> Any:
        """Add the drawing tools, the class picker and the label layer to a map.

        Parameters
        ----------
        m : ipyleaflet.Map
            E.g. from :func:`geoembed.viz.show_map`.
        position : str
            Corner of the class picker.

        Returns
        -------
        ipyleaflet.Map
            ``m``.
        """
        ipyleaflet = require("ipyleaflet", extra="viz", feature="LabelCollector")
        ipywidgets = require("ipywidgets", extra="viz", feature="LabelCollector")
        draw = ipyleaflet.DrawControl(
            marker={"shapeOptions": {}},
            polygon={"shapeOptions": {"fillOpacity": 0.3}},
            rectangle={"shapeOptions": {"fillOpacity": 0.3}},
            circlemarker={},
            polyline={},
            circle={},
            edit=False,
            remove=False,
        )
        draw.on_draw(self._handle_draw)
        layer = ipyleaflet.GeoJSON(
            data=self.geojson(),
            name="labels",
            style_callback=_label_style,
            point_style={"radius": 6, "fillOpacity": 0.9, "weight": 1},
        )
        picker = ipywidgets.ToggleButtons(
            options=list(self._table.names),
            value=self._current,
            description="class",
            style={"button_width": "68px"},
        )
        picker.observe(lambda ch: setattr(self, "current_class", ch["new"]), names="value")
        undo = ipywidgets.Button(description="undo", icon="undo", layout={"width": "80px"})
        undo.on_click(lambda _: self.undo())
        status = ipywidgets.HTML()
        panel = ipywidgets.VBox([picker, ipywidgets.HBox([undo, status])])
        self._widgets.update(draw=draw, layer=layer, picker=picker, status=status, panel=panel)
        m.add(layer)
        m.add(draw)
        m.add(ipyleaflet.WidgetControl(widget=panel, position=position))
        self._refresh_widgets()
        return m

    def _refresh_widgets(self) -> None:
        if "layer" not in self._widgets:
            return
        self._widgets["layer"].data = self.geojson()
        picker = self._widgets["picker"]
        if tuple(picker.options) != self._table.names:
            picker.options = list(self._table.names)
            picker.value = self._current
        styles = "".join(
            f'<span style="color:{self.color_of(n)}">&#9632;</span> {n}: {c} &nbsp;'
            for n, c in self.counts().items()
        )
        self._widgets["status"].value = f'<span class="geoembed-label-counts">{styles}</span>'


def _label_style(feature: Mapping[str, Any]) -> dict[str, Any]:
    color = feature["properties"]["color"]
    return {"color": color, "fillColor": color, "weight": 2, "fillOpacity": 0.4}
