"""Save and load kNN models as plain arrays (``.npz``) + JSON metadata, never pickle.

A model directory holds ``model.json`` (format, parameters, class table, band names, and
the SHA-256 of the arrays) and ``arrays.npz`` (training vectors, class ids, training-row
positions, and for approximate models the serialised faiss index as bytes). Loading uses
``numpy.load(allow_pickle=False)``, so a model file cannot run code. Pickled models
(``.pkl``, ``.joblib``, e.g. a scikit-learn random forest) load only with an explicit
``allow_pickle=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from geoembed.errors import ModelError, OutputError, UnsafeModelError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PICKLE_SUFFIXES",
    "SKOPS_SUFFIX",
    "load_model",
    "save_estimator",
    "save_model",
]

FORMAT = "geoembed.knn"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav")
SKOPS_SUFFIX = ".skops"
#: zip comment of the .skops files geoembed writes (``--overwrite`` may replace them)
SKOPS_MARK = b"written by geoembed"
#: packages whose types a .skops file may hold without an explicit opt-in
SAFE_PACKAGES = ("sklearn", "numpy", "scipy", "builtins", "collections", "dask_ml")
_META = "model.json"
_ARRAYS = "arrays.npz"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a fitted kNN model to the directory ``path`` (atomically).

    Parameters
    ----------
    model : KNNClassifier or ApproximateKNNClassifier
        A fitted model.
    path : path-like
        Directory to create.
    overwrite : bool, default False
        Replace an existing model directory that geoembed wrote (never another folder).

    Returns
    -------
    pathlib.Path
        The model directory.
    """
    from geoembed.classify.knn import KNNClassifier

    if not isinstance(model, KNNClassifier):
        raise ModelError(
            f"save_model stores geoembed kNN models; save a {type(model).__name__} with "
            "geoembed.jobs.model_io.save_estimator(est, 'model.skops') (no pickle)."
        )
    model._check_fitted()
    if isinstance(path, str) and "://" in path:
        return _save_remote(model, path, overwrite=overwrite)
    target = Path(path)
    from geoembed.export.atomic import atomic_directory
    from geoembed.export.outputs import require_geoembed_output

    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputError(f"{target} already exists; pass overwrite=True.")
        require_geoembed_output(target, what="model directory")
        if not target.is_dir():
            raise OutputError(f"{target} exists and is not a model directory.")

    with atomic_directory(target, overwrite=overwrite, what="model directory") as tmp:
        arrays: dict[str, np.ndarray] = {"X": model.X_, "y": model.y_, "rows": model.rows_}
        faiss_bytes = getattr(model, "_faiss_bytes", None)
        if faiss_bytes is not None:
            arrays["faiss_index"] = np.asarray(faiss_bytes, dtype=np.uint8)
        np.savez(tmp / _ARRAYS, **arrays)  # type: ignore[arg-type]
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": model.kind,
            "params": _jsonable(model.params()),
            "n_train": model.n_train,
            "n_features": model.n_features,
            "n_classes": model.n_classes,
            "class_names": list(model.class_names),
            "class_values": _jsonable(model.class_values),
            "colors": _jsonable(model.colors),
            "band_names": model.band_names,
            **_classes_meta(model),
            "arrays": _ARRAYS,
            "sha256": _sha256(tmp / _ARRAYS),
        }
        (tmp / _META).write_text(json.dumps(meta, indent=2))
    return target


def _save_remote(model: Any, url: str, *, overwrite: bool) -> Any:
    """Save to a local temporary directory, then upload it with ``model.json`` last."""
    import tempfile

    from geoembed.export.remote import check_remote_output, upload_directory

    url = check_remote_output(url, overwrite=overwrite, what="model directory")
    with tempfile.TemporaryDirectory(prefix="geoembed-model-") as tmp:
        return upload_directory(save_model(model, Path(tmp) / "model"), url)


def _load_remote(url: str, allow_pickle: bool) -> Any:
    """Download a model directory (or pickle file) from object storage and load it."""
    import tempfile

    from geoembed._cloud import filesystem, require_input

    url = url.rstrip("/")
    require_input(url, "model")
    fs = filesystem(url)
    with tempfile.TemporaryDirectory(prefix="geoembed-model-") as tmp:
        name = url.rpartition("/")[2]
        local = Path(tmp) / name
        if fs.isdir(url):
            from geoembed.export.remote import download_directory

            download_directory(url, local)
        else:
            fs.get_file(url, str(local))
        return load_model(local, allow_pickle=allow_pickle)


