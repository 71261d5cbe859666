"""Colours and class-name tables: one parser, one palette, one codec for COG tags.

Everything that reads or writes a class colour or a class name goes through here: the
COG writer (colour table, ``class_names`` and ``class_colors`` tags), the map renderers of
:mod:`geoembed.viz`, class tables of :mod:`geoembed.labels` and the CNN trainer. So a map
written by geoembed and reopened shows the names and colours it was written with.

Colours are ``"#rrggbb"``/``"#rrggbbaa"`` strings or RGB(A) tuples: integers 0-255, or
floats 0-1 when every component is within 0..1 and one of them is fractional
(matplotlib's convention, so ``(0.5, 0.2, 0.1)`` is brown, not black).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from geoembed.errors import SchemaError

__all__ = [
    "PALETTE",
    "decode_class_colors",
    "decode_class_names",
    "default_color",
    "encode_class_colors",
    "encode_class_names",
    "parse_color",
    "to_hex",
]

#: categorical colours for classes that come without one (matplotlib's tab10, then the
#: lighter tab20 shades): class ``i`` gets ``PALETTE[i % len(PALETTE)]``
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
    "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip

RGBA = tuple[int, int, int, int]


def parse_color(value: Any, what: str = "colour", *, error: type[Exception] = SchemaError) -> RGBA:
    """Parse one colour into an ``(r, g, b, a)`` tuple of 0-255 integers.

    Parameters
    ----------
    value : str or sequence
        ``"#rrggbb"``, ``"rrggbb"``, ``"#rrggbbaa"``, or 3/4 components (0-255, or 0-1
        floats as described in the module docstring).
    what : str
        How to name the colour in error messages (``"class 3"``...).
    error : exception class
        Raised for a malformed colour (a :class:`~geoembed.errors.GeoembedError`).

    Returns
    -------
    tuple of int
    """
    if isinstance(value, str):
        h = value.strip().lstrip("#")
        if len(h) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in h):
            raise error(
                f"Colour {value!r} for {what} is not a hex colour; use '#rrggbb' or (r, g, b)."
            )
        rgba: list[float] = [int(h[i : i + 2], 16) for i in range(0, len(h), 2)]
    else:
        try:
            rgba = [float(v) for v in value]
        except (TypeError, ValueError) as exc:
            raise error(
                f"Colour {value!r} for {what} is neither '#rrggbb' nor an (r, g, b) tuple."
            ) from exc
        if len(rgba) not in (3, 4):
            raise error(f"Colour {value!r} for {what} needs 3 or 4 components.")
        if all(0.0 <= v <= 1.0 for v in rgba) and any(0.0 < v < 1.0 for v in rgba):
            rgba = [v * 255.0 for v in rgba]
        if any(not 0 <= v <= 255 for v in rgba):
            raise error(f"Colour {value!r} for {what} has components outside 0..255.")
        rgba = [round(v) for v in rgba]
    if len(rgba) == 3:
        rgba.append(255)
    return (int(rgba[0]), int(rgba[1]), int(rgba[2]), int(rgba[3]))


def to_hex(color: Any) -> str:
    """``"#rrggbb"`` of any colour :func:`parse_color` accepts."""
    r, g, b, _ = parse_color(color)
    return f"#{r:02x}{g:02x}{b:02x}"


def default_color(class_id: int) -> RGBA:
    """Return the palette colour of a class that has none."""
    return parse_color(PALETTE[int(class_id) % len(PALETTE)])


def _id_mapping(obj: Any, what: str) -> dict[int, Any]:
    if isinstance(obj, str):
        text = obj.strip()
        try:
            obj = json.loads(text)
        except ValueError:
            # names written by hand or by old tools: "water,trees,crops"
            obj = [part.strip() for part in text.split(",")] if text else []
    if isinstance(obj, Mapping):
        try:
            return {int(k): v for k, v in obj.items()}
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"{what} keys must be integer class ids, got {list(obj)[:5]}."
            ) from exc
    if isinstance(obj, Sequence) and not isinstance(obj, bytes):
        return dict(enumerate(obj))
    raise SchemaError(f"{what} must be a list in class-id order or a {{id: value}} mapping.")


def decode_class_names(raw: Any) -> dict[int, str]:
    """``{class_id: name}`` from a ``class_names`` tag/attribute, list or mapping.

    Accepts what :func:`encode_class_names` writes (JSON ``{"0": "water"}``), a JSON list,
    a Python list or mapping, and the legacy comma-separated string.
    """
    if raw is None:
        return {}
    return {k: str(v) for k, v in _id_mapping(raw, "class_names").items()}


def encode_class_names(names: Any) -> str:
    """Encode the ``class_names`` tag: JSON ``{"0": "water", ...}`` sorted by class id."""
    mapping = decode_class_names(names)
    return json.dumps({str(k): v for k, v in sorted(mapping.items())})


def decode_class_colors(raw: Any) -> dict[int, RGBA]:
    """``{class_id: (r, g, b, a)}`` from a ``class_colors`` tag/attribute, list or mapping."""
    if raw is None:
        return {}
    return {k: parse_color(v, f"class {k}") for k, v in _id_mapping(raw, "class colours").items()}


def encode_class_colors(colors: Any) -> str:
    """Encode the ``class_colors`` tag: JSON ``{"0": "#rrggbb", ...}`` sorted by class id."""
    mapping = decode_class_colors(colors)
    return json.dumps({str(k): to_hex(v) for k, v in sorted(mapping.items())})
