"""Check that a finished output (COG, Zarr store, STAC Item) is complete and valid."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from geoembed.errors import OutputError

__all__ = ["verify"]


def _crs_name(crs: Any) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _nodata(value: Any) -> Any:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    return int(value) if value.is_integer() else value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _read_blocks(src: Any, what: str) -> tuple[int, list[str]]:
    """Decode every block of every band of an open raster; one line per bad block."""
    import numpy as np
    import rasterio

    n_read, bad = 0, []
    for (row, col), window in src.block_windows(1):
        for b in range(1, src.count + 1):
            try:
                src.read(b, window=window, out_dtype=np.dtype(src.dtypes[0]))
                n_read += 1
            except rasterio.errors.RasterioError as exc:
                bad.append(
                    f"{what}: block ({row}, {col}) of band {b} cannot be read ({_one_line(exc)})"
                )
    return n_read, bad


def _read_overviews(
    path: Path | str, factors: list[int], size: tuple[int, int]
) -> tuple[int, list[str]]:
    """Decode every block of each overview level (GDAL's ``OVERVIEW_LEVEL`` open option)."""
    import rasterio

    n_read, bad = 0, []
    for level, factor in enumerate(factors):
        what = f"overview level {level} (1/{factor})"
        try:
            with rasterio.open(path, OVERVIEW_LEVEL=level) as ovr:
                want = (-(-size[0] // factor), -(-size[1] // factor))
                if abs(ovr.height - want[0]) > 1 or abs(ovr.width - want[1]) > 1:
                    bad.append(
                        f"{what} is {ovr.height} x {ovr.width} pixels, expected about "
                        f"{want[0]} x {want[1]}"
                    )
                n, problems = _read_blocks(ovr, what)
        except rasterio.errors.RasterioError as exc:
            n, problems = 0, [f"{what} cannot be opened ({_one_line(exc)})"]
        n_read += n
        bad.extend(problems)
    return n_read, bad


def _verify_cog(path: Path | str, *, full: bool, gdal_name: str | None = None) -> dict[str, Any]:
    """Check a COG; ``gdal_name`` is the name GDAL opens it by (``/vsigs/...`` for a URL)."""
    import numpy as np
    import rasterio

    from geoembed.export.cog_layout import cog_check

    report: dict[str, Any] = {"path": str(path), "format": "GeoTIFF"}
    problems: list[str] = []
    try:
        is_cog, errors, warnings = cog_check(path)
    except Exception as exc:  # rio-cogeo raises assorted errors on non-TIFF input
        is_cog, errors, warnings = False, [f"cannot be validated: {exc}"], []
    report.update(is_cog=bool(is_cog), cog_errors=list(errors), cog_warnings=list(warnings))
    if not is_cog:
        problems.extend(f"not a valid COG: {e}" for e in errors)
    try:
        with rasterio.open(gdal_name or path) as src:
            report.update(
                width=src.width,
                height=src.height,
                count=src.count,
                dtype=src.dtypes[0],
                crs=_crs_name(src.crs),
                transform=list(src.transform)[:6],
                nodata=_nodata(src.nodata),
                overviews=src.overviews(1),
                blocksize=list(src.block_shapes[0]),
                compress=src.compression.value if src.compression else None,
                band_descriptions=list(src.descriptions),
            )
            try:
                cmap = src.colormap(1)
                report["colormap_entries"] = len(cmap)
            except ValueError:
                report["colormap_entries"] = 0
            raw = src.tags(1).get("class_names") or src.tags().get("class_names")
            report["class_names"] = {int(k): v for k, v in json.loads(raw).items()} if raw else None
            if src.crs is None:
                problems.append("no CRS")
            if full:
                n_read, bad = _read_blocks(src, "full resolution")
                problems.extend(bad)
            else:
                h, w = src.block_shapes[0]
                r0, c0 = ((src.height - 1) // h) * h, ((src.width - 1) // w) * w
                window = rasterio.windows.Window(c0, r0, src.width - c0, src.height - r0)
                for b in range(1, src.count + 1):
                    src.read(b, window=window, out_dtype=np.dtype(src.dtypes[0]))
                n_read = src.count
            report["blocks_read"] = n_read
            factors, size = src.overviews(1), (src.height, src.width)
        if full:
            n_read, bad = _read_overviews(gdal_name or str(path), factors, size)
            report["overview_blocks_read"] = n_read
            problems.extend(bad)
    except rasterio.errors.RasterioError as exc:
        problems.append(f"cannot be read: {_one_line(exc)}")
    report["problems"] = problems
    report["valid"] = not problems
    return report


def _read_chunks(
    arr: Any, name: str, crcs: list[int] | None, skip: set[tuple[int, ...]]
) -> list[str]:
    """Decode every chunk of one array; one line per chunk that is corrupt."""
    from concurrent.futures import ThreadPoolExecutor

    from geoembed._zarr_chunks import (
        chunk_crc32,
        chunk_grid,
        chunk_indices,
        chunk_key,
        chunk_slices,
        flat_index,
        storage_index,
    )

    grid = chunk_grid(arr)

    def key(idx: tuple[int, ...]) -> str:
        return f"{name}/{chunk_key(arr, idx)}" if name else chunk_key(arr, idx)

    def check(idx: tuple[int, ...]) -> str | None:
        try:
            values = arr[chunk_slices(idx, arr)]
        except MemoryError:
            raise
        except Exception as exc:  # any decoding failure is a corrupt chunk
            why = " ".join(str(exc).split())[:200]
            return f"chunk {key(idx)} is corrupt or truncated ({type(exc).__name__}: {why})"
        if crcs is not None and chunk_crc32(values) != crcs[flat_index(idx, grid)]:
            return (
                f"chunk {key(idx)} does not match the checksum recorded at write "
                "(altered, or swapped with another chunk)"
            )
        return None

    todo = [idx for idx in chunk_indices(arr) if storage_index(arr, idx) not in skip]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = [p for p in pool.map(check, todo) if p is not None]
    return list(dict.fromkeys(found))  # inner chunks of one bad shard: one line


def _verify_zarr(path: Path | str, *, full: bool) -> dict[str, Any]:
    import xarray as xr
    import zarr

    from geoembed._zarr_chunks import (
        CHUNKS_ATTR,
        chunk_grid,
        declared_sparse,
        has_checksum,
        manifest_of,
        storage_keys,
    )
    from geoembed.export.zarr import missing_chunks

    report: dict[str, Any] = {"path": str(path), "format": "Zarr"}
    problems: list[str] = []
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for non-stores
        return {**report, "valid": False, "problems": [f"cannot be opened as Zarr: {exc}"]}
    report["zarr_format"] = node.metadata.zarr_format
    arrays = [("", node)] if isinstance(node, zarr.Array) else list(node.arrays())
    group_attrs = node.attrs if isinstance(node, zarr.Group) else {}
    report["arrays"] = {
        name: {
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "chunks": list(arr.chunks),
            "n_chunks": math.prod(chunk_grid(arr)),
            "checksum_codec": has_checksum(arr),
            "checksums_recorded": manifest_of(group_attrs, name) is not None,
        }
        for name, arr in arrays
    }
    missing = missing_chunks(path)
    sparse = declared_sparse(group_attrs)
    report["sparse"] = sparse
    report["missing_chunks"] = {k: [list(i) for i in v[:20]] for k, v in missing.items()}
    report["n_missing_chunks"] = sum(len(v) for v in missing.values())
    arrays_by_name = dict(arrays)
    for name, idx in missing.items():
        if sparse or declared_sparse({}, arrays_by_name[name].attrs):
            continue
        keys = {v: k for k, v in storage_keys(arrays_by_name[name]).items()}
        first = ", ".join(f"{name}/{keys[i]}" for i in idx[:3])
        problems.append(
            f"array {name!r}: {len(idx)} of {report['arrays'][name]['n_chunks']} chunks missing "
            f"({first}{' ...' if len(idx) > 3 else ''}); they would read back as the fill value"
        )
    if CHUNKS_ATTR in group_attrs:
        for name, _ in arrays:
            crcs = manifest_of(group_attrs, name)
            n = report["arrays"][name]["n_chunks"]
            if crcs is None:
                problems.append(f"array {name!r} is not in the chunk manifest ({CHUNKS_ATTR})")
            elif len(crcs) != n:
                problems.append(
                    f"array {name!r} has {n} chunks, the manifest records {len(crcs)} "
                    "(changed after it was written)"
                )
    if full:
        corrupt: dict[str, list[str]] = {}
        for name, arr in arrays:
            crcs = manifest_of(group_attrs, name)
            crcs = crcs if crcs is not None and len(crcs) == math.prod(chunk_grid(arr)) else None
            found = _read_chunks(arr, name, crcs, set(missing.get(name, [])))
            if found:
                corrupt[name] = found
                problems.extend(f"array {name!r}: {line}" for line in found)
        report["corrupt_chunks"] = corrupt
        report["n_corrupt_chunks"] = sum(len(v) for v in corrupt.values())
    if isinstance(node, zarr.Group):
        report["written_by_geoembed"] = "geoembed_version" in node.attrs
        crs = None
        try:
            ds = xr.open_zarr(str(path), decode_coords="all", consolidated=None)
            for name in ds.data_vars:
                crs = crs or ds[name].rio.crs
            report["variables"] = [str(v) for v in ds.data_vars]
        except Exception as exc:  # report, do not crash, on odd stores
            problems.append(f"cannot be opened with xarray: {' '.join(str(exc).split())[:200]}")
        report["crs"] = _crs_name(crs)
        spatial = any(
            len(arr.shape) >= 2 for name, arr in arrays if name not in ("x", "y", "spatial_ref")
        )
        if crs is None and spatial:
            problems.append("no CRS (no spatial_ref / grid_mapping with a CRS)")
    report["problems"] = problems
    report["valid"] = not problems
    return report


def _is_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zarray"))


def _stale(directory: Path) -> list[dict[str, Any]]:
    from geoembed.export.outputs import stale_temporaries

    return [
        {"path": str(t.path), "kind": t.tag, "host": t.host, "pid": t.pid}
        for t in stale_temporaries(directory)
    ]


def _verify_directory(path: Path) -> dict[str, Any]:
    """Report which outputs in a folder are geoembed's, and leftovers of killed runs."""
    from geoembed.export.atomic import TEMP_MARKER
    from geoembed.export.outputs import is_geoembed_output, unowned_temporaries

    stale = _stale(path)
    outputs = [
        e.name
        for e in sorted(path.iterdir())
        if TEMP_MARKER not in e.name and not e.name.startswith(".") and is_geoembed_output(e)
    ]
    unowned = [str(p) for p in unowned_temporaries(path)]
    problems = [
        f"temporary left by a killed geoembed run (process {t['pid']} on {t['host']}): "
        f"{t['path']}; the next geoembed command writing to this directory removes it "
        "(or delete it yourself)"
        for t in stale
    ]
    problems += [
        f"temporary of an older geoembed that names no process: {p}; delete it when no "
        "geoembed command is writing to this directory"
        for p in unowned
    ]
    return {
        "path": str(path),
        "format": "directory",
        "geoembed_outputs": outputs,
        "stale_temporaries": stale,
        "unowned_temporaries": unowned,
        "problems": problems,
        "valid": not problems,
    }


def _with_item(report: dict[str, Any], p: Path, *, stac: bool) -> dict[str, Any]:
    """Add the check of the STAC Item beside the output ``p`` (``NAME.stac.json``)."""
    from geoembed.stac import check_item, item_path

    item = Path(item_path(p))
    checked = check_item(item) if item.exists() else None
    return _with_stac_report(report, checked, item.name, stac=stac)


def _with_stac_report(
    report: dict[str, Any], checked: dict[str, Any] | None, name: str, *, stac: bool
) -> dict[str, Any]:
    """Add the report ``checked`` of the Item ``name`` (None: there is none)."""
    if checked is None:
        report["stac_item"] = None
        if stac:
            report["problems"].append(
                f"no STAC Item beside it (expected {name}); outputs written by a "
                "geoembed command get one. Write the output again with this version."
            )
    else:
        report["stac_item"] = {
            k: checked.get(k) for k in ("path", "valid", "problems", "extensions_unavailable")
        }
        report["problems"].extend(f"STAC Item {name}: {x}" for x in checked["problems"])
    report["valid"] = not report["problems"]
    return report


def verify(
    path: str | os.PathLike[str], *, full: bool = False, stac: bool = False
) -> dict[str, Any]:
    """Report whether a finished output is complete and valid.

    Parameters
    ----------
    path : str or path-like
        A GeoTIFF/COG file, a Zarr store, a STAC Item (``NAME.stac.json``, checked
        against the output it describes), or a directory of outputs (checked for
        temporaries left by killed geoembed runs). COGs, Zarr stores and STAC Items may
        also be ``gs://``, ``s3://`` or ``https://`` URLs (see
        :mod:`geoembed.export.verify_url`).
    full : bool, default False
        Decode all the data. COG: every block of the full-resolution image and of each
        overview level (finds truncated or corrupt tiles); by default only the last
        full-resolution block is read, which catches a truncated file. Zarr: every chunk
        of every array (codec checksums verify each one) compared with the per-chunk
        CRC-32 that :func:`~geoembed.export.write_zarr` records (finds corrupt, truncated
        and swapped chunks); by default only metadata and the store's key listing are
        read, which finds missing chunks.
    stac : bool, default False
        Require a STAC Item beside a COG or Zarr store. An Item that is there is always
        checked (:func:`geoembed.stac.check_item`); without ``stac`` a missing one is
        only reported (``stac_item`` None), as outputs written by :func:`write_cog` or
        :func:`write_zarr` alone, outside a command, have none.

    Returns
    -------
    dict
        Always ``path``, ``format`` (``"GeoTIFF"``, ``"Zarr"``, ``"STAC Item"`` or
        ``"directory"``), ``valid`` (bool), ``problems`` (list of str) and
        ``stale_temporaries`` (leftovers
        of killed geoembed runs next to the output, or in the directory; each a dict with
        ``path``, ``kind``, ``host``, ``pid``). A directory adds ``geoembed_outputs``;
        its stale temporaries are problems, and so are ``unowned_temporaries`` (left by a
        geoembed that did not record their process). A COG adds ``is_cog``, ``cog_errors``,
        ``cog_warnings``, ``width``, ``height``, ``count``, ``dtype``, ``crs``,
        ``transform``, ``nodata``, ``overviews``, ``colormap_entries``, ``class_names``,
        ``blocks_read`` (and ``overview_blocks_read`` with ``full``);
        a Zarr store adds ``arrays`` (shape, dtype, chunks, n_chunks, checksum_codec,
        checksums_recorded), ``missing_chunks``, ``n_missing_chunks``, ``sparse``,
        ``crs``, ``variables`` and, with ``full``, ``corrupt_chunks`` and
        ``n_corrupt_chunks``. COG and Zarr add ``stac_item`` (None, or the ``path``,
        ``valid``, ``problems`` of the Item beside them; its problems are also in
        ``problems``). A STAC Item adds ``id``, ``assets``, ``extensions_validated`` and
        ``extensions_unavailable``. Each problem is one line.

    Raises
    ------
    OutputError
        When ``path`` does not exist (or, for a URL, cannot be reached).
    """
    from geoembed._cloud import is_url
    from geoembed.stac import ITEM_SUFFIX, check_item

    if is_url(path):
        from geoembed.export.verify_url import verify_url

        return verify_url(str(path), full=full, stac=stac)
    p = Path(path).expanduser()
    if not p.exists():
        raise OutputError(f"Nothing to verify: {str(path)!r} does not exist.")
    if p.is_file() and p.name.endswith(ITEM_SUFFIX):
        report = check_item(p)
        report["stale_temporaries"] = _stale(p.absolute().parent)
        return report
    if p.is_dir() and not _is_zarr(p):
        return _verify_directory(p)
    report = _verify_zarr(p, full=full) if p.is_dir() else _verify_cog(p, full=full)
    report["stale_temporaries"] = _stale(p.absolute().parent)
    return _with_item(report, p, stac=stac)
