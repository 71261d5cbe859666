"""Training data: labelled points, polygons or sampled tables -> :class:`TrainingSet`.

* :func:`load_labels` reads points or polygons (GeoJSON, GeoPackage, GeoParquet,
  Shapefile, GeoDataFrame, CSV with lon/lat or WKT columns).
* :func:`training_from_geometries` samples a field under them (explicit reprojection,
  out-of-extent and nodata rejection with counts, only the needed chunks read).
* :func:`training_from_table` takes already-sampled embeddings, e.g. an Earth Engine
  ``sampleRegions`` / ``stratifiedSample`` CSV export with ``A00``..``A63`` columns.
"""

from geoembed.labels.classes import (
    DYNAMIC_WORLD_CLASSES,
    ClassTable,
    assign_classes,
    load_class_table,
)
from geoembed.labels.geometries import training_from_geometries
from geoembed.labels.readers import LONLAT_CRS, load_labels
from geoembed.labels.table import training_from_table
from geoembed.labels.training_set import TrainingSet

__all__ = [
    "DYNAMIC_WORLD_CLASSES",
    "LONLAT_CRS",
    "ClassTable",
    "TrainingSet",
    "assign_classes",
    "load_class_table",
    "load_labels",
    "training_from_geometries",
    "training_from_table",
]
