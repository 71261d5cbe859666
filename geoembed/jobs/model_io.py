"""Saving and loading fitted models, as the jobs do it (kNN, scikit-learn, KMeans)."""

from __future__ import annotations

from geoembed.classify.model_io import load_model, save_estimator, save_model
from geoembed.cluster.model_io import load_model as load_kmeans
from geoembed.cluster.model_io import save_model as save_kmeans

__all__ = ["load_kmeans", "load_model", "save_estimator", "save_kmeans", "save_model"]
