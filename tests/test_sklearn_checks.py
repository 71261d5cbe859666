"""scikit-learn's estimator checks on KNNClassifier and KMeans, with array inputs.

Every check scikit-learn yields for the two estimators runs; the ones that do not apply
to them are listed in ``EXPECTED_FAILED`` with the reason, and are run as expected
failures (a check that starts passing shows up as XPASS, not silently).
"""

from __future__ import annotations

import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

from geoembed.classify import KNNClassifier
from geoembed.cluster import KMeans

#: class ids must be 0..C-1: geoembed.labels encodes label values (names, codes) as ids
_CLASS_IDS = (
    "class ids are 0..C-1 by contract (geoembed.labels encodes label values into ids; "
    "strings, negative or non-contiguous labels are refused with a LabelError)"
)

EXPECTED_FAILED: dict[str, dict[str, str]] = {
    "KNNClassifier": {
        # y must be class ids: the ids-from-values encoding lives in geoembed.labels
        "check_classifiers_classes": _CLASS_IDS,
        "check_classifiers_regression_target": _CLASS_IDS,
        "check_complex_data": _CLASS_IDS + " (the complex y is refused before X)",
        "check_dtype_object": _CLASS_IDS,
        "check_estimators_nan_inf": _CLASS_IDS + " (float y is refused before X's NaN)",
        "check_supervised_y_2d": "y must be 1-D class ids; a column vector is refused",
        "check_requires_y_none": "y is required; refused with a LabelError of its own words",
        # n_neighbors=5 needs 5 training vectors, and as many in each class by default
        "check_fit2d_1feature": "a class with fewer vectors than n_neighbors is refused "
        "unless allow_small_classes=True",
        # model metadata and lazily built state
        "check_dont_overwrite_parameters": "class_names, class_values, colors, band_names "
        "and n_classes are public model metadata (saved with the model, read by the jobs)",
        "check_dict_unchanged": "the search index is built on first use and cached (also "
        "after unpickling on a worker), so the first predict adds _index",
        "check_do_not_raise_errors_in_init_or_set_params": "the deprecated k= alias is taken "
        "through **kwargs for one release; the check passes 'deprecated' as a parameter",
    },
    # every check scikit-learn yields for KMeans passes (NaN rows are nodata: allow_nan tag)
    "KMeans": {},
}


def _expected_failed(estimator: object) -> dict[str, str]:
    return EXPECTED_FAILED[type(estimator).__name__]


@parametrize_with_checks(
    [KNNClassifier(), KMeans()],
    expected_failed_checks=_expected_failed,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        check(estimator)
