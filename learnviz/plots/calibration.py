"""Calibration: the reliability diagram of one checkpoint (mean confidence vs accuracy per
confidence bin, with the number of probes per bin under it) and ECE over training.

Confidence is the `analysis` stage's top-label confidence (the product of the answer tokens'
top-1 probabilities); ECE is L1 over equal-width bins, as torchmetrics computes it. Bars below the
diagonal: the model is more confident than it is right (overconfident) in that bin.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .common import MAX_CHECKPOINTS, figure, no_data, title

VERSION = 2


def calibration_figure(step: int, bin_edges: np.ndarray, bin_confidence: np.ndarray, bin_accuracy: np.ndarray,
                       bin_count: np.ndarray, ece: float, steps: Sequence[int], eces: Sequence[float | None],
                       *, mce: float | None = None, brier: float | None = None) -> Figure:
    """`bin_edges`: (b + 1,) in [0, 1]; `bin_confidence`, `bin_accuracy`: (b,) NaN for empty
    bins; `bin_count`: (b,) probes per bin; `ece`, `mce`, `brier`: that checkpoint's summary.
    `steps`, `eces`: (k,) ECE per checkpoint (None/NaN where not analysed).
    ValueError when the bin arrays disagree in length."""
    edges = np.asarray(bin_edges, dtype=np.float64)
    conf = np.asarray(bin_confidence, dtype=np.float64)
    acc = np.asarray(bin_accuracy, dtype=np.float64)
    count = np.asarray(bin_count, dtype=np.int64)
    b = len(edges) - 1
    if b < 1 or conf.shape != (b,) or acc.shape != (b,) or count.shape != (b,):
        raise ValueError(f"calibration bins disagree: {len(edges)} edges, confidence {conf.shape}, "
                         f"accuracy {acc.shape}, count {count.shape}")
    fig = figure(13, 6.2)
    title(fig, f"Calibration: confidence vs accuracy at step {step}, and ECE over training")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.15])
    ax, ax_n = left.subplots(2, 1, sharex=True, height_ratios=[3.2, 1])
    centres = (edges[:-1] + edges[1:]) / 2
    width = np.diff(edges)
    filled = count > 0
    ax.plot([0, 1], [0, 1], ":", color="#555555", label="perfect calibration")
    ax.bar(centres[filled], acc[filled], width=width[filled] * 0.92, color="#1f77b4", alpha=0.75,
           label="accuracy in the bin")
    gap_lo = np.minimum(acc, conf)[filled]
    gap_hi = np.maximum(acc, conf)[filled]
    ax.bar(centres[filled], gap_hi - gap_lo, bottom=gap_lo, width=width[filled] * 0.92, color="none",
           edgecolor="#d62728", hatch="///", linewidth=0.8, label="gap to mean confidence")
    ax.plot(conf[filled], acc[filled], "o", color="black", markersize=3.5, label="(mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy in the bin (fraction right)")
    extra = "".join([f", MCE {mce:.3f}" if mce is not None and np.isfinite(mce) else "",
                     f", Brier {brier:.3f}" if brier is not None and np.isfinite(brier) else ""])
    ax.set_title(f"Reliability diagram, {b} equal-width bins: ECE {ece:.3f}{extra}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8.5)
    ax.grid(True, alpha=0.3)
    ax_n.bar(centres, count, width=width * 0.92, color="#7f7f7f")
    ax_n.set_yscale("symlog", linthresh=1)
    ax_n.set_ylabel("probes\n(count)")
    ax_n.set_xlabel("confidence in its own answer (probability, top-label)")
    ax_n.grid(True, axis="y", alpha=0.3)

    ax_e = right.subplots()
    s = np.asarray(steps, dtype=np.int64)
    e = np.asarray([np.nan if v is None else v for v in eces], dtype=np.float64)
    ok = np.isfinite(e)
    if ok.any():
        style = "-o" if ok.sum() <= MAX_CHECKPOINTS else "-"     # a dot per checkpoint while they stay apart
        ax_e.plot(s[ok], e[ok], style, color="#d62728", markersize=4, label="ECE")
        ax_e.axvline(step, color="#1f77b4", linestyle="--", linewidth=1, label=f"step {step} (left)")
        ax_e.set_ylim(0, max(0.05, float(e[ok].max()) * 1.15))
        ax_e.legend(loc="upper right")
        ax_e.grid(True, alpha=0.3)
    else:
        no_data(ax_e, "no ECE recorded yet")
    ax_e.set_title("Expected calibration error per checkpoint (0 = calibrated)", fontsize=10)
    ax_e.set_xlabel("training step")
    ax_e.set_ylabel("ECE (mean |confidence − accuracy|, probability)")
    return fig
