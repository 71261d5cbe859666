"""STAC Items that describe geoembed's outputs, with their provenance.

Every output committed through :class:`~geoembed.export.outputs.OutputSet` gets a STAC
Item beside it (``map.tif`` → ``map.tif.stac.json``), written in the same atomic commit:

* :func:`build_item` (:mod:`geoembed.stac.item`): projection, raster, classification and
  file extensions read from the output itself;
* :class:`Provenance` (:mod:`geoembed.stac.provenance`): inputs with hashes or versions,
  parameters, versions of geoembed and its dependencies, time;
* :func:`validate_item` (:mod:`geoembed.stac.validate`): pystac's JSON-schema validator,
  offline;
* :func:`check_item` (:mod:`geoembed.stac.check`): the Item against the file (``geoembed
  verify``).
"""

from geoembed.stac.check import check_item
from geoembed.stac.item import ITEM_SUFFIX, build_item, item_path, read_item, write_item
from geoembed.stac.provenance import Provenance
from geoembed.stac.validate import ItemValidation, validate_item

__all__ = [
    "ITEM_SUFFIX",
    "ItemValidation",
    "Provenance",
    "build_item",
    "check_item",
    "item_path",
    "read_item",
    "validate_item",
    "write_item",
]
