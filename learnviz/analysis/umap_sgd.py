"""UMAP's layout optimisation (umap.layouts.optimize_layout_euclidean) in numpy.

The same objective, edge schedule and step rule as umap: every epoch each edge whose turn has
come (edges are sampled in proportion to their weight, the strongest every epoch) pulls its two
ends together, and its head is pushed away from `negative_sample_rate` random points per
sample; gradients are clipped to [-4, 4] per coordinate and scaled by a learning rate that
decays linearly to 0. The one difference: umap applies the samples one after the other
(numba), this applies all of an epoch's samples at once, from the positions at the start of
the epoch (vectorised). With the small learning rate of a refinement (umap_layout: 0.05 over
200 epochs) the two agree in quality (docs/performance.md); nothing is compiled, so a fresh
process runs it at full speed. The negative samples come from numpy's PCG64 seeded with `seed`,
so a fixed seed gives the same layout (umap's own generator differs: not the same numbers).
"""

from __future__ import annotations

import numpy as np

# umap.umap_.find_ab_params(spread, min_dist) for the min_dist values learnviz uses, so that the
# common case needs no curve fit (scipy.optimize); others are fitted once per process.
_AB: dict[tuple[float, float], tuple[float, float]] = {
    (1.0, 0.1): (1.5769434603113077, 0.8950608781227859),
}
CLIP = 4.0
NEGATIVE_SAMPLE_RATE = 5
DEFAULT_EPOCHS = 500          # umap's n_epochs below 10,000 points (200 above)


def ab_params(min_dist: float, spread: float = 1.0) -> tuple[float, float]:
    """(a, b) of UMAP's low-dimensional similarity 1 / (1 + a d^(2b)): umap.umap_.find_ab_params."""
    key = (float(spread), float(min_dist))
    if key not in _AB:
        _AB[key] = fit_ab_params(min_dist, spread)
    return _AB[key]


def fit_ab_params(min_dist: float, spread: float = 1.0) -> tuple[float, float]:
    """umap.umap_.find_ab_params: least squares fit of 1 / (1 + a x^(2b)) to 1 below min_dist
    and exp(-(x - min_dist) / spread) above, on 300 points of [0, 3 spread]."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    params, _ = curve_fit(curve, xv, yv)
    return float(params[0]), float(params[1])


def optimize(graph, init: np.ndarray, *, n_epochs: int, learning_rate: float, min_dist: float,
             seed: int, gamma: float = 1.0, negative_sample_rate: int = NEGATIVE_SAMPLE_RATE) -> np.ndarray:
    """Optimise a 2-D layout of `graph` (UMAP's (n, n) fuzzy graph, any scipy sparse format)
    from `init` (n, 2) for `n_epochs` epochs from `learning_rate`; returns (n, 2) float64.

    As umap.umap_.simplicial_set_embedding does with an array init: edges weaker than
    max / n_epochs are dropped, coincident rows of `init` are jittered (0.1 % of the mean
    nearest-neighbour distance) and each axis is scaled to [0, 10] first."""
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be at least 1, got {n_epochs}")
    rng = np.random.default_rng(seed)
    a, b = ab_params(min_dist)
    g = graph.tocoo(copy=True)
    g.sum_duplicates()
    n = g.shape[0]
    w = g.data.astype(np.float64)
    # umap drops the edges too weak to be sampled once in n_epochs (in 500 for 10 epochs or fewer)
    keep = w >= w.max() / float(n_epochs if n_epochs > 10 else DEFAULT_EPOCHS) if w.size else np.zeros(0, bool)
    head, tail, w = g.row[keep].astype(np.intp), g.col[keep].astype(np.intp), w[keep]
    y = _start(np.asarray(init, dtype=np.float64), rng)
    # float32 coordinates, as umap's: a third faster than float64 here, and the same quality
    x0, x1 = np.ascontiguousarray(y[:, 0], np.float32), np.ascontiguousarray(y[:, 1], np.float32)
    if not w.size:
        return np.stack([x0, x1], axis=1).astype(np.float64)

    every = w.max() / w                           # epochs between two samples of an edge
    every_neg = every / max(negative_sample_rate, 1)
    next_pos, next_neg = every.copy(), every_neg.copy()
    f32 = np.float32
    a32, b32, two_ab, two_gb = f32(a), f32(b), 2.0 * a * b, 2.0 * gamma * b
    alpha = float(learning_rate)
    for epoch in range(n_epochs):
        due = np.flatnonzero(next_pos <= epoch)
        if due.size:
            j, k = head[due], tail[due]
            next_pos[due] += every[due]
            if negative_sample_rate > 0:
                n_neg = ((epoch - next_neg[due]) / every_neg[due]).astype(np.intp)
                np.maximum(n_neg, 0, out=n_neg)
                next_neg[due] += n_neg * every_neg[due]
            else:
                n_neg = np.zeros(due.size, np.intp)
            jn = np.repeat(j, n_neg)
            src = np.concatenate([j, jn])
            dst = np.concatenate([k, rng.integers(0, n, jn.size)])
            m = j.size                            # the first m rows attract, the rest repel
            dx = x0.take(src)
            dx -= x0.take(dst)
            dy = x1.take(src)
            dy -= x1.take(dst)
            d2 = dx * dx
            d2 += dy * dy
            # the step per unit of difference, times alpha: attraction -2ab d^(2(b-1)) / (1 + a d^(2b)),
            # repulsion 2 gamma b / ((0.001 + d^2)(1 + a d^(2b)))
            with np.errstate(divide="ignore", invalid="ignore"):
                p = np.power(d2, b32)
                den = p * a32
                den += 1
                coef = np.empty_like(d2)
                np.divide(p[:m], d2[:m], out=coef[:m])
                coef[:m] *= f32(-two_ab * alpha)
                coef[:m] /= den[:m]
                rep = d2[m:] + f32(0.001)
                rep *= den[m:]
                np.divide(f32(two_gb * alpha), rep, out=coef[m:])
            coef[d2 <= 0] = 0                     # coincident points: no force (umap's rule)
            lim = f32(CLIP * alpha)               # umap clips the gradient at 4, before alpha
            dx *= coef
            np.clip(dx, -lim, lim, out=dx)
            dy *= coef
            np.clip(dy, -lim, lim, out=dy)
            to = np.concatenate([src, k])         # attraction moves the tail too (move_other)
            x0 += np.bincount(to, np.concatenate([dx, -dx[:m]]), minlength=n)
            x1 += np.bincount(to, np.concatenate([dy, -dy[:m]]), minlength=n)
        alpha = learning_rate * (1.0 - epoch / n_epochs)
    return np.stack([x0, x1], axis=1).astype(np.float64)


def _start(init: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if init.ndim != 2 or init.shape[1] != 2 or not np.isfinite(init).all():
        raise ValueError(f"init must be finite (n, 2) coordinates, got shape {init.shape}")
    y = init
    if len(np.unique(y, axis=0)) < len(y):
        from scipy.spatial import cKDTree
        dist, _ = cKDTree(y).query(y, k=2)
        y = y + rng.normal(scale=0.001 * np.mean(dist[:, 1]), size=y.shape)
    lo, span = y.min(axis=0), np.ptp(y, axis=0)
    return 10.0 * (y - lo) / np.where(span > 0, span, 1.0)
