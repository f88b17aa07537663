"""2-D layouts of the probe embeddings that stay comparable from one checkpoint to the next.

A UMAP run per checkpoint places the same probes anywhere: rotated, mirrored, shuffled between
runs, so an animation over checkpoints jumps even where the representation barely changed.
Methods (one chain per layer; call once per checkpoint, oldest first, passing the previous
checkpoint's coordinates of the same layer):

  "procrustes"  (default) each frame is a short, gentle UMAP run (200 epochs from learning
                rate 0.05, against umap's 500 from 1.0) initialised from the previous frame's
                coordinates (centred and scaled so the largest coordinate is 10, as umap scales
                its own spectral/PCA inits), then mapped onto the previous frame by orthogonal
                Procrustes (rotation or reflection + uniform scale + translation), so the axes
                and the scale stay put. The first frame is a cold UMAP refined once the same way.
                The refinement runs in numpy (analysis/knn.py: exact kNN and UMAP's fuzzy graph;
                analysis/umap_sgd.py: UMAP's optimiser, one vectorised step per epoch), so a
                frame that has a previous one neither imports umap nor compiles anything.
  "independent" a fresh UMAP per checkpoint, same seed (the baseline).
  "aligned"     umap.AlignedUMAP over the whole series at once (`aligned_series`): the
                smoothest, but about 5x the time per frame, and it refits every frame when a
                checkpoint arrives, so frames already shown change; "procrustes" needs only
                the previous frame, which suits checkpoints processed as training writes them.

Quality numbers on every frame: `trustworthiness` (sklearn.manifold.trustworthiness, the same
n_neighbors and metric as the UMAP: 1 = the 2-D neighbours were neighbours in the embedding
space; computed by knn.trustworthiness from the kNN's distance matrix, the same number) and
`disparity` to the previous frame (scipy.spatial.procrustes: the residual sum of squares after
the best similarity transform of both standardised layouts, in [0, 1]; 0 = the same picture up
to rotation/reflection/scale/shift; it ignores the alignment, so it measures how much the layout
itself moved). See bench/umap_methods.py for the numbers behind the default.

Cost (docs/performance.md): a frame refined from a previous one is numpy and scipy only, a few
tenths of a second for 500 probes, the same in a fresh process as in a warm one. umap serves a
first frame (the cold spectral fit), "independent" and "aligned", and metrics other than cosine
and euclidean or more than 4096 probes (there umap does everything, as before). It is imported
lazily (seconds); numba compiles its kernels on a process's first fit (~10 s) unless its on-disk
cache holds them (analysis/numba_cache.py: once per machine); `warm_up()` pays both up front.
The cold fits hand umap the exact kNN (precomputed_knn): umap neither builds nor compiles one.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import orthogonal_procrustes
from scipy.spatial import procrustes as _scipy_procrustes

from . import knn as _knn
from . import umap_sgd

METHODS = ("procrustes", "independent", "aligned")
DEFAULT_METRIC = "cosine"
INIT_SCALE = 10.0        # umap's own inits are scaled to a largest |coordinate| of 10
MIN_POINTS = 5
# Refinement from the previous frame: fewer epochs and a twentieth of umap's learning rate,
# so a frame moves where the neighbourhoods changed and stays put elsewhere. Chosen on the demo
# series (bench/umap_methods.py): disparity to the previous frame ~0.2x the independent
# baseline's, trustworthiness equal to it (0.981 vs 0.982); umap's own 500 epochs from 1.0 only
# reached ~0.6x (umap's SGD; the numpy optimiser: ~0.3x, docs/performance.md).
REFINE_EPOCHS = 200
REFINE_LEARNING_RATE = 0.05
# How a refinement is computed: part of the geometry stage key (learnviz/analyze.py), so that
# archives laid out by another implementation are redone. "numpy-1": exact kNN, UMAP's graph
# and optimiser in numpy (umap's numba SGD before; its layouts differ for the same seed).
REFINE_OPTIMIZER = "numpy-1"

_warm: set[str] = set()    # metrics whose kernels this process has compiled


@dataclass(frozen=True)
class Layout:
    """One frame: `coords` (n, 2) float32, one row per probe in input order.

    method: "procrustes" | "independent" | "aligned".
    params: what produced it: n_neighbors (requested), n_neighbors_used, min_dist, seed,
            metric, init ("spectral", "spectral+refine", "previous+refine"), refine_epochs,
            refine_learning_rate and refine_optimizer (procrustes: REFINE_OPTIMIZER, or "umap"
            where umap refines), knn ("exact": numpy's, or "umap"; not for aligned),
            alignment_* (aligned), trust_n_neighbors, umap_version.
    trustworthiness: in [0, 1] (as sklearn's, k = params["trust_n_neighbors"]); NaN when every
            probe is at one distance from every other (identical hidden states: no neighbours
            to keep, and the number would only say how ties were broken).
    disparity: scipy.spatial.procrustes disparity to the previous frame, in [0, 1];
            None for a first frame; NaN when either frame has all points at one place.
    """
    coords: np.ndarray
    method: str
    params: dict = field(default_factory=dict)
    trustworthiness: float = float("nan")
    disparity: float | None = None


def warm_up(metric: str = DEFAULT_METRIC) -> float:
    """Import umap and compile (or load from numba's on-disk cache) its kernels once per
    process; returns the seconds spent.

    Fits two tiny sets along every path `layout` takes with this metric (spectral init on a
    connected neighbour graph and on one in more than 4 pieces, which umap lays out through
    centroid distances, then a refinement from coordinates, which is numpy), so later fits of
    any size compile nothing. A second call in the same process returns about 0.
    """
    t0 = time.perf_counter()
    if metric in _warm:
        return time.perf_counter() - t0
    rng = np.random.default_rng(0)
    connected = rng.normal(size=(40, 8))
    # 6 tight clusters of 10 with n_neighbors = 10: 6 separate components.
    clusters = np.concatenate([rng.normal(size=(10, 8)) + 50 * np.eye(8)[i] for i in range(6)])
    for x in (connected, clusters):
        first = layout(x, None, method="procrustes", n_neighbors=10, metric=metric)
        layout(x, first.coords, method="procrustes", n_neighbors=10, metric=metric)
    _warm.add(metric)
    return time.perf_counter() - t0


def layout(emb: np.ndarray, previous: np.ndarray | None = None, *, method: str = "procrustes",
           n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0, metric: str = DEFAULT_METRIC,
           refine_epochs: int | None = REFINE_EPOCHS, refine_learning_rate: float = REFINE_LEARNING_RATE) -> Layout:
    """2-D coordinates for one checkpoint's embeddings of one layer.

    `emb`: (n, d) probe embeddings, any float dtype (fit in float32), n >= 5.
    `previous`: (n, 2) coordinates of the same probes at the previous checkpoint (this
    function's earlier output, same method), or None for the first frame.
    `method`:
      "procrustes": a refinement, i.e. a UMAP initialised from coordinates and run for
          `refine_epochs` epochs (None = umap's default, 500 below 10,000 points) from
          learning rate `refine_learning_rate` (umap's default: 1.0),
          starting from `previous`, then mapped onto `previous` by `align_to`. A first frame
          is a cold UMAP (spectral init, umap's defaults) refined once from itself, so that
          every frame of the chain comes out of the same optimiser settings: without that the
          first step of the chain moves further than the rest even on identical embeddings.
      "independent": a cold UMAP (spectral init, umap's defaults); `previous` only serves
          the disparity.
      ("aligned" fits a whole series: use `aligned_series`.)
    `metric`: embedding-space metric for UMAP and trustworthiness; cosine by default, the
    geometry rsa.similarity_matrix describes, and blind to the growth of hidden-state norms
    during training. n_neighbors is clipped to n - 1.
    Deterministic for a fixed seed (umap then runs single-threaded).
    Raises ValueError for a bad shape, fewer than 5 probes, NaN/inf embeddings (a diverged
    checkpoint), a `previous` of the wrong shape or not finite, or an unknown method.
    """
    if method == "aligned":
        raise ValueError('method "aligned" fits the whole series at once: call aligned_series(embs)')
    if method not in METHODS:
        raise ValueError(f"unknown layout method {method!r}; choose one of {METHODS}")
    x = _check_emb(emb)
    n = x.shape[0]
    prev = None
    if previous is not None:
        prev = np.asarray(previous, dtype=np.float64)
        if prev.shape != (n, 2):
            raise ValueError(f"previous must be ({n}, 2) coordinates of the same probes, got shape {prev.shape}")
        if not np.isfinite(prev).all():
            raise ValueError("previous coordinates contain NaN or inf")
    k = _neighbors(n_neighbors, n)
    params = _params(n_neighbors, k, min_dist, seed, metric, n)
    # numpy's exact kNN (and from it the graph, the refinement and the trustworthiness) where
    # it is cheap and the metric is one it knows; otherwise umap does everything, as before.
    dist = _knn.pairwise_distances(x, metric) if _numpy_path(metric, n) else None
    nn = _knn.nearest(dist, k) if dist is not None else None
    if method == "independent":
        coords = _fit(x, k, min_dist, seed, metric, "spectral", knn=nn)
        params.update(init="spectral")
    else:
        start = prev
        if start is None or _spread(start - start.mean(0)) == 0:
            start = _fit(x, k, min_dist, seed, metric, "spectral", knn=nn)
        if nn is not None:
            refined = umap_sgd.optimize(_knn.fuzzy_graph(*nn, metric), _scaled_init(start),
                                        n_epochs=refine_epochs or _default_epochs(n),
                                        learning_rate=refine_learning_rate, min_dist=min_dist, seed=seed)
        else:
            refined = _fit(x, k, min_dist, seed, metric, _scaled_init(start),
                           n_epochs=refine_epochs, learning_rate=refine_learning_rate)
        coords = align_to(refined, start)
        params.update(init="spectral+refine" if start is not prev else "previous+refine",
                      refine_epochs=refine_epochs, refine_learning_rate=float(refine_learning_rate),
                      refine_optimizer=REFINE_OPTIMIZER if nn is not None else "umap")
    params.update(knn="exact" if nn is not None else "umap")
    tk = params["trust_n_neighbors"]
    if dist is None:
        trust = _trust(x, coords, tk, metric)
    else:
        trust = float("nan") if _no_neighbours(x, dist, metric) else _knn.trustworthiness(dist, coords, tk)
    return Layout(coords=coords.astype(np.float32), method=method, params=params, trustworthiness=trust,
                  disparity=None if prev is None else disparity(prev, coords))


def aligned_series(embs: list, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
                   metric: str = DEFAULT_METRIC, alignment_regularisation: float = 1e-2,
                   alignment_window_size: int = 3) -> list[Layout]:
    """umap.AlignedUMAP over a whole series of one layer: one Layout per checkpoint, in order.

    `embs`: list of (n, d_t) embeddings of the same n probes in the same order (probe i of
    one frame is probe i of the next). All frames are fitted together, so adding a checkpoint
    changes every frame; the first call in a process compiles AlignedUMAP's own kernels (not
    covered by `warm_up`). An empty list gives []; a single frame is a plain UMAP (nothing
    to align). Raises ValueError when the frames differ in n or as `layout` does.
    """
    xs = [_check_emb(e) for e in embs]
    if not xs:
        return []
    n = xs[0].shape[0]
    if any(x.shape[0] != n for x in xs):
        raise ValueError(f"every frame must hold the same probes; got n = {[x.shape[0] for x in xs]}")
    k = _neighbors(n_neighbors, n)
    params = _params(n_neighbors, k, min_dist, seed, metric, n)
    params.update(init="spectral", alignment_regularisation=alignment_regularisation,
                  alignment_window_size=alignment_window_size)
    if len(xs) == 1:
        frames = [_fit(xs[0], k, min_dist, seed, metric, "spectral")]
    else:
        umap = _umap()
        mapper = umap.AlignedUMAP(n_neighbors=k, min_dist=min_dist, metric=metric, random_state=seed,
                                  alignment_regularisation=alignment_regularisation,
                                  alignment_window_size=alignment_window_size)
        identity = {i: i for i in range(n)}
        with _quiet():
            mapper.fit(xs, relations=[identity] * (len(xs) - 1))
        frames = [np.asarray(e, dtype=np.float64) for e in mapper.embeddings_]
    out = []
    for t, (x, c) in enumerate(zip(xs, frames)):
        out.append(Layout(coords=c.astype(np.float32), method="aligned", params=dict(params),
                          trustworthiness=_trust(x, c, params["trust_n_neighbors"], metric),
                          disparity=None if t == 0 else disparity(frames[t - 1], c)))
    return out


def align_to(coords: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`coords` (n, 2) mapped onto `target` (n, 2) by the similarity transform (rotation or
    reflection, uniform scale, translation) that minimises the squared distances; float64.
    Degenerate input (all points of either at one place) is only translated."""
    a = np.asarray(coords, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - ma, b - mb
    if _spread(a0) == 0 or _spread(b0) == 0:
        return a0 + mb
    r, s = orthogonal_procrustes(a0, b0)    # s = sum of singular values of a0^T b0
    return (s / np.sum(a0 ** 2)) * (a0 @ r) + mb


def disparity(a: np.ndarray, b: np.ndarray) -> float:
    """scipy.spatial.procrustes disparity of two (n, 2) layouts; NaN when either is degenerate."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if _spread(a - a.mean(0)) == 0 or _spread(b - b.mean(0)) == 0:
        return float("nan")
    return float(_scipy_procrustes(a, b)[2])


# -- helpers -----------------------------------------------------------------------------------

def _check_emb(emb) -> np.ndarray:
    x = np.asarray(emb)
    if x.ndim != 2:
        raise ValueError(f"emb must be 2-D (n_probes, hidden), got shape {x.shape}")
    if x.shape[0] < MIN_POINTS:
        raise ValueError(f"a layout needs at least {MIN_POINTS} probes, got {x.shape[0]}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf (a diverged checkpoint, or a float16 overflow)")
    return x


def _neighbors(n_neighbors: int, n: int) -> int:
    if int(n_neighbors) < 2:
        raise ValueError(f"n_neighbors must be at least 2, got {n_neighbors}")
    return min(int(n_neighbors), n - 1)


def _spread(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def _scaled_init(prev: np.ndarray) -> np.ndarray:
    c = prev - prev.mean(axis=0)
    return (c * (INIT_SCALE / _spread(c))).astype(np.float32)


def _params(n_neighbors, k, min_dist, seed, metric, n) -> dict:
    return {"n_neighbors": int(n_neighbors), "n_neighbors_used": k, "min_dist": float(min_dist),
            "seed": int(seed), "metric": metric,
            # sklearn needs k < n / 2
            "trust_n_neighbors": min(k, math.ceil(n / 2) - 1),
            "umap_version": _umap_version()}


def _umap_version() -> str:
    """umap's version without importing it (seconds: numba compiles some of it on import)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("umap-learn")
    except PackageNotFoundError:
        return "unknown"


def _numpy_path(metric: str, n: int) -> bool:
    return metric in _knn.METRICS and n <= _knn.EXACT_MAX_POINTS


def _default_epochs(n: int) -> int:
    return umap_sgd.DEFAULT_EPOCHS if n <= 10_000 else 200      # umap's n_epochs=None


def _fit(x, k, min_dist, seed, metric, init, *, n_epochs=None, learning_rate=1.0, knn=None) -> np.ndarray:
    """umap.UMAP(...).fit_transform(x); `knn` = (indices, distances) of the k nearest, itself
    included, hands umap the neighbours (precomputed_knn) so that it neither computes nor
    compiles its own."""
    umap = _umap()
    pre = (None, None, None) if knn is None else (np.array(knn[0][:, :k]), np.array(knn[1][:, :k], np.float32))
    mapper = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, metric=metric, random_state=seed,
                       init=init, n_epochs=n_epochs, learning_rate=learning_rate, precomputed_knn=pre)
    with _quiet():
        return np.asarray(mapper.fit_transform(x), dtype=np.float64)


def _umap():
    """umap, with the kernels learnviz's fits compile cached on disk (analysis/numba_cache.py):
    compiled once per machine, not once per process."""
    from . import numba_cache
    numba_cache.cache_kernels()
    import umap
    return umap


def _no_neighbours(x: np.ndarray, dist: np.ndarray | None, metric: str = DEFAULT_METRIC) -> bool:
    """Every probe at one distance from every other, up to rounding (all hidden states equal;
    with `dist`, the embedding-space distances: also all parallel under cosine): trustworthiness
    is undefined."""
    if dist is not None:
        off = dist[~np.eye(len(dist), dtype=bool)]
        # rounding: cosine distances lie in [0, 2]; euclidean ones of equal rows are the square
        # roots of float noise on their squared norms
        tol = 1e-9 if metric == "cosine" else 1e-6 * max(1.0, float(np.abs(x).max()))
        return bool(off.size) and float(off.max() - off.min()) <= tol
    return not np.ptp(x, axis=0).any()


def _trust(x, coords, k: int, metric: str) -> float:
    if _no_neighbours(x, None):
        return float("nan")
    from sklearn.manifold import trustworthiness
    return float(trustworthiness(x, coords, n_neighbors=k, metric=metric))


class _quiet(warnings.catch_warnings):
    """umap warns on every seeded fit that the seed makes it single-threaded: we know."""

    def __enter__(self):
        super().__enter__()
        warnings.filterwarnings("ignore", message=r"n_jobs value .* overridden")
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")    # no search index: no transform
        return self
