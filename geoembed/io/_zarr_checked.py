"""Zarr arrays read so that a corrupt, swapped or missing chunk is an error, never data.

* :func:`check_complete` lists the store's keys once, on the client, before any task
  exists, and refuses a store with absent chunks unless it declares itself sparse;
* :class:`CheckedZarrArray` is what each Dask task reads from: a picklable description
  (store, array path, shape, recorded checksums) that opens the array on the worker,
  turns a chunk that fails to decode into a :class:`~geoembed.errors.CorruptInputError`
  naming the store, the array, the chunk key and the fix, and compares the decoded
  values with the CRC-32 recorded by :func:`geoembed.export.write_zarr`.

The CRC comparison covers the chunks that lie whole inside one Dask block: all of them
with the default, storage-aligned chunks of :func:`geoembed.io.open_embeddings`. With
unaligned ``chunks=`` a swapped chunk may go unnoticed; a chunk that fails to decode
never does.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Any

import dask.array as dsa
import numpy as np
from dask.base import tokenize

from geoembed._zarr_chunks import (
    SPARSE_ATTR,
    chunk_crc32,
    chunk_grid,
    chunk_indices,
    chunk_key,
    chunk_slices,
    declared_sparse,
    flat_index,
    list_keys,
    manifest_of,
    storage_keys,
)
from geoembed.errors import CorruptInputError

__all__ = [
    "CheckedZarrArray",
    "check_complete",
    "check_small_arrays",
    "checked_dask_array",
    "locate_corruption",
]

_FIX = "Re-export or re-download the input"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _array_path(group: Any, arr: Any) -> str:
    root = group.store_path.path
    path = arr.store_path.path
    return path[len(root) :].lstrip("/") if root and path.startswith(root) else path


def check_complete(source: str, group: Any, names: list[str]) -> None:
    """Refuse a store whose arrays ``names`` lack chunks (one key listing, on the client).

    Parameters
    ----------
    source : str
        How to name the store in messages.
    group : zarr.Group
        The opened store.
    names : list of str
        Arrays that will be read.

    Raises
    ------
    CorruptInputError
        When a chunk (or shard) is absent and neither the group nor the array has the
        attribute ``geoembed:sparse = true``, or when the chunk manifest recorded by
        geoembed does not match the array.
    """
    stored = list_keys(group)
    for name in names:
        arr = group[name]
        crcs = manifest_of(group.attrs, name)
        n_chunks = math.prod(chunk_grid(arr))
        if crcs is not None and len(crcs) != n_chunks:
            raise CorruptInputError(
                f"{source}: array {name!r} has {n_chunks} chunks but geoembed recorded "
                f"{len(crcs)} when writing it, so it was changed afterwards. {_FIX}."
            )
        if declared_sparse(group.attrs, arr.attrs):
            continue
        path = _array_path(group, arr)
        prefix = f"{path}/" if path else ""
        missing = [key for key in storage_keys(arr) if prefix + key not in stored]
        if missing:
            fill = arr.fill_value.item() if hasattr(arr.fill_value, "item") else arr.fill_value
            first = ", ".join(prefix + k for k in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise CorruptInputError(
                f"{source}: {len(missing)} chunk(s) of array {name!r} are missing ({first}"
                f"{more}); a missing chunk would read as the fill value "
                f"({fill!r}). {_FIX}. If chunks were left out on purpose (zarr's "
                f"write_empty_chunks=False), mark the store with the group attribute "
                f"{SPARSE_ATTR} = true to read them as the fill value."
            )


def check_small_arrays(source: str, group: Any, skip: list[str]) -> None:
    """Decode the coordinate-like (0-D and 1-D) arrays and compare them with the manifest.

    xarray reads these on the client when the store is opened; this names the chunk
    when one of them is corrupt, and catches altered values that still decode.

    Raises
    ------
    CorruptInputError
        Naming the store, the array, the chunk key and the fix.
    """
    for name, arr in group.arrays():
        if name in skip or arr.ndim > 1:
            continue
        grid = chunk_grid(arr)
        crcs = manifest_of(group.attrs, name)
        crcs = crcs if crcs is not None and len(crcs) == math.prod(grid) else None
        path = _array_path(group, arr)
        for index in chunk_indices(arr):
            where = f"{source}: chunk {path}/{chunk_key(arr, index)} of array {name!r} is corrupt"
            try:
                values = arr[chunk_slices(index, arr)]
            except MemoryError:
                raise
            except Exception as exc:  # any decoding failure
                raise CorruptInputError(
                    f"{where}: it cannot be decoded ({_one_line(exc)}). {_FIX}."
                ) from None
            if crcs is not None and chunk_crc32(values) != crcs[flat_index(index, grid)]:
                raise CorruptInputError(
                    f"{where}: its values do not match the checksum recorded when geoembed "
                    f"wrote the store. {_FIX}."
                )


def locate_corruption(source: str) -> CorruptInputError | None:
    """Return the error naming a corrupt coordinate chunk of ``source``, if there is one."""
    import zarr

    try:
        group = zarr.open_group(source, mode="r")
        check_small_arrays(source, group, [])
    except CorruptInputError as exc:
        return exc
    except Exception:  # not a readable group: the caller reports its own error
        return None
    return None


class CheckedZarrArray:
    """Lazily opened zarr array whose reads name the chunk that is corrupt.

    Only the store location and small metadata are pickled into the Dask graph; the
    array is opened where the task runs.

    Parameters
    ----------
    source : str
        Store path or URL, as given to :func:`zarr.open_group`.
    name : str
        Array name in the group (for messages).
    path : str
        Array path relative to ``source``.
    shape, dtype, chunks
        The array's shape, dtype and (inner) chunk shape.
    crcs : list of int, optional
        CRC-32 of each chunk's decoded values (C order), as recorded at write.
    """

    def __init__(
        self,
        source: str,
        name: str,
        path: str,
        *,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...],
        crcs: list[int] | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.path = path
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.crcs = tuple(crcs) if crcs is not None else None

    def _open(self) -> Any:
        import zarr

        try:
            return zarr.open_array(store=self.source, path=self.path, mode="r")
        except Exception as exc:  # the store vanished or was replaced under the job
            raise CorruptInputError(
                f"{self.source}: array {self.name!r} can no longer be opened "
                f"({_one_line(exc)}). {_FIX}, and do not change it while a job reads it."
            ) from None

    def _key_tuple(self, key: Any) -> tuple[Any, ...]:
        key = key if isinstance(key, tuple) else (key,)
        return key + (slice(None),) * (self.ndim - len(key))

    def _bounds(self, key: tuple[Any, ...]) -> tuple[list[tuple[int, int]], tuple[slice, ...]]:
        """``(start, stop)`` per axis read, and the steps taken from what was read.

        Dask hands blocks as unit-step slices, and fuses a later integer selection (e.g.
        one time step) or a strided selection (a decimated quick look) into the read. A
        strided slice reads the unit-step range that covers it (whole chunks are read for
        their checksums anyway), then takes every ``step``-th element of it.
        """
        bounds: list[tuple[int, int]] = []
        steps: list[slice] = []
        for k, size in zip(key, self.shape):
            if isinstance(k, slice):
                start, stop, step = k.indices(size)
                picked = range(start, stop, step)
                if step == 1 or len(picked) == 0:
                    bounds.append((start, max(start, stop)) if step == 1 else (0, 0))
                    steps.append(slice(None))
                    continue
                lo, hi = min(picked[0], picked[-1]), max(picked[0], picked[-1]) + 1
                end = picked[-1] - lo + (1 if step > 0 else -1)
                bounds.append((lo, hi))
                steps.append(slice(picked[0] - lo, end if end >= 0 else None, step))
            else:
                start = operator.index(k) + (size if operator.index(k) < 0 else 0)
                if not 0 <= start < size:
                    raise IndexError(f"index {k} is out of bounds for an axis of size {size}")
                bounds.append((start, start + 1))
                steps.append(slice(None))
        return bounds, tuple(steps)

    def _chunks_in(self, bounds: list[tuple[int, int]], *, whole: bool) -> list[tuple[int, ...]]:
        ranges = []
        for (start, stop), c, size in zip(bounds, self.chunks, self.shape):
            first, last = start // c, max(start // c, (stop - 1) // c)
            if whole:
                idx = [i for i in range(first, last + 1) if i * c >= start]
                idx = [i for i in idx if min((i + 1) * c, size) <= stop]
            else:
                idx = list(range(first, last + 1))
            ranges.append(idx)
        out: list[tuple[int, ...]] = [()]
        for idx in ranges:
            out = [(*o, i) for o in out for i in idx]
        return out

    def _key(self, arr: Any, index: tuple[int, ...]) -> str:
        key = chunk_key(arr, index)
        return f"{self.path}/{key}" if self.path else key

    def _corrupt(self, arr: Any, index: tuple[int, ...] | None, why: str) -> CorruptInputError:
        where = (
            f"chunk {self._key(arr, index)} (index {index})"
            if index is not None
            else "a chunk in this block"
        )
        return CorruptInputError(
            f"{self.source}: {where} of array {self.name!r} is corrupt: {why}. {_FIX} "
            f"(`geoembed verify --full {self.source}` lists every bad chunk)."
        )

    def _failure(self, arr: Any, bounds: list[tuple[int, int]], exc: Exception) -> Exception:
        """Find which chunk of a failed read does not decode (re-reading each one)."""
        for index in self._chunks_in(bounds, whole=False):
            try:
                arr[chunk_slices(index, arr)]
            except MemoryError:
                raise
            except Exception as inner:
                return self._corrupt(arr, index, f"it cannot be decoded ({_one_line(inner)})")
        return self._corrupt(arr, None, f"it could not be read ({_one_line(exc)})")

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._key_tuple(key)
        bounds, steps = self._bounds(key)
        arr = self._open()
        sel = tuple(slice(a, b) for a, b in bounds)
        try:
            block = np.asarray(arr[sel])
        except MemoryError:
            raise
        except Exception as exc:
            raise self._failure(arr, bounds, exc) from None
        if self.crcs is not None:
            grid = tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunks))
            for index in self._chunks_in(bounds, whole=True):
                part = tuple(
                    slice(i * c - a, min((i + 1) * c, s) - a)
                    for i, c, s, (a, _) in zip(index, self.chunks, self.shape, bounds)
                )
                if chunk_crc32(block[part]) != self.crcs[flat_index(index, grid)]:
                    raise self._corrupt(
                        arr,
                        index,
                        "its values do not match the checksum recorded when geoembed wrote "
                        "the store (the chunk was altered or swapped with another)",
                    )
        if any(st != slice(None) for st in steps):
            block = block[steps]
        # integer keys drop their axes, as in numpy
        drop = tuple(i for i, k in enumerate(key) if not isinstance(k, slice))
        return block.squeeze(axis=drop) if drop else block


def _stamp(source: str) -> Any:
    if "://" in source:
        return None
    try:
        return os.stat(source).st_mtime_ns
    except OSError:
        return None


def checked_dask_array(
    source: str, group: Any, name: str, chunks: dict[str, int], dims: tuple[str, ...]
) -> dsa.Array:
    """Dask array over array ``name`` of ``group``, read through :class:`CheckedZarrArray`.

    Parameters
    ----------
    source : str
        Store path or URL.
    group : zarr.Group
        The opened store (metadata only are read).
    name : str
        Array name.
    chunks : dict
        Dask chunk size by dimension name (``-1``: whole axis); other dimensions follow
        the storage chunks.
    dims : tuple of str
        The array's dimension names.

    Returns
    -------
    dask.array.Array
    """
    arr = group[name]
    crcs = manifest_of(group.attrs, name)
    reader = CheckedZarrArray(
        source,
        name,
        _array_path(group, arr),
        shape=arr.shape,
        dtype=arr.dtype,
        chunks=arr.chunks,
        crcs=crcs,
    )
    dask_chunks = tuple(
        size if chunks.get(d, c) in (-1, None) else int(chunks.get(d, c))
        for d, size, c in zip(dims, arr.shape, arr.chunks)
    )
    token = tokenize(
        source, reader.path, arr.shape, str(arr.dtype), dask_chunks, crcs, _stamp(source)
    )
    return dsa.from_array(
        reader,
        chunks=dask_chunks,
        name=f"open-zarr-{name}-{token}",
        lock=False,
        asarray=False,
        meta=np.empty((0,) * len(arr.shape), dtype=arr.dtype),
    )
