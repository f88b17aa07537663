"""Log-probability trajectories: how the probability of each expected answer token grows over
training, and when each token is learned.

Input is extraction's `token_logprob` (teacher forced, natural log) at every checkpoint of a
run, for the same probes and the same expected answer tokens.

A token counts as learned at step s when its probability exp(logprob) is above `threshold` at
the checkpoint of step s and at every later one (it is not learned if it dips below again): the
last crossing that sticks, not the first. A token above threshold at the first checkpoint is
learned at the first step; one below it at the last checkpoint is never learned (-1). With one
checkpoint this reduces to "above threshold now".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..archive import Ragged

METHOD = "teacher-forced answer-token logprob per checkpoint; learned = p > threshold from then on"


@dataclass(frozen=True)
class LogprobTrajectories:
    """Per-token logprob across checkpoints.

    `steps`: (k,) int64 ascending. `per_probe`: n arrays (k, len_i) float64, checkpoint x
    answer position. `category_mean`: category -> (k, max_len) float64 mean logprob over the
    category's probes that have that position (NaN where none does). `learned_at`: n arrays
    (len_i,) int64, the step from which exp(logprob) > threshold at every later checkpoint, -1
    if never. `order`: every (probe, position, learned_at step) sorted by learned_at (ties by
    probe, then position), never-learned last: order[:m] are the first tokens learned,
    order[:n_learned][-m:] the last. `n_learned`: tokens learned by the last checkpoint.
    """
    threshold: float
    steps: np.ndarray
    per_probe: list[np.ndarray]
    category_mean: dict[str, np.ndarray]
    learned_at: list[np.ndarray]
    order: list[tuple[int, int, int]]
    n_learned: int
    max_len: int
    method: str = METHOD


def logprob_trajectories(steps, token_logprobs: list[Ragged], categories,
                         threshold: float = 0.5) -> LogprobTrajectories:
    """Trajectories, category means and learning steps of the expected answer tokens.

    `steps`: (k,) int training steps, any order, distinct. `token_logprobs`: k Ragged (one per
    checkpoint, in the order of `steps`), n rows each of float logprobs; row i must have the
    same length in every checkpoint. `categories`: (n,) str. `threshold`: probability in (0, 1).

    NaN and +inf logprobs (no log-probability: an overflow, a broken checkpoint) stay as they are
    in `per_probe`, are left out of category means and never count as above threshold; -inf
    (probability 0) is kept, so a category mean can be -inf.
    ValueError on no checkpoints, duplicate steps, differing rows, a bad threshold.
    """
    steps = np.asarray(steps)
    k = len(token_logprobs)
    if k == 0 or steps.shape != (k,):
        raise ValueError(f"need at least one checkpoint and one step per checkpoint, got steps of shape "
                         f"{steps.shape} and {k} token_logprobs")
    if steps.dtype.kind not in "iu" or (steps < 0).any():
        raise ValueError(f"steps must be integers >= 0 (-1 means never learned), got {steps.tolist()}")
    if len(np.unique(steps)) != k:
        raise ValueError(f"steps must be distinct, got {steps.tolist()}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold is a probability in (0, 1), got {threshold!r}")
    categories = np.asarray(categories, dtype=object).astype(str)
    n = len(token_logprobs[0])
    if categories.shape != (n,):
        raise ValueError(f"token_logprobs have {n} probes but categories has shape {categories.shape}")
    offsets = np.asarray(token_logprobs[0].offsets)
    for j, r in enumerate(token_logprobs):
        if len(r) != n:
            raise ValueError(f"checkpoint {steps[j]} has {len(r)} probes, checkpoint {steps[0]} has {n}")
        if not np.array_equal(np.asarray(r.offsets), offsets):
            bad = np.nonzero(np.diff(np.asarray(r.offsets)) != np.diff(offsets))[0]
            raise ValueError(f"answer rows differ between checkpoints {steps[0]} and {steps[j]} "
                             f"(first differing probe: {int(bad[0]) if len(bad) else '?'}); "
                             "all checkpoints need the same probes and answer tokens")
        if offsets[-1] != len(r.values):
            raise ValueError(f"checkpoint {steps[j]}: offsets do not describe its values")
    order_k = np.argsort(steps, kind="stable")
    steps = steps[order_k].astype(np.int64)
    M = np.stack([np.asarray(token_logprobs[j].values, dtype=np.float64) for j in order_k])  # (k, total)

    lengths = np.diff(offsets)
    max_len = int(lengths.max()) if n else 0
    rows = np.repeat(np.arange(n), lengths)
    pos = np.arange(M.shape[1]) - np.repeat(offsets[:-1], lengths)

    learned_flat = learned_steps(above_threshold(M, threshold), steps)
    per_probe = [M[:, offsets[i]:offsets[i + 1]] for i in range(n)]
    learned_at = [learned_flat[offsets[i]:offsets[i + 1]] for i in range(n)]

    names = sorted(set(categories))
    token_cat = np.searchsorted(np.asarray(names, dtype=object), categories[rows]) if n else np.zeros(0, np.int64)
    means = category_means(M, token_cat, pos, len(names), max_len)     # (k, c, max_len)
    category_mean = {str(cat): means[:, c] for c, cat in enumerate(names)}

    never = learned_flat < 0
    order = [tuple(int(x) for x in t) for t in learning_order(learned_flat, rows, pos)]
    return LogprobTrajectories(threshold=float(threshold), steps=steps, per_probe=per_probe,
                               category_mean=category_mean, learned_at=learned_at, order=order,
                               n_learned=int((~never).sum()), max_len=max_len)


# The pieces, shared with the series stage's per-checkpoint rows (learnviz.series_stage), which
# keep `exp(logprob) > threshold` and the category means of each checkpoint instead of its logprobs.

def above_threshold(M: np.ndarray, threshold: float) -> np.ndarray:
    """exp(logprob) > threshold, elementwise; False for NaN and +inf (not a log-probability)."""
    M = np.asarray(M, dtype=np.float64)
    with np.errstate(over="ignore"):
        return (np.exp(M) > threshold) & (M < np.inf)


def learned_steps(above: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(total,) int64: per token, the step from which it is above threshold at every later
    checkpoint, -1 if never. `above`: (k, total) bool, checkpoints in the order of `steps`
    (ascending)."""
    k = len(steps)
    not_above = ~np.asarray(above, dtype=bool)
    # the last checkpoint at or below threshold; learned from the next one on
    last_bad = np.where(not_above.any(0), k - 1 - np.argmax(not_above[::-1], axis=0), -1)
    learned_idx = last_bad + 1
    return np.where(learned_idx < k, np.asarray(steps, dtype=np.int64)[np.minimum(learned_idx, k - 1)], -1)


