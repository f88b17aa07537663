"""Data impact: which training data moved which skill, estimated from the run's own intervals.

For each interval between two consecutive (healthy) checkpoints we know the mix of sources trained
on (from data_log.jsonl: examples per source) and what changed: each skill's accuracy and each
probe category's mean answer log-probability. Over the m intervals, each target's change is
regressed on the mix (ordinary least squares):

    change_i = sum_s beta_s * n_is / 1000  +  delta * (log(step_b + 1) - log(step_a + 1))  +  error_i

n_is: examples of source s in interval i. beta_s is the source's impact: the change per 1000 of
its examples. The log-step term is the run's generic progress, common to every source (models
improve fastest early, whatever they train on): without it, a source trained on early would get
the credit for the fast early learning. It is left out (`progress=False`) or dropped when the
intervals are too few for it.

Uncertainty, two ways:
  stderr   the OLS standard error of beta_s (residual variance over m - p degrees of freedom);
  p_value  a permutation test of the source against the others: the intervals' compositions
           (shares of each source) are shuffled among the intervals, each keeping its own number
           of examples and its progress term, and the t-statistic of the contrast
           beta_s - mean(beta) (contrast over its OLS standard error) is recomputed;
           p = (1 + #{|shuffled t| >= |observed t|}) / (1 + n_permutations).
           Small p: the source's impact differs from the other sources' more than the mixes'
           order explains by chance.

Assumptions (docs/visualizations.md says when not to trust it): association, not causation (a
source that always comes with another, or always at the same stage of training, cannot be told
apart from it); the effect of an example is linear and the same all run long; intervals are
independent. It needs varied mixes: with one fixed mix the sources are collinear and no estimate
is made (`note` says why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

PER = 1000.0        # impacts are per this many examples
METHOD = ("OLS of each interval's change on the examples per source (per 1000), with a log-step progress term; "
          "OLS standard errors; permutation test of each source's contrast against the others")


@dataclass(frozen=True)
class Impact:
    """Per source x target: the estimated impact, its standard error and permutation p-value.

    `beta`, `stderr`, `p_value`: (n_sources, n_targets) float64, NaN when not estimated.
    `mix` (m, n_sources) examples per interval; `change` (m, n_targets); `intervals` (m, 2) steps.
    `note`: why nothing (or less) was estimated, "" otherwise."""
    sources: list[str]
    targets: list[str]
    intervals: np.ndarray
    mix: np.ndarray
    change: np.ndarray
    beta: np.ndarray
    stderr: np.ndarray
    p_value: np.ndarray
    progress: bool
    n_permutations: int
    note: str = ""
    per: float = PER
    method: str = METHOD
    dropped: list[str] = field(default_factory=list)   # sources never trained on in these intervals

    def ranking(self, target: str) -> list[str]:
        """Sources by impact on `target`, largest first (NaN last)."""
        j = self.targets.index(target)
        col = self.beta[:, j]
        return [self.sources[s] for s in sorted(range(len(self.sources)),
                                                key=lambda s: (not np.isfinite(col[s]), -np.nan_to_num(col[s])))]


def _ols(x: np.ndarray, y: np.ndarray, dof: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS of each column of y (m, g) on x (m, p): coefficients (p, g), (x'x)^-1 (p, p) and the
    residual variances (g,); coefficient k of column c has variance inv[k, k] * s2[c]."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    s2 = ((y - x @ coef) ** 2).sum(axis=0) / dof
    return coef, np.linalg.pinv(x.T @ x), s2


def _contrast_t(b: np.ndarray, inv: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """(n, g) t-statistics of each source's contrast beta_s - mean(beta) (the sources are the
    first n coefficients, b (n, g)). A zero standard error (an exact fit) gives +-inf, or 0 for a
    zero contrast."""
    n = b.shape[0]
    lmat = np.eye(n) - 1.0 / n
    c = lmat @ b
    var = np.outer(np.einsum("ij,jk,ik->i", lmat, inv[:n, :n], lmat), s2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = c / np.sqrt(np.clip(var, 0, None))
    return np.where(np.isnan(t), 0.0, t)


def data_impact(steps: Sequence[int], mix: np.ndarray, sources: Sequence[str], change: np.ndarray,
                targets: Sequence[str], *, progress: bool = True, n_permutations: int = 999,
                seed: int = 0) -> Impact:
    """The impact of each source on each target (see the module docstring).

    `steps`: (m + 1,) the checkpoints bounding the intervals, ascending. `mix`: (m, S) examples of
    each source per interval. `change`: (m, T) each target's change over each interval (NaN where
    unknown: that target is left out of that interval). Raises ValueError on mismatched shapes."""
    steps = np.asarray(steps, dtype=np.float64)
    mix = np.asarray(mix, dtype=np.float64)
    change = np.asarray(change, dtype=np.float64)
    sources, targets = list(sources), list(targets)
    m = max(len(steps) - 1, 0)
    if mix.shape != (m, len(sources)) or change.shape != (m, len(targets)):
        raise ValueError(f"data_impact: mix {mix.shape} and change {change.shape} must be "
                         f"({m}, sources={len(sources)}) and ({m}, targets={len(targets)}) "
                         f"for {len(steps)} checkpoints")
    used = [s for s in range(len(sources)) if mix[:, s].sum() > 0]
    dropped = [sources[s] for s in range(len(sources)) if s not in used]
    nan = np.full((len(sources), len(targets)), np.nan)
    intervals = np.stack([steps[:-1], steps[1:]], axis=1).astype(np.int64) if m > 0 else np.zeros((0, 2), np.int64)
    empty = dict(sources=sources, targets=targets, intervals=intervals, mix=mix.astype(np.int64), change=change,
                 beta=nan.copy(), stderr=nan.copy(), p_value=nan.copy(), n_permutations=0, dropped=dropped)
    if not used:
        return Impact(**empty, progress=False, note="no examples of any source fall between two checkpoints")
    x_src = mix[:, used] / PER
    log_gain = (np.log(steps[1:] + 1) - np.log(steps[:-1] + 1))[:, None]
    for prog in ((True, False) if progress else (False,)):
        x = np.hstack([x_src, log_gain]) if prog else x_src
        if m - x.shape[1] >= 2 and np.linalg.matrix_rank(x) == x.shape[1]:
            break
    else:
        p = len(used)
        why = (f"{m} intervals between checkpoints for {p} sources: it needs at least {p + 2}" if m < p + 2 else
               "the sources' examples per interval are collinear (one fixed mix, or a source that always comes "
               "with another): their impacts cannot be told apart; it needs varied mixes")
        return Impact(**empty, progress=False, note=why)

    beta, stderr, pval = nan.copy(), nan.copy(), nan.copy()
    rng = np.random.default_rng(seed)
    totals = mix[:, used].sum(axis=1, keepdims=True)
    shares = np.divide(mix[:, used], totals, out=np.zeros_like(mix[:, used]), where=totals > 0)
    perms = [rng.permutation(m) for _ in range(n_permutations)]
    notes: list[str] = []
    n = len(used)
    groups: dict[bytes, list[int]] = {}          # targets measured in the same intervals are fitted together
    for t in range(len(targets)):
        groups.setdefault(np.isfinite(change[:, t]).tobytes(), []).append(t)
    for key, ts in groups.items():
        ok = np.frombuffer(key, dtype=bool)
        xt, yt = x[ok], change[ok][:, ts]
        dof = int(ok.sum()) - x.shape[1]
        if dof < 1 or np.linalg.matrix_rank(xt) < x.shape[1]:
            notes += [targets[t] for t in ts]
            continue
        b, inv, s2 = _ols(xt, yt, dof)
        se = np.sqrt(np.clip(np.outer(np.diag(inv)[:n], s2), 0, None))
        t_obs = _contrast_t(b[:n], inv, s2)
        exceed = np.zeros((n, len(ts)))
        if n_permutations and n > 1:
            for perm in perms:
                xp = (shares[perm] * totals)[ok] / PER
                xp = np.hstack([xp, log_gain[ok]]) if prog else xp
                if np.linalg.matrix_rank(xp) < xp.shape[1]:
                    exceed += 1          # an uninformative shuffle counts against the source
                    continue
                bp, invp, s2p = _ols(xp, yt, dof)
                exceed += np.abs(_contrast_t(bp[:n], invp, s2p)) >= np.abs(t_obs) - 1e-12
        for k, t in enumerate(ts):
            for jj, src in enumerate(used):
                beta[src, t], stderr[src, t] = b[jj, k], se[jj, k]
                if n_permutations and n > 1:
                    pval[src, t] = (1 + exceed[jj, k]) / (1 + n_permutations)
    note = "" if not notes else f"not estimated (too few intervals with a value): {', '.join(notes)}"
    if dropped:
        note = "; ".join(filter(None, [note, f"never trained on between checkpoints: {', '.join(dropped)}"]))
    return Impact(sources=sources, targets=targets, intervals=intervals, mix=mix.astype(np.int64), change=change,
                  beta=beta, stderr=stderr, p_value=pval, progress=prog,
                  n_permutations=n_permutations if len(used) > 1 else 0, note=note, dropped=dropped)


def significant(impact: Impact, alpha: float = 0.05) -> np.ndarray:
    """(n_sources, n_targets) bool: permutation p-value below `alpha`."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(impact.p_value, nan=1.0) < alpha

