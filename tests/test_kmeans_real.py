"""KMeans on the real AlphaEarth field (Wisconsin, 97 x 97 x 64, ../shared/data).

The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google
DeepMind (CC-BY-4.0).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans

from geoembed.cluster import KMeans, cluster_stats

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def wisconsin(aef_tif):
    from geoembed.io import open_embeddings

    return open_embeddings(aef_tif)


def test_inertia_within_one_percent_of_sklearn_best_of_ten(wisconsin):
    x = wisconsin.values.reshape(64, -1).T
    ref = SKKMeans(8, n_init=10, random_state=0).fit(x)
    model = KMeans(8, metric="euclidean", random_state=0).fit(wisconsin)
    ours = -model.score(wisconsin)
    assert ours <= ref.inertia_ * 1.01, (ours, ref.inertia_)
    assert model.inertia_ >= ours * (1 - 1e-6)  # reported inertia is an upper bound


def test_cosine_clusters_and_stats(wisconsin):
    model = KMeans(8, metric="cosine", random_state=0).fit(wisconsin)
    np.testing.assert_allclose(np.linalg.norm(model.cluster_centers_, axis=1), 1, atol=1e-6)
    labels = model.predict(wisconsin)
    table = cluster_stats(labels, wisconsin)
    assert table["pixels"].sum() == 97 * 97
    np.testing.assert_allclose(table["area_km2"], table["pixels"] * 100 / 1e6)
    # mean embeddings of the clusters point the same way as the spherical centres
    means = table[[f"A{i:02d}" for i in range(64)]].to_numpy()
    cos = np.sum(means * model.cluster_centers_, axis=1) / np.linalg.norm(means, axis=1)
    assert np.all(cos > 0.999)
