"""Entropy per answer position over training: the mean entropy (nats) of the next-token
distribution at each answer position, teacher forced, over the probes whose answer has that
position (the `analysis` stage's `entropy/mean_by_position`). Log colour scale: a trained model
is near 0 on most positions, and what matters is which positions stay uncertain."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .common import MAX_HEIGHT, bin_checkpoints, figure, heatmap, no_data, title

VERSION = 3
FLOOR = 1e-3            # nats; lower means show as the floor of the log scale


def entropy_positions_figure(steps: Sequence[int], means: np.ndarray, counts: Sequence[int] | None = None) -> Figure:
    """`steps`: (k,) ascending; `means`: (k, L) nats, NaN where no probe has that position;
    `counts`: (L,) probes whose answer has position j (shown under the column). ValueError on a
    shape mismatch."""
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != len(steps):
        raise ValueError(f"means has shape {m.shape}, expected (checkpoints, positions) with {len(steps)} checkpoints")
    width = m.shape[1]
    m, labels, note = bin_checkpoints(m, steps, axis=0)
    fig = figure(max(8, 3.8 + 0.8 * width), min(MAX_HEIGHT, max(4.5, 2.6 + 0.34 * len(labels))))
    title(fig, "Uncertainty per answer position: mean next-token entropy over training"
          + (f"\n{note}" if note else ""))
    ax = fig.add_subplot()
    finite = m[np.isfinite(m)]
    if width == 0 or not len(finite):
        no_data(ax, "no entropy recorded")
        ax.set_xlabel("answer token position")
        ax.set_ylabel("checkpoint (training step)")
        return fig
    hi = max(float(finite.max()), FLOOR * 10)
    norm = LogNorm(FLOOR, hi, clip=True) if hi / FLOOR > 20 else Normalize(0, hi)
    cols = [f"{j}\n(n={counts[j]})" if counts is not None and j < len(counts) else str(j) for j in range(width)]
    im = heatmap(ax, np.where(np.isfinite(m), np.maximum(m, FLOOR), np.nan), row_labels=labels,
                 col_labels=cols, cmap="cividis", norm=norm, fmt=None if note else "{:.2f}", nan_text="–")
    ax.set_xlabel("answer token position (0-based; n = probes whose answer has that position)")
    ax.set_ylabel("checkpoint (training step)")
    fig.colorbar(im, ax=ax, shrink=0.9).set_label("mean entropy (nats; log scale, ln 2 = a coin flip)")
    return fig
