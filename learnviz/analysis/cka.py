"""Linear centred kernel alignment (CKA) between two representations of the same probes.

Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", eq. 5: with
X (n, d1) and Y (n, d2) column-centred,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

in [0, 1], invariant to orthogonal transforms and isotropic scaling of either side (not to
arbitrary invertible linear maps), and able to compare layers of different widths, e.g. the
same layer at two checkpoints or two layers at one checkpoint.
"""

from __future__ import annotations

import numpy as np

METHOD = "linear CKA (Kornblith et al. 2019), column-centred, float64"


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of `x` (n, d1) and `y` (n, d2), rows = the same n probes in the same order.

    Computed in float64 (float16 archive embeddings are fine). The feature-space form above
    is used when the features are few; when they outnumber the probes the same value comes,
    more cheaply, from the n x n Gram matrices: ||Y^T X||_F^2 = <X X^T, Y Y^T>_F and
    ||X^T X||_F = ||X X^T||_F. Returns a float in [0, 1]; NaN when undefined: n < 2, either
    side without variance (every probe embedded identically), or a NaN/inf in the input.
    Different n, or inputs that are not 2-D, raise ValueError.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"x and y must be 2-D (n_probes, features), got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows (probes): {x.shape[0]} vs {y.shape[0]}")
    n = x.shape[0]
    if n < 2:
        return float("nan")
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    # Every row the same: tested on the input, since the float64 mean of n equal values can
    # miss the value by an ulp (0.1 x 7), and centring would leave rounding noise with a CKA
    # of its own (1.0 against itself).
    if not (np.ptp(x, axis=0).any() and np.ptp(y, axis=0).any()):
        return float("nan")
    x -= x.mean(axis=0)
    y -= y.mean(axis=0)
    # Scale each side to unit Frobenius norm first: CKA does not change, and the fourth powers
    # below can neither overflow nor underflow.
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    x /= nx
    y /= ny
    d1, d2 = x.shape[1], y.shape[1]
    # Cost of the two forms in multiply-adds (up to the common factor n): pick the cheaper.
    if d1 * d2 + d1 * d1 + d2 * d2 <= n * (d1 + d2):
        cross = np.sum((y.T @ x) ** 2)
        den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    else:
        k, l_ = x @ x.T, y @ y.T
        cross = np.sum(k * l_)
        den = np.linalg.norm(k) * np.linalg.norm(l_)
    return float(np.clip(cross / den, 0.0, 1.0))
