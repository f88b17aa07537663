"""Skill radar: accuracy per skill of one checkpoint (a filled polygon) over the base checkpoint's
(the run's first, a dashed outline) and, as the plan's "each checkpoint = polygon overlay", faint
outlines of up to TRAIL earlier checkpoints (fainter = older), one axis per skill, 0 % at the
centre, 100 % at the rim. Axis labels sit outside the rim, aligned away from it, so a long label
never crosses the polygon.

With fewer than three skills a polygon has no area, and past MAX_AXES the labels around the rim
run into each other (two lines each, 12 fit an 8-inch figure, 16 already touch): the same numbers
are then drawn as paired horizontal bars instead, in a figure that grows with the skills.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .common import figure, shorten, title

VERSION = 3          # 3: past MAX_AXES skills, bars (radars drawn before are redrawn)
CURRENT_COLOR = "#1f77b4"
BASE_COLOR = "#7f7f7f"
LABEL_WIDTH = 22
TRAIL = 6             # earlier checkpoints drawn as faint outlines, at most
MAX_AXES = 12         # most skills drawn as a polar radar; more are drawn as bars


def _values(names: Sequence[str], scores: Mapping[str, float] | None) -> np.ndarray | None:
    if scores is None:
        return None
    return np.asarray([float(scores.get(n, np.nan)) for n in names], dtype=np.float64)


def _pct(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{100 * v:.0f}%"


def skill_radar(current: Mapping[str, float], base: Mapping[str, float] | None, *, step: int,
                base_step: int | None = None, counts: Mapping[str, int] | None = None,
                earlier: Sequence[tuple[int, Mapping[str, float]]] = ()) -> Figure:
    """The radar of `current` (skill -> accuracy in [0, 1], in axis order) against `base` (same
    keys; None: no base polygon, e.g. the base checkpoint's analysis failed).

    `earlier`: (step, scores) of checkpoints between the base and this one, oldest first; the
    last TRAIL are drawn as faint outlines (polar radar only).

    `step`, `base_step`: training steps, for the title and legend. `counts`: skill -> number of
    probes, shown under each axis label. A NaN accuracy (no probes) is drawn at 0 and labelled n/a.
    ValueError when `current` is empty.
    """
    names = list(current)
    if not names:
        raise ValueError("skill_radar needs at least one skill score")
    cur = _values(names, current)
    ref = _values(names, base)
    is_base = base_step is not None and base_step == step
    polar = 3 <= len(names) <= MAX_AXES
    fig = figure(8.5, 8) if polar else figure(8.5, 2.2 + (1.1 if len(names) < 3 else 0.6) * len(names))
    vs = " (the base checkpoint)" if is_base else ("" if ref is None else f" vs base (step {base_step})")
    title(fig, f"Accuracy per skill at step {step}{vs}")

    def label(i: int) -> str:
        n = f" · {counts[names[i]]} probes" if counts and names[i] in counts else ""
        line2 = _pct(cur[i]) + ("" if ref is None or is_base else f" (base {_pct(ref[i])})")
        return f"{shorten(names[i], LABEL_WIDTH)}\n{line2}{n}"

    handles = [Patch(facecolor=CURRENT_COLOR, alpha=0.35, edgecolor=CURRENT_COLOR,
                     label=f"step {step} ({'the base: first checkpoint' if is_base else 'current'})")]
    if ref is not None and not is_base:
        handles.append(Line2D([], [], color=BASE_COLOR, linestyle="--", linewidth=1.8,
                              label=f"step {base_step} (base: the first checkpoint)"))
    trail = [(s, _values(names, sc)) for s, sc in list(earlier)[-TRAIL:]] if polar else []
    if trail:
        span = f"step {trail[0][0]}" if len(trail) == 1 else f"steps {trail[0][0]}–{trail[-1][0]}"
        handles.append(Line2D([], [], color=CURRENT_COLOR, alpha=0.45, linewidth=1.1,
                              label=f"earlier checkpoints, {span} (fainter = older)"))

    if not polar:
        ax = fig.add_subplot()
        y = np.arange(len(names))
        h = 0.38 if ref is not None and not is_base else 0.6
        ax.barh(y - (h / 2 if h < 0.5 else 0), 100 * np.nan_to_num(cur), height=h, color=CURRENT_COLOR, alpha=0.6)
        if ref is not None and not is_base:
            ax.barh(y + h / 2, 100 * np.nan_to_num(ref), height=h, color="none", edgecolor=BASE_COLOR,
                    linestyle="--", linewidth=1.5)
        ax.set_yticks(y, [label(i) for i in range(len(names))])
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("probes answered right (%)")
        ax.set_ylabel("skill")
        ax.grid(True, axis="x", alpha=0.3)
        fig.legend(handles=handles, loc="outside lower center", ncols=2)
        return fig

    ax = fig.add_subplot(projection="polar")
    fig.get_layout_engine().set(w_pad=0.15, h_pad=0.1)    # inches: the outer labels keep off the edge
    theta = np.linspace(0, 2 * np.pi, len(names), endpoint=False)
    ax.set_theta_offset(np.pi / 2)      # first skill at the top, then clockwise
    ax.set_theta_direction(-1)
    closed = np.append(theta, theta[0])

    def ring(v: np.ndarray) -> np.ndarray:
        v = np.nan_to_num(v, nan=0.0)
        return np.append(v, v[0])

    for k, (_, v) in enumerate(trail):
        ax.plot(closed, ring(v), "-", color=CURRENT_COLOR, linewidth=1.1, alpha=0.12 + 0.38 * (k + 1) / len(trail))
    if ref is not None and not is_base:
        ax.plot(closed, ring(ref), "--", color=BASE_COLOR, linewidth=1.8, marker="o", markersize=3)
    ax.fill(closed, ring(cur), color=CURRENT_COLOR, alpha=0.3)
    ax.plot(closed, ring(cur), "-", color=CURRENT_COLOR, linewidth=2.2, marker="o", markersize=4)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["25%", "50%", "75%", "100%"], color="#555555", fontsize=8)
    ax.set_rlabel_position(180 / len(names))   # between the first two axes, clear of the labels
    ax.set_xticks(theta, [""] * len(names))
    for i, t in enumerate(theta):           # clockwise from the top: x = sin t, y = cos t
        x, y = np.sin(t), np.cos(t)
        ax.text(t, 1.07, label(i), fontsize=9.5, clip_on=False,
                ha="left" if x > 0.15 else "right" if x < -0.15 else "center",
                va="bottom" if y > 0.15 else "top" if y < -0.15 else "center")
    fig.legend(handles=handles, loc="outside lower center", ncols=2,
               title="distance from the centre = probes answered right (%); one axis per skill")
    return fig
