"""Zarr chunk bookkeeping shared by the reader (:mod:`geoembed.io`) and the writers.

* storage keys of every chunk (or shard) of an array, and which of them are not stored;
* whether an array's codecs carry a per-chunk integrity check (Zstd content checksum,
  CRC32C, ...), so that a flipped bit fails to decode instead of reading back wrong;
* the chunk manifest that :func:`geoembed.export.write_zarr` records in the group
  attribute ``geoembed:chunks``: for each array its chunk count and the CRC-32 of each
  chunk's decoded values, which catches what codecs cannot (chunks swapped between
  positions, a chunk rewritten by someone else);
* the ``geoembed:sparse`` attribute by which a store says that absent chunks are
  intentional (all fill value) rather than lost.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "CHUNKS_ATTR",
    "SPARSE_ATTR",
    "chunk_crc32",
    "chunk_grid",
    "chunk_indices",
    "chunk_key",
    "chunk_slices",
    "declared_sparse",
    "flat_index",
    "has_checksum",
    "list_keys",
    "manifest_of",
    "storage_index",
    "storage_keys",
]

#: group attribute: ``{array: {"n_chunks": int, "crc32": [int, ...]}}`` (C order of chunks)
CHUNKS_ATTR = "geoembed:chunks"
#: group or array attribute: true when absent chunks are intentional (read as fill value)
SPARSE_ATTR = "geoembed:sparse"

#: codec names (v3 names and numcodecs ids) that verify their data when decoding
_CHECKSUM_CODECS = {"crc32c", "crc32", "adler32", "fletcher32", "jenkins_lookup3"}


def chunk_crc32(block: np.ndarray) -> int:
    """CRC-32 of a chunk's decoded values (C order, little-endian), as stored in manifests."""
    arr = np.asarray(block)
    if arr.dtype.kind == "O":
        return zlib.crc32("\x00".join(map(str, arr.ravel())).encode())
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return zlib.crc32(np.ascontiguousarray(arr).data)


def chunk_grid(arr: Any) -> tuple[int, ...]:
    """Count the chunks along each dimension of a zarr array (inner chunks when sharded)."""
    return tuple(math.ceil(s / c) if s else 0 for s, c in zip(arr.shape, arr.chunks))


def chunk_indices(arr: Any) -> Iterator[tuple[int, ...]]:
    """Every chunk index of a zarr array, in C order."""
    return itertools.product(*(range(n) for n in chunk_grid(arr)))


def chunk_slices(index: tuple[int, ...], arr: Any) -> tuple[slice, ...]:
    """Select chunk ``index`` of a zarr array (trimmed to the array bounds)."""
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, arr.chunks, arr.shape))


def flat_index(index: tuple[int, ...], grid: tuple[int, ...]) -> int:
    """Position of chunk ``index`` in the C-ordered list of a chunk grid."""
    return int(np.ravel_multi_index(index, grid)) if grid else 0


def storage_index(arr: Any, index: tuple[int, ...]) -> tuple[int, ...]:
    """Index of the stored object (the chunk itself, or its shard) holding chunk ``index``."""
    shards = arr.shards or arr.chunks
    return tuple(i * c // s for i, c, s in zip(index, arr.chunks, shards))


def chunk_key(arr: Any, index: tuple[int, ...]) -> str:
    """Storage key (relative to the array) of the object holding chunk ``index``."""
    return str(arr.metadata.encode_chunk_key(storage_index(arr, index)))


def storage_keys(arr: Any) -> dict[str, tuple[int, ...]]:
    """Storage key (relative to the array) of every chunk, or shard when sharded."""
    grid_chunks = arr.shards or arr.chunks
    ranges = [range(math.ceil(s / c)) if s else range(0) for s, c in zip(arr.shape, grid_chunks)]
    return {arr.metadata.encode_chunk_key(idx): idx for idx in itertools.product(*ranges)}


def list_keys(node: Any) -> set[str]:
    """Every key stored under a zarr group or array, relative to it (one listing)."""
    from zarr.core.sync import sync

    prefix = node.store_path.path
    prefix = f"{prefix}/" if prefix else ""

    async def collect() -> list[str]:
        return [k async for k in node.store_path.store.list_prefix(prefix)]

    return {k[len(prefix) :] for k in sync(collect())}


def _codec_names(arr: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    meta = arr.metadata
    if meta.zarr_format == 2:
        for codec in [*(meta.filters or ()), meta.compressor]:
            if codec is not None:
                config = codec.get_config()
                yield str(config.get("id", "")), config
        return
    stack = list(meta.codecs)
    while stack:
        codec = stack.pop()
        stack.extend(getattr(codec, "codecs", ()) or ())
        config = codec.to_dict()
        yield str(config.get("name", "")).rsplit(".", 1)[-1], config.get("configuration") or {}


def has_checksum(arr: Any) -> bool:
    """Whether every chunk of a zarr array is verified when decoded (checksum codec)."""
    for name, config in _codec_names(arr):
        if name in _CHECKSUM_CODECS or (name == "zstd" and config.get("checksum")):
            return True
    return False


def declared_sparse(group_attrs: Any, array_attrs: Any = None) -> bool:
    """Whether a store (group attribute) or an array declares absent chunks intentional."""
    for attrs in (group_attrs, array_attrs):
        if attrs is not None and bool(dict(attrs).get(SPARSE_ATTR, False)):
            return True
    return False


def manifest_of(group_attrs: Any, name: str) -> list[int] | None:
    """Return the CRC-32 of each chunk of array ``name`` recorded at write (C order), if any.

    Callers compare its length with the array's chunk count: a mismatch means that the
    array was changed after geoembed wrote it.
    """
    entries = dict(group_attrs).get(CHUNKS_ATTR)
    entry = entries.get(name) if isinstance(entries, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("crc32"), list):
        return None
    return [int(c) for c in entry["crc32"]]
