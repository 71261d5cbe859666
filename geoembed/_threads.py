"""One compute thread per Dask task: the thread policy shared by every kernel.

Dask runs one task per worker thread, so the libraries a task calls must not start
threads of their own: that oversubscribes the cores and, worse, makes results depend on
how a library splits a product between its threads (the split changes the rounding).
A worker with ``T`` task threads must run at most ``T`` compute threads.

Two ways to hold that:

* :func:`pin_process` fixes the policy once for a whole process (a Dask worker: the
  :class:`geoembed.runtime.ThreadPolicy` plugin calls it at worker start): BLAS and
  OpenMP limited to one thread with threadpoolctl, ``OMP_NUM_THREADS``/``GDAL_NUM_THREADS``
  set to 1 for libraries that read them later. After that :func:`single_thread_blas`
  costs nothing.
* Without it (Dask's threaded scheduler in the client process), :func:`single_thread_blas`
  is the guard: threadpoolctl's limit is process-wide, so entering and leaving it per
  task would race (one task's exit would restore multi-threading under another task
  still running); here the first task to enter pins BLAS to one thread and the last one
  to leave restores the previous setting.

faiss takes its thread count from OpenMP, whose setting belongs to the calling thread, so
the guard also pins faiss in each task thread (and restores it when that thread leaves).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = [
    "concurrent_tasks",
    "gdal_threads",
    "pin_process",
    "pinned_threads",
    "single_thread_blas",
    "unpin_process",
]

#: environment read by BLAS, OpenMP and GDAL when they start or run
POLICY_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GDAL_NUM_THREADS")

_lock = threading.Lock()
_depth = 0
_limiter: Any = None
_pinned: dict[str, Any] | None = None
_local = threading.local()


_controller: Any = None
_controller_key: tuple[int, int] | None = None


def _loaded_objects_key() -> tuple[int, int] | None:
    """Glibc's counters of shared objects loaded and unloaded so far, or None if unknown.

    Read from the first entry ``dl_iterate_phdr`` reports (``dlpi_adds``, ``dlpi_subs``):
    one call, a few microseconds, where listing the libraries takes milliseconds.
    """
    global _phdr
    if _phdr is False:
        return None
    try:
        if _phdr is None:
            _phdr = _make_phdr_reader()
        return _phdr()
    except Exception:  # not glibc, no ctypes: no cache
        _phdr = False
        return None


_phdr: Any = None


def _make_phdr_reader() -> Any:
    import ctypes

    class _Info(ctypes.Structure):
        _fields_ = [
            ("addr", ctypes.c_void_p),
            ("name", ctypes.c_char_p),
            ("phdr", ctypes.c_void_p),
            ("phnum", ctypes.c_uint16),
            ("adds", ctypes.c_ulonglong),
            ("subs", ctypes.c_ulonglong),
        ]

    callback_t = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(_Info), ctypes.c_size_t, ctypes.c_void_p
    )
    libc = ctypes.CDLL(None)
    iterate = libc.dl_iterate_phdr
    iterate.argtypes = [callback_t, ctypes.c_void_p]
    iterate.restype = ctypes.c_int
    if not sys.platform.startswith("linux"):
        raise OSError("dl_iterate_phdr counters: glibc only")
    found: list[tuple[int, int]] = []

    def first(info: Any, size: int, _data: Any) -> int:
        if size < ctypes.sizeof(_Info):
            raise OSError("dl_phdr_info without the load counters")
        found.append((int(info.contents.adds), int(info.contents.subs)))
        return 1  # stop after the first object

    cb = callback_t(first)

    def read() -> tuple[int, int]:
        found.clear()
        iterate(cb, None)
        if not found:
            raise OSError("dl_iterate_phdr reported nothing")
        return found[0]

    read()
    return read


def _threadpool_controller() -> Any:
    """Return a controller of the thread pools loaded *now*.

    Rebuilt (about 0.2 ms on a quiet machine, tens of milliseconds under load: it
    parses the process's memory map) only when a shared object was loaded or unloaded
    since the last one, as glibc's load counters tell: a BLAS or OpenMP library loaded
    after it was built (by torch, faiss, onnxruntime...) would escape its limits.
    Without the counters (not glibc), a fresh controller every time.
    """
    global _controller, _controller_key
    from threadpoolctl import ThreadpoolController

    key = _loaded_objects_key()
    if key is None:
        return ThreadpoolController()
    with _controller_lock:
        if _controller is None or key != _controller_key:
            _controller, _controller_key = ThreadpoolController(), key
        return _controller


_controller_lock = threading.Lock()


@contextlib.contextmanager
def _faiss_single_thread() -> Iterator[None]:
    """Pin faiss's OpenMP threads of the calling thread to one (re-entrant)."""
    faiss = sys.modules.get("faiss")
    depth = getattr(_local, "depth", 0)
    if faiss is None or depth:
        _local.depth = depth + 1
        try:
            yield
        finally:
            _local.depth -= 1
        return
    before = int(faiss.omp_get_max_threads())
    faiss.omp_set_num_threads(1)
    _local.depth = 1
    try:
        yield
    finally:
        _local.depth = 0
        faiss.omp_set_num_threads(before)


#: threads of this process inside :func:`single_thread_blas` now (tasks computing at once)
_running = 0


def concurrent_tasks() -> int:
    """Threads of this process, other than the main one, inside :func:`single_thread_blas`.

    That is, the tasks computing at once in the threads of a pool (the threaded
    scheduler, a Dask worker); the main thread (the client waiting, the synchronous
    scheduler) is not counted. Kernels with a fast path that holds the GIL
    (``np.bincount``) take another path when other tasks compute beside them; the
    results are the same bits either way.
    """
    return _running


@contextlib.contextmanager
def _counted() -> Iterator[None]:
    """Count this thread in :func:`concurrent_tasks` (once, however deeply nested)."""
    global _running
    depth = getattr(_local, "tasks", 0)
    if depth or threading.current_thread() is threading.main_thread():
        _local.tasks = depth + 1
        try:
            yield
        finally:
            _local.tasks = depth
        return
    _local.tasks = 1
    with _lock:
        _running += 1
    try:
        yield
    finally:
        _local.tasks = 0
        with _lock:
            _running -= 1


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with BLAS and faiss pinned to one thread (re-entrant, thread-safe)."""
    with _counted():
        with _single_thread_blas():
            yield


@contextlib.contextmanager
def _single_thread_blas() -> Iterator[None]:
    global _depth, _limiter
    if _pinned is not None:  # the whole process already runs one thread per task
        with _faiss_single_thread():
            yield
        return
    with _lock:
        if _depth == 0:
            _limiter = _threadpool_controller().limit(limits=1, user_api="blas")
        _depth += 1
    try:
        with _faiss_single_thread():
            yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


def pin_process() -> None:
    """Give every task of this process one compute thread, once for the process.

    Sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and
    ``GDAL_NUM_THREADS`` to 1 (libraries that start later read them), limits the BLAS
    and OpenMP pools already loaded to one thread, and makes ONNX Runtime sessions use
    one intra-op thread (see :mod:`geoembed.infer.session`). Idempotent; undone by
    :func:`unpin_process`.
    """
    global _pinned
    with _lock:
        if _pinned is not None:
            return
        env = {name: os.environ.get(name) for name in POLICY_ENV}
        for name in POLICY_ENV:
            os.environ[name] = "1"
        limiter = _threadpool_controller().limit(limits=1)
        _pinned = {"env": env, "limiter": limiter}
    with contextlib.suppress(ImportError):
        import faiss

        faiss.omp_set_num_threads(1)  # the calling thread; task threads: the guard


def unpin_process() -> None:
    """Undo :func:`pin_process` (worker teardown, tests)."""
    global _pinned
    with _lock:
        if _pinned is None:
            return
        _pinned["limiter"].restore_original_limits()
        for name, value in _pinned["env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _pinned = None


def pinned_threads() -> int | None:
    """Compute threads per task under :func:`pin_process` (1), or None when not pinned."""
    return None if _pinned is None else 1


def gdal_threads() -> str:
    """GDAL's ``NUM_THREADS`` for a write inside a task: ``GDAL_NUM_THREADS``, else ALL_CPUS.

    A pinned worker (:func:`pin_process`) sets ``GDAL_NUM_THREADS=1``; in the client
    process (threaded scheduler) GDAL may use every core, as before.
    """
    return os.environ.get("GDAL_NUM_THREADS", "").strip() or "ALL_CPUS"
