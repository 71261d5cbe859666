"""ONNX Runtime sessions: one per worker process and model, reused by every task.

Sessions are cached in a module-level dict keyed by ``(model sha256, providers,
intra-op threads)``, so a Dask worker builds each model's session once and every later
task (and every thread of the worker) reuses it; ``InferenceSession.run`` is
thread-safe. On first load in a process the file's sha256 is checked again against the
digest recorded on the client, so a model replaced mid-job is refused.

Thread hygiene
--------------
A Dask worker with ``T`` threads runs ``T`` blocks at once, and they share the cached
session (``run`` is thread-safe). Each run gets one intra-op thread (its caller's) and
``inter_op_num_threads=1``, so the worker runs at most ``T`` compute threads. The other
choice, one session serialised behind a lock with ``T`` intra-op threads, would leave the
other task threads waiting, scale worse on the small per-block graphs of embedding
models, and make the thread count of a run depend on the worker's size. Dask's
parallelism is over blocks; the worker plugin :class:`geoembed.runtime.ThreadPolicy`
pins BLAS, OpenMP and GDAL the same way. Outside a Dask worker (threads/sync scheduler,
plain NumPy) the default is ``OMP_NUM_THREADS`` when set, else 1; pass ``threads=`` to
:func:`geoembed.infer.predict` to override.

Providers
---------
``CPUExecutionProvider`` by default. ``providers="cuda"`` (or ``"cuda,cpu"``, or a list
naming ``CUDAExecutionProvider``) uses CUDA when the installed onnxruntime offers it and
falls back to the CPU with a warning otherwise. A name ONNX Runtime does not know
(``"tpu"``) is an error that lists the providers available here.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from geoembed.errors import ModelError, require

__all__ = [
    "PROVIDER_ALIASES",
    "clear_sessions",
    "default_threads",
    "get_session",
    "resolve_providers",
]

log = logging.getLogger(__name__)

_SESSIONS: dict[tuple[str, tuple[str, ...], int], Any] = {}
_LOCK = threading.Lock()


def default_threads() -> int:
    """Intra-op threads of a run: 1 in a Dask worker (one per task thread), else OMP/1."""
    from geoembed._threads import pinned_threads

    pinned = pinned_threads()
    if pinned is not None:
        return pinned
    try:
        from distributed import get_worker

        get_worker()
        return 1  # T task threads, each running its own block: one compute thread each
    except (ImportError, ValueError, AttributeError):
        pass
    env = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(env)) if env.isdigit() else 1


#: short names accepted by ``--providers`` (case-insensitive), besides full ORT names
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def _provider_names(providers: str | Sequence[str]) -> list[str]:
    """Split ``"cuda,cpu"`` (or a list) into ORT provider names, aliases expanded."""
    items = providers.split(",") if isinstance(providers, str) else [str(p) for p in providers]
    names = [PROVIDER_ALIASES.get(i.strip().lower(), i.strip()) for i in items if i.strip()]
    if not names:
        raise ModelError(f"providers= {providers!r} names no execution provider; use e.g. cpu.")
    return names


def resolve_providers(providers: str | Sequence[str] | None) -> tuple[str, ...]:
    """Turn ``None``/``"cpu"``/``"cuda,cpu"``/a list into available ORT provider names.

    A comma-separated string is split; short names (``cpu``, ``cuda``, ``tensorrt`` ...)
    and full names (``CUDAExecutionProvider``) are accepted. A name ONNX Runtime does not
    know is an error naming the providers available here; a known provider that this
    onnxruntime build lacks (CUDA on the CPU wheel) falls back to the CPU with a warning.
    The CPU provider is always last.

    Raises
    ------
    ModelError
        For a name that is not an ONNX Runtime execution provider.
    """
    ort = require("onnxruntime", extra="cnn", feature="CNN inference")
    available = list(ort.get_available_providers())
    if providers is None:
        return ("CPUExecutionProvider",)
    wanted = _provider_names(providers)
    known = set(ort.get_all_providers())
    unknown = [p for p in wanted if p not in known]
    if unknown:
        short = {v: k for k, v in PROVIDER_ALIASES.items()}
        valid = ", ".join(f"{short.get(p, p)} ({p})" if p in short else p for p in available)
        raise ModelError(
            f"unknown ONNX Runtime execution provider(s) {unknown} in providers= "
            f"{providers!r}; available here: {valid}. Separate several with commas, e.g. "
            "'cuda,cpu'."
        )
    chosen = tuple(dict.fromkeys(p for p in wanted if p in available))
    missing = [p for p in wanted if p not in available]
    if missing:
        warnings.warn(
            f"onnxruntime here does not offer {missing} (available: {sorted(available)}); "
            "running on the CPU. Install onnxruntime-gpu for CUDA.",
            RuntimeWarning,
            stacklevel=3,
        )
    if "CPUExecutionProvider" not in chosen:
        chosen = (*chosen, "CPUExecutionProvider")
    return chosen


def get_session(
    path: str,
    sha256: str,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
) -> Any:
    """Return the cached ``onnxruntime.InferenceSession`` of a model in this process.

    Parameters
    ----------
    path : str
        ONNX file (must be readable where this runs: on shared storage for a cluster).
    sha256 : str
        Digest recorded on the client; checked when the session is first built.
    providers : sequence of str
        ONNX Runtime execution providers, in order of preference.
    threads : int, optional
        Intra-op threads; default :func:`default_threads`.

    Returns
    -------
    onnxruntime.InferenceSession
    """
    n = int(threads) if threads else default_threads()
    key = (sha256, tuple(providers), n)
    sess = _SESSIONS.get(key)
    if sess is not None:
        return sess
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is not None:
            return sess
        from geoembed.infer.spec import file_sha256

        ort = require("onnxruntime", extra="cnn", feature="CNN inference")
        model: str | bytes = path
        try:
            if "://" in path:  # object storage: workers share no disk with the client
                import hashlib

                from geoembed._cloud import filesystem

                model = bytes(filesystem(path).cat_file(path))
                digest = hashlib.sha256(model).hexdigest()
            else:
                digest = file_sha256(path)
        except OSError as exc:
            raise ModelError(
                f"cannot read the model {path} on this worker ({exc}); put the model on storage "
                "that every worker can read."
            ) from exc
        if digest != sha256:
            raise ModelError(
                f"{path} changed since it was validated (sha256 {digest} != {sha256}); "
                "do not replace a model while a job runs."
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(model, sess_options=so, providers=list(providers))
        log.debug("built ONNX Runtime session for %s (%d threads, %s)", path, n, providers)
        _SESSIONS[key] = sess
        return sess


def clear_sessions() -> None:
    """Drop every cached session of this process (tests, or to free memory)."""
    with _LOCK:
        _SESSIONS.clear()
