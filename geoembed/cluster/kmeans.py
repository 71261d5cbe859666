"""KMeans over embedding fields larger than memory (scikit-learn style estimator)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_array

from geoembed._aef_codes import aef_codes_of
from geoembed.cluster._init import (
    STREAM_BATCH,
    STREAM_INIT,
    draw_sample,
    kmeans_plusplus,
    windows_sample,
)
from geoembed.cluster._kernels import (
    assign,
    exact_distances,
    fixed_point_scale,
    prepare,
    single_thread_blas,
)
from geoembed.cluster._lloyd import (
    LloydResult,
    Sample,
    field_pass,
    lloyd,
    minibatch,
    sample_pass,
)
from geoembed.errors import (
    BandMismatchError,
    GeoembedError,
    ModelError,
    NotFittedError,
    SchemaError,
)
from geoembed.output_schema import cluster_map, distance_map, distances_map
from geoembed.schema import CLASS_NODATA, check_embedding, class_dtype, feature_band_names

__all__ = ["ClusterCountError", "KMeans"]

log = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine")
MODES = ("lloyd", "minibatch", "sample")
_ARRAY_BLOCK = 262_144


class ClusterCountError(GeoembedError, ValueError):
    """More clusters were asked for than the field has distinct valid pixels."""


def _as_field(X: Any) -> tuple[xr.DataArray | None, dsa.Array, list[str]]:
    """Return (field or None, (band, y, x) dask data, band names) for a field or a matrix."""
    if isinstance(X, xr.DataArray):
        check_embedding(X, require_crs=False)
        data = X.data
        if not isinstance(data, dsa.Array):
            data = dsa.from_array(data, chunks=(-1, 512, 512))
        return X, data, [str(b) for b in X["band"].values]
    arr = _as_matrix(X)
    data = dsa.from_array(arr.T[:, None, :], chunks=(-1, 1, _ARRAY_BLOCK))
    return None, data, feature_band_names(arr.shape[1])


def _as_matrix(X: Any) -> np.ndarray:
    """Validate an ``(n, band)`` matrix (scikit-learn's rules; NaN rows are nodata)."""
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) > 2:
        raise SchemaError(
            f"KMeans takes an embedding field (band, y, x) or an (n, d) matrix; got an array "
            f"with shape {shape}. Open rasters with geoembed.open_embeddings()."
        )
    arr = check_array(X, dtype=np.float32, ensure_all_finite="allow-nan", estimator="KMeans")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _predict_pixels(x: np.ndarray, centers: np.ndarray, *, metric: str) -> np.ndarray:
    with single_thread_blas():
        return assign(prepare(x, metric), centers, metric)


def _predict_block(
    block: np.ndarray, centers: np.ndarray, *, metric: str, nodata: int, out_dtype: np.dtype
) -> np.ndarray:
    """Labels of a ``(band, y, x)`` block, computed in its own layout (no transposed copy).

    Nodata (NaN) pixels are found inside the assignment kernel, from each pixel's squared
    norm (no separate pass over the block). An int8 block holds AEF codes, decoded (like
    a float block, copied and normalised for ``"cosine"``) one cache-sized tile at a time
    inside the kernel, so no float32 copy of the block exists (labels are per pixel, so
    they are the same).
    Returns a ``(1, y, x)`` block (a leading axis of one: dropping the band axis in
    ``map_blocks`` would make Dask copy every input block first).
    """
    _, ny, nx = block.shape
    with single_thread_blas():  # the tiles are decoded (and normalised) in the kernel
        labels = assign(block, centers, metric, columns=True, invalid=-1, normalize=True)
    out = labels.astype(out_dtype)
    if labels.size and labels.min() < 0:
        out[labels < 0] = nodata
    return out.reshape(1, ny, nx)


def _distance_pixels(x: np.ndarray, centers: np.ndarray, *, metric: str) -> np.ndarray:
    xp = prepare(x, metric)
    with single_thread_blas():
        labels = assign(xp, centers, metric)
    return exact_distances(xp, centers, labels, metric).astype(np.float32)


