"""Linear CKA against its invariances, the HSIC/Gram-matrix formula and hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from learnviz.analysis.cka import linear_cka


def _rand(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _cka_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """Independent formula: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T, L = Y Y^T
    and HSIC(K, L) = tr(K H L H) / (n - 1)^2, H = I - 11^T / n (Kornblith et al. 2019, eq. 3)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_invariant_to_rotation_and_isotropic_scaling():
    x = _rand(0, 50, 8)
    q = ortho_group.rvs(8, random_state=1)
    assert linear_cka(x, x @ q * 3) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x + 5.0) == pytest.approx(1.0, abs=1e-12)      # centring removes offsets
    # ... but not to anisotropic scaling: that is a different representation.
    assert linear_cka(x, x * np.array([10.0] + [1.0] * 7)) < 0.9


def test_matches_the_gram_matrix_formula_in_both_code_paths():
    x, y = _rand(2, 40, 6), _rand(3, 40, 9)
    y[:, :6] += 0.8 * x                                  # partly shared structure
    want = _cka_hsic(x, y)
    assert 0.2 < want < 0.9
    assert linear_cka(x, y) == pytest.approx(want, abs=1e-12)            # feature-space form
    xw, yw = _rand(4, 12, 30), _rand(5, 12, 50)                          # wider than n: Gram form
    yw[:, :30] += xw
    assert linear_cka(xw, yw) == pytest.approx(_cka_hsic(xw, yw), abs=1e-12)


def test_float16_input_and_different_widths():
    x = _rand(6, 30, 16).astype(np.float16)
    y = np.concatenate([x.astype(np.float64), np.zeros((30, 4))], axis=1)   # zero columns add nothing
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-12)


def test_independent_random_features_between_zero_and_one():
    # Independent features still share chance correlations: CKA is small but positive, about
    # sqrt(d1 d2) / n = 0.055 for Gaussian features with n >> d (this draw: 0.046).
    v = linear_cka(_rand(7, 200, 10), _rand(8, 200, 12))
    assert 0.01 < v < 0.15


def test_hand_case_orthogonal_one_dimensional_features():
    # x and y each one feature, centred and uncorrelated: CKA = corr^2 = 0.
    x = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    y = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    assert linear_cka(x, y) == pytest.approx(0.0, abs=1e-15)
    # One feature each: CKA = squared Pearson correlation. corr([1,2,3,4], [1,3,2,4]) = 0.8.
    a = np.array([[1.0], [2.0], [3.0], [4.0]])
    b = np.array([[1.0], [3.0], [2.0], [4.0]])
    assert linear_cka(a, b) == pytest.approx(0.64, abs=1e-12)


def test_errors_and_undefined_cases():
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(_rand(9, 10, 3), _rand(10, 11, 3))
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(np.ones(10), np.ones((10, 2)))
    assert np.isnan(linear_cka(np.ones((10, 3)), _rand(11, 10, 3)))       # no variance
    # no variance, at a value whose float64 mean over 7 rows is off by an ulp: was 1.5e-33
    # (and 1.0 against itself), from the rounding noise left by centring
    const = np.full((7, 4), 0.1)
    assert np.isnan(linear_cka(const, _rand(16, 7, 4))) and np.isnan(linear_cka(const, const))
    assert np.isnan(linear_cka(_rand(12, 1, 3), _rand(13, 1, 3)))         # n = 1
    bad = _rand(14, 10, 3)
    bad[0, 0] = np.nan
    assert np.isnan(linear_cka(bad, _rand(15, 10, 3)))
