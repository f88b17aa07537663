"""numpy kNN, UMAP's fuzzy graph and trustworthiness (learnviz/analysis/knn.py) against their
references: brute force, scipy's distances, sklearn's trustworthiness and umap's own graph."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from learnviz.analysis import knn


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(120, 24)) + 3 * rng.normal(size=(1, 24))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_pairwise_distances_equal_scipy(x, metric):
    d = knn.pairwise_distances(x, metric)
    ref = cdist(x.astype(np.float64), x.astype(np.float64), metric)
    np.fill_diagonal(ref, 0.0)
    assert d.shape == (120, 120) and d.dtype == np.float64
    np.testing.assert_allclose(d, ref, atol=1e-9)
    assert np.all(np.diag(d) == 0.0) and np.array_equal(d, d.T)


def test_cosine_of_zero_rows_follows_umap():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-2.0, 0.0]])
    d = knn.pairwise_distances(x, "cosine")
    # umap.distances.cosine: two zero vectors are at 0, a zero vector is at 1 from anything else
    assert d[0, 1] == 0.0 and d[0, 2] == 1.0 and d[2, 0] == 1.0
    assert d[2, 3] == pytest.approx(2.0)


def test_unknown_metric_raises(x):
    with pytest.raises(ValueError, match="no numpy distance"):
        knn.pairwise_distances(x, "manhattan")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_is_the_exact_brute_force_knn(x, metric):
    d = knn.pairwise_distances(x, metric)
    idx, dist = knn.nearest(d, 15)
    brute = np.argsort(d, axis=1, kind="stable")[:, :15]
    assert np.array_equal(idx, brute)
    assert np.array_equal(idx[:, 0], np.arange(len(x)))            # every point is its own first
    np.testing.assert_array_equal(dist, np.take_along_axis(d, brute, axis=1))
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_nearest_breaks_ties_by_the_lower_index():
    # integer points on a line: many equal distances, including at the k-th place
    x = np.repeat(np.arange(12.0), 2)[:, None] * np.ones((1, 3))       # every point twice
    d = knn.pairwise_distances(x, "euclidean")
    for k in (1, 2, 3, 4, 5, 24):
        idx, _ = knn.nearest(d, k)
        assert np.array_equal(idx, np.argsort(d, axis=1, kind="stable")[:, :k]), k
    with pytest.raises(ValueError, match="k must be"):
        knn.nearest(d, 0)


def test_fuzzy_graph_equals_umaps(x):
    """The same kNN in, umap.umap_.fuzzy_simplicial_set's graph out (float32 there: ~1e-6)."""
    from learnviz.analysis import numba_cache
    numba_cache.cache_kernels()
    from umap.umap_ import fuzzy_simplicial_set
    for metric, k in (("cosine", 15), ("euclidean", 8)):
        idx, dist = knn.nearest(knn.pairwise_distances(x, metric), k)
        ours = knn.fuzzy_graph(idx, dist, metric).tocsr()
        ref, _, _ = fuzzy_simplicial_set(x, k, np.random.RandomState(0), metric, knn_indices=idx.copy(),
                                         knn_dists=dist.astype(np.float32))
        ref = ref.tocsr()
        assert ours.shape == ref.shape == (120, 120)
        assert abs(ours - ours.T).max() == 0                       # symmetric
        assert ((ours != 0) != (ref != 0)).nnz == 0                  # the same edges
        assert abs(ours - ref).max() < 1e-4
        assert 0 < ours.data.min() and ours.data.max() <= 1.0


def test_smooth_knn_dist_hits_the_target():
    rng = np.random.default_rng(1)
    d = np.sort(rng.uniform(0.1, 2.0, size=(50, 10)), axis=1)
    d[:, 0] = 0.0                                                   # itself
    sigma, rho = knn.smooth_knn_dist(d, 10.0)
    np.testing.assert_array_equal(rho, d[:, 1])                     # the nearest non-zero distance
    psum = np.exp(-np.maximum(d[:, 1:] - rho[:, None], 0) / sigma[:, None]).sum(axis=1)
    np.testing.assert_allclose(psum, np.log2(10.0), atol=1e-4)


def test_trustworthiness_equals_sklearns(x):
    from sklearn.manifold import trustworthiness
    rng = np.random.default_rng(2)
    for metric in ("cosine", "euclidean"):
        d = knn.pairwise_distances(x, metric)
        for coords in (x[:, :2], rng.normal(size=(120, 2))):
            for k in (5, 15):
                assert knn.trustworthiness(d, coords, k) == pytest.approx(
                    trustworthiness(x, coords, n_neighbors=k, metric=metric), abs=1e-12)
    # data that is 2-D plus a little noise: its 2-D part is trustworthy, a shuffle of it is not
    plane = np.concatenate([rng.normal(size=(120, 2)), 0.01 * rng.normal(size=(120, 10))], axis=1)
    d = knn.pairwise_distances(plane, "euclidean")
    assert knn.trustworthiness(d, plane[:, :2], 15) > 0.99
    assert knn.trustworthiness(d, rng.permutation(plane[:, :2]), 15) < 0.7
    with pytest.raises(ValueError, match="less than n / 2"):
        knn.trustworthiness(d, plane[:, :2], 60)
