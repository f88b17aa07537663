"""Representation space: the probes' 2-D UMAP layout of one checkpoint, one panel per archived
layer, coloured by skill; filled markers for probes the checkpoint answers right, hollow for wrong.

The layouts come from the `geometry` stage (each checkpoint's layout starts from the previous one
and is Procrustes-aligned to it), so the same axes limits on every checkpoint make frames
comparable: `fixed_limits` computes one square box per layer over all checkpoints.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .common import figure, no_data, shorten, skill_colors, title

VERSION = 3            # 2: the legend in columns of LEGEND_ROWS; 3: no two skills share a colour
MARGIN = 0.05          # of the box's side, on each side
LEGEND_ROWS = 20       # legend entries per column: more ran off a 6.6-inch figure (40 skills lost 8)


def fixed_limits(coords: Iterable[np.ndarray], margin: float = MARGIN) -> tuple[float, float, float, float] | None:
    """One square box (xmin, xmax, ymin, ymax) holding every finite point of every (n, 2) array,
    with `margin` of its side added around; None when there is no finite point. Square, so that
    the equal-aspect panels show UMAP distances the same way on both axes."""
    pts = [np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in coords]
    pts = [p[np.isfinite(p).all(axis=1)] for p in pts]
    pts = [p for p in pts if len(p)]
    if not pts:
        return None
    allp = np.concatenate(pts)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    centre = (lo + hi) / 2
    half = max(float((hi - lo).max()) / 2, 1e-6) * (1 + 2 * margin)
    return (float(centre[0] - half), float(centre[0] + half), float(centre[1] - half), float(centre[1] + half))


def contains(limits: Sequence[float], coords: np.ndarray) -> bool:
    """True when every finite point of `coords` (n, 2) lies inside `limits` (xmin, xmax, ymin, ymax)."""
    p = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        return True
    x0, x1, y0, y1 = limits
    return bool((p[:, 0] >= x0).all() and (p[:, 0] <= x1).all() and (p[:, 1] >= y0).all() and (p[:, 1] <= y1).all())


def umap_scatter(step: int, layouts: Mapping[str, np.ndarray], skills: Sequence[str],
                 correct: np.ndarray | None, limits: Mapping[str, Sequence[float] | None], *,
                 notes: Mapping[str, str] | None = None) -> Figure:
    """One panel per entry of `layouts` (panel title -> (n, 2) coords, probes in probe-set order).

    `skills`: (n,) skill per probe (the colour); `correct`: (n,) bool or None (all filled);
    `limits`: panel title -> (xmin, xmax, ymin, ymax), the same for every checkpoint (None:
    fit this frame); `notes`: panel title -> a short line under it (e.g. trustworthiness).
    ValueError when a layout's rows do not match `skills`.
    """
    skills = [str(s) for s in skills]
    n = len(skills)
    colors = skill_colors(skills)
    panels = list(layouts)
    columns = -(-(len(colors) + 2) // LEGEND_ROWS)      # the skills and the two answer markers
    fig = figure(6.0 * max(len(panels), 1) + 2.2 * columns, 6.6)
    title(fig, f"Probe representations (UMAP of mean-pooled hidden states), step {step}")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    ok = np.ones(n, dtype=bool) if correct is None else np.asarray(correct, dtype=bool)
    if ok.shape != (n,):
        raise ValueError(f"correct has shape {ok.shape}, expected ({n},) like skills")
    color_rows = np.asarray([colors[s] for s in skills]) if n else np.zeros((0, 4))
    for ax, name in zip(axes, panels or [""]):
        if not name:
            no_data(ax, "no layout archived for this checkpoint")
            continue
        xy = np.asarray(layouts[name], dtype=np.float64)
        if xy.shape != (n, 2):
            raise ValueError(f"layout {name!r} has shape {xy.shape}, expected ({n}, 2): one row per probe")
        # wrong answers first, so the filled markers of right ones are not hidden under outlines
        ax.scatter(xy[~ok, 0], xy[~ok, 1], s=18, facecolors="none", edgecolors=color_rows[~ok], linewidths=0.9)
        ax.scatter(xy[ok, 0], xy[ok, 1], s=16, c=color_rows[ok], edgecolors="none", alpha=0.85)
        lim = limits.get(name) if limits else None
        if lim is not None:
            ax.set_xlim(lim[0], lim[1])
            ax.set_ylim(lim[2], lim[3])
        ax.set_aspect("equal", adjustable="box")
        sub = f"\n{notes[name]}" if notes and name in notes else ""
        ax.set_title(shorten(name, 60) + sub, fontsize=10)
        ax.set_xlabel("UMAP 1 (arbitrary units, same scale on every checkpoint)")
        ax.set_ylabel("UMAP 2 (arbitrary units)")
        ax.grid(True, alpha=0.2)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=c, label=shorten(s, 24))
               for s, c in colors.items()]
    handles += [Line2D([], [], linestyle="", marker="o", markersize=7, color="#333333", label="answered right"),
                Line2D([], [], linestyle="", marker="o", markersize=7, markerfacecolor="none",
                       markeredgecolor="#333333", label="answered wrong")]
    fig.legend(handles=handles, loc="outside right center", title="skill (colour)\nanswer (fill)", ncols=columns)
    return fig
