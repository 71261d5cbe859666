"""Class tables (id, name, colour) and the mapping of label values to class ids 0..C-1."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoembed.colors import parse_color, to_hex
from geoembed.errors import LabelError

__all__ = [
    "DYNAMIC_WORLD_CLASSES",
    "ClassAssignment",
    "ClassTable",
    "assign_classes",
    "builtin_class_tables",
    "compact_classes",
    "load_class_table",
]


@dataclass(frozen=True)
class ClassTable:
    """Class ids with names and optional ``#rrggbb`` colours, in table order."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[str | None, ...]

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.names) == len(self.colors)):
            raise LabelError("A class table needs one name and one colour slot per id.")
        if len(set(self.ids)) != len(self.ids):
            raise LabelError(f"Class table ids are not unique: {list(self.ids)}.")
        lowered = [n.lower() for n in self.names]
        if len(set(lowered)) != len(lowered):
            raise LabelError(f"Class table names are not unique: {list(self.names)}.")

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-serialisable list of ``{"id", "name", "color"}`` records."""
        return [
            {"id": i, "name": n, "color": c} for i, n, c in zip(self.ids, self.names, self.colors)
        ]


#: Dynamic World V1 classes with the palette of the Dynamic World catalogue page.
DYNAMIC_WORLD_CLASSES = ClassTable(
    ids=(0, 1, 2, 3, 4, 5, 6, 7, 8),
    names=(
        "water",
        "trees",
        "grass",
        "flooded_vegetation",
        "crops",
        "shrub_and_scrub",
        "built",
        "bare",
        "snow_and_ice",
    ),
    colors=(
        "#419bdf",
        "#397d49",
        "#88b053",
        "#7a87c6",
        "#e49635",
        "#dfc35a",
        "#c4281b",
        "#a59b8f",
        "#b39fe1",
    ),
)

_BUILTIN = {"dynamic_world": DYNAMIC_WORLD_CLASSES, "dw": DYNAMIC_WORLD_CLASSES}


def builtin_class_tables() -> list[str]:
    """Return the names :func:`load_class_table` knows (``"dynamic_world"``, ``"dw"``...)."""
    return sorted(_BUILTIN)


_ID_KEYS = ("id", "value", "code", "class_id", "classid")
_NAME_KEYS = ("name", "class", "label", "class_name", "classname", "description")
_COLOR_KEYS = ("color", "colour", "hex", "rgb", "palette")


def _norm_color(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return to_hex(parse_color(value, where, error=LabelError))


def _pick(keys: Sequence[str], record_keys: Sequence[str]) -> str | None:
    lower = {str(k).lower(): str(k) for k in record_keys}
    for key in keys:
        if key in lower:
            return lower[key]
    return None


def _from_records(records: list[Mapping[str, Any]], where: str) -> ClassTable:
    if not records:
        raise LabelError(f"{where}: the class table is empty.")
    keys = list(records[0].keys())
    kid, kname, kcol = _pick(_ID_KEYS, keys), _pick(_NAME_KEYS, keys), _pick(_COLOR_KEYS, keys)
    if kid is None or kname is None:
        raise LabelError(
            f"{where}: a class table needs an id column ({'/'.join(_ID_KEYS)}) and a name "
            f"column ({'/'.join(_NAME_KEYS)}); found {keys}."
        )
    ids, names, colors = [], [], []
    for rec in records:
        try:
            ids.append(int(rec[kid]))
        except (TypeError, ValueError) as exc:
            raise LabelError(f"{where}: class id {rec[kid]!r} is not an integer.") from exc
        names.append(str(rec[kname]))
        colors.append(_norm_color(rec.get(kcol), where) if kcol else None)
    return ClassTable(tuple(ids), tuple(names), tuple(colors))


def load_class_table(source: Any) -> ClassTable:
    """Read a class table: ids, names and optional colours.

    Parameters
    ----------
    source : ClassTable, str, path, pandas.DataFrame, mapping or list of mappings
        * ``"dynamic_world"`` (or ``"dw"``): :data:`DYNAMIC_WORLD_CLASSES`;
        * a CSV file or DataFrame with columns ``id`` (or ``value``/``code``), ``name``
          (or ``class``/``label``) and optionally ``color`` (``#rrggbb``);
        * a JSON file holding a list of ``{"id", "name", "color"}`` records, or
          ``{"classes": [...]}``, or a mapping ``{"0": "water", ...}`` /
          ``{"0": {"name": "water", "color": "#419bdf"}, ...}``;
        * the same structures as Python objects.

    Returns
    -------
    ClassTable

    Raises
    ------
    LabelError
        When the table lacks ids or names, or holds duplicates.
    """
    if isinstance(source, ClassTable):
        return source
    where = "class table"
    if isinstance(source, str | Path):
        key = str(source).lower()
        if key in _BUILTIN:
            return _BUILTIN[key]
        path = Path(source)
        where = f"class table {str(path)!r}"
        if not path.exists():
            raise LabelError(f"{where} does not exist; pass a CSV/JSON file or 'dynamic_world'.")
        if path.suffix.lower() == ".json":
            source = json.loads(path.read_text())
        else:
            source = pd.read_csv(path)
    if isinstance(source, pd.DataFrame):
        return _from_records(source.to_dict("records"), where)
    if isinstance(source, Mapping):
        if "classes" in source:
            return load_class_table(list(source["classes"]))
        records: list[Mapping[str, Any]] = []
        for key, value in source.items():
            if isinstance(value, Mapping):
                records.append({"id": key, **value})
            else:
                records.append({"id": key, "name": value})
        return _from_records(records, where)
    if isinstance(source, Sequence) and not isinstance(source, str):
        return _from_records([dict(r) for r in source], where)
    raise LabelError(f"Cannot read a class table from a {type(source).__name__}.")


@dataclass
class ClassAssignment:
    """Result of :func:`assign_classes`."""

    y: np.ndarray  # (n,) int64 class ids, -1 where the label is missing or unknown
    class_names: list[str]
    class_values: list[Any]
    colors: list[str] | None
    missing: np.ndarray  # bool (n,) label missing
    unknown: np.ndarray  # bool (n,) label not in the class table


def _as_python(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _normalise_labels(values: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return (labels as object array, missing mask, numeric?)."""
    s = pd.Series(values, copy=False)
    missing = s.isna().to_numpy()
    if pd.api.types.is_bool_dtype(s):
        return s.astype(int).to_numpy(dtype=object), missing, True
    if pd.api.types.is_numeric_dtype(s):
        present = s[~missing].to_numpy()
        if present.size and np.all(np.mod(present, 1) == 0):
            out = np.empty(len(s), dtype=object)
            out[~missing] = [int(v) for v in present]
            return out, missing, True
        return s.to_numpy(dtype=object), missing, True
    text = s.astype(object).to_numpy()
    out = np.empty(len(s), dtype=object)
    numeric = True
    for i, v in enumerate(text):
        if missing[i]:
            continue
        v = str(v).strip()
        if v == "":
            missing[i] = True
            continue
        out[i] = v
        try:
            float(v)
        except ValueError:
            numeric = False
    if numeric and (~missing).any():
        vals = np.array([float(v) for v in out[~missing]])
        if np.all(np.mod(vals, 1) == 0):
            out[~missing] = [int(v) for v in vals]
        else:
            out[~missing] = list(vals)
    return out, missing, numeric


def assign_classes(
    values: Any, *, class_table: Any = None, where: str = "labels"
) -> ClassAssignment:
    """Map label values to class ids ``0..C-1``, deterministically.

    Without a class table, the distinct present values are sorted (numbers numerically,
    names alphabetically) and numbered in that order; names are ``str(value)`` and
    ``class_values`` are the values. With a class table, integer labels are looked up by
    id and text labels by name (case-insensitive; an integer-looking text is an id); the
    classes present are numbered in the table's id order, and ``class_values`` are the
    table ids. Labels missing from the table are flagged in ``unknown``.

    Parameters
    ----------
    values : array-like
        One label per row (names or integers; missing values allowed).
    class_table : optional
        Anything :func:`load_class_table` accepts.
    where : str
        How to name the labels in messages.

    Returns
    -------
    ClassAssignment
    """
    labels, missing, numeric = _normalise_labels(values)
    n = len(labels)
    unknown = np.zeros(n, dtype=bool)
    y = np.full(n, -1, dtype=np.int64)
    present = ~missing
    if class_table is None:
        distinct = sorted({_as_python(v) for v in labels[present]})
        index = {v: i for i, v in enumerate(distinct)}
        y[present] = [index[_as_python(v)] for v in labels[present]]
        return ClassAssignment(
            y=y,
            class_names=[str(v) for v in distinct],
            class_values=list(distinct),
            colors=None,
            missing=missing,
            unknown=unknown,
        )
    table = load_class_table(class_table)
    by_name = {name.lower(): tid for tid, name in zip(table.ids, table.names)}
    by_id = set(table.ids)
    table_ids = np.full(n, -1, dtype=np.int64)
    for i in np.flatnonzero(present):
        v = labels[i]
        if numeric and isinstance(v, int) and v in by_id:
            table_ids[i] = v
        elif not numeric and str(v).lower() in by_name:
            table_ids[i] = by_name[str(v).lower()]
        else:
            unknown[i] = True
    used = sorted({int(t) for t in table_ids[table_ids >= 0]}, key=table.ids.index)
    index = {tid: i for i, tid in enumerate(used)}
    ok = table_ids >= 0
    y[ok] = [index[int(t)] for t in table_ids[ok]]
    pos = {tid: k for k, tid in enumerate(table.ids)}
    colors = [table.colors[pos[t]] for t in used]
    return ClassAssignment(
        y=y,
        class_names=[table.names[pos[t]] for t in used],
        class_values=list(used),
        colors=None if all(c is None for c in colors) else [c or "#000000" for c in colors],
        missing=missing,
        unknown=unknown,
    )


def compact_classes(y: np.ndarray, assignment: ClassAssignment) -> tuple[np.ndarray, list[str]]:
    """Drop classes without samples from ``assignment`` (in place), renumbering ``y``.

    Returns the new ``y`` and the names of the dropped classes. The remaining classes
    keep their relative order, so ids stay deterministic.
    """
    n_classes = len(assignment.class_names)
    present = np.bincount(y, minlength=n_classes) > 0
    if present.all():
        return y, []
    dropped = [assignment.class_names[k] for k in np.flatnonzero(~present)]
    new_id = np.cumsum(present) - 1
    keep = np.flatnonzero(present)
    assignment.class_names = [assignment.class_names[k] for k in keep]
    assignment.class_values = [assignment.class_values[k] for k in keep]
    if assignment.colors is not None:
        assignment.colors = [assignment.colors[k] for k in keep]
    return new_id[y].astype(np.int64), dropped
