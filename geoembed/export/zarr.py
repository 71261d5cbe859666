"""Write any geoembed output as Zarr: chunk-aligned, complete-or-nothing, resumable.

A Zarr store is atomic per chunk, never per array, and a missing chunk reads back as the
fill value without any error. So :func:`write_zarr`

* writes into ``<path>.partial`` and renames it to ``<path>`` only after checking that
  every chunk of every array is stored (``write_empty_chunks=True``, so a chunk that is
  all fill value is stored too and "missing" always means "not written");
* writes whole, aligned chunks only, one Dask task per chunk: a task that Dask runs
  twice rewrites the same bytes;
* with ``resume=True`` re-does only the chunks missing from an interrupted ``.partial``;
* compresses every chunk with Zstd *with its content checksum* (both Zarr formats), so a
  truncated, overwritten or bit-flipped chunk fails to decode instead of reading back
  wrong values;
* records in the group attribute ``geoembed:chunks`` each array's chunk count and the
  CRC-32 of each chunk's decoded values (C order of the chunk grid), which
  :func:`geoembed.io.open_embeddings` and ``geoembed verify --full`` check: this also
  catches chunks swapped between positions, which decode without error.

The CRS is kept in rioxarray's ``spatial_ref`` variable (``grid_mapping``); read it back
with ``xr.open_zarr(path, decode_coords="all")`` or :func:`geoembed.io.open_embeddings`.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from geoembed._version import __version__
from geoembed._zarr_chunks import (
    CHUNKS_ATTR,
    chunk_crc32,
    chunk_grid,
    chunk_indices,
    chunk_slices,
    flat_index,
    has_checksum,
    list_keys,
    storage_keys,
)
from geoembed.errors import DTypeError, OutputError, OutputValidationError, SchemaError
from geoembed.export.atomic import check_output_path, is_remote, remove_path, replace_path
from geoembed.export.remote import check_remote_output, copy_output, remote_exists, remote_remove

#: zarr-python's warning for string arrays (band names), which it reads and writes fine
_NO_V3_SPEC = ".*does not have a Zarr V3 specification"

__all__ = ["missing_chunks", "write_zarr"]

_DEFAULT_CHUNK = 512
_KEEP_ENCODING = ("grid_mapping",)


@dataclass(frozen=True)
class _ZarrPlan:
    target: str
    partial: str
    overwrite: bool


def _as_dataset(obj: xr.DataArray | xr.Dataset) -> xr.Dataset:
    if isinstance(obj, xr.DataArray):
        name = obj.name if obj.name is not None else "data"
        return obj.to_dataset(name=str(name))
    if isinstance(obj, xr.Dataset):
        return obj
    raise SchemaError(
        f"write_zarr needs an xarray DataArray or Dataset, got a {type(obj).__name__}."
    )


def _regular_chunks(var: xr.Variable) -> tuple[int, ...]:
    """Zarr chunk shape for a variable: its Dask chunks when regular, else the first ones."""
    if isinstance(var.data, dsa.Array):
        return tuple(int(c[0]) for c in var.data.chunks)
    return tuple(
        int(min(s, _DEFAULT_CHUNK)) if d in ("y", "x") else int(s)
        for d, s in zip(var.dims, var.shape)
    )


def _checksum_compressor(zarr_format: int) -> Any:
    """Zstd with its content checksum: every chunk is verified when decoded."""
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Zstd(level=0, checksum=True)
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=0, checksum=True)


def _prepare_dataset(
    ds: xr.Dataset, zarr_format: int = 3
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """Dask-back every data variable with regular chunks; strip value-changing encodings.

    Every variable (coordinates too) is compressed with a checksummed codec.
    """
    compressors = [_checksum_compressor(zarr_format)]
    crs_var = "spatial_ref" if "spatial_ref" in ds.variables else None
    out = ds.copy()
    encoding: dict[str, dict[str, Any]] = {}
    for name in list(out.data_vars):
        var = out[name]
        if var.dtype.kind not in "biuf":
            raise DTypeError(
                f"Variable {name!r} has dtype {var.dtype}; write_zarr writes numeric outputs. "
                "Cast it (e.g. .astype('uint8')) first."
            )
        if var.dtype.kind == "b":
            raise DTypeError(
                f"Variable {name!r} is boolean; cast it with .astype('uint8') before writing."
            )
        chunks = _regular_chunks(var.variable)
        data = var.data
        if isinstance(data, dsa.Array):
            data = data.rechunk(chunks)
        else:
            data = dsa.from_array(np.asarray(data), chunks=chunks)
        enc = {k: v for k, v in var.encoding.items() if k in _KEEP_ENCODING}
        if crs_var is not None and var.ndim >= 2 and "grid_mapping" not in enc:
            if "grid_mapping" not in var.attrs:
                enc["grid_mapping"] = crs_var
        enc["chunks"] = chunks
        enc["compressors"] = compressors
        out[name] = var.copy(data=data)
        out[name].encoding = {}
        encoding[str(name)] = enc
    for name in out.coords:
        keep = {k: v for k, v in out[name].encoding.items() if k in _KEEP_ENCODING}
        out[name].encoding = keep
        encoding[str(name)] = {"compressors": compressors}
    # a manifest copied from an input store would describe other chunks
    attrs = {k: v for k, v in out.attrs.items() if k != CHUNKS_ATTR}
    out.attrs = {**attrs, "geoembed_version": __version__, "geoembed_write_empty_chunks": 1}
    return out, encoding


def _array_missing(arr: Any) -> list[tuple[int, ...]]:
    stored = list_keys(arr)
    return [idx for key, idx in storage_keys(arr).items() if key not in stored]


def missing_chunks(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, ...]]]:
    """Chunks (or shards) of each array of a Zarr store that are not stored.

    Parameters
    ----------
    path : str or path-like
        A Zarr group (as written by :func:`write_zarr`) or a single array.

    Returns
    -------
    dict
        ``{array_name: [chunk index, ...]}`` for arrays with missing chunks (empty when the
        store is complete). Only meaningful for stores written with
        ``write_empty_chunks=True``: otherwise chunks equal to the fill value are never
        stored and look missing.
    """
    import zarr

    node = zarr.open(str(path), mode="r")
    arrays = [("", node)] if isinstance(node, zarr.Array) else list(node.arrays())
    out: dict[str, list[tuple[int, ...]]] = {}
    for name, arr in arrays:
        missing = _array_missing(arr)
        if missing:
            out[name] = missing
    return out


def _open_for_write(store: str, name: str) -> Any:
    """Open an existing array so that chunks equal to the fill value are stored too."""
    import zarr

    arr = zarr.open_array(store, path=name, mode="r+")
    return arr.with_config({"write_empty_chunks": True})


def _array_metadata(store: str, names: Sequence[str]) -> dict[str, Any]:
    """Read the metadata of the arrays ``names`` of a store once, for the write tasks."""
    import zarr

    group = zarr.open_group(store, mode="r")
    return {name: group[name].metadata for name in names}


def _open_known(store: str, name: str, metadata: Any) -> Any:
    """Open array ``name`` of ``store`` from metadata the client read: no request at all.

    Opening by path reads the array's metadata, and on object storage zarr and fsspec
    first probe every format's metadata keys (``zarr.json``, ``.zarray``, ``.zattrs``,
    then a listing for each missing key): 4 to 9 requests for every chunk written.
    Chunks equal to the fill value are stored too (``write_empty_chunks``).
    """
    from zarr import Array, AsyncArray
    from zarr.storage import FsspecStore, LocalStore, StorePath

    root = FsspecStore.from_url(store) if is_remote(store) else LocalStore(store)
    config = {"write_empty_chunks": True}
    return Array(AsyncArray(metadata, StorePath(root, name), config=config))  # type: ignore[call-overload]


def _write_chunk(
    block: np.ndarray, store: str, name: str, index: tuple[int, ...], metadata: Any
) -> tuple[str, tuple[int, ...], int]:
    """Write one whole, aligned chunk (idempotent: the same block gives the same bytes).

    ``metadata`` is the array's zarr metadata (:func:`_array_metadata`, read once by the
    client) so that the task sends the chunk and nothing else.

    Returns
    -------
    (str, tuple of int, int)
        Array name, chunk index and CRC-32 of the chunk's values, for the manifest.
    """
    arr = _open_known(store, name, metadata)
    values = np.asarray(block, dtype=arr.dtype)
    arr[chunk_slices(index, arr)] = values
    return name, tuple(int(i) for i in index), chunk_crc32(values)


def _chunk_tasks(
    ds: xr.Dataset, store: str, only: dict[str, list[tuple[int, ...]]] | None
) -> list[Any]:
    tasks: list[Any] = []
    names = [str(n) for n in ds.data_vars if only is None or only.get(str(n))]
    metadata = _array_metadata(store, names) if names else {}
    for name in ds.data_vars:
        data = ds[name].data
        blocks = data.to_delayed()
        indices = (
            only.get(str(name), [])
            if only is not None
            else list(itertools.product(*(range(len(c)) for c in data.chunks)))
        )
        for idx in indices:
            write = dask.delayed(_write_chunk, pure=False)
            tasks.append(write(blocks[idx], store, str(name), idx, metadata[str(name)]))
    return tasks


def _compatible(
    ds: xr.Dataset, encoding: dict[str, dict[str, Any]], partial: Path | str
) -> str | None:
    import zarr

    try:
        group = zarr.open_group(str(partial), mode="r")
    except Exception as exc:  # any failure to open means "not resumable"
        return f"it cannot be opened ({exc})"
    arrays = dict(group.arrays())
    for name in ds.data_vars:
        arr = arrays.get(str(name))
        if arr is None:
            return f"it has no array {name!r}"
        var = ds[name]
        if tuple(arr.shape) != tuple(var.shape) or np.dtype(arr.dtype) != var.dtype:
            return f"array {name!r} is {arr.dtype}{arr.shape}, the output is {var.dtype}{var.shape}"
        if tuple(arr.chunks) != tuple(encoding[str(name)]["chunks"]):
            want = encoding[str(name)]["chunks"]
            return f"array {name!r} has chunks {arr.chunks}, the output {want}"
        if not has_checksum(arr):
            return f"array {name!r} has no checksum codec (written by an older geoembed)"
    return None


def _record_manifest(group: Any, done: Sequence[tuple[str, tuple[int, ...], int]]) -> None:
    """Store each array's chunk count and per-chunk CRC-32 in ``geoembed:chunks``.

    CRCs come from the write tasks; chunks written by an earlier run (resume) and the
    eagerly written coordinates are read back once to get theirs.
    """
    known = {(name, idx): crc for name, idx, crc in done}
    manifest: dict[str, dict[str, Any]] = {}
    for name, arr in group.arrays():
        grid = chunk_grid(arr)
        crcs = [0] * int(np.prod(grid))
        for idx in chunk_indices(arr):
            crc = known.get((name, idx))
            if crc is None:
                crc = chunk_crc32(arr[chunk_slices(idx, arr)])
            crcs[flat_index(idx, grid)] = crc
        manifest[name] = {"n_chunks": len(crcs), "crc32": crcs}
    group.attrs.update({CHUNKS_ATTR: manifest})


def _finalize_zarr(done: Sequence[tuple[str, tuple[int, ...], int]], plan: _ZarrPlan) -> str:
    """Check every chunk is present, record the chunk manifest, consolidate, rename."""
    import zarr

    remote = is_remote(plan.partial)
    partial: Path | str = plan.partial if remote else Path(plan.partial)
    missing = missing_chunks(partial)
    if missing:
        n = sum(len(v) for v in missing.values())
        raise OutputValidationError(
            f"Writing {plan.target!r}: {n} chunks are missing from {plan.partial!r} "
            f"(arrays {sorted(missing)}). Finish it with write_zarr(..., resume=True) in "
            "Python, or run the geoembed command again."
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_V3_SPEC)
        _record_manifest(zarr.open_group(str(partial), mode="r+"), done)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        warnings.filterwarnings("ignore", message=_NO_V3_SPEC)
        zarr.consolidate_metadata(str(partial))
    if remote:  # object stores have no rename: copy, root metadata last
        copy_output(plan.partial, plan.target, directory=True)
        remote_remove(plan.partial)
    else:
        replace_path(Path(partial), Path(plan.target), overwrite=plan.overwrite, what="Zarr store")
    return plan.target


def _write_remote(
    ds: xr.Dataset,
    encoding: dict[str, dict[str, Any]],
    url: str,
    overwrite: bool,
    resume: bool,
    zarr_format: int,
    compute: bool,
) -> str | Any:
    """Write a Zarr store to ``gs://`` / ``s3://`` (chunks by the workers).

    Chunks go to ``<url>.partial``; once every chunk is present and the manifest is
    recorded, the store is copied to ``url`` with its root metadata last.
    """
    target = check_remote_output(url, overwrite=overwrite, what="Zarr store")
    from geoembed.export.remote_sweep import sweep_target

    sweep_target(target, keep_resumable=resume)
    partial = f"{target}.partial"
    only: dict[str, list[tuple[int, ...]]] | None = None
    if resume and remote_exists(partial) and _compatible(ds, encoding, partial) is None:
        only = {k: v for k, v in missing_chunks(partial).items() if k in ds.data_vars}
    else:
        if remote_exists(partial):
            if not overwrite and not resume:
                raise OutputError(
                    f"An interrupted write left {partial!r}. Pass resume=True to finish it or "
                    f"overwrite=True to start again (or delete {partial!r})."
                )
            remote_remove(partial)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_V3_SPEC)
            ds.to_zarr(
                partial,
                mode="w",
                compute=False,
                encoding=encoding,
                consolidated=False,
                zarr_format=zarr_format,
                write_empty_chunks=True,
            )
    plan = _ZarrPlan(target=target, partial=partial, overwrite=overwrite)
    job = dask.delayed(_finalize_zarr, pure=False)(_chunk_tasks(ds, partial, only), plan)
    if not compute:
        return job
    from geoembed.runtime import compute as run

    run(job, label=f"writing {target.rpartition('/')[2]}")
    return target


def write_zarr(
    obj: xr.DataArray | xr.Dataset,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    compute: bool = True,
    resume: bool = False,
    progress: bool = False,
    zarr_format: int = 3,
) -> Path | Any:
    """Write an output DataArray or Dataset as a complete, validated Zarr store.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Any geoembed output (class map, probabilities, a field...). NumPy- or Dask-backed;
        Zarr chunks follow the Dask chunks (made regular if needed). A DataArray is
        stored as a variable named after it (``"data"`` when unnamed).
    path : str or path-like
        Local path of the store (e.g. ``"classes.zarr"``).
    overwrite : bool, default False
        Replace an existing store (swapped in only once the new one is complete).
    compute : bool, default True
        Write now; with False the metadata are created now and a Delayed is returned that
        writes the chunks, validates and renames when computed.
    resume : bool, default False
        Finish an interrupted write: reuse ``<path>.partial`` and write only its missing
        chunks (the output must have the same variables, shapes, dtypes and chunks).
    progress : bool, default False
        Show a progress bar.
    zarr_format : {3, 2}
        Zarr format of a new store.

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The path written, or the Delayed write when ``compute=False``.

    Raises
    ------
    OutputError
        Before any task runs: unwritable path, existing output without ``overwrite``, or
        a leftover ``.partial`` without ``resume``/``overwrite``.
    OutputValidationError
        When chunks are missing after the write (the ``.partial`` store is kept so that
        ``resume=True`` can finish it).
    """
    ds, encoding = _prepare_dataset(_as_dataset(obj), zarr_format)
    if is_remote(path):
        return _write_remote(ds, encoding, str(path), overwrite, resume, zarr_format, compute)
    target = Path(path).expanduser().absolute()
    partial = target.with_name(target.name + ".partial")
    if resume and target.exists() and not overwrite and not partial.exists():
        raise OutputError(
            f"The Zarr store {str(path)!r} is already complete; nothing to resume. Pass "
            "overwrite=True to write it again."
        )
    target = check_output_path(target, overwrite=overwrite, what="Zarr store")
    only: dict[str, list[tuple[int, ...]]] | None = None
    if partial.exists() and resume:
        problem = _compatible(ds, encoding, partial)
        if problem is not None:
            raise OutputError(
                f"Cannot resume {str(path)!r}: the partial store {str(partial)!r} does not "
                f"match this output ({problem}). Pass overwrite=True to start again."
            )
        missing = missing_chunks(partial)
        only = {k: v for k, v in missing.items() if k in ds.data_vars}
        other = sorted(set(missing) - set(only))
        if other:  # coordinates and other eagerly written arrays: rewrite them whole
            for name in other:
                arr = _open_for_write(str(partial), name)
                arr[...] = np.asarray(ds[name].values)
    elif partial.exists() and not overwrite:
        raise OutputError(
            f"An interrupted write left {str(partial)!r}. In Python, pass resume=True to "
            "finish it (only missing chunks are written) or overwrite=True to start again; "
            "from the command line, run the command again with --overwrite (or delete "
            f"{str(partial)!r})."
        )
    else:
        if partial.exists():
            remove_path(partial)
        # metadata and in-memory coordinates now; chunks of data variables below.
        # Band names are fixed-length strings, which zarr-python reads and writes fine but
        # flags as having no Zarr v3 specification yet: silence that one warning here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_V3_SPEC)
            ds.to_zarr(
                str(partial),
                mode="w",
                compute=False,
                encoding=encoding,
                consolidated=False,
                zarr_format=zarr_format,
                write_empty_chunks=True,
            )
    plan = _ZarrPlan(target=str(target), partial=str(partial), overwrite=overwrite)
    tasks = _chunk_tasks(ds, str(partial), only)
    job = dask.delayed(_finalize_zarr, pure=False)(tasks, plan)
    if not compute:
        return job
    from geoembed.runtime import compute as run

    try:
        run(job, progress=progress, label=f"writing {target.name}")
    except Exception as exc:
        exc.add_note(
            f"The chunks written so far are kept in {str(partial)!r}; in Python, finish "
            "with write_zarr(..., resume=True) or start again with overwrite=True; from "
            "the command line, run the command again with --overwrite."
        )
        raise
    return target
