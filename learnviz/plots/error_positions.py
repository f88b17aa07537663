"""Error localization over training: for each checkpoint, how many wrong answers first depart
from the expected answer at each answer token position (the `analysis` stage's
`errors/histogram`, free greedy decoding). The last column collects answers that were right
token for token but did not stop (they ran on past the expected answer)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .common import MAX_HEIGHT, bin_checkpoints, figure, heatmap, no_data, tick_positions, title

VERSION = 4


def error_positions_figure(steps: Sequence[int], histograms: np.ndarray) -> Figure:
    """`steps`: (k,) ascending; `histograms`: (k, L + 1) counts of wrong answers per first
    departing position (0-based), the last column = ran on past an answer of L tokens.
    ValueError on a shape mismatch or negative counts."""
    h = np.asarray(histograms, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != len(steps):
        raise ValueError(f"histograms has shape {h.shape}, "
                         f"expected (checkpoints, positions) with {len(steps)} checkpoints")
    if (h[np.isfinite(h)] < 0).any():
        raise ValueError("histograms hold negative counts")
    width = h.shape[1]
    h, labels, note = bin_checkpoints(h, steps, axis=0)
    fig = figure(max(8, 4.2 + 0.75 * width), min(MAX_HEIGHT, max(4.5, 2.6 + 0.34 * len(labels))))
    title(fig, "Where wrong answers go wrong: first departing answer token, per checkpoint"
          + (f"\n{note}" if note else ""))
    ax = fig.add_subplot()
    if width == 0 or not len(steps):
        no_data(ax, "no error positions recorded")
        ax.set_xlabel("answer token position")
        ax.set_ylabel("checkpoint (training step)")
        return fig
    cols = [str(j) for j in range(width - 1)] + [f"≥{width - 1}\n(ran on)"]
    top = float(np.nanmax(h)) if np.isfinite(h).any() else 1.0
    im = heatmap(ax, h, row_labels=labels, col_labels=cols, cmap="Reds",
                 norm=Normalize(0, max(top, 1.0)), fmt=None if note else "{:.0f}", nan_text="–")
    totals = np.nansum(h, axis=1)
    right = ax.secondary_yaxis("right")
    rows = tick_positions(len(labels))
    right.set_yticks(rows, [f"{totals[i]:.0f}" for i in rows], fontsize=8)
    right.set_ylabel("row total: wrong answers at that checkpoint (count" + (", the bin's mean)" if note else ")"))
    ax.set_xlabel("answer token position where the greedy answer first departs (0-based)")
    ax.set_ylabel("checkpoint (training step)")
    fig.colorbar(im, ax=ax, shrink=0.9, pad=0.03).set_label("wrong answers (count)")
    return fig
