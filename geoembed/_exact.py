"""Order-fixed float64 arithmetic that gives the same bits on every CPU and batch shape.

A float32 GEMM (BLAS) rounds differently depending on the CPU's kernel (AVX2 vs
AVX-512), the batch shape and the thread split, so its results are only good for
*choosing candidates*. Every value that decides or reports a result is computed here
instead:

* products of float32 numbers are exact in float64 (24 + 24 significant bits < 53), so
  fused or separate multiply-adds give the same products;
* sums run along the vector with ``numpy.einsum``'s sum-of-products loop, which NumPy
  compiles for its baseline instruction set only (no run-time CPU dispatch), so its
  order is fixed by the vector length, not by the CPU, the alignment or the other rows.

So a value depends only on the two vectors it is computed from.
``tests/test_determinism.py`` checks this by re-running the kernels in a process whose
NumPy dispatch targets and OpenBLAS kernel are forced down to an older CPU's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pair_dots", "row_dots", "unit_rows"]


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Float64 dot product of matching rows of ``a`` and ``b`` (shapes ``(..., d)``)."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    return np.einsum("...d,...d->...", a64, b64)


def pair_dots(q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Float64 dot products of each row of ``q`` ``(n, d)`` with its candidates ``(n, m, d)``."""
    q64 = np.asarray(q, dtype=np.float64)
    return np.einsum("id,imd->im", q64, np.asarray(cand, dtype=np.float64))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); norms in float64, zero rows stay zero."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("...d,...d->...", x64, x64))
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x64 / norms[..., None], dtype=np.float32)
