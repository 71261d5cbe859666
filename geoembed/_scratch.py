"""Per-thread scratch arrays that kernels reuse from one tile (and one task) to the next.

Dask workers set ``MALLOC_TRIM_THRESHOLD_``, which also fixes glibc's mmap threshold:
every temporary above 128 KiB is then a fresh ``mmap``, page-faulted in again on each
call. A tile kernel that allocates its buffers per call spends more time faulting pages
than computing (a KMeans pass over a 512 x 512 x 64 block: 147 ms with fresh buffers,
see ``geoembed.cluster._lloyd``). Buffers here grow to the largest size asked for under
their name and are never shrunk; each thread has its own, so concurrent tasks never
share one.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["scratch"]

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: type | np.dtype = np.float32) -> np.ndarray:
    """Return a C-contiguous array of ``shape`` from this thread's buffer ``name``.

    Parameters
    ----------
    name : str
        The buffer: callers that use several at once give each its own name (the
        contents of a name are overwritten by the next call that asks for it).
    shape : tuple of int
        Shape of the array returned.
    dtype : numpy dtype, default float32

    Returns
    -------
    numpy.ndarray
        Uninitialised; valid until the next ``scratch(name, ...)`` in this thread.
    """
    dt = np.dtype(dtype)
    size = math.prod(shape)
    pool: dict[tuple[str, str], np.ndarray] | None = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    key = (name, dt.str)
    buf = pool.get(key)
    if buf is None or buf.size < size:
        buf = pool[key] = np.empty(max(size, 1), dt)
    return buf[:size].reshape(shape)
