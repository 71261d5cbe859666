"""Validate STAC Items with pystac's JSON-schema validator, without the network.

The core schemas (Item, GeoJSON Feature and Geometry, the common fields) ship with
pystac and are always used. An extension schema is read from a local folder: the
``schemas/`` folder of this package, then the folder named by the environment variable
``GEOEMBED_STAC_SCHEMAS``; a file there is found by the path of the schema's URL
(``projection/v2.0.0/schema.json`` for
``https://stac-extensions.github.io/projection/v2.0.0/schema.json``). An extension whose
schema is in neither is reported as not validated, never fetched: validation never waits
on the network. :func:`geoembed.stac.check_item` then checks the extension fields
against the file itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["EXTENSIONS", "ItemValidation", "OfflineSchemaError", "schema_dirs", "validate_item"]

#: the extensions geoembed's Items use, by short name
EXTENSIONS = {
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
}
SCHEMAS_ENV = "GEOEMBED_STAC_SCHEMAS"


class OfflineSchemaError(LookupError):
    """A schema that is not available locally (it is never fetched)."""


@dataclass
class ItemValidation:
    """The outcome of :func:`validate_item`.

    Attributes
    ----------
    valid : bool
        No schema that was available rejected the Item.
    core_schema : str or None
        The core schema it was validated against.
    extensions_validated, extensions_unavailable : list of str
        Extension schemas used, and those that no local folder holds.
    problems : list of str
        One line per schema error.
    """

    valid: bool = True
    core_schema: str | None = None
    extensions_validated: list[str] = field(default_factory=list)
    extensions_unavailable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def schema_dirs() -> list[Path]:
    """Return the local folders searched for extension schemas, in order."""
    dirs = [Path(__file__).parent / "schemas"]
    extra = os.environ.get(SCHEMAS_ENV)
    if extra:
        dirs.extend(Path(p) for p in extra.split(os.pathsep) if p)
    return dirs


def _local_schema(uri: str) -> dict[str, Any]:
    import json

    rel = urlparse(uri).path.lstrip("/")
    for d in schema_dirs():
        p = d / rel
        if p.is_file():
            payload = json.loads(p.read_text())
            if isinstance(payload, dict):
                return payload
    raise OfflineSchemaError(uri)


def _validator() -> Any:
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    class OfflineValidator(JsonSchemaSTACValidator):
        """pystac's validator with schemas read from local folders only."""

        def _get_schema(self, schema_uri: str) -> dict[str, Any]:
            if schema_uri not in self.schema_cache:
                self.schema_cache[schema_uri] = _local_schema(schema_uri)
            return self.schema_cache[schema_uri]

    return OfflineValidator()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def validate_item(item: Mapping[str, Any]) -> ItemValidation:
    """Validate a STAC Item (a dict) against its core and extension schemas, offline.

    Parameters
    ----------
    item : mapping
        The Item as JSON.

    Returns
    -------
    ItemValidation
    """
    import pystac
    from pystac.errors import STACValidationError

    out = ItemValidation()
    stac = dict(item)
    validator = _validator()
    version = str(stac.get("stac_version", pystac.get_stac_version()))
    try:
        out.core_schema = validator.validate_core(stac, pystac.STACObjectType.ITEM, version)
    except STACValidationError as exc:
        out.problems.append(f"not a valid STAC Item: {_one_line(exc)}")
    except OfflineSchemaError as exc:
        out.problems.append(f"no local schema for STAC {version} ({exc}); cannot validate")
    for uri in stac.get("stac_extensions") or []:
        try:
            validator._get_schema(uri)  # before pystac, which logs every failure
        except OfflineSchemaError:
            out.extensions_unavailable.append(uri)
            continue
        try:
            validator.validate_extension(stac, pystac.STACObjectType.ITEM, version, uri)
        except STACValidationError as exc:
            out.problems.append(f"not valid for the extension {uri}: {_one_line(exc)}")
        except Exception as exc:  # a $ref to a schema held by no local folder
            out.extensions_unavailable.append(uri)
            out.problems.append(f"cannot validate the extension {uri}: {_one_line(exc)}")
            continue
        out.extensions_validated.append(uri)
    out.valid = not out.problems
    return out
