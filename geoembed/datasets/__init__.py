"""Datasets for demos and tests: a synthetic, AlphaEarth-like scene (clearly not real data)."""

from geoembed.datasets.synthetic import CLASSES, ClassInfo, SyntheticScene, synthetic_scene

__all__ = ["CLASSES", "ClassInfo", "SyntheticScene", "synthetic_scene"]
