"""Representational similarity: how a checkpoint's probe geometry changes from one checkpoint to the next.

`similarity_matrix` turns one layer's probe embeddings into a cosine similarity matrix;
`geometry_drift` compares two such matrices (typically consecutive checkpoints, same layer,
same probes in the same order) by the Spearman correlation of their strict upper triangles,
the usual RSA comparison (Kriegeskorte et al. 2008; rsatoolbox's `compare(method="spearman")`).
Only ranks matter, so comparing similarities or dissimilarities (1 - similarity) gives the
same rho, and a layer whose overall scale or similarity level shifts but whose ordering of
probe pairs is kept has no drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

METHOD = "1-spearman(upper triangle)"


@dataclass(frozen=True)
class RSAResult:
    """Drift between two similarity matrices.

    rho:     Spearman correlation of the strict upper triangles, in [-1, 1]; NaN when undefined.
    drift:   1 - rho, in [0, 2]: 0 = same ordering of probe pairs, 1 = unrelated, 2 = reversed.
    n_pairs: probe pairs that entered the correlation (finite in both matrices).
    """
    method: str
    rho: float
    drift: float
    n_pairs: int


def similarity_matrix(emb: np.ndarray) -> np.ndarray:
    """Cosine similarity between every pair of probes.

    `emb`: (n, d) embeddings, any float dtype (float16 from the archive is fine: the products
    are taken in float64). Returns (n, n) float32, symmetric, values in [-1, 1], diagonal 1.
    A zero vector has similarity 0 with every probe, itself included (cosine is undefined
    there; 0 = "no direction" keeps the matrix NaN-free). A row with a NaN or infinite value
    (a diverged checkpoint, a float16 overflow) gets NaN in its row and column, which
    `geometry_drift` leaves out. n = 0 gives a (0, 0) matrix.
    """
    emb = np.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"emb must be 2-D (n_probes, hidden), got shape {emb.shape}")
    if emb.dtype.kind not in "fiub":
        raise ValueError(f"emb must be numeric, got dtype {emb.dtype}")
    x = emb.astype(np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    x[bad] = 0.0
    norm = np.linalg.norm(x, axis=1)
    # Zero rows stay zero after the division by 1, so their dot products (and similarities) are 0.
    unit = x / np.where(norm > 0, norm, 1.0)[:, None]
    sim = unit @ unit.T
    np.clip(sim, -1.0, 1.0, out=sim)
    np.fill_diagonal(sim, (norm > 0).astype(np.float64))
    sim[bad, :] = np.nan
    sim[:, bad] = np.nan
    return sim.astype(np.float32)


def geometry_drift(sim_a: np.ndarray, sim_b: np.ndarray) -> RSAResult:
    """Spearman drift between two (n, n) similarity (or dissimilarity) matrices of the same probes.

    rho = Pearson correlation of the ranks (ties get their average rank) of the strict upper
    triangles (i < j; the diagonal carries no information), drift = 1 - rho.
    Pairs that are NaN in either matrix are left out (rsatoolbox drops NaN pairs too, but
    insists they sit at the same places in both); `n_pairs` counts the rest.
    rho and drift are NaN when undefined: either triangle constant over those pairs (e.g.
    every probe embedded identically), or fewer than 2 pairs (n < 3).
    Different shapes, or a matrix that is not square, raise ValueError.
    """
    a, b = np.asarray(sim_a, dtype=np.float64), np.asarray(sim_b, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"sim_a must be a square (n, n) matrix, got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"similarity matrices differ in shape: {a.shape} vs {b.shape} "
                         "(same probes, same order, are needed)")
    iu = np.triu_indices(a.shape[0], k=1)
    ta, tb = a[iu], b[iu]
    keep = np.isfinite(ta) & np.isfinite(tb)
    ta, tb = ta[keep], tb[keep]
    rho = _pearson(rankdata(ta), rankdata(tb)) if ta.size >= 2 else float("nan")
    return RSAResult(method=METHOD, rho=rho, drift=1.0 - rho, n_pairs=int(ta.size))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """NaN (without a warning) when either input is constant."""
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x @ x) * (y @ y))
    if den == 0:
        return float("nan")
    return float(np.clip((x @ y) / den, -1.0, 1.0))
