"""Quicklook PNGs (NumPy + Pillow) and interactive ipyleaflet maps (``viz`` extra)."""

from geoembed.viz.leaflet import overlay_image, show_map
from geoembed.viz.quicklook import quicklook_png

__all__ = ["overlay_image", "quicklook_png", "show_map"]
