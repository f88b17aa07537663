"""UMAP's optimiser in numpy (learnviz/analysis/umap_sgd.py): umap's constants, determinism, it
optimises (pulls neighbours together, separates clusters) and matches umap's own numba SGD in
quality on the same graph and start."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from scipy.spatial import procrustes
from sklearn.datasets import make_blobs

from learnviz.analysis import knn, umap_sgd


@pytest.fixture(scope="module")
def blobs():
    x, labels = make_blobs(n_samples=200, n_features=16, centers=5, cluster_std=1.0, random_state=0)
    d = knn.pairwise_distances(x, "euclidean")
    graph = knn.fuzzy_graph(*knn.nearest(d, 15), "euclidean")
    start = np.random.default_rng(0).uniform(0, 10, size=(200, 2))
    return x, labels, d, graph, start


def _same_cluster_share(coords, labels) -> float:
    d = knn.pairwise_distances(coords, "euclidean")
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


def test_ab_params_are_umaps():
    from learnviz.analysis import numba_cache
    numba_cache.cache_kernels()
    from umap.umap_ import find_ab_params
    assert umap_sgd.ab_params(0.1) == pytest.approx(find_ab_params(1.0, 0.1), rel=1e-9)
    assert umap_sgd.fit_ab_params(0.1) == pytest.approx(umap_sgd.ab_params(0.1), rel=1e-9)   # the table is right
    assert umap_sgd.ab_params(0.5) == pytest.approx(find_ab_params(1.0, 0.5), rel=1e-9)


def test_deterministic_for_a_fixed_seed(blobs):
    _, _, _, graph, start = blobs
    a = umap_sgd.optimize(graph, start, n_epochs=50, learning_rate=1.0, min_dist=0.1, seed=0)
    b = umap_sgd.optimize(graph, start, n_epochs=50, learning_rate=1.0, min_dist=0.1, seed=0)
    c = umap_sgd.optimize(graph, start, n_epochs=50, learning_rate=1.0, min_dist=0.1, seed=1)
    assert a.shape == (200, 2) and a.dtype == np.float64 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)                     # the negative samples follow the seed


def test_separates_clusters_from_a_random_start(blobs):
    x, labels, d, graph, start = blobs
    assert _same_cluster_share(start, labels) < 0.5
    y = umap_sgd.optimize(graph, start, n_epochs=200, learning_rate=1.0, min_dist=0.1, seed=0)
    assert _same_cluster_share(y, labels) > 0.98
    assert knn.trustworthiness(d, y, 15) > 0.9 > knn.trustworthiness(d, start, 15)


def test_a_refinement_of_a_good_layout_barely_moves_it(blobs):
    _, _, d, graph, start = blobs
    good = umap_sgd.optimize(graph, start, n_epochs=200, learning_rate=1.0, min_dist=0.1, seed=0)
    again = umap_sgd.optimize(graph, good, n_epochs=200, learning_rate=0.05, min_dist=0.1, seed=0)
    assert procrustes(good, again)[2] < 0.05              # a fresh layout: ~0.3 and more
    assert knn.trustworthiness(d, again, 15) >= knn.trustworthiness(d, good, 15) - 0.01


def test_matches_umaps_own_sgd_in_quality(blobs):
    """umap.layouts.optimize_layout_euclidean (sample by sample, numba) on the same graph, start,
    epochs and learning rate: the same trustworthiness within 0.01 and the clusters as separate."""
    from learnviz.analysis import numba_cache
    numba_cache.cache_kernels()
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import make_epochs_per_sample
    x, labels, d, graph, start = blobs
    a, b = umap_sgd.ab_params(0.1)
    for epochs, lr in ((200, 1.0), (200, 0.05)):
        g = graph.tocoo(copy=True)
        g.data[g.data < g.data.max() / epochs] = 0
        g.eliminate_zeros()
        y0 = (10 * (start - start.min(0)) / np.ptp(start, axis=0)).astype(np.float32)
        ref = y0.copy()                                  # umap moves head and tail: the same array
        ref = optimize_layout_euclidean(ref, ref, g.row, g.col, epochs, 200,
                                        make_epochs_per_sample(g.data, epochs), a, b,
                                        np.array([1, 2, 3], dtype=np.int64), initial_alpha=lr, move_other=True)
        ours = umap_sgd.optimize(graph, start, n_epochs=epochs, learning_rate=lr, min_dist=0.1, seed=0)
        t_ref, t_ours = knn.trustworthiness(d, ref, 15), knn.trustworthiness(d, ours, 15)
        assert abs(t_ref - t_ours) < 0.01, (epochs, lr, t_ref, t_ours)
        if lr == 1.0:
            assert _same_cluster_share(ours, labels) >= _same_cluster_share(ref, labels) - 0.01


def test_an_edge_pulls_its_ends_together():
    graph = scipy.sparse.coo_matrix(([1.0, 1.0], ([0, 1], [1, 0])), shape=(3, 3))   # 0 - 1; 2 alone
    start = np.array([[0.0, 0.0], [1.0, 1.0], [10.0, 10.0]])                        # already in [0, 10]
    y = umap_sgd.optimize(graph, start, n_epochs=50, learning_rate=1.0, min_dist=0.1, seed=0,
                          negative_sample_rate=0)
    assert np.linalg.norm(y[0] - y[1]) < 0.5 * np.sqrt(2)
    assert np.array_equal(y[2], start[2])               # no edge, no negative sample: it stays
    pushed = umap_sgd.optimize(graph, start, n_epochs=50, learning_rate=1.0, min_dist=0.1, seed=0)
    # negative samples push an edge's head from random points, its own tail among them
    assert np.linalg.norm(pushed[0] - pushed[1]) > np.linalg.norm(y[0] - y[1])
    assert np.array_equal(pushed[2], start[2])          # never a head: only heads are pushed


def test_coincident_starts_and_bad_input():
    graph = knn.fuzzy_graph(*knn.nearest(knn.pairwise_distances(np.eye(6), "euclidean"), 3), "euclidean")
    start = np.zeros((6, 2))
    start[3:] = 1.0                                     # two groups of three at one place each
    y = umap_sgd.optimize(graph, start, n_epochs=20, learning_rate=0.05, min_dist=0.1, seed=0)
    assert np.isfinite(y).all() and len(np.unique(y, axis=0)) == 6
    with pytest.raises(ValueError, match="finite"):
        umap_sgd.optimize(graph, np.full((6, 2), np.nan), n_epochs=5, learning_rate=0.05, min_dist=0.1, seed=0)
    with pytest.raises(ValueError, match="n_epochs"):
        umap_sgd.optimize(graph, start, n_epochs=0, learning_rate=0.05, min_dist=0.1, seed=0)
