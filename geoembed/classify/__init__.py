"""Supervised classification of embedding fields.

* :class:`KNNClassifier`: exact kNN (cosine or euclidean, uniform or distance weights):
  float32 BLAS picks candidates, an order-fixed float64 re-score decides, so results are
  the same bytes on every CPU; predictions and neighbours equal scikit-learn's
  brute-force ``KNeighborsClassifier``, distances within a few float32 ulp; stable
  tie-breaking; :func:`classify_knn` / :func:`predict_field` apply it over a lazy field.
* :class:`ApproximateKNNClassifier`: explicit faiss IVF/HNSW mode that reports recall@k.
* :func:`apply_estimator`: any fitted scikit-learn classifier or regressor, blockwise.
* :func:`save_model` / :func:`load_model`: models as arrays + JSON, never pickle;
  :func:`save_estimator`: any scikit-learn estimator as a ``.skops`` file (no pickle).
* The whole ``geoembed classify`` job (labels -> CV -> COGs) is
  :func:`geoembed.jobs.classify.run_classify`.
"""

from geoembed._deprecated import moved_attributes
from geoembed.classify.approximate import ApproximateKNNClassifier, recall_at_k
from geoembed.classify.estimator import apply_estimator
from geoembed.classify.field import check_model_bands, classify_knn, fit_model, predict_field
from geoembed.classify.knn import KNNClassifier, exact_kneighbors

__all__ = [
    "ApproximateKNNClassifier",
    "KNNClassifier",
    "apply_estimator",
    "check_model_bands",
    "classify_knn",
    "exact_kneighbors",
    "fit_model",
    "predict_field",
    "recall_at_k",
]


# moved to geoembed.jobs (the jobs and model I/O write through geoembed.export)
__getattr__ = moved_attributes(
    __name__,
    {
        "classify_job": "geoembed.jobs.classify:classify_job",
        "load_model": "geoembed.jobs.model_io:load_model",
        "save_estimator": "geoembed.jobs.model_io:save_estimator",
        "save_model": "geoembed.jobs.model_io:save_model",
    },
)
