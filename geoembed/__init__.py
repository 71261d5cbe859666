"""geoembed: scalable classification of geospatial embedding fields on Dask.

The public surface is small: :func:`open_embeddings`, :func:`open_aef` and
:func:`check_embedding` here,
and one subpackage per job (:mod:`geoembed.labels`, :mod:`geoembed.classify`,
:mod:`geoembed.cluster`, :mod:`geoembed.infer`, :mod:`geoembed.export`,
:mod:`geoembed.assess`, :mod:`geoembed.datasets`, :mod:`geoembed.viz`,
:mod:`geoembed.runtime`).
"""

import geoembed._cloud  # noqa: F401  (object-store settings, before any client import)
from geoembed._version import __version__
from geoembed.io import open_embeddings
from geoembed.io.aef_open import open_aef
from geoembed.schema import check_embedding, to_canonical

__all__ = ["__version__", "check_embedding", "open_aef", "open_embeddings", "to_canonical"]
