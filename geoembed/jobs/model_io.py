"""Fitted models on disk (or in object storage): arrays + JSON, never pickle by default.

* :func:`save_model` / :func:`load_model`: geoembed kNN models (a directory of
  ``model.json`` + ``arrays.npz``); :func:`load_model` also reads ``.skops`` files and,
  with ``allow_pickle=True`` only, pickles.
* :func:`save_estimator`: any scikit-learn (or dask-ml) estimator as a ``.skops`` file.
* :func:`save_kmeans` / :func:`load_kmeans`: :class:`geoembed.cluster.KMeans` models
  (``model.json`` + ``centers.npz``).

They were ``geoembed.classify.save_model`` (etc.) and ``geoembed.cluster.save_model``
(etc.), names that still work for one release with a deprecation warning. Model I/O
lives with the jobs because it writes through geoembed's output rules
(:mod:`geoembed.export`), which the domain packages do not import.
"""

from __future__ import annotations

from geoembed.jobs._kmeans_models import load_model as load_kmeans
from geoembed.jobs._kmeans_models import save_model as save_kmeans
from geoembed.jobs._knn_models import load_model, save_estimator, save_model

__all__ = ["load_kmeans", "load_model", "save_estimator", "save_kmeans", "save_model"]
