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

EXPECTED_FAILED: dict[str, dict[str, str]] = {
    "KNNClassifier": {
        # n_neighbors=5 needs 5 training vectors, and as many in each class by default
        "check_fit2d_1feature": "a class with fewer vectors than n_neighbors is refused "
        "unless allow_small_classes=True",
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