def _load_pickle(path: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise UnsafeModelError(
            f"{path} is a pickle/joblib file, which can execute arbitrary code when loaded. "
            "Load it only if you trust its origin, with allow_pickle=True; geoembed's own "
            "kNN models are saved without pickle."
        )
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # any unpickling failure
        raise ModelError(f"cannot load {path}: {exc}") from exc


def save_estimator(
    estimator: Any, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Save a fitted scikit-learn (or dask-ml) estimator as a ``.skops`` file, without pickle.

    The file is written under a temporary name and renamed when complete. It loads with
    :func:`load_model` (and ``geoembed classify --model FILE.skops``) on any machine,
    worker processes included, without ``allow_pickle``: skops rebuilds objects only from
    types it can check, and geoembed accepts only types from scikit-learn, NumPy, SciPy,
    dask-ml and the Python builtins.

    Parameters
    ----------
    estimator : fitted estimator
    path : path-like
        Target file; must end with ``.skops``.
    overwrite : bool, default False
        Replace a file that geoembed wrote.

    Returns
    -------
    pathlib.Path
    """
    import skops.io as sio

    from geoembed.export.atomic import check_output_path, replace_path, temp_sibling

    if Path(path).suffix.lower() != SKOPS_SUFFIX:
        raise ModelError(f"{path}: an estimator file must end with {SKOPS_SUFFIX}.")
    target = check_output_path(path, overwrite=overwrite, what="model file")
    tmp = temp_sibling(target, "skops")
    try:
        sio.dump(estimator, tmp)
        with zipfile.ZipFile(tmp, "a") as archive:  # geoembed's mark (see export.outputs)
            archive.comment = SKOPS_MARK
        replace_path(tmp, target, overwrite=overwrite, what="model file")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a skops archive, or a damaged one
        raise ModelError(f"cannot read {path} as a skops model file: {exc}") from exc
    unsafe = [t for t in untrusted if t.split(".", 1)[0] not in SAFE_PACKAGES]
    if unsafe:
        raise UnsafeModelError(
            f"{path} holds types geoembed does not trust: {', '.join(unsafe[:5])}; "
            "load it yourself with skops.io.load(path, trusted=[...]) after checking them."
        )
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise ModelError(f"cannot load {path}: {exc}") from exc


def load_model(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Any:
    """Load a model saved by :func:`save_model` (or, with opt-in, a pickled estimator).

    Parameters
    ----------
    path : path-like
        A model directory (or its ``model.json``), a ``.skops`` file written by
        :func:`save_estimator`, or a ``.pkl``/``.joblib`` file.
    allow_pickle : bool, default False
        Allow loading pickle/joblib files. They can execute code: only for trusted files.

    Returns
    -------
    KNNClassifier, ApproximateKNNClassifier, or the unpickled object

    Raises
    ------
    UnsafeModelError
        For a pickle without ``allow_pickle=True``.
    ModelError
        Missing, corrupt or unknown model files.
    """
    from geoembed.classify.approximate import ApproximateKNNClassifier
    from geoembed.classify.knn import KNNClassifier

    if isinstance(path, str) and "://" in path:
        return _load_remote(path, allow_pickle)
    p = Path(path)
    if p.suffix.lower() == SKOPS_SUFFIX:
        if not p.is_file():
            raise ModelError(f"model file {p} does not exist.")
        return _load_skops(p)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        if not p.is_file():
            raise ModelError(f"model file {p} does not exist.")
        return _load_pickle(p, allow_pickle)
    if p.is_file() and p.name == _META:
        p = p.parent
    meta_path = p / _META
    if not meta_path.is_file():
        raise ModelError(
            f"{p} is not a geoembed model directory (no {_META}); save one with "
            "geoembed.jobs.model_io.save_model() or `geoembed classify --save-model DIR`."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {meta_path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ModelError(
            f"{meta_path} is not a geoembed kNN model (format {meta.get('format')!r})."
        )
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{p} was saved by a newer geoembed (format version {meta['format_version']}); "
            "upgrade geoembed to load it."
        )
    arrays_path = p / str(meta.get("arrays", _ARRAYS))
    if not arrays_path.is_file():
        raise ModelError(f"{p} is incomplete: {arrays_path.name} is missing.")
    if meta.get("sha256") and _sha256(arrays_path) != meta["sha256"]:
        raise ModelError(f"{arrays_path} does not match the checksum in {_META} (corrupt copy?).")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:
        raise UnsafeModelError(f"{arrays_path} holds pickled objects; refusing to load.") from exc
    params = dict(meta["params"])
    kind = meta.get("kind", "exact")
    common = {"k": int(params["k"]), "metric": params["metric"], "weights": params["weights"]}
    if kind == "approximate":
        model: Any = ApproximateKNNClassifier(
            common["k"],
            metric=common["metric"],
            weights=common["weights"],
            index=params.get("index", "ivf"),
            nlist=params.get("nlist"),
            nprobe=params.get("nprobe", 32),
            hnsw_m=params.get("hnsw_m", 32),
            ef_search=params.get("ef_search", 128),
            seed=params.get("seed", 0),
        )
        model.recall = params.get("recall")
        if "faiss_index" in arrays:
            model._faiss_bytes = arrays["faiss_index"]
    elif kind == "exact":
        model = KNNClassifier(common["k"], metric=common["metric"], weights=common["weights"])
    else:
        raise ModelError(f"{meta_path}: unknown model kind {kind!r}.")
    X, y, rows = arrays["X"], arrays["y"], arrays["rows"]
    if X.ndim != 2 or X.shape != (meta["n_train"], meta["n_features"]) or y.shape != (len(X),):
        raise ModelError(f"{arrays_path}: array shapes do not match {_META}.")
    model.X_ = np.ascontiguousarray(X, dtype=np.float32)
    model.y_ = y.astype(np.int64)
    model.rows_ = rows.astype(np.int64)
    model.n_classes = int(meta["n_classes"])
    model.class_names = list(meta["class_names"])
    model.class_values = meta.get("class_values")
    model.colors = meta.get("colors")
    model.band_names = meta.get("band_names")
    model.n_features_in_ = int(meta["n_features"])
    labels = meta.get("classes")  # labels other than ids 0..C-1 (fitted on any y)
    model.classes_ = (
        np.asarray(labels) if labels is not None else np.arange(model.n_classes, dtype=np.int64)
    )
    if len(model.classes_) != model.n_classes:
        raise ModelError(f"{meta_path}: {len(model.classes_)} classes for n_classes.")
    model._index = None
    return model


def _classes_meta(model: Any) -> dict[str, Any]:
    """``{"classes": [...]}`` for a model fitted on labels other than ids ``0..C-1``."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        return {}
    classes = np.asarray(classes)
    if classes.dtype == np.int64 and np.array_equal(classes, np.arange(len(classes))):
        return {}
    return {"classes": classes.tolist()}
