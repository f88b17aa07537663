"""What every figure shares: an Agg figure, a deterministic PNG writer, text shortening, the skill
palette and an annotated heatmap.

Determinism: the same inputs give the same PNG bytes. Figures are `matplotlib.figure.Figure`
objects on their own Agg canvas (no pyplot, so no global figure state shared between calls or
threads), drawn with the bundled DejaVu fonts, and saved without the `Software` text chunk and
without any timestamp (matplotlib writes none to PNGs).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..common import write_atomic

DPI = 100
# Annotate heatmap cells with their value only while the numbers stay legible.
MAX_ANNOTATED_CELLS = 240
# Label at most this many rows/columns of a heatmap; the others get no tick label.
MAX_TICK_LABELS = 40     # = MAX_CHECKPOINTS: a binned axis keeps a label per bin
NAN_COLOR = "#d9d9d9"


def figure(width: float, height: float) -> Figure:
    """A blank figure of `width` x `height` inches on an Agg canvas, constrained layout."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def title(fig: Figure, text: str) -> None:
    """The figure's title: what it shows, bold, above every panel (details go into panel titles)."""
    fig.suptitle(text, fontsize=13, fontweight="bold")


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as an RGB PNG atomically (a temporary file in the same folder, then os.replace),
    so a dashboard serving the folder never sees half a file. Same figure -> same bytes.

    One Agg draw (which runs the constrained layout once) and Pillow's encoder, with no text
    chunks: `Figure.savefig` would draw twice (a dry run for the layout, then the real one)."""
    from PIL import Image
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]    # (height, width, 3) uint8; figures are opaque
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return write_atomic(path, buf.getvalue())


def shorten(text: str, width: int = 40) -> str:
    """`text` on one line (whitespace collapsed), cut to at most `width` characters with an
    ellipsis: long probe texts stay inside the figure."""
    one = " ".join(str(text).split())
    if len(one) <= width:
        return one
    if width < 1:
        return ""
    return one[: width - 1].rstrip() + "…"


def skill_colors(skills: Sequence[str]) -> dict[str, tuple]:
    """One colour per distinct skill, in first-seen order (tab10, then tab20 past ten skills, then
    tab20, tab20b and tab20c past twenty, then evenly spaced hues past sixty): a skill keeps its
    colour in every figure and every checkpoint of a run, and no two skills share one (tab20
    alone gave skills 1 and 21 the same colour)."""
    names = list(dict.fromkeys(str(s) for s in skills))
    if len(names) <= 20:
        cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
        return {name: cmap(i) for i, name in enumerate(names)}
    if len(names) <= 60:
        palette = [colormaps[m](k) for m in ("tab20", "tab20b", "tab20c") for k in range(20)]
    else:
        palette = [colormaps["hsv"](k / len(names)) for k in range(len(names))]
    return {name: palette[i] for i, name in enumerate(names)}


def tick_positions(n: int, max_labels: int = MAX_TICK_LABELS) -> np.ndarray:
    """Indices of the ticks to label among n rows or columns: all when few, else every k-th from
    the first (one stride, so that a reader counts on: rounded even spacing labelled block.1, 6,
    11 and hid every fifth) and the last, at most `max_labels` in all."""
    if n <= max_labels:
        return np.arange(n)
    stride = -(-(n - 1) // (max_labels - 1))        # ceil: the regular ticks and the last fit
    idx = np.arange(0, n, stride)
    if idx[-1] != n - 1:
        idx = np.append(idx[:-1] if n - 1 - idx[-1] < stride / 2 else idx, n - 1)
    return idx


# Checkpoints a heatmap or board draws as rows or columns: a screen shows about this many; a
# longer run is binned (means over runs of consecutive checkpoints) or thinned (evenly spaced).
MAX_CHECKPOINTS = 40
MAX_WIDTH = 24.0        # inches (2400 px): a figure wider than a screen is read by scrolling
MAX_HEIGHT = 10.0       # inches: a checkpoint-per-row heatmap taller than a screen is read by scrolling


def evenly_spaced(n: int, most: int) -> np.ndarray:
    """Indices of at most `most` of n items, evenly spaced, always the first and the last."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(most, 2)).round().astype(int))


