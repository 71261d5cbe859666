"""Exceptions raised by geoembed.

Every error is a :class:`GeoembedError` and also the builtin exception a user would
expect (``ValueError``, ``OSError``...), so ``except ValueError`` keeps working.
Messages name the offending input and say how to fix it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

__all__ = [
    "BandMismatchError",
    "CRSMismatchError",
    "ChunkingError",
    "CorruptInputError",
    "DTypeError",
    "DataRequestError",
    "DimensionError",
    "EarthEngineError",
    "GeoembedError",
    "GridMismatchError",
    "LabelError",
    "MissingCRSError",
    "MissingDependencyError",
    "MissingInputError",
    "ModelError",
    "NotFittedError",
    "OutputError",
    "OutputValidationError",
    "QuantizationError",
    "SchedulerError",
    "SchedulerSpecError",
    "SchemaError",
    "StalledJobError",
    "UnsafeModelError",
    "VersionSkewError",
]


class GeoembedError(Exception):
    """Base class of every error raised by geoembed.

    ``exit_code`` is the status the command line exits with: 2 for bad input (the
    default), 1 for a failure at run time (a scheduler that cannot be reached, a stalled
    job).
    """

    exit_code: int = 2


class SchemaError(GeoembedError, ValueError):
    """An input does not follow the embedding-field data model."""


class DimensionError(SchemaError):
    """Wrong dimension names or order."""


class BandMismatchError(SchemaError):
    """Wrong number, names or order of bands."""


class DTypeError(SchemaError, TypeError):
    """Wrong data type."""


class ChunkingError(SchemaError):
    """Chunking that the operation cannot use (e.g. bands split over chunks)."""


class MissingCRSError(SchemaError):
    """The field or the labels carry no coordinate reference system."""


class CRSMismatchError(GeoembedError, ValueError):
    """Two inputs are in different coordinate reference systems."""


class GridMismatchError(GeoembedError, ValueError):
    """Inputs that must share a grid (shape, transform, bands) do not."""


class QuantizationError(GeoembedError, ValueError):
    """Integer-coded embeddings whose decoding is ambiguous (e.g. int8 without nodata)."""


class CorruptInputError(GeoembedError, OSError):
    """An input file exists but cannot be read (truncated, not a raster, ...)."""


class LabelError(GeoembedError, ValueError):
    """Training labels that cannot be used (outside the field, on nodata, too few ...)."""


class ModelError(GeoembedError, ValueError):
    """A model that does not match the field or cannot be loaded."""


class UnsafeModelError(ModelError):
    """A model format that can execute code on load (pickle) without an explicit opt-in."""


class DataRequestError(GeoembedError, ValueError):
    """A request for public data that cannot be served (no file in that year or area ...)."""


class EarthEngineError(GeoembedError, RuntimeError):
    """Earth Engine refused or kept failing a request (after the retries allowed)."""

    exit_code = 1


class MissingInputError(GeoembedError, FileNotFoundError):
    """An input path or URL does not exist."""


class OutputError(GeoembedError, OSError):
    """The output path cannot be written."""


class OutputValidationError(GeoembedError, RuntimeError):
    """A written output failed validation (missing chunks, invalid COG ...)."""


class SchedulerSpecError(GeoembedError, ValueError):
    """A ``--scheduler``/``--workers``/cluster-spec value that cannot be used."""


class SchedulerError(GeoembedError, RuntimeError):
    """The Dask scheduler or its workers cannot be reached or started."""

    exit_code = 1


class StalledJobError(SchedulerError):
    """No task of a job finished for longer than the stall timeout."""


class VersionSkewError(SchedulerError):
    """The scheduler or a worker runs other geoembed/dask/distributed versions than the client."""


class MissingDependencyError(GeoembedError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{feature} needs the optional package {package!r}, which is not installed. "
            f'Install it with: pip install "geoembed[{extra}]"'
        )


def require(module: str, *, extra: str, feature: str, package: str | None = None) -> Any:
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"onnxruntime"``.
    extra : str
        The geoembed extra that installs it, e.g. ``"cnn"``.
    feature : str
        What the caller was trying to do, for the message.
    package : str, optional
        Distribution name if it differs from ``module``.

    Returns
    -------
    module
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package or module, extra, feature) from exc


_NOT_FITTED_LOCK = threading.Lock()
_NOT_FITTED_DOC = "A model used before ``fit`` (also scikit-learn's ``NotFittedError``)."

if TYPE_CHECKING:
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

    class NotFittedError(ModelError, _SklearnNotFittedError):  # type: ignore[misc]
        """A model used before ``fit`` (also scikit-learn's ``NotFittedError``)."""

else:

    def __getattr__(name: str) -> Any:
        """Build :class:`NotFittedError` on first use.

        It derives from scikit-learn's ``NotFittedError`` (so ``except`` clauses written
        for scikit-learn catch it), and importing scikit-learn costs about a second per
        process: the CLI, every Dask worker and ``import geoembed`` would pay it even
        for jobs that never fit a model.
        """
        if name != "NotFittedError":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from sklearn.exceptions import NotFittedError as base

        with _NOT_FITTED_LOCK:  # one class, even when two threads ask at once
            if "NotFittedError" not in globals():
                cls = type("NotFittedError", (ModelError, base), {"__doc__": _NOT_FITTED_DOC})
                cls.__module__ = __name__
                globals()["NotFittedError"] = cls
        return globals()["NotFittedError"]
