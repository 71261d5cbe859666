"""One BLAS thread per Dask task, without races between concurrent tasks.

Dask runs one task per worker thread, so BLAS inside a task must not start threads of
its own: that oversubscribes the cores and, worse, makes results depend on how BLAS
splits a product between its threads (the split changes the rounding). threadpoolctl's
limit is process-wide, so entering and leaving it per task would race: one task's exit
would restore multi-threading under another task still running. Here the first task to
enter pins BLAS to one thread and the last one to leave restores the previous setting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["single_thread_blas"]

_lock = threading.Lock()
_depth = 0
_limiter: Any = None
_controller: Any = None


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with BLAS pinned to one thread (re-entrant, thread-safe)."""
    global _depth, _limiter, _controller
    with _lock:
        if _depth == 0:
            if _controller is None:
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None
