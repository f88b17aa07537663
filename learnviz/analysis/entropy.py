"""Predictive entropy over the answer positions: where the model is unsure, and where it is
sure and wrong.

`token_entropy` (from extraction) holds, per probe, the entropy in nats of the next-token
distribution at each answer position, teacher forced on the expected answer. A probe's entropy
is the mean over its answer positions. Two flags per probe:

- overconfident: probe mean entropy < `low` and the greedy answer is wrong (sure, and wrong);
- uncertain: probe mean entropy > `high`.

For scale: a uniform distribution over V tokens has entropy ln V (6.0 nats for V = 400, 10.8 for
V = 50257); 0.3 nats is roughly one token at p ~ 0.95; 2.0 nats is about e^2 ~ 7 equally likely
tokens.

NaN entropies (a checkpoint whose logits overflowed) are left out of every mean; a probe with no
finite entropy (or no answer tokens) has probe mean NaN, raises neither flag and is left out of
its category's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..archive import Ragged

METHOD = "mean next-token entropy (nats) over teacher-forced answer positions"


@dataclass(frozen=True)
class EntropySummary:
    """Entropy by answer position, by probe and by category, and the flagged probes.

    `mean_by_position`: (max_len,) float64, mean entropy at answer position j over the probes
    that have a finite entropy there (NaN if none); `count_by_position`: (max_len,) int64, probes
    whose answer has a position j. `probe_mean`: (n,) float64. `mean_by_category`: category ->
    mean of its probes' means (each probe weighs the same, whatever its answer length), NaN if
    none is finite. `overconfident`, `uncertain`: (n,) bool, see the module docstring.
    """
    low: float
    high: float
    mean_by_position: np.ndarray
    count_by_position: np.ndarray
    probe_mean: np.ndarray
    mean_by_category: dict[str, float]
    overconfident: np.ndarray
    uncertain: np.ndarray
    n_overconfident: int
    n_uncertain: int
    method: str = METHOD


def ragged_row_means(r: Ragged) -> np.ndarray:
    """(n_rows,) mean of each row's finite values, NaN for rows with none (or empty rows)."""
    n = len(r)
    vals = np.asarray(r.values, dtype=np.float64)
    rows = np.repeat(np.arange(n), np.diff(r.offsets))
    ok = np.isfinite(vals)
    sums = np.bincount(rows[ok], weights=vals[ok], minlength=n)
    counts = np.bincount(rows[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def positions(r: Ragged) -> np.ndarray:
    """(total,) position of each value within its row."""
    lengths = np.diff(r.offsets)
    return np.arange(len(r.values)) - np.repeat(np.asarray(r.offsets[:-1]), lengths)


def entropy_summary(token_entropy: Ragged, correct, categories, low: float = 0.3,
                    high: float = 2.0) -> EntropySummary:
    """Summarise per-answer-position entropies of one checkpoint.

    `token_entropy`: Ragged, n rows of float entropies in nats, one per answer position.
    `correct`: (n,) bool, greedy answer right. `categories`: (n,) str, the grouping to average
    over (e.g. probe skill). `low` < `high`, both in nats.

    ValueError on no probes, mismatched lengths, or `low` > `high`.
    """
    n = len(token_entropy)
    if n == 0:
        raise ValueError("entropy_summary needs at least one probe, got none")
    correct = np.asarray(correct)
    categories = np.asarray(categories, dtype=object)
    if correct.shape != (n,) or categories.shape != (n,):
        raise ValueError(f"token_entropy has {n} probes but correct has shape {correct.shape} "
                         f"and categories {categories.shape}")
    if correct.dtype.kind not in "biu":
        raise ValueError(f"correct must be bool, got dtype {correct.dtype}")
    if not (np.isfinite(low) and np.isfinite(high)) or low > high:
        raise ValueError(f"need finite low <= high, got low={low!r}, high={high!r}")
    lengths = np.diff(token_entropy.offsets)
    if (lengths < 0).any() or token_entropy.offsets[-1] != len(token_entropy.values):
        raise ValueError("token_entropy offsets do not describe its values")

    vals = np.asarray(token_entropy.values, dtype=np.float64)
    max_len = int(lengths.max())
    pos = positions(token_entropy)
    count_by_position = np.bincount(pos, minlength=max_len).astype(np.int64)
    ok = np.isfinite(vals)
    pos_sum = np.bincount(pos[ok], weights=vals[ok], minlength=max_len)
    pos_n = np.bincount(pos[ok], minlength=max_len)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_by_position = np.where(pos_n > 0, pos_sum / np.maximum(pos_n, 1), np.nan)

    probe_mean = ragged_row_means(token_entropy)
    finite = np.isfinite(probe_mean)
    cat_str = categories.astype(str)
    by_cat = {}
    for cat in sorted(set(cat_str)):
        m = (cat_str == cat) & finite
        by_cat[str(cat)] = float(probe_mean[m].mean()) if m.any() else float("nan")
    # NaN compares False, so probes without a finite mean raise no flag
    with np.errstate(invalid="ignore"):
        overconfident = (probe_mean < low) & ~correct.astype(bool)
        uncertain = probe_mean > high
    return EntropySummary(
        low=float(low), high=float(high), mean_by_position=mean_by_position,
        count_by_position=count_by_position, probe_mean=probe_mean, mean_by_category=by_cat,
        overconfident=overconfident, uncertain=uncertain,
        n_overconfident=int(overconfident.sum()), n_uncertain=int(uncertain.sum()))
