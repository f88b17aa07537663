"""Checkpoint health: a signal x checkpoint grid of robust z-scores against the trailing window of
healthy checkpoints (learnviz.analysis.health), with the flagged cells outlined and marked; the
weight flags (exploding, vanishing, dead layers) in a row of their own."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .common import MAX_WIDTH, bin_checkpoints, checkpoint_bins, figure, heatmap, no_data, title

VERSION = 2
# shown so that up is bad for every signal: an accuracy drop has a negative z
_SIGN = {"accuracy_drop": -1.0}


def health_timeline(steps: Sequence[int], signals: Sequence[str], z: np.ndarray,
                    flags: Sequence[Mapping[str, str]], z_threshold: float) -> Figure:
    """`z`: (signals, k) robust z-scores, NaN where not judged; `flags`: per checkpoint, flag -> why."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape != (len(signals), len(steps)):
        raise ValueError(f"z has shape {z.shape}, expected (signals, checkpoints) = {(len(signals), len(steps))}")
    rows = list(signals) + ["weight flags"]
    shown = np.vstack([z * np.asarray([[_SIGN.get(s, 1.0)] for s in signals]), np.full((1, len(steps)), np.nan)])
    # A long run: bins of consecutive checkpoints, each showing its worst z (a mean would hide the
    # one broken checkpoint the figure is for) and outlined when any checkpoint in it is flagged.
    shown, labels, note = bin_checkpoints(shown, list(steps), axis=1, reduce="max")
    flags = _binned_flags(flags, len(labels))
    fig = figure(min(MAX_WIDTH, max(10.0, 4.0 + 0.62 * len(labels))), 4.8)
    title(fig, "Checkpoint health: each signal against the run's recent healthy checkpoints"
          + (f"\n{note}; outlined: a flagged checkpoint in the bin" if note else ""))
    ax = fig.add_subplot()
    if not len(steps):
        no_data(ax, "no checkpoint")
        return fig
    lim = max(z_threshold * 1.5, float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0)
    im = heatmap(ax, np.clip(shown, -lim, lim), row_labels=rows, col_labels=labels,
                 cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), fmt="{:+.1f}", nan_text="–")
    for c, f in enumerate(flags):
        for r, s in enumerate(signals):
            if s in f:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.2))
        weights = [k.removeprefix("weights_") for k in f if k.startswith("weights_")]
        if weights:
            ax.text(c, len(signals), "/".join(weights), ha="center", va="center", fontsize=7, color="#b00000")
    ax.set_xlabel("checkpoint (training step); outlined: flagged; –: not judged (too early, or no value);\n"
                  "weight flags: layers exploding / vanishing / dead (thresholds, not z-scores)")
    ax.tick_params(axis="x", labelrotation=45)
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label(f"robust z-score, bad direction up\n(flagged beyond {z_threshold:g})")
    return fig


def _binned_flags(flags: Sequence[Mapping[str, str]], bins: int) -> list[dict[str, str]]:
    """The flags of each column: per checkpoint, or per bin (`checkpoint_bins`) their union."""
    if bins >= len(flags):
        return [dict(f) for f in flags]
    edges = checkpoint_bins(len(flags), bins)
    out = []
    for b in range(bins):
        merged: dict[str, str] = {}
        for f in flags[edges[b]:edges[b + 1]]:
            merged.update(f)
        out.append(merged)
    return out
