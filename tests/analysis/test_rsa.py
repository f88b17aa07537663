"""RSA drift against hand cases, an independent Spearman (scipy.stats.spearmanr) and rsatoolbox."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr

from learnviz.analysis.rsa import METHOD, RSAResult, geometry_drift, similarity_matrix


def _emb(seed: int, n: int = 30, d: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_similarity_matrix_hand_case_float16_and_zero_vector():
    emb = np.array([[1, 0], [0, 2], [3, 3], [0, 0], [-1, 0]], dtype=np.float16)
    s = similarity_matrix(emb)
    r = 1 / np.sqrt(2)
    want = np.array([[1, 0, r, 0, -1],
                     [0, 1, r, 0, 0],
                     [r, r, 1, 0, -r],
                     [0, 0, 0, 0, 0],     # the zero vector: 0 everywhere, itself included
                     [-1, 0, -r, 0, 1]])
    assert s.dtype == np.float32 and s.shape == (5, 5)
    np.testing.assert_allclose(s, want, atol=1e-6)


def test_similarity_matrix_matches_scipy_cosine_distance():
    emb = _emb(0)
    np.testing.assert_allclose(similarity_matrix(emb), 1 - squareform(pdist(emb, "cosine")), atol=1e-6)


def test_similarity_matrix_edge_cases():
    assert similarity_matrix(np.zeros((0, 4))).shape == (0, 0)
    emb = _emb(1, n=4)
    emb[2, 0] = np.inf            # a float16 overflow, say
    s = similarity_matrix(emb)
    assert np.isnan(s[2]).all() and np.isnan(s[:, 2]).all()
    assert np.isfinite(np.delete(np.delete(s, 2, 0), 2, 1)).all()
    with pytest.raises(ValueError, match="2-D"):
        similarity_matrix(np.ones(5))


def test_drift_hand_cases_identical_and_reversed():
    s = similarity_matrix(_emb(2))
    same = geometry_drift(s, s)
    assert isinstance(same, RSAResult) and same.method == METHOD == "1-spearman(upper triangle)"
    assert same.rho == pytest.approx(1.0) and same.drift == pytest.approx(0.0)
    assert same.n_pairs == 30 * 29 // 2
    # Upper triangle 1..6 against 6..1: ranks exactly reversed, rho = -1, drift = 2.
    a, b = np.zeros((4, 4)), np.zeros((4, 4))
    iu = np.triu_indices(4, 1)
    a[iu] = [1, 2, 3, 4, 5, 6]
    b[iu] = [6, 5, 4, 3, 2, 1]
    rev = geometry_drift(a + a.T, b + b.T)
    assert rev.rho == pytest.approx(-1.0) and rev.drift == pytest.approx(2.0)
    # Only ranks count: a monotone transform of one side changes nothing.
    assert geometry_drift(a + a.T, np.exp(a + a.T)).drift == pytest.approx(0.0)


def test_drift_matches_scipy_spearmanr_on_the_triangles():
    e0 = _emb(3)
    e1 = e0 + 0.7 * _emb(4)          # a moderately changed geometry
    s0, s1 = similarity_matrix(e0), similarity_matrix(e1)
    i, j = np.where(np.tri(30, k=-1, dtype=bool).T)     # strict upper triangle, another way
    want = spearmanr(s0[i, j], s1[i, j]).statistic
    got = geometry_drift(s0, s1)
    assert 0.2 < want < 0.95          # a case where drift is neither 0 nor 1
    assert got.rho == pytest.approx(want, abs=1e-12) and got.drift == pytest.approx(1 - want, abs=1e-12)


def test_drift_nan_cases():
    const = np.ones((5, 5))
    r = geometry_drift(const, similarity_matrix(_emb(5, n=5)))
    assert np.isnan(r.rho) and np.isnan(r.drift) and r.n_pairs == 10
    assert np.isnan(geometry_drift(np.eye(2), np.eye(2)).rho)          # one pair only
    # A probe with a NaN row is left out of both sides; the rest still compares.
    e = _emb(6, n=8)
    bad = e.copy()
    bad[3] = np.nan
    r = geometry_drift(similarity_matrix(e), similarity_matrix(bad))
    assert r.n_pairs == 7 * 6 // 2 and r.drift == pytest.approx(0.0, abs=1e-12)


def test_drift_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        geometry_drift(np.eye(4), np.eye(5))
    with pytest.raises(ValueError, match="square"):
        geometry_drift(np.ones((3, 4)), np.ones((3, 4)))


def test_drift_matches_rsatoolbox_spearman():
    rsatoolbox = pytest.importorskip("rsatoolbox")
    from rsatoolbox.rdm import RDMs, compare

    e0 = _emb(7, n=40, d=24)
    e1 = e0 + 0.5 * _emb(8, n=40, d=24)
    rdms = [RDMs(dissimilarities=pdist(e, "cosine")[None, :], dissimilarity_measure="cosine") for e in (e0, e1)]
    want = float(compare(rdms[0], rdms[1], method="spearman")[0, 0])
    got = geometry_drift(similarity_matrix(e0), similarity_matrix(e1)).rho
    assert rsatoolbox is not None and got == pytest.approx(want, abs=1e-6)