def checkpoint_bins(k: int, most: int = MAX_CHECKPOINTS) -> np.ndarray:
    """Edges (most + 1,) of `most` bins of consecutive checkpoints among k (k > most)."""
    return np.linspace(0, k, most + 1).round().astype(int)


def bin_checkpoints(values: np.ndarray, steps: Sequence[int], axis: int, *, most: int = MAX_CHECKPOINTS,
                    reduce: str = "mean") -> tuple[np.ndarray, list[str], str]:
    """`values` with its checkpoint axis (`axis`, one entry per step) cut to at most `most`
    entries: consecutive checkpoints binned, each bin the mean (`reduce="max"`: the largest) of
    its finite values (NaN where it has none). Returns (values, one label per entry: "step" or
    "first–last step" of the bin, a note for the title: "" when nothing was binned)."""
    v = np.asarray(values, dtype=np.float64)
    k = len(steps)
    if k <= most:
        return v, [str(s) for s in steps], ""
    edges = checkpoint_bins(k, most)
    moved = np.moveaxis(v, axis, 0)
    out = np.full((most,) + moved.shape[1:], np.nan)
    for b in range(most):
        chunk = moved[edges[b]:edges[b + 1]]
        finite = np.isfinite(chunk)
        n = finite.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            if reduce == "max":
                out[b] = np.where(n > 0, np.where(finite, chunk, -np.inf).max(0), np.nan)
            else:
                out[b] = np.where(n > 0, np.where(finite, chunk, 0).sum(0) / np.maximum(n, 1), np.nan)
    labels = [f"{steps[edges[b]]}–{steps[edges[b + 1] - 1]}" if edges[b + 1] - edges[b] > 1 else str(steps[edges[b]])
              for b in range(most)]
    what = "the largest" if reduce == "max" else "the mean"
    note = f"{k} checkpoints binned into {most} (each {what} of ~{k / most:.0f} consecutive checkpoints)"
    return np.moveaxis(out, 0, axis), labels, note


def heatmap(ax, values: np.ndarray, *, row_labels: Sequence[str], col_labels: Sequence[str],
            cmap: str, norm: Normalize, fmt: str | None = "{:.2f}", nan_text: str = ""):
    """Draw `values` (rows, cols) as cells, row 0 at the top, NaN cells grey. Cells are annotated
    with `fmt` when there are at most MAX_ANNOTATED_CELLS of them. Returns the image (for a
    colorbar)."""
    values = np.asarray(values, dtype=np.float64)
    cm = colormaps[cmap].with_extremes(bad=NAN_COLOR)
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
    rows, cols = values.shape
    ri, ci = tick_positions(rows), tick_positions(cols)
    ax.set_yticks(ri, [str(row_labels[i]) for i in ri])
    ax.set_xticks(ci, [str(col_labels[i]) for i in ci])
    ax.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if fmt is not None and rows * cols <= MAX_ANNOTATED_CELLS:
        for r in range(rows):
            for c in range(cols):
                v = values[r, c]
                if not math.isfinite(v):
                    if nan_text:
                        ax.text(c, r, nan_text, ha="center", va="center", fontsize=7.5, color="#555555")
                    continue
                rgba = cm(norm(v))
                light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.55
                text = fmt.format(v)
                if text.startswith("-") and not text.strip("-0.,"):
                    text = text[1:]          # "-0.0": a tiny negative that rounds to zero
                ax.text(c, r, text, ha="center", va="center", fontsize=7.5,
                        color="black" if light else "white")
    return im


def no_data(ax, message: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555555", wrap=True)
    ax.set_yticks([])   # x ticks stay: the axis may be shared with panels that have data
