"""Calibration of the model's confidence in its own answers: reliability bins, ECE, MCE, Brier.

Input is top-label confidence: for each probe the probability the model gives its own prediction
(learnviz records `answer_confidence`, the product of the top-1 probabilities over the answer
positions) and whether that prediction was right.

ECE: `n_bins` equal-width bins on [0, 1], top-label, L1, computed exactly as torchmetrics'
`binary_calibration_error(preds=confidence, target=correct, n_bins, norm="l1")` (torchmetrics
1.x, `_binning_bucketize`):

- bin edges are `torch.linspace(0, 1, n_bins + 1)` in the dtype of `confidence` (float32 stays
  float32). torch.linspace builds the upper half of the edges down from 1, so they differ from
  `np.linspace` in the last bit (np gives 0.6000000000000001 for 3/5, torch 0.6), which moves a
  confidence that sits on an edge into another bin;
- a confidence c goes to bin b with edges[b] <= c < edges[b + 1] (`bucketize(right=True) - 1`);
- so c == 1.0 lands past the last edge, in an extra bucket of its own that torchmetrics counts
  like any bin. It is reported here as `n_at_one` / `accuracy_at_one` and is part of ece, mce and
  gap, so that they equal torchmetrics'. The `bin_*` arrays hold the `n_bins` bins proper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD = "top-label calibration, equal-width bins, L1 ECE (bins as torchmetrics binary_calibration_error)"
DIRECTIONS = ("overconfident", "underconfident", "calibrated")


@dataclass(frozen=True)
class Calibration:
    """Reliability bins and summary errors of one checkpoint.

    `bin_edges`: (n_bins + 1,) float64; `bin_confidence`, `bin_accuracy`: (n_bins,) float64 mean
    confidence and accuracy per bin, NaN for empty bins; `bin_count`: (n_bins,) int64.
    `n_at_one`, `accuracy_at_one`: the bucket of confidences exactly 1.0 (see the module docstring;
    accuracy NaN when empty). Weights w_b are counts / n over all buckets.
    `ece` = sum_b w_b |conf_b - acc_b|; `mce` = max_b |conf_b - acc_b| over non-empty buckets;
    `brier` = mean((confidence - correct)^2); `gap` = sum_b w_b (conf_b - acc_b), signed, which
    equals mean confidence - accuracy (> 0: overconfident); `direction` is "calibrated" when
    |gap| < `tolerance`, else the sign of gap.
    """
    n_bins: int
    tolerance: float
    n: int
    bin_edges: np.ndarray
    bin_confidence: np.ndarray
    bin_accuracy: np.ndarray
    bin_count: np.ndarray
    n_at_one: int
    accuracy_at_one: float
    ece: float
    mce: float
    brier: float
    gap: float
    direction: str
    accuracy: float
    mean_confidence: float
    method: str = METHOD


def bin_edges(n_bins: int, dtype=np.float64) -> np.ndarray:
    """(n_bins + 1,) edges exactly as `torch.linspace(0, 1, n_bins + 1, dtype=dtype)`, as float64."""
    import torch  # imported here: only edges need it, and torch is slow to import

    tdtype = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}.get(
        np.dtype(dtype), torch.float64)
    return torch.linspace(0, 1, n_bins + 1, dtype=tdtype).double().numpy()


def calibration(confidence, correct, n_bins: int = 15, tolerance: float = 0.01) -> Calibration:
    """Reliability diagram data, ECE, MCE, Brier score and the direction of miscalibration.

    `confidence`: (n,) float in [0, 1], top-label confidence of the model's own prediction.
    `correct`: (n,) bool (or 0/1), whether that prediction was right.
    `n_bins`: equal-width bins on [0, 1]; bins and ECE as torchmetrics (module docstring).
    `tolerance`: |gap| below which the model counts as "calibrated".

    ValueError on empty input, mismatched shapes, NaN or confidences outside [0, 1] (torchmetrics
    would silently take those for logits and apply a sigmoid), non-0/1 `correct`, n_bins < 1.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    conf_in = np.asarray(confidence)
    corr_in = np.asarray(correct)
    if conf_in.ndim != 1 or corr_in.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-d, got shapes {conf_in.shape} and {corr_in.shape}")
    if conf_in.shape != corr_in.shape:
        raise ValueError(f"confidence has {conf_in.shape[0]} values but correct has {corr_in.shape[0]}")
    if conf_in.size == 0:
        raise ValueError("calibration needs at least one prediction, got none")
    if conf_in.dtype.kind not in "fiub":
        raise ValueError(f"confidence must be numeric, got dtype {conf_in.dtype}")
    conf = conf_in.astype(np.float64)   # exact for float16/32: same order, same bins
    if np.isnan(conf).any():
        raise ValueError(f"confidence has {int(np.isnan(conf).sum())} NaN values")
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError(f"confidence must lie in [0, 1], got values in [{conf.min():.6g}, {conf.max():.6g}]")
    if corr_in.dtype.kind not in "biuf" or not np.isin(corr_in, (0, 1)).all():
        raise ValueError("correct must be bool or 0/1")
    acc = corr_in.astype(np.float64)
    n = conf.size

    edges = bin_edges(int(n_bins), conf_in.dtype if conf_in.dtype.kind == "f" else np.float64)
    # edges[b] <= c < edges[b+1] (torch.bucketize(right=True) - 1); index n_bins holds c == 1.0
    idx = np.searchsorted(edges, conf, side="right") - 1
    counts = np.bincount(idx, minlength=n_bins + 1)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins + 1)
    acc_sum = np.bincount(idx, weights=acc, minlength=n_bins + 1)
    full = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_b = np.where(full, conf_sum / counts, np.nan)
        acc_b = np.where(full, acc_sum / counts, np.nan)
    w = counts / n
    diff = np.where(full, conf_b - acc_b, 0.0)
    gap = float(np.sum(w * diff))
    if abs(gap) < tolerance:
        direction = "calibrated"
    else:
        direction = "overconfident" if gap > 0 else "underconfident"
    return Calibration(
        n_bins=int(n_bins), tolerance=float(tolerance), n=n, bin_edges=edges,
        bin_confidence=conf_b[:n_bins], bin_accuracy=acc_b[:n_bins], bin_count=counts[:n_bins].astype(np.int64),
        n_at_one=int(counts[n_bins]), accuracy_at_one=float(acc_b[n_bins]),
        ece=float(np.sum(w * np.abs(diff))), mce=float(np.max(np.abs(diff[full]))),
        brier=float(np.mean((conf - acc) ** 2)), gap=gap, direction=direction,
        accuracy=float(acc.mean()), mean_confidence=float(conf.mean()))
