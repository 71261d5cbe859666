"""Read labelled points or polygons from files, GeoDataFrames or CSV tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from geoembed._cloud import is_url, open_input, split_url
from geoembed.errors import CRSMismatchError, LabelError, MissingCRSError

__all__ = ["LONLAT_CRS", "load_labels", "read_geometries"]

log = logging.getLogger(__name__)

#: CRS assumed for CSV longitude/latitude columns and Earth Engine ``.geo`` GeoJSON.
LONLAT_CRS = "EPSG:4326"

_LONLAT_PAIRS = (
    ("lon", "lat"),
    ("longitude", "latitude"),
    ("lng", "lat"),
    ("long", "lat"),
)
_XY_PAIRS = (("x", "y"), ("easting", "northing"))
_WKT_NAMES = ("wkt", "geometry", "geom", "the_geom", "wkt_geom")
_GEOJSON_NAMES = (".geo", "geojson")
_TABLE_SUFFIXES = {".csv", ".txt", ".tsv"}


def _find_column(columns: list[str], name: str) -> str | None:
    lower = {str(c).lower(): str(c) for c in columns}
    return lower.get(name.lower())


def _describe(source: Any) -> str:
    if isinstance(source, str | Path):
        return repr(str(source))
    return f"the {type(source).__name__}"


def _read_table(path: Any, suffix: str) -> pd.DataFrame:
    sep = "\t" if suffix == ".tsv" else ","
    return pd.read_csv(path, sep=sep)


def _parse_geojson(values: pd.Series, where: str) -> Any:
    import shapely

    def one(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        text = v if isinstance(v, str) else json.dumps(v)
        try:
            return shapely.from_geojson(text)
        except Exception as exc:  # shapely raises GEOSException
            raise LabelError(f"{where}: cannot parse GeoJSON geometry {text[:80]!r}.") from exc

    return [one(v) for v in values]


def _table_to_gdf(
    df: pd.DataFrame,
    *,
    where: str,
    crs: Any,
    lon: str | None,
    lat: str | None,
    wkt: str | None,
) -> Any:
    import geopandas as gpd
    import shapely

    cols = [str(c) for c in df.columns]
    if (lon is None) != (lat is None):
        raise LabelError(f"{where}: pass both lon= and lat= (or neither).")
    if lon is not None and lat is not None:
        for name in (lon, lat):
            if name not in df.columns:
                raise LabelError(f"{where} has no column {name!r}; columns are {cols}.")
        xcol, ycol, default_crs = lon, lat, LONLAT_CRS if crs is None else None
        kind = "xy"
    elif wkt is not None:
        if wkt not in df.columns:
            raise LabelError(f"{where} has no column {wkt!r}; columns are {cols}.")
        kind, default_crs = "wkt", None
    else:
        kind, default_crs = "", None
        for xname, yname in _LONLAT_PAIRS:
            xc, yc = _find_column(cols, xname), _find_column(cols, yname)
            if xc and yc:
                xcol, ycol, kind, default_crs = xc, yc, "xy", LONLAT_CRS
                break
        if not kind:
            for xname, yname in _XY_PAIRS:
                xc, yc = _find_column(cols, xname), _find_column(cols, yname)
                if xc and yc:
                    xcol, ycol, kind = xc, yc, "xy"
                    break
        if not kind:
            for name in _WKT_NAMES:
                c = _find_column(cols, name)
                if c:
                    wkt, kind = c, "wkt"
                    break
        if not kind:
            for name in _GEOJSON_NAMES:
                c = _find_column(cols, name)
                if c:
                    wkt, kind, default_crs = c, "geojson", LONLAT_CRS
                    break
        if not kind:
            raise LabelError(
                f"{where} has no coordinate columns: expected lon/lat, longitude/latitude, x/y, "
                f"a WKT column or an Earth Engine '.geo' column; columns are {cols}. Name them "
                "with lon=/lat= or wkt=."
            )
    if kind == "xy":
        xs = pd.to_numeric(df[xcol], errors="coerce").to_numpy(dtype=np.float64)
        ys = pd.to_numeric(df[ycol], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(xs) & np.isfinite(ys))
        geoms = shapely.points(np.where(bad, 0.0, xs), np.where(bad, 0.0, ys))
        geoms = np.where(bad, None, geoms)
        drop = [xcol, ycol]
        source_desc = f"columns {xcol!r}/{ycol!r}"
    elif kind == "wkt":
        text = df[wkt].where(df[wkt].notna(), None).to_numpy(dtype=object)
        try:
            geoms = shapely.from_wkt(text, on_invalid="raise")
        except Exception as exc:
            raise LabelError(
                f"{where}: column {wkt!r} holds text that is not WKT ({exc})."
            ) from exc
        drop = [str(wkt)]
        source_desc = f"WKT column {wkt!r}"
    else:
        geoms = np.asarray(_parse_geojson(df[wkt], where), dtype=object)
        drop = [str(wkt)]
        source_desc = f"GeoJSON column {wkt!r}"
    use_crs = crs if crs is not None else default_crs
    if use_crs is None:
        raise MissingCRSError(
            f"{where}: the geometries in {source_desc} carry no CRS. Pass crs='EPSG:32616' "
            "(the CRS of the coordinates); only longitude/latitude columns and '.geo' GeoJSON "
            f"default to {LONLAT_CRS}."
        )
    if crs is None:
        log.info("%s: %s read as %s", where, source_desc, use_crs)
    attrs = df.drop(columns=[c for c in drop if c in df.columns])
    return gpd.GeoDataFrame(attrs, geometry=list(geoms), crs=use_crs)


def read_geometries(
    source: Any,
    *,
    crs: Any = None,
    lon: str | None = None,
    lat: str | None = None,
    wkt: str | None = None,
    layer: str | int | None = None,
) -> Any:
    """Read points or polygons into a GeoDataFrame, as :func:`load_labels` reads them.

    The reading half of :func:`load_labels` (same sources and parameters), without its
    checks of the label column and the CRS: the GeoDataFrame may have no CRS.

    Returns
    -------
    geopandas.GeoDataFrame

    Raises
    ------
    LabelError
        The source does not exist or cannot be read.
    """
    import geopandas as gpd

    where = f"labels {_describe(source)}"
    if isinstance(source, gpd.GeoDataFrame):
        gdf = source.copy()
    elif isinstance(source, pd.DataFrame):
        gdf = _table_to_gdf(source, where=where, crs=crs, lon=lon, lat=lat, wkt=wkt)
    elif isinstance(source, str | Path):
        path: Any
        if is_url(source):  # gs://, s3://, https://: read through fsspec, in memory
            path = open_input(str(source), "labels")
            suffix = PurePosixPath(split_url(str(source))[2]).suffix.lower()
        else:
            path = Path(source)
            if not path.exists():
                raise LabelError(f"{where} does not exist; check the path.")
            suffix = path.suffix.lower()
        if suffix in _TABLE_SUFFIXES:
            gdf = _table_to_gdf(
                _read_table(path, suffix), where=where, crs=crs, lon=lon, lat=lat, wkt=wkt
            )
        elif suffix in (".parquet", ".geoparquet"):
            try:
                gdf = gpd.read_parquet(path)
            except (ValueError, KeyError):  # plain Parquet: no geo metadata
                gdf = _table_to_gdf(
                    pd.read_parquet(path), where=where, crs=crs, lon=lon, lat=lat, wkt=wkt
                )
        else:
            try:
                gdf = gpd.read_file(path, layer=layer) if layer is not None else gpd.read_file(path)
            except Exception as exc:
                raise LabelError(
                    f"{where} cannot be read as a vector file ({exc}); use GeoJSON, GeoPackage, "
                    "GeoParquet, Shapefile or a CSV with coordinate columns."
                ) from exc
    else:
        raise LabelError(
            f"{where}: expected a path, a GeoDataFrame or a DataFrame, got {type(source).__name__}."
        )
    return gdf


def load_labels(
    source: Any,
    *,
    label_column: str,
    crs: Any = None,
    lon: str | None = None,
    lat: str | None = None,
    wkt: str | None = None,
    layer: str | int | None = None,
) -> Any:
    """Read labelled points or polygons into a GeoDataFrame.

    Parameters
    ----------
    source : str, path, geopandas.GeoDataFrame or pandas.DataFrame
        A GeoJSON, GeoPackage, (Geo)Parquet or Shapefile; a CSV/TSV table with coordinate
        columns; a GeoDataFrame; or a DataFrame with coordinate columns. Table coordinate
        columns are found by name (case-insensitive): ``lon``/``lat``,
        ``longitude``/``latitude``, ``lng``/``lat``, then ``x``/``y``,
        ``easting``/``northing``, then a WKT column (``wkt``, ``geometry``, ``geom``), then an
        Earth Engine ``.geo`` GeoJSON column.
    label_column : str
        Column holding the class of each row (names or integers).
    crs : optional
        CRS of the geometries when the source has none (a Shapefile without ``.prj``, x/y
        or WKT columns). Longitude/latitude columns and ``.geo`` GeoJSON default to
        EPSG:4326. A source that carries a different CRS raises :class:`CRSMismatchError`
        (it is never silently relabelled; reproject it instead).
    lon, lat : str, optional
        Names of the longitude/latitude (or x/y, with ``crs=``) columns.
    wkt : str, optional
        Name of a WKT geometry column.
    layer : str or int, optional
        Layer of a multi-layer file (GeoPackage).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per input row, in input order, with a CRS. Empty or missing geometries are
        kept (as None/empty) so that :func:`training_from_geometries` can report them by row.

    Raises
    ------
    MissingCRSError
        The geometries have no CRS and ``crs`` was not given.
    LabelError
        The file cannot be read, or has no ``label_column`` / coordinates.
    """
    where = f"labels {_describe(source)}"
    gdf = read_geometries(source, crs=crs, lon=lon, lat=lat, wkt=wkt, layer=layer)
    if label_column not in gdf.columns:
        raise LabelError(
            f"{where} has no label column {label_column!r}; columns are "
            f"{[str(c) for c in gdf.columns if c != gdf.geometry.name]}. Pass label_column=."
        )
    if gdf.crs is None:
        if crs is None:
            raise MissingCRSError(
                f"{where} has no CRS. Pass crs='EPSG:...' (the CRS the coordinates are in), or "
                "fix the file (e.g. add the .prj of a Shapefile); geoembed never assumes one."
            )
        gdf = gdf.set_crs(crs)
    elif crs is not None:
        from pyproj import CRS

        if not CRS.from_user_input(crs).equals(gdf.crs):
            raise CRSMismatchError(
                f"{where} is in {gdf.crs.to_string()} but crs={crs!r} was given. Drop crs= (the "
                "file's CRS is used and reprojected to the field's), or fix the file."
            )
    return gdf.reset_index(drop=True)
