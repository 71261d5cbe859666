"""Save and load KMeans models as plain arrays (``.npz``, no pickle) plus JSON.

A model directory holds ``model.json`` (format, parameters, band names, cluster names,
fit summary) and ``centers.npz`` (``cluster_centers``, ``counts``), read back with
``allow_pickle=False``. Clusters can be named after fitting, e.g. ``0=water,3=forest``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geoembed._version import __version__
from geoembed.cluster.kmeans import KMeans
from geoembed.cluster.names import parse_names
from geoembed.errors import ModelError, OutputError, UnsafeModelError

__all__ = ["FORMAT", "load_model", "save_model"]

FORMAT = "geoembed-kmeans/1"


def save_model(
    model: KMeans,
    path: str | os.PathLike[str],
    *,
    names: str | Mapping[int, str] | None = None,
    overwrite: bool = False,
) -> Path | str:
    """Write a fitted model to the directory ``path`` (atomically).

    Parameters
    ----------
    model : KMeans
        A fitted estimator; a fitted ``dask_ml.cluster.KMeans`` (or scikit-learn
        ``KMeans``) is converted with :meth:`KMeans.from_dask_ml` (its centres).
    path : path-like or str
        Directory to create, or a ``gs://`` / ``s3://`` URL (the directory is built
        locally, then uploaded with ``model.json`` last).
    names : str or mapping, optional
        Cluster names (``"0=water,3=forest"``); default: the model's ``cluster_names_``
        if it has any.
    overwrite : bool
        Replace an existing model directory that geoembed wrote (never another folder).

    Returns
    -------
    pathlib.Path or str
        The directory (the URL for object storage).
    """
    if not hasattr(model, "cluster_centers_"):
        raise ModelError("the KMeans model is not fitted; call fit() before save_model().")
    if not isinstance(model, KMeans):
        model = KMeans.from_dask_ml(model)
    if isinstance(path, str) and "://" in path:  # gs://, s3://: built here, then uploaded
        import tempfile

        from geoembed.export.remote import check_remote_output, upload_directory

        url = check_remote_output(path, overwrite=overwrite, what="model directory")
        with tempfile.TemporaryDirectory(prefix="geoembed-model-") as tmp:
            upload_directory(Path(save_model(model, Path(tmp) / "model", names=names)), url)
        return url
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputError(f"{path} already exists; pass overwrite=True to replace it.")
        from geoembed.export.outputs import require_geoembed_output

        require_geoembed_output(path, what="model directory")
        if not path.is_dir():
            raise OutputError(f"{path} exists and is not a model directory.")
    k = int(model.n_clusters)
    named = (
        parse_names(names, k) if names is not None else dict(getattr(model, "cluster_names_", {}))
    )
    init = model.init if isinstance(model.init, str) else "array"
    params = {**model.get_params(), "init": init}
    meta = {
        "format": FORMAT,
        "geoembed_version": __version__,
        "params": params,
        "bands": list(model.feature_names_in_),
        "names": {str(i): n for i, n in sorted(named.items())},
        "fit": {
            "inertia": model.inertia_,
            "n_iter": model.n_iter_,
            "converged": model.converged_,
            "sample_size": model.sample_size_,
        },
    }
    from geoembed.export.atomic import atomic_directory

    with atomic_directory(path, overwrite=overwrite, what="model directory") as tmp:
        np.savez(
            tmp / "centers.npz",
            cluster_centers=np.asarray(model.cluster_centers_, dtype=np.float32),
            counts=np.asarray(model.counts_, dtype=np.int64),
        )
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in model.json")


def load_model(path: str | os.PathLike[str]) -> KMeans:
    """Read a model written by :func:`save_model` (never unpickles anything).

    Raises
    ------
    ModelError
        When the directory is not a geoembed KMeans model or its arrays do not match.
    UnsafeModelError
        When ``path`` is a pickle/joblib file.
    """
    if isinstance(path, str) and "://" in path:
        import tempfile

        from geoembed._cloud import require_input
        from geoembed.export.remote import download_directory

        url = path.rstrip("/")
        require_input(url, "KMeans model")
        with tempfile.TemporaryDirectory(prefix="geoembed-model-") as tmp:
            return load_model(download_directory(url, Path(tmp) / "model"))
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".pkl", ".pickle", ".joblib"):
        raise UnsafeModelError(
            f"{path} is a pickle, which can run code when loaded; geoembed KMeans models are "
            "directories written by geoembed.jobs.model_io.save_kmeans()."
        )
    meta_path = path / "model.json"
    arr_path = path / "centers.npz"
    if not meta_path.is_file() or not arr_path.is_file():
        raise ModelError(
            f"{path} is not a geoembed KMeans model (expected model.json and centers.npz); "
            "write one with geoembed.jobs.model_io.save_kmeans() or "
            "`geoembed cluster --save-model`."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_path} is not valid JSON ({exc}).") from exc
    if meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path} has format {meta.get('format')!r}; expected {FORMAT!r}.")
    try:
        with np.load(arr_path, allow_pickle=False) as npz:
            centers = np.asarray(npz["cluster_centers"], dtype=np.float32)
            counts = np.asarray(npz["counts"], dtype=np.int64)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"cannot read {arr_path}: {exc}") from exc
    params = dict(meta["params"])
    params.pop("init", None)
    model = KMeans(**params)
    k = int(model.n_clusters)
    bands = list(meta["bands"])
    if centers.shape != (k, len(bands)):
        raise ModelError(
            f"{arr_path} holds centres of shape {centers.shape}; model.json says "
            f"({k}, {len(bands)})."
        )
    fit = meta.get("fit", {})
    model.cluster_centers_ = centers
    model.counts_ = counts
    model.inertia_ = float(fit.get("inertia", float("nan")))
    model.n_iter_ = int(fit.get("n_iter", 0))
    model.converged_ = bool(fit.get("converged", False))
    model.sample_size_ = int(fit.get("sample_size", 0))
    model.n_features_in_ = len(bands)
    model.feature_names_in_ = bands
    model.cluster_names_ = {int(i): str(n) for i, n in meta.get("names", {}).items()}
    return model
