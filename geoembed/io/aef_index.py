"""The AlphaEarth (AEF) COG index: where the release lives, reading and caching its index.

The public AEF Satellite Embedding release is a set of int8 COGs, one UTM zone per
directory, described by an index GeoParquet (``aef_index.parquet``) with one row per file:
``path``, ``year``, ``crs``, ``utm_zone``, ``wgs84_west/south/east/north``,
``utm_west/south/east/north``, ``fid`` and a footprint geometry. This module finds the index
of a source (the Google bucket, the Source Cooperative copy, or a mirror), reads only the
columns it needs (cached locally for remote sources), selects the files that intersect a
bounding box in a year, and resolves each file's ``path`` against the source's root.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoembed._cloud import is_url
from geoembed.errors import DataRequestError, MissingInputError

__all__ = [
    "INDEX_NAME",
    "PUBLIC_PREFIX",
    "SOURCES",
    "SOURCE_COOP_PREFIX",
    "AefFile",
    "AefSource",
    "read_index",
    "resolve_source",
    "select_files",
]

log = logging.getLogger(__name__)

#: name of the index GeoParquet at the root of a release or mirror
INDEX_NAME = "aef_index.parquet"
#: root of the public release; index paths starting with it are re-rooted on mirrors
PUBLIC_PREFIX = "gs://alphaearth_foundations/satellite_embedding/v1/annual/"
#: the Source Cooperative copy (bottom-up COGs) in its S3 bucket
SOURCE_COOP_PREFIX = "s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/"
#: named sources and their roots; the Source Cooperative bucket is public and read
#: anonymously over HTTPS (path-style, as its name holds dots), so no AWS credentials
SOURCES: dict[str, str] = {
    "gcs": PUBLIC_PREFIX,
    "source-coop": "https://s3.us-west-2.amazonaws.com/us-west-2.opendata.source.coop/"
    "tge-labs/aef/v1/annual/",
}
#: prefixes of index paths that are re-rooted onto the source being read
_REROOTED = (PUBLIC_PREFIX, SOURCE_COOP_PREFIX)
#: index columns read (the footprint geometry is never needed: the bounds are columns)
_COLUMNS = (
    "path",
    "year",
    "crs",
    "utm_zone",
    "wgs84_west",
    "wgs84_south",
    "wgs84_east",
    "wgs84_north",
)
#: years of the annual release, for messages
_YEARS = "2017-2025"


@dataclass(frozen=True)
class AefSource:
    """Where an AEF release or mirror lives.

    Attributes
    ----------
    name : str
        What the user passed (``"gcs"``, ``"source-coop"`` or the mirror's path or URL).
    root : str
        Directory or URL prefix holding ``{year}/{zone}/...`` and the index, ending with ``/``
        for URLs.
    """

    name: str
    root: str

    @property
    def index(self) -> str:
        """Path or URL of the index GeoParquet."""
        return self.join(INDEX_NAME)

    def join(self, rel: str) -> str:
        """Path or URL of ``rel`` below the root."""
        if is_url(self.root):
            return self.root.rstrip("/") + "/" + rel.lstrip("/")
        return os.path.join(self.root, rel)

    def resolve(self, path: str) -> str:
        """Resolve an index ``path`` against this source.

        A path under the public prefix (or the Source Cooperative one) or a relative
        path is taken below :attr:`root`, so a copy of the public index works unchanged
        on a mirror; any other absolute path
        or URL is kept.
        """
        for prefix in _REROOTED:
            if path.startswith(prefix):
                return self.join(path[len(prefix) :])
        if is_url(path) or os.path.isabs(path):
            return path
        return self.join(path)


@dataclass(frozen=True)
class AefFile:
    """One COG of the release selected for a request."""

    path: str
    year: int
    crs: str
    zone: str
    bounds: tuple[float, float, float, float]


def resolve_source(source: str | os.PathLike[str]) -> AefSource:
    """Turn ``source=`` into an :class:`AefSource`.

    Parameters
    ----------
    source : str or path-like
        ``"gcs"`` (the Google bucket), ``"source-coop"`` (the Source Cooperative copy, read
        anonymously over HTTPS), or the path or URL of a mirror laid out like the public release
        below ``satellite_embedding/v1/annual/`` with ``aef_index.parquet`` at its root.

    Raises
    ------
    MissingInputError
        When a local mirror has no index.
    """
    name = os.fspath(source)
    if name in SOURCES:
        return AefSource(name, SOURCES[name])
    if is_url(name):
        return AefSource(name, name.rstrip("/") + "/")
    root = os.path.abspath(os.path.expanduser(name))
    if not os.path.isfile(os.path.join(root, INDEX_NAME)):
        raise MissingInputError(
            f"source={name!r} is not an AEF mirror: {os.path.join(root, INDEX_NAME)} does not "
            "exist. A mirror is laid out like the public release below "
            "satellite_embedding/v1/annual/, with aef_index.parquet at its root; or use "
            "source='gcs' or source='source-coop'."
        )
    return AefSource(name, root)


def cache_dir() -> Path:
    """Folder for cached indexes: ``$GEOEMBED_CACHE/aef`` or ``~/.cache/geoembed/aef``."""
    base = os.environ.get("GEOEMBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "geoembed"
    )
    return Path(base) / "aef"


def _local_index(src: AefSource) -> str:
    """Return a local path of the index; remote indexes are cached by URL and version."""
    if not is_url(src.index):
        return src.index
    from geoembed._cloud import filesystem

    fs = filesystem(src.index)
    try:
        info = fs.info(src.index)
    except FileNotFoundError as exc:
        raise MissingInputError(
            f"The AEF index {src.index} does not exist; check source={src.name!r} (a mirror "
            f"needs {INDEX_NAME} at its root)."
        ) from exc
    except OSError as exc:
        raise DataRequestError(
            f"The AEF index {src.index} cannot be reached ({exc}). Check the network and "
            "credentials, or use a local mirror with source=DIR."
        ) from exc
    version = str(info.get("etag") or info.get("ETag") or info.get("md5Hash") or "")
    version += str(info.get("size", "")) + str(info.get("mtime") or info.get("updated") or "")
    key = hashlib.sha256(f"{src.index}\n{version}".encode()).hexdigest()[:24]
    cached = cache_dir() / f"{key}.parquet"
    if cached.exists():
        return str(cached)
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".index-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, fs.open(src.index, "rb") as remote:
            shutil.copyfileobj(remote, out, length=8 * 2**20)
        os.replace(tmp, cached)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("cached the AEF index %s as %s", src.index, cached)
    return str(cached)


def read_index(src: AefSource, year: int) -> Any:
    """Read the rows of ``year`` from the source's index (only the needed columns).

    Parameters
    ----------
    src : AefSource
    year : int

    Returns
    -------
    pyarrow.Table
        Columns ``path``, ``year``, ``crs``, ``utm_zone`` and the WGS84 bounds.

    Raises
    ------
    CorruptInputError
        When the index lacks one of the columns of the published schema.
    """
    import pyarrow.parquet as pq

    from geoembed.errors import CorruptInputError

    local = _local_index(src)
    schema = pq.read_schema(local)
    missing = [c for c in _COLUMNS if c not in schema.names]
    if missing:
        raise CorruptInputError(
            f"The AEF index {src.index} lacks the columns {missing}; it must follow the "
            "published schema (path, year, crs, utm_zone, wgs84_west/south/east/north, ...)."
        )
    return pq.read_table(local, columns=list(_COLUMNS), filters=[("year", "==", int(year))])


def select_files(
    src: AefSource, year: int, bbox: tuple[float, float, float, float]
) -> list[AefFile]:
    """Select the files of ``year`` whose WGS84 footprint intersects ``bbox``.

    Parameters
    ----------
    src : AefSource
    year : int
    bbox : (west, south, east, north)
        Longitude/latitude bounds.

    Returns
    -------
    list of AefFile
        Sorted by zone then path.

    Raises
    ------
    DataRequestError
        When the release has no file in ``year`` or none intersects ``bbox``.
    """
    table = read_index(src, year)
    if table.num_rows == 0:
        raise DataRequestError(
            f"The AEF index of {src.name!r} has no file for year {year}; the annual release "
            f"covers {_YEARS}."
        )
    west, south, east, north = bbox
    cols = {c: table.column(c).to_pylist() for c in _COLUMNS}
    files = []
    for i in range(table.num_rows):
        b = (
            float(cols["wgs84_west"][i]),
            float(cols["wgs84_south"][i]),
            float(cols["wgs84_east"][i]),
            float(cols["wgs84_north"][i]),
        )
        if b[0] < east and b[2] > west and b[1] < north and b[3] > south:
            files.append(
                AefFile(
                    path=src.resolve(str(cols["path"][i])),
                    year=int(cols["year"][i]),
                    crs=str(cols["crs"][i]),
                    zone=str(cols["utm_zone"][i]),
                    bounds=b,
                )
            )
    if not files:
        raise DataRequestError(
            f"No AEF file of {year} in {src.name!r} intersects the bbox {bbox} (west, south, "
            "east, north in degrees): the area may be outside the release's coverage (open "
            "ocean), or the bbox is in another CRS or in the wrong order."
        )
    return sorted(files, key=lambda f: (f.zone, f.path))
