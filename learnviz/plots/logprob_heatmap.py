"""Logprob trajectories as heatmaps: x = answer token position, y = checkpoint, colour = the
teacher-forced log-probability of the expected token (natural log; 0 = certain, ln 0.5 = -0.69
= a coin flip). Which tokens the model learns first shows as the columns that turn bright first.

`canonical_heatmap`: one answer (a chosen canonical probe), its tokens as column labels.
`category_heatmaps`: small multiples, one per probe category, the mean over the category's
probes that have that position (the `series` stage's trajectories/category_mean).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .common import MAX_HEIGHT, NAN_COLOR, bin_checkpoints, figure, heatmap, no_data, shorten, tick_positions, title

VERSION = 4     # 4: the category tiles' step labels as y ticks, a wider figure for few tiles
FLOOR = -12.0          # colour scale floor in nats (p ~ 6e-6): lower values show as the floor
MAX_PANELS = 36
TILE_CHECKPOINTS = 20   # rows of a category tile: a longer run is binned (up to 36 tiles share the page)
MIN_WIDTH = 10.0       # inches: the title (and its binning note) of a one-tile figure fit
CMAP = "viridis"
LABEL = "log p(expected token), nats (0 = certain)"


def _norm(values: np.ndarray) -> Normalize:
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if len(finite) else FLOOR
    return Normalize(vmin=max(FLOOR, math.floor(min(lo, -1.0))), vmax=0.0, clip=True)


def token_label(text: str) -> str:
    """A token as a column label: leading space shown as '␣', newline as '⏎', cut to 10 chars."""
    t = str(text).replace("\n", "⏎")
    if t.startswith(" "):
        t = "␣" + t[1:]
    return shorten(t, 10) or "''"


def canonical_heatmap(steps: Sequence[int], logprobs: np.ndarray, tokens: Sequence[str], *, probe_id: str,
                      prompt: str, expected: str) -> Figure:
    """`steps`: (k,) ascending; `logprobs`: (k, L) nats, one row per checkpoint; `tokens`: (L,)
    the expected answer's tokens. ValueError on a shape mismatch."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.shape != (len(steps), len(tokens)):
        raise ValueError(f"logprobs has shape {lp.shape}, expected (checkpoints, tokens) = {(len(steps), len(tokens))}")
    lp, rows, note = bin_checkpoints(lp, steps, axis=0)
    fig = figure(max(8, 3.5 + 0.9 * len(tokens)), min(MAX_HEIGHT, max(4.5, 2.6 + 0.32 * len(rows))))
    title(fig, "Per-token log-probability of a canonical answer over training" + (f"\n{note}" if note else ""))
    ax = fig.add_subplot()
    ax.set_title(f"{shorten(probe_id, 30)}: {shorten(prompt, 70)}\nexpected: {shorten(expected, 60)}", fontsize=9.5)
    if lp.size == 0:
        no_data(ax, "the expected answer has no tokens")
        return fig
    norm = _norm(lp)
    labels = [f"{j}\n{token_label(t)}" for j, t in enumerate(tokens)]
    im = heatmap(ax, lp, row_labels=rows, col_labels=labels, cmap=CMAP, norm=norm,
                 fmt=None if note else "{:.1f}")    # a bin's mean: the colour says it
    ax.set_xlabel("answer token (position, text; ␣ = leading space)")
    ax.set_ylabel("checkpoint (training step)")
    fig.colorbar(im, ax=ax, shrink=0.9).set_label(LABEL)
    return fig


def category_heatmaps(steps: Sequence[int], names: Sequence[str], values: np.ndarray) -> Figure:
    """`names`: (c,) categories; `values`: (c, k, w) mean logprob, NaN where no probe of the
    category has that position (grey). Shows the first MAX_PANELS categories (the title says so
    when there are more). ValueError on a shape mismatch.

    The small multiples are tiles of one axes (an image each, placed by `extent`), not one axes
    per category: a grid of axes costs a second of layout on every redraw."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3 or v.shape[:2] != (len(names), len(steps)):
        raise ValueError(f"values has shape {v.shape}, expected (categories, checkpoints, positions) with "
                         f"{len(names)} categories and {len(steps)} checkpoints")
    shown = min(len(names), MAX_PANELS)
    v, labels, note = bin_checkpoints(v, steps, axis=1, most=TILE_CHECKPOINTS)
    k, width = len(labels), v.shape[2]
    ncols = min(6, max(shown, 1))
    nrows = max(1, math.ceil(shown / ncols))
    # wide enough for the title and the axis labels however few the tiles
    fig = figure(max(2.3 * ncols + 1.8, MIN_WIDTH), 1.4 + (0.75 + 0.13 * k) * nrows)
    more = f" (first {shown} of {len(names)} categories)" if shown < len(names) else ""
    title(fig, f"Mean per-token log-probability of the expected answer, by probe category{more}"
          + (f"\n{note}" if note else ""))
    ax = fig.add_subplot()
    ax.set_xlabel("answer token position (0-based, within each tile)")
    ax.set_ylabel("checkpoint (training step, downwards within each tile)")
    if shown == 0 or width == 0 or k == 0:
        no_data(ax, "no category trajectories recorded")
        return fig
    norm = _norm(v[:shown])
    cmap = colormaps[CMAP].with_extremes(bad=(0, 0, 0, 0))     # NaN: the grey tile shows through
    # tile geometry in cell units: gaps between tiles, room above each for its name
    gap_x, gap_y = max(1.0, 0.18 * width), max(2.6, 0.3 * k)
    tile_w, tile_h = width + gap_x, k + gap_y
    im = None
    tiles = []
    step_rows = tick_positions(k, max_labels=3)
    step_ticks: list[tuple[float, str]] = []     # the steps of the first column's rows: y ticks, so that
    for i in range(shown):
        row, col = divmod(i, ncols)
        x0, y0 = col * tile_w, row * tile_h + gap_y
        tiles.append(Rectangle((x0, y0), width, k))
        im = ax.imshow(np.ma.masked_invalid(v[i]), cmap=cmap, norm=norm, interpolation="nearest",
                       extent=(x0, x0 + width, y0 + k, y0), aspect="auto", zorder=1)
        ax.text(x0 + width / 2, y0 - 0.25, shorten(names[i], 26), ha="center", va="bottom", fontsize=8.5)
        if col == 0:                             # the layout makes room for them beside the axis label
            step_ticks += [(y0 + j + 0.5, labels[j]) for j in step_rows]
        if row == nrows - 1 or i + ncols >= shown:
            for j in tick_positions(width, max_labels=8):
                ax.text(x0 + j + 0.5, y0 + k + 0.2, str(j), ha="center", va="top", fontsize=7)
    ax.add_collection(PatchCollection(tiles, facecolor=NAN_COLOR, edgecolor="none", zorder=0))
    ax.set_xlim(-0.2, ncols * tile_w - gap_x + 0.2)
    ax.set_ylim(nrows * tile_h + 1.2, 0)
    ax.set_xticks([])
    ax.set_yticks([y for y, _ in step_ticks], [text for _, text in step_ticks], fontsize=7)
    ax.tick_params(axis="y", length=0, pad=2)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.colorbar(im, ax=ax, shrink=0.8, aspect=30).set_label(
        f"{LABEL}\ngrey: no answer of the category is that long")
    return fig
