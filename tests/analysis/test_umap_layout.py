"""Stable UMAP layouts: shapes, stability on identical input, determinism, quality, no recompiling.

umap costs seconds to import and ~10 s of numba compilation per process: one module-scoped
warm-up pays it, and the few fits below (200 points, well under a second each) share it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.stats import ortho_group
from sklearn.datasets import make_blobs

from learnviz.analysis import umap_layout as ul


@pytest.fixture(scope="module")
def warm() -> float:
    return ul.warm_up()


@pytest.fixture(scope="module")
def blobs():
    x, labels = make_blobs(n_samples=200, n_features=16, centers=5, cluster_std=1.0, random_state=0)
    return x.astype(np.float16), labels     # float16, as the archive stores embeddings


@pytest.fixture(scope="module")
def first(warm, blobs):
    return ul.layout(blobs[0], None)


def _compiled_signatures() -> int:
    from numba.core.registry import CPUDispatcher
    return sum(len(v.signatures) for name, mod in list(sys.modules.items())
               if name.split(".")[0] in ("umap", "pynndescent")
               for v in list(vars(mod).values()) if isinstance(v, CPUDispatcher))


def test_warm_up_compiles_once(warm, blobs):
    assert warm > 0 and _compiled_signatures() > 0
    assert ul.warm_up() < 0.05                      # second call: nothing left to do
    before = _compiled_signatures()
    # Other sizes, 5 disconnected clusters (umap's multi-component spectral path), both methods.
    ul.layout(blobs[0][:150], None, method="independent")
    assert _compiled_signatures() == before


def test_first_frame_shape_params_and_quality(first, blobs):
    x, labels = blobs
    assert first.coords.shape == (200, 2) and first.coords.dtype == np.float32
    assert np.isfinite(first.coords).all()
    assert first.method == "procrustes" and first.disparity is None
    p = first.params
    assert (p["n_neighbors"], p["min_dist"], p["seed"], p["metric"]) == (15, 0.1, 0, "cosine")
    assert p["init"] == "spectral+refine"
    assert p["refine_epochs"] == ul.REFINE_EPOCHS and p["trust_n_neighbors"] == 15
    assert first.trustworthiness > 0.8
    # Well-separated clusters stay separated: every point's nearest 2-D neighbour is in its cluster.
    d = np.linalg.norm(first.coords[:, None] - first.coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).mean() > 0.98


def test_same_embedding_twice_barely_moves(first, blobs):
    second = ul.layout(blobs[0], first.coords)
    assert second.params["init"] == "previous+refine"
    assert second.disparity == pytest.approx(procrustes(first.coords, second.coords)[2])
    assert second.disparity < 0.05
    # Aligned onto the previous frame: the axes stay put, points move little relative to the spread.
    spread = np.linalg.norm(first.coords - first.coords.mean(0), axis=1).mean()
    assert np.linalg.norm(second.coords - first.coords, axis=1).mean() < 0.2 * spread


def test_deterministic_for_a_fixed_seed(first, blobs):
    again = ul.layout(blobs[0], None)
    assert np.array_equal(again.coords, first.coords)
    assert again.trustworthiness == first.trustworthiness


def test_align_to_recovers_a_similarity_transform():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(30, 2))
    q = ortho_group.rvs(2, random_state=1)          # rotation or reflection
    moved = 3.5 * target @ q + np.array([10.0, -4.0])
    np.testing.assert_allclose(ul.align_to(moved, target), target, atol=1e-10)
    assert ul.disparity(target, moved) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(ul.disparity(target, np.ones((30, 2))))              # all points at one place


def test_bad_input_raises_without_fitting():
    x = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match="aligned_series"):
        ul.layout(x, method="aligned")
    with pytest.raises(ValueError, match="unknown layout method"):
        ul.layout(x, method="tsne")
    with pytest.raises(ValueError, match=r"previous must be \(20, 2\)"):
        ul.layout(x, np.zeros((19, 2)))
    with pytest.raises(ValueError, match="at least 5"):
        ul.layout(x[:4])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ul.layout(bad)
    with pytest.raises(ValueError, match="same probes"):
        ul.aligned_series([x, x[:10]])
    assert ul.aligned_series([]) == []
