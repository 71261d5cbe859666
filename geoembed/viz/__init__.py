"""Quicklooks, panel figures, tiled ipyleaflet maps, label drawing and the mapping loop.

The interactive parts need the ``viz`` extra; nothing heavy is imported with this package.
"""

from __future__ import annotations

from typing import Any

from geoembed.viz.leaflet import compare_maps, map_layer, overlay_image, show_map
from geoembed.viz.quicklook import quicklook_png

__all__ = [
    "LabelCollector",
    "MappingSession",
    "compare_maps",
    "confusion_png",
    "map_layer",
    "map_png",
    "map_style",
    "overlay_image",
    "panel_figure",
    "panel_png",
    "quicklook_png",
    "show_map",
    "suggest_points",
    "tile_server",
]

_LAZY = {
    "LabelCollector": "geoembed.viz.labeling",
    "MappingSession": "geoembed.viz.session",
    "suggest_points": "geoembed.viz.session",
    "confusion_png": "geoembed.viz.panel",
    "map_png": "geoembed.viz.panel",
    "panel_figure": "geoembed.viz.panel",
    "panel_png": "geoembed.viz.panel",
    "map_style": "geoembed.viz.tiles",
    "tile_server": "geoembed.viz.tiles",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoembed.viz' has no attribute {name!r}")
