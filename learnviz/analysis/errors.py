"""Error localization: at which answer position a wrong answer goes wrong, and how that moves
over training.

Two positions per probe, both 0-based answer-token indices:

- teacher_forced: the first position where the argmax of the next-token distribution, teacher
  forced on the expected answer, is not the expected token (-1 if the argmax path reproduces the
  whole answer);
- free: where the model's own greedy answer departs from the expected one (extraction's
  `first_divergence`), kept for wrong probes only (-1 for right ones: a right answer followed by
  harmless extra whitespace can have a departure, but nothing went wrong). A wrong probe whose
  greedy answer reproduces the expected tokens and stops still has first_divergence -1 (e.g. an
  expected answer that itself holds a stop string): such probes are counted in `unlocated`.

Greedy decoding follows the teacher-forced argmax path until it first leaves it, so for a wrong
probe the two positions agree, except when the whole answer is right but the model does not stop
after it: then teacher_forced is -1 and free is the answer length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..archive import Ragged

METHOD = "first departing answer position, teacher forced (argmax) and free (greedy)"


@dataclass(frozen=True)
class ErrorPositions:
    """Per-probe error positions of one checkpoint and the histogram of the free ones.

    `teacher_forced`, `free`: (n,) int64, see the module docstring. `max_len`: the longest
    expected answer in tokens. `histogram`: (max_len + 1,) int64, failed probes by `free`
    position; bin max_len collects positions >= max_len (a right answer that runs on).
    `failed`: number of wrong probes; `unlocated`: wrong probes without a departure position
    (not in the histogram, so histogram.sum() == failed - unlocated).
    """
    teacher_forced: np.ndarray
    free: np.ndarray
    max_len: int
    histogram: np.ndarray
    failed: int
    unlocated: int
    method: str = METHOD


@dataclass(frozen=True)
class ErrorTrend:
    """How the error positions changed between the first and last checkpoint.

    `steps`: (k,) sorted; `histograms`: (k, L) int64 in step order; `first`, `last`: (L,) counts
    at the first and last checkpoint; `change` = last - first. `improving`: positions with fewer
    errors at the last checkpoint than at the first, biggest drop first (ties: lower position
    first); `drop`: the drop at each of them (> 0).
    """
    steps: np.ndarray
    histograms: np.ndarray
    first: np.ndarray
    last: np.ndarray
    change: np.ndarray
    improving: np.ndarray
    drop: np.ndarray
    method: str = "error count per answer position, first vs last checkpoint"


def _check_ragged(r: Ragged, name: str) -> np.ndarray:
    offsets = np.asarray(r.offsets)
    if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or (np.diff(offsets) < 0).any() \
            or offsets[-1] != len(r.values):
        raise ValueError(f"{name}: offsets do not describe its values")
    return offsets


def localize_errors(answer_ids: Ragged, token_argmax: Ragged, first_divergence, correct) -> ErrorPositions:
    """Where each wrong answer departs from the expected one, teacher forced and free.

    `answer_ids`: Ragged int, expected answer tokens per probe. `token_argmax`: Ragged int, same
    row lengths, the teacher-forced argmax at each answer position. `first_divergence`: (n,) int,
    first position where the greedy answer departs (-1 if it equals the expected answer).
    `correct`: (n,) bool.

    ValueError on no probes, mismatched lengths or row lengths, or first_divergence < -1.
    """
    n = len(answer_ids)
    if n == 0:
        raise ValueError("localize_errors needs at least one probe, got none")
    off = _check_ragged(answer_ids, "answer_ids")
    if not np.array_equal(off, _check_ragged(token_argmax, "token_argmax")):
        raise ValueError("answer_ids and token_argmax must have the same rows (same offsets)")
    div = np.asarray(first_divergence)
    correct = np.asarray(correct)
    if div.shape != (n,) or correct.shape != (n,):
        raise ValueError(f"answer_ids has {n} probes but first_divergence has shape {div.shape} "
                         f"and correct {correct.shape}")
    if div.dtype.kind not in "iu" or correct.dtype.kind not in "biu":
        raise ValueError("first_divergence must be integers and correct bool")
    if (div < -1).any():
        raise ValueError("first_divergence must be -1 (no departure) or a position >= 0")
    correct = correct.astype(bool)

    lengths = np.diff(off)
    max_len = int(lengths.max())
    rows = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(rows)) - np.repeat(off[:-1], lengths)
    miss = np.asarray(answer_ids.values) != np.asarray(token_argmax.values)
    teacher = np.full(n, max_len + 1, dtype=np.int64)
    np.minimum.at(teacher, rows[miss], pos[miss])   # first miss per row
    teacher[teacher > max_len] = -1

    free = np.where(correct, -1, div).astype(np.int64)
    located = free >= 0
    histogram = np.bincount(np.minimum(free[located], max_len), minlength=max_len + 1).astype(np.int64)
    failed = int((~correct).sum())
    return ErrorPositions(teacher_forced=teacher, free=free, max_len=max_len, histogram=histogram,
                          failed=failed, unlocated=failed - int(located.sum()))


def error_position_trend(steps, histograms) -> ErrorTrend:
    """Compare error-position histograms across checkpoints.

    `steps`: (k,) int training steps, any order, distinct. `histograms`: k arrays of equal
    length L (e.g. `ErrorPositions.histogram`, same probe set), in the order of `steps`. With one
    checkpoint first == last and nothing is improving.

    ValueError on no checkpoints, duplicate steps, a length mismatch or negative counts.
    """
    steps = np.asarray(steps)
    hists = [np.asarray(h) for h in histograms]
    if steps.ndim != 1 or len(steps) == 0:
        raise ValueError("error_position_trend needs at least one checkpoint")
    if len(hists) != len(steps):
        raise ValueError(f"{len(steps)} steps but {len(hists)} histograms")
    if len(np.unique(steps)) != len(steps):
        raise ValueError(f"steps must be distinct, got {steps.tolist()}")
    if len({h.shape for h in hists}) != 1 or hists[0].ndim != 1:
        raise ValueError("histograms must be 1-d and of equal length (the same probe set), got shapes "
                         f"{sorted({h.shape for h in hists})}")
    order = np.argsort(steps, kind="stable")
    H = np.stack(hists)[order].astype(np.int64)
    if (H < 0).any():
        raise ValueError("histograms hold negative counts")
    first, last = H[0], H[-1]
    change = last - first
    improving = np.nonzero(change < 0)[0]
    improving = improving[np.lexsort((improving, change[improving]))]   # most negative first
    return ErrorTrend(steps=steps[order], histograms=H, first=first, last=last, change=change,
                      improving=improving.astype(np.int64), drop=-change[improving])
