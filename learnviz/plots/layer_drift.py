"""Weight drift by layer: a layer x checkpoint heatmap of the relative weight change since the
previous checkpoint, ||W - W_prev|| / ||W_prev|| (Frobenius, the whole layer as one vector; the
`analysis` stage's `weights/change_prev`). Log colour scale: early changes are orders of
magnitude larger than late ones. The first checkpoint has no previous one (grey)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .common import MAX_WIDTH, bin_checkpoints, figure, heatmap, no_data, title

VERSION = 2


def layer_drift_heatmap(steps: Sequence[int], layers: Sequence[str], change: np.ndarray) -> Figure:
    """`steps`: (k,) ascending; `layers`: (L,) layer names in model order (embeddings first);
    `change`: (L, k) relative change, NaN where unknown (first checkpoint, weights gone).
    ValueError on a shape mismatch."""
    change = np.asarray(change, dtype=np.float64)
    if change.shape != (len(layers), len(steps)):
        raise ValueError(f"change has shape {change.shape}, "
                         f"expected (layers, checkpoints) = {(len(layers), len(steps))}")
    change, labels, note = bin_checkpoints(change, steps, axis=1)
    fig = figure(min(MAX_WIDTH, max(7.5, 2.5 + 0.62 * len(labels))), max(3.8, 1.9 + 0.42 * len(layers)))
    title(fig, "Weight drift by layer between consecutive checkpoints" + (f"\n{note}" if note else ""))
    ax = fig.add_subplot()
    pos = change[np.isfinite(change) & (change > 0)]
    if not len(layers) or not len(pos):
        no_data(ax, "no weight drift recorded "
                    "(the checkpoints' weight files were not available, or one checkpoint only)")
        ax.set_xlabel("checkpoint (training step)")
        ax.set_ylabel("layer")
        return fig
    lo, hi = float(pos.min()), float(pos.max())
    norm = LogNorm(lo, hi) if hi > lo * 1.5 else Normalize(0, hi)
    shown = (np.where(change > 0, change, np.where(np.isfinite(change), lo, np.nan)) if isinstance(norm, LogNorm)
             else change)
    im = heatmap(ax, shown, row_labels=list(layers), col_labels=labels, cmap="magma_r",
                 norm=norm, fmt=None if note else "{:.3f}", nan_text="–")
    ax.set_xlabel("checkpoint (training step); first column: no previous checkpoint")
    ax.set_ylabel("layer (input at the top)")
    ax.tick_params(axis="x", labelrotation=45)
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label("relative change ‖W − W_prev‖ / ‖W_prev‖\n(log scale, dimensionless)")
    return fig