def category_means(M: np.ndarray, token_cat: np.ndarray, pos: np.ndarray, n_cats: int, max_len: int) -> np.ndarray:
    """(k, n_cats, max_len): per checkpoint (row of M, (k, total) logprobs), category and answer
    position, the mean logprob over the category's tokens at that position that are not NaN or
    +inf (no log-probability); NaN where there is none. `token_cat`, `pos`: (total,) each token's
    category index and position."""
    M = np.asarray(M, dtype=np.float64)
    k = M.shape[0]
    out = np.full((k, n_cats, max_len), np.nan)
    if not n_cats or not max_len:
        return out
    cell = np.asarray(token_cat, dtype=np.int64) * max_len + np.asarray(pos, dtype=np.int64)
    ok = M < np.inf     # NaN, +inf: left out; -inf (probability 0) is a real value and stays in the mean
    size = n_cats * max_len
    for j in range(k):
        m = ok[j]
        s = np.bincount(cell[m], weights=M[j, m], minlength=size)
        c = np.bincount(cell[m], minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[j] = np.where(c > 0, s / np.maximum(c, 1), np.nan).reshape(n_cats, max_len)
    return out


def learning_order(learned_flat: np.ndarray, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(total, 3) int64 (probe, position, learned_at step) sorted by learned_at (ties by probe,
    then position), never-learned (-1) last."""
    never = learned_flat < 0
    key = np.where(never, np.iinfo(np.int64).max, learned_flat)
    idx = np.lexsort((pos, rows, key))
    return np.stack([np.asarray(rows)[idx], np.asarray(pos)[idx], np.asarray(learned_flat)[idx]], axis=1
                    ).astype(np.int64).reshape(-1, 3)
