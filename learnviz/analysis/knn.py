"""Exact nearest neighbours, UMAP's fuzzy neighbour graph and trustworthiness, in numpy.

What umap (numba) and sklearn compute for the layouts of `umap_layout`, without a JIT compiler:
a fresh process pays nothing to compile, and nothing imports umap or sklearn. Below a few
thousand points an exact kNN from the full distance matrix is cheap (umap itself goes exact
below 4096 points), and the graph and the trustworthiness reuse that matrix.

  pairwise_distances  (n, n) distances in float64, zero diagonal: "cosine" (1 - cosine
                      similarity, in [0, 2]; umap's convention for all-zero rows: 0 between two
                      of them, 1 to anything else) or "euclidean".
  nearest             the k nearest of every row of a distance matrix, itself included (at
                      distance 0, first), sorted by distance, ties to the lower index: what
                      umap's exact kNN (a stable argsort of each row) returns.
  fuzzy_graph         umap.umap_.fuzzy_simplicial_set from a kNN (smooth_knn_dist's binary
                      search for sigma, rho = the nearest non-zero distance, membership
                      exp(-(d - rho) / sigma), fuzzy union A + A^T - A * A^T), with umap's
                      defaults (local_connectivity 1, set_op_mix_ratio 1).
  trustworthiness     sklearn.manifold.trustworthiness from a precomputed distance matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

METRICS = ("cosine", "euclidean")
EXACT_MAX_POINTS = 4096       # above this, umap's own (approximate, pynndescent) neighbours
DISCONNECTION_DISTANCE = {"cosine": 2.0}    # umap cuts edges at >= this distance (bounded metrics)
SMOOTH_K_TOLERANCE = 1e-5     # umap.umap_ constants
MIN_K_DIST_SCALE = 1e-3
N_ITER = 64


def pairwise_distances(x: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(n, n) float64 distances between the rows of `x`, zero diagonal. Raises ValueError for a
    metric other than METRICS."""
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        zero = norms == 0
        xn = x / np.where(zero, 1.0, norms)[:, None]
        d = xn @ xn.T
        np.subtract(1.0, d, out=d)
        np.clip(d, 0.0, 2.0, out=d)
        if zero.any():
            d[zero, :] = 1.0
            d[:, zero] = 1.0
            d[np.ix_(zero, zero)] = 0.0
    elif metric == "euclidean":
        sq = np.einsum("ij,ij->i", x, x)
        d = x @ x.T
        d *= -2.0
        d += sq[:, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
    else:
        raise ValueError(f"no numpy distance for metric {metric!r}; choose one of {METRICS}")
    d += d.T                      # exactly symmetric (the two halves round differently)
    d *= 0.5
    np.fill_diagonal(d, 0.0)
    return d


def nearest(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (n, k) int64, distances (n, k) float64): the k smallest entries of every row of
    the (n, m) distance matrix `d`, in increasing distance, ties broken by the lower column index
    (exactly a stable argsort's first k)."""
    d = np.asarray(d)
    n, m = d.shape
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    if k == m:
        idx = np.argsort(d, axis=1, kind="stable")
        return idx, np.take_along_axis(d, idx, axis=1)
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    dist = np.take_along_axis(d, part, axis=1)
    # A row whose k-th distance is shared by a column left out of `part` has a tie at the
    # boundary: argpartition picked among the tied columns arbitrarily. Redo those rows stably.
    kth = dist.max(axis=1)
    tied = np.flatnonzero((d <= kth[:, None]).sum(axis=1) > k)
    order = np.lexsort((part, dist), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    if tied.size:
        idx[tied] = np.argsort(d[tied], axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


def smooth_knn_dist(dists: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """umap.umap_.smooth_knn_dist (local_connectivity 1, bandwidth 1), every row at once:
    (sigma, rho) per row of the (n, k) kNN distances (self first). rho is the smallest non-zero
    distance; sigma is found by binary search so that sum_j exp(-(d_j - rho) / sigma) over the
    neighbours after the first equals log2(k), then floored at 1e-3 times the mean distance."""
    d = np.asarray(dists, dtype=np.float64)
    n = d.shape[0]
    target = np.log2(k)
    positive = np.where(d > 0, d, np.inf)
    rho = positive.min(axis=1)
    rho[~np.isfinite(rho)] = 0.0
    excess = d[:, 1:] - rho[:, None]
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    mid = np.ones(n)
    todo = np.arange(n)
    for _ in range(N_ITER):
        if not todo.size:
            break
        e = excess[todo]
        with np.errstate(invalid="ignore"):
            psum = np.where(e > 0, np.exp(-np.maximum(e, 0.0) / mid[todo, None]), 1.0).sum(axis=1)
        done = np.abs(psum - target) < SMOOTH_K_TOLERANCE
        over = (psum > target) & ~done
        under = ~(psum > target) & ~done
        r = todo[over]
        hi[r] = mid[r]
        mid[r] = (lo[r] + hi[r]) / 2.0
        r = todo[under]
        lo[r] = mid[r]
        unbounded = np.isinf(hi[r])
        mid[r[unbounded]] *= 2.0
        r = r[~unbounded]
        mid[r] = (lo[r] + hi[r]) / 2.0
        todo = todo[~done]
    floor = np.where(rho > 0, MIN_K_DIST_SCALE * d.mean(axis=1), MIN_K_DIST_SCALE * d.mean())
    return np.maximum(mid, floor), rho


def fuzzy_graph(indices: np.ndarray, dists: np.ndarray, metric: str = "cosine") -> scipy.sparse.coo_matrix:
    """UMAP's symmetric fuzzy neighbour graph (n, n) from a kNN that includes every point itself
    (`nearest`'s output), as umap.umap_.fuzzy_simplicial_set builds it with the default
    local_connectivity and set_op_mix_ratio; float32 weights in (0, 1]."""
    idx = np.asarray(indices, dtype=np.int64)
    d = np.asarray(dists, dtype=np.float64)
    n, k = idx.shape
    cut = d >= DISCONNECTION_DISTANCE.get(metric, np.inf)
    if cut.any():                         # umap: the edge is dropped, its distance is inf
        idx = np.where(cut, -1, idx)
        d = np.where(cut, np.inf, d)
    sigma, rho = smooth_knn_dist(d, float(k))
    excess = d - rho[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        vals = np.where((excess <= 0) | (sigma[:, None] == 0), 1.0,
                        np.exp(-np.maximum(excess, 0.0) / sigma[:, None]))
    rows = np.repeat(np.arange(n), k)
    vals[idx == np.arange(n)[:, None]] = 0.0
    keep = (idx.ravel() >= 0) & (vals.ravel() > 0)
    a = scipy.sparse.csr_matrix((vals.ravel()[keep].astype(np.float32), (rows[keep], idx.ravel()[keep])),
                                shape=(n, n))
    at = a.T.tocsr()
    out = (a + at - a.multiply(at)).tocoo()
    out.eliminate_zeros()
    return out


def trustworthiness(dist_x: np.ndarray, coords: np.ndarray, k: int) -> float:
    """sklearn.manifold.trustworthiness with `dist_x` the (n, n) input-space distances: 1 minus
    the (normalised) ranks in the input space of each point's k nearest neighbours in the 2-D
    `coords` that are not among its k nearest in the input space. Needs k < n / 2."""
    dist_x = np.array(dist_x, dtype=np.float64)
    n = dist_x.shape[0]
    if not 1 <= k < n / 2:
        raise ValueError(f"k ({k}) must be at least 1 and less than n / 2 ({n / 2})")
    np.fill_diagonal(dist_x, np.inf)
    rank = np.empty((n, n), dtype=np.int64)       # rank[i, j]: j is i's rank[i, j]-th nearest
    rank[np.arange(n)[:, None], np.argsort(dist_x, axis=1, kind="stable")] = np.arange(1, n + 1)
    dc = pairwise_distances(coords, "euclidean")
    np.fill_diagonal(dc, np.inf)
    emb_idx, _ = nearest(dc, k)
    ranks = np.take_along_axis(rank, emb_idx, axis=1) - k
    t = float(ranks[ranks > 0].sum())
    return 1.0 - t * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))