def _transform_pixels(x: np.ndarray, centers: np.ndarray, *, metric: str) -> np.ndarray:
    xp = prepare(x, metric).astype(np.float64)
    c = centers.astype(np.float64)
    # order-fixed float64 dots (no BLAS): the same bits on every CPU and chunking
    dots = np.einsum("nd,kd->nk", xp, c)
    if metric == "cosine":
        return (1.0 - dots).astype(np.float32)
    d2 = np.einsum("nd,nd->n", xp, xp)[:, None] - 2.0 * dots + np.einsum("kd,kd->k", c, c)
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """KMeans clustering of an embedding field, computed lazily with Dask.

    Seeding is k-means++ on a uniform random sample of valid pixels (only the sampled
    chunks are read); refinement is one of

    * ``"lloyd"``: exact Lloyd passes over every valid pixel (one Dask computation per
      pass, blocks return fixed-point partial sums that are reduced exactly);
    * ``"minibatch"``: mini-batch updates on random windows of a fixed pixel grid;
    * ``"sample"``: Lloyd on the in-memory sample only (fastest, no full pass).

    With the same ``random_state`` the centres and maps are identical whatever the
    chunking, the scheduler or the number of workers.

    A scikit-learn estimator: ``get_params``/``set_params``, ``clone``; parameters are
    validated in :meth:`fit`; an unfitted model raises
    :class:`~geoembed.errors.NotFittedError`. NaN pixels (rows of a matrix) are nodata:
    ignored by ``fit``.

    Parameters
    ----------
    n_clusters : int, default 8
        Number of clusters ``k``.
    metric : {"euclidean", "cosine"}, default "euclidean"
        ``"cosine"`` is spherical k-means (unit-length centres, distance ``1 - cos``),
        the natural choice for unit-length embeddings such as AlphaEarth.
    init : "k-means++" or array of shape (k, band), default "k-means++"
        Initial centres. An array skips the sample refinement, so that
        ``KMeans(init=c, mode="lloyd")`` follows scikit-learn's Lloyd from ``c``.
    mode : {"lloyd", "minibatch", "sample"}, default "lloyd"
        How the centres are refined (see above).
    max_iter : int, optional
        Lloyd passes over the field (``lloyd``, default 20), Lloyd iterations on the
        sample (``sample``, default 100) or mini-batch steps (``minibatch``, default 100).
    tol : float, default 1e-4
        Convergence threshold on the squared centre shift, relative to the mean
        per-band variance of the sample (scikit-learn's convention).
    sample_size : int, optional
        Valid pixels drawn for seeding (default ``max(256 k, 50 000)``; ``max(1024 k,
        200 000)`` in ``sample`` mode).
    n_init : int or "auto", default "auto"
        k-means++ restarts on the sample (each refined on the sample); the best by
        sample inertia is kept. ``"auto"`` makes as many restarts (1 to 10) as fit in
        a budget of ``5e5 / (sample pixels x k)``, i.e. several for small problems where
        they are cheap, one for large ones.
    inertia_tol : float, default 1e-4
        Also stop the passes over the field when one lowered the inertia by less than
        this fraction (the sample refinement has usually done most of the work). Use 0
        to follow scikit-learn's stopping rule (centre shift only).
    sample_max_iter : int, default 100
        Lloyd iterations on the sample after each seeding.
    batch_size : int, default 65536
        Pixels per mini-batch (rounded to whole 128 x 128 windows).
    random_state : int, default 0
        Seed of every random choice.

    Attributes
    ----------
    cluster_centers_ : numpy.ndarray
        ``(k, band)`` float32 centres (unit-length for ``"cosine"``).
    inertia_ : float
        Sum of squared distances (cosine: of ``1 - cos``) of the pixels to their centre,
        measured in the last full pass (``lloyd``; an upper bound for the final
        centres) or on the sample (``sample``/``minibatch``, scaled to the sample).
    n_iter_ : int
        Refinement iterations run.
    converged_ : bool
        Whether the tolerance was reached.
    counts_ : numpy.ndarray
        Pixels per cluster in the last pass (or in the sample).
    sample_size_ : int
        Valid pixels in the seeding sample.
    labels_ : numpy.ndarray
        ``(n,)`` int64 cluster of each row, set when fitted on a matrix only (a field's
        map is lazy: use :meth:`predict`).
    n_features_in_ : int
    feature_names_in_ : list of str
        Band names the model was fitted on.
    """

    #: names of the clusters (set by the cluster job or a loaded model), by cluster id
    cluster_names_: dict[int, str]

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        metric: str = "euclidean",
        init: str | np.ndarray = "k-means++",
        mode: str = "lloyd",
        max_iter: int | None = None,
        tol: float = 1e-4,
        sample_size: int | None = None,
        n_init: int | str = "auto",
        inertia_tol: float = 1e-4,
        sample_max_iter: int = 100,
        batch_size: int = 65536,
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.metric = metric
        self.init = init
        self.mode = mode
        self.max_iter = max_iter
        self.tol = tol
        self.sample_size = sample_size
        self.n_init = n_init
        self.inertia_tol = inertia_tol
        self.sample_max_iter = sample_max_iter
        self.batch_size = batch_size
        self.random_state = random_state

    # ------------------------------------------------------------------ from centres
    @classmethod
    def from_centers(
        cls,
        centers: Any,
        *,
        metric: str = "euclidean",
        feature_names: list[str] | None = None,
        inertia: float | None = None,
        n_iter: int = 0,
    ) -> KMeans:
        """Build a fitted model from existing cluster centres (no fitting).

        Parameters
        ----------
        centers : array-like of shape (k, band)
            Cluster centres, e.g. ``cluster_centers_`` of another KMeans.
        metric : {"euclidean", "cosine"}, default "euclidean"
            How pixels are assigned to centres; ``"cosine"`` normalises the centres.
        feature_names : list of str, optional
            Band names the centres were computed on (checked against the field's bands
            at predict time); default: generic names, which skip the name check.
        inertia : float, optional
            The inertia reported by the model the centres come from (NaN if unknown).
        n_iter : int, default 0
            Iterations reported by the model the centres come from.

        Returns
        -------
        KMeans
            A fitted estimator: ``predict``, ``distance``, ``transform`` and
            :func:`~geoembed.jobs.model_io.save_kmeans` work on it.
        """
        c = np.asarray(centers)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ModelError(f"centers must be a (k, band) array; got shape {c.shape}.")
        if not np.isfinite(c).all():
            raise ModelError("centers contain NaN or infinite values; they cannot be used.")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
        k, d = c.shape
        names = feature_band_names(d) if feature_names is None else [str(b) for b in feature_names]
        if len(names) != d:
            raise ModelError(f"feature_names has {len(names)} names for {d}-band centres.")
        model = cls(k, metric=metric, init=np.asarray(c, dtype=np.float32))
        model.cluster_centers_ = prepare(c, metric).astype(np.float32)
        model.inertia_ = float("nan") if inertia is None else float(inertia)
        model.n_iter_ = int(n_iter)
        model.converged_ = True
        model.counts_ = np.zeros(k, dtype=np.int64)
        model.sample_size_ = 0
        model.n_features_in_ = int(d)
        model.feature_names_in_ = names
        return model

    @classmethod
    def from_dask_ml(cls, estimator: Any, *, feature_names: list[str] | None = None) -> KMeans:
        """Adopt a fitted ``dask_ml.cluster.KMeans`` (or scikit-learn ``KMeans``).

        The centres are kept as they are and the metric is Euclidean, as in dask-ml, so
        :meth:`predict` assigns every pixel to the centre dask-ml's own ``predict``
        would choose, blockwise over fields of any size. dask-ml's ``inertia_`` is the
        sum of unsquared distances, so it is not carried over (``inertia_`` is NaN; use
        ``-model.score(field)`` for the sum of squared distances); scikit-learn's is.

        Parameters
        ----------
        estimator : dask_ml.cluster.KMeans or sklearn.cluster.KMeans
            A fitted model (it has ``cluster_centers_``).
        feature_names : list of str, optional
            Band names the model was fitted on; default: the estimator's
            ``feature_names_in_`` if it has them, else generic names.

        Returns
        -------
        KMeans
        """
        centers = getattr(estimator, "cluster_centers_", None)
        if centers is None:
            raise ModelError(
                f"{type(estimator).__name__} has no cluster_centers_; fit it before "
                "KMeans.from_dask_ml()."
            )
        if feature_names is None and getattr(estimator, "feature_names_in_", None) is not None:
            feature_names = [str(f) for f in estimator.feature_names_in_]
        # dask-ml's inertia_ is the sum of *unsquared* distances (dask-ml 2025.1): not ours
        from_dask_ml = type(estimator).__module__.startswith("dask_ml")
        inertia = None if from_dask_ml else getattr(estimator, "inertia_", None)
        n_iter = int(getattr(estimator, "n_iter_", 0) or 0)
        model = cls.from_centers(
            np.asarray(centers),
            metric="euclidean",
            feature_names=feature_names,
            inertia=None if inertia is None else float(inertia),
            n_iter=n_iter,
        )
        max_iter = getattr(estimator, "max_iter", None)
        model.converged_ = bool(max_iter is None or n_iter < int(max_iter))
        return model

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN pixels are nodata, ignored by fit
        tags.transformer_tags.preserves_dtype = ["float32"]  # distances are float32
        return tags

    def _check_params(self, n_bands: int, n_pixels: int, field: bool = True) -> None:
        k = self.n_clusters
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {k!r}.")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if k >= CLASS_NODATA["uint16"]:
            class_dtype(k)
        if k > n_pixels:
            where = f"pixels in the field ({n_pixels})" if field else f"rows (n_samples={n_pixels})"
            raise ClusterCountError(
                f"n_clusters={k} is larger than the number of {where}; choose fewer clusters."
            )
        if not isinstance(self.init, str):
            init = np.asarray(self.init)
            if init.shape != (k, n_bands):
                raise ModelError(
                    f"init has shape {init.shape}; expected (n_clusters, bands) = ({k}, {n_bands})."
                )
        elif self.init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or an array of centres, got {self.init!r}.")

    def _default_iter(self) -> int:
        if self.max_iter is not None:
            return int(self.max_iter)
        return 20 if self.mode == "lloyd" else 100

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> KMeans:
        """Fit the centres to an embedding field (or an ``(n, band)`` matrix).

        Parameters
        ----------
        X : xarray.DataArray or numpy.ndarray
            Canonical field ``(band, y, x)`` (lazy; NaN pixels are ignored) or a matrix.
        y : ignored

        Returns
        -------
        KMeans
            The fitted estimator.

        Raises
        ------
        ClusterCountError
            When ``n_clusters`` exceeds the number of distinct valid pixels (checked on
            the sample, before any full pass).

        Notes
        -----
        BLAS runs one thread per task for the whole fit (as it does inside every task):
        releasing the limit between passes and taking it again before the next one made
        a fit many times slower on a loaded machine.
        """
        with single_thread_blas():
            return self._fit(X)

    def _fit(self, X: Any) -> KMeans:
        """Run :meth:`fit` (BLAS already limited to one thread per task)."""
        field = isinstance(X, xr.DataArray)
        if field:
            check_embedding(X, require_crs=False)
            n_bands, n_pixels = X.sizes["band"], X.sizes["y"] * X.sizes["x"]
        else:
            X = _as_matrix(X)
            n_pixels, n_bands = X.shape
        self._check_params(int(n_bands), int(n_pixels), field)
        self.__dict__.pop("labels_", None)  # from an earlier fit on a matrix
        _, data, bands = _as_field(X)
        k = int(self.n_clusters)
        metric = self.metric
        seed = int(self.random_state)
        size = self.sample_size
        if size is None:
            size = max(1024 * k, 200_000) if self.mode == "sample" else max(256 * k, 50_000)
        sample = draw_sample(data, int(size), seed)
        xs = prepare(sample.x, metric)
        if xs.shape[0] == 0:
            raise SchemaError(
                "the field has no valid pixels (every sampled pixel is NaN); check the nodata "
                "mask and the area you opened."
            )
        self._check_distinct(xs, k, sample.complete, sample.drawn)
        max_abs = float(np.abs(xs).max())
        scale = fixed_point_scale(n_pixels, max_abs)
        sq_scale = fixed_point_scale(n_pixels, n_bands * max_abs * max_abs * 8.0)
        tol = float(self.tol) * float(np.mean(np.var(xs.astype(np.float64), axis=0)))
        max_iter = self._default_iter()

        layout = Sample.of(xs, scale)  # the assign kernel's layout, truncated sums once
        with contextlib.ExitStack() as stack:
            threads = None
            if layout.threads > 1:
                threads = stack.enter_context(ThreadPoolExecutor(layout.threads))

            def on_sample(c: np.ndarray, want: bool) -> Any:
                return sample_pass(
                    layout, c, metric=metric, sq_scale=sq_scale if want else None, pool=threads
                )

            centers, result = self._refine_sample(xs, on_sample, k, seed, metric, tol, max_iter)
            if self.mode == "minibatch":
                result = self._minibatch(data, xs, on_sample, centers, seed, metric, tol, max_iter)
        if self.mode == "lloyd":

            def full_pass(c: np.ndarray, want: bool) -> Any:
                return field_pass(
                    data, c, metric=metric, scale=scale, sq_scale=sq_scale if want else None
                )

            result = lloyd(
                full_pass,
                centers,
                metric=metric,
                max_iter=max_iter,
                tol=tol,
                pool=xs,
                inertia_tol=float(self.inertia_tol),
                progress_label="KMeans passes",
            )
        self.cluster_centers_ = result.centers.astype(np.float32)
        self.inertia_ = float(result.inertia)
        self.n_iter_ = int(result.n_iter)
        self.converged_ = bool(result.converged)
        self.counts_ = np.asarray(result.counts, dtype=np.int64)
        self.sample_size_ = int(xs.shape[0])
        self.n_features_in_ = int(n_bands)
        self.feature_names_in_ = list(bands)
        if not field:
            self.labels_ = _predict_pixels(X, self.cluster_centers_, metric=metric)
        return self

    def _refine_sample(
        self,
        xs: np.ndarray,
        on_sample: Callable[[np.ndarray, bool], Any],
        k: int,
        seed: int,
        metric: str,
        tol: float,
        max_iter: int,
    ) -> tuple[np.ndarray, LloydResult]:
        """Seed (k-means++, ``n_init`` restarts) and refine on the sample; or take ``init``."""
        if isinstance(self.init, str):
            best: LloydResult | None = None
            sample_iter = max_iter if self.mode == "sample" else int(self.sample_max_iter)
            if self.n_init == "auto":
                n_init = int(np.clip(5e5 // max(xs.shape[0] * k, 1), 1, 10))
            else:
                n_init = max(int(self.n_init), 1)
            for run in range(n_init):
                rng = np.random.default_rng([seed, STREAM_INIT, run])
                with single_thread_blas():
                    c0 = kmeans_plusplus(xs, k, rng, metric)
                res = lloyd(on_sample, c0, metric=metric, max_iter=sample_iter, tol=tol, pool=xs)
                if best is None or res.inertia < best.inertia:
                    best = res
            assert best is not None
            centers, result = best.centers, best
        else:
            centers = prepare(np.asarray(self.init, dtype=np.float32), metric)
            result = LloydResult(centers, float("inf"), 0, False, np.zeros(k, dtype=np.int64))
            if self.mode == "sample":
                result = lloyd(
                    on_sample, centers, metric=metric, max_iter=max_iter, tol=tol, pool=xs
                )
                centers = result.centers
        return centers, result

    def _minibatch(
        self,
        data: dsa.Array,
        xs: np.ndarray,
        on_sample: Callable[[np.ndarray, bool], Any],
        centers: np.ndarray,
        seed: int,
        metric: str,
        tol: float,
        max_iter: int,
    ) -> LloydResult:
        """Mini-batch refinement on random windows; inertia measured on the sample."""
        window = 128
        n_windows = max(1, -(-int(self.batch_size) // (window * window)))

        def draw(step: int) -> np.ndarray:
            rng = np.random.default_rng([seed, STREAM_BATCH, step])
            return prepare(windows_sample(data, n_windows, window, rng), metric)

        result = minibatch(draw, centers, metric=metric, max_iter=max_iter, tol=tol, pool=xs)
        stats = on_sample(result.centers, True)
        from geoembed.cluster._lloyd import inertia_of

        result.inertia = inertia_of(stats, result.centers, metric)
        return result

    @staticmethod
    def _check_distinct(xs: np.ndarray, k: int, complete: bool, drawn: int) -> None:
        if xs.shape[0] >= 50 * k:
            # cheap test first: k distinct rows among the first few
            head = xs[: 20 * k]
            if (
                np.unique(head.view(np.dtype((np.void, head.dtype.itemsize * head.shape[1])))).size
                >= k
            ):
                return
        rows = xs.view(np.dtype((np.void, xs.dtype.itemsize * xs.shape[1]))).ravel()
        distinct = int(np.unique(rows).size)
        if distinct >= k:
            return
        where = "the field has" if complete else f"a random sample of {drawn} pixels has"
        raise ClusterCountError(
            f"n_clusters={k} but {where} only {distinct} distinct valid pixel vector(s); "
            f"use n_clusters <= {distinct}" + ("." if complete else " or a larger sample_size.")
        )

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("this KMeans is not fitted yet; call fit() or load_model() first.")

    def _check_bands(self, bands: list[str], n: int, from_field: bool) -> None:
        if n != self.n_features_in_:
            raise BandMismatchError(
                f"X has {n} features, but KMeans is expecting {self.n_features_in_} features "
                f"as input: the input has {n} bands but the model was fitted on "
                f"{self.n_features_in_}; use a field with the same bands."
            )
        if (
            from_field
            and bands != self.feature_names_in_
            and not all(b.startswith("F") for b in self.feature_names_in_)
        ):
            raise BandMismatchError(
                f"the field's bands {bands[:3]}... differ from the model's "
                f"{self.feature_names_in_[:3]}...; select them with "
                "da.sel(band=model.feature_names_in_)."
            )

    def _centers(self) -> Any:
        centers = np.ascontiguousarray(self.cluster_centers_, dtype=np.float32)
        return dask.delayed(centers, pure=True)

    def predict(self, X: Any) -> Any:
        """Cluster of each pixel.

        Parameters
        ----------
        X : xarray.DataArray or numpy.ndarray
            Field ``(band, y, x)`` or matrix ``(n, band)``.

        Returns
        -------
        xarray.DataArray or numpy.ndarray
            For a field: a lazy ``(y, x)`` uint8 map (uint16 for k >= 255) named
            ``"clusters"``, nodata 255 (65535) where the field is NaN, a palette colour per
            cluster in ``attrs["colors"]``. For a matrix: ``(n,)``
            int64 labels.
        """
        self._check_fitted()
        if not isinstance(X, xr.DataArray):
            arr = _as_matrix(X)
            self._check_bands([], arr.shape[1], False)
            return _predict_pixels(arr, self.cluster_centers_, metric=self.metric)
        check_embedding(X, require_crs=False)
        self._check_bands([str(b) for b in X["band"].values], X.sizes["band"], True)
        dtype = class_dtype(int(self.n_clusters))
        nodata = CLASS_NODATA[dtype.name]
        data = X.data
        if not isinstance(data, dsa.Array):
            data = dsa.from_array(data, chunks=(-1, 512, 512))
        codes = aef_codes_of(data)  # AEF int8 codes: decoded inside the tasks
        data = data if codes is None else codes
        out = dsa.map_blocks(
            _predict_block,
            data,
            self._centers(),
            metric=self.metric,
            nodata=nodata,
            out_dtype=dtype,
            dtype=dtype,
            chunks=((1,), *data.chunks[1:]),
            meta=np.empty((0, 0, 0), dtype=dtype),
            token="geoembed-kmeans-predict",  # prefix; the key hashes centres and field
        )[0]
        # palette colours in attrs["colors"]: the COG's colour table
        return cluster_map(X, out, n_clusters=int(self.n_clusters), attrs={"metric": self.metric})

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """``fit(X)`` then ``predict(X)``."""
        return self.fit(X).predict(X)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X, y, **fit_params).transform(X)

    def distance(self, X: Any) -> Any:
        """Distance of each pixel to its own centre (float32; NaN at nodata).

        Euclidean distance, or ``1 - cos`` for ``metric="cosine"``. Lazy ``(y, x)`` for a
        field, ``(n,)`` for a matrix.
        """
        self._check_fitted()
        if not isinstance(X, xr.DataArray):
            arr = _as_matrix(X)
            self._check_bands([], arr.shape[1], False)
            return _distance_pixels(arr, self.cluster_centers_, metric=self.metric)
        from geoembed._blockwise import map_pixels

        check_embedding(X, require_crs=False)
        self._check_bands([str(b) for b in X["band"].values], X.sizes["band"], True)
        out = map_pixels(
            X,
            functools.partial(_distance_pixels, metric=self.metric),
            n_out=1,
            args=(self._centers(),),
            fill=np.nan,
            dtype=np.float32,
            name="distance",
        )
        return distance_map(X, out.isel(output=0, drop=True))

    def transform(self, X: Any) -> Any:
        """Distances to every centre: lazy ``(cluster, y, x)`` ``distances``, or ``(n, k)``."""
        self._check_fitted()
        k = int(self.n_clusters)
        if not isinstance(X, xr.DataArray):
            arr = _as_matrix(X)
            self._check_bands([], arr.shape[1], False)
            return _transform_pixels(arr, self.cluster_centers_, metric=self.metric)
        from geoembed._blockwise import map_pixels

        check_embedding(X, require_crs=False)
        self._check_bands([str(b) for b in X["band"].values], X.sizes["band"], True)
        out = map_pixels(
            X,
            functools.partial(_transform_pixels, metric=self.metric),
            n_out=k,
            args=(self._centers(),),
            fill=np.nan,
            dtype=np.float32,
            out_dim="cluster",
            name="distance",
        )
        return distances_map(X, out)

    def score(self, X: Any, y: Any = None) -> float:
        """Negative inertia of ``X`` for the fitted centres (one exact pass)."""
        self._check_fitted()
        from geoembed.cluster._lloyd import inertia_of

        _, data, bands = _as_field(X)
        self._check_bands(bands, int(data.shape[0]), isinstance(X, xr.DataArray))
        centers = self.cluster_centers_
        n_pixels = int(data.shape[1]) * int(data.shape[2])
        max_abs = float(np.abs(centers).max()) * 4.0
        scale = fixed_point_scale(n_pixels, max_abs)
        sq_scale = fixed_point_scale(n_pixels, data.shape[0] * max_abs * max_abs * 8.0)
        stats = field_pass(data, centers, metric=self.metric, scale=scale, sq_scale=sq_scale)
        return -inertia_of(stats, centers, self.metric)
