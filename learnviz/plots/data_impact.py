"""Data impact: a source x skill heatmap of each training source's estimated impact on each skill's
accuracy (change per 1000 of its examples, learnviz.analysis.data_impact), red for a rise and blue
for a fall, with the sign and the significance written in each cell; beside it, the mix of sources
over the run's intervals, which says how much the estimate can tell (varied mixes or not)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from .common import figure, no_data, title

VERSION = 1


def _cell(b: float, se: float, p: float) -> str:
    if not np.isfinite(b):
        return "–"
    stars = "**" if p < 0.01 else "*" if p < 0.05 else ""
    return f"{b:+.3f}{stars}\n±{se:.3f}" if np.isfinite(se) else f"{b:+.3f}{stars}"


def data_impact_heatmap(sources: Sequence[str], skills: Sequence[str], beta: np.ndarray, stderr: np.ndarray,
                        p_value: np.ndarray, intervals: np.ndarray, mix: np.ndarray, per: float = 1000.0,
                        note: str = "", excluded_steps: Sequence[int] = (), n_permutations: int = 0) -> Figure:
    """`beta`, `stderr`, `p_value`: (sources, skills); `intervals`: (m, 2) steps; `mix`: (m, sources)
    examples per interval. NaN cells were not estimated (`note` says why). ValueError on a shape
    mismatch."""
    beta, stderr, p_value = (np.asarray(x, dtype=np.float64) for x in (beta, stderr, p_value))
    mix = np.asarray(mix, dtype=np.float64).reshape(len(intervals), len(sources)) if len(intervals) else \
        np.zeros((0, len(sources)))
    if beta.shape != (len(sources), len(skills)):
        raise ValueError(f"beta has shape {beta.shape}, expected (sources, skills) = {(len(sources), len(skills))}")
    fig = figure(max(9.0, 4.5 + 1.25 * len(skills)), max(4.2, 2.4 + 0.6 * len(sources)))
    title(fig, "Data impact: which training source moved which skill")
    ax, ax_mix = fig.subplots(1, 2, width_ratios=[max(2, len(skills)), 2.2])
    finite = beta[np.isfinite(beta)]
    if not len(finite):
        no_data(ax, "no impact estimated: " + (note or "no data"))
    else:
        lim = float(np.max(np.abs(finite))) or 1.0
        norm = TwoSlopeNorm(0.0, -lim, lim)
        im = ax.imshow(np.ma.masked_invalid(beta), cmap="RdBu_r", norm=norm, aspect="auto")
        for r in range(len(sources)):
            for c in range(len(skills)):
                dark = np.isfinite(beta[r, c]) and abs(beta[r, c]) > 0.6 * lim
                ax.text(c, r, _cell(beta[r, c], stderr[r, c], p_value[r, c]), ha="center", va="center",
                        fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(skills)), list(skills), rotation=30, ha="right")
        ax.set_yticks(range(len(sources)), list(sources))
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        cb.set_label(f"accuracy change per {per:.0f} examples\n(red: rose, blue: fell)")
        sub = (f"OLS over {len(intervals)} intervals, the progress all sources share (log step) taken out; "
               f"± standard error\n* p<0.05, ** p<0.01: the source's impact differs from the other sources' "
               f"(permutation test, {n_permutations} shuffles of the mixes)")
        ax.set_title(sub, fontsize=8)
        if note:
            ax.set_xlabel(note, fontsize=8)
    ax.set_ylabel("training source (data_log.jsonl)")
    # the mix: what the estimate had to work with
    if len(intervals):
        totals = mix.sum(axis=1, keepdims=True)
        shares = np.divide(mix, totals, out=np.zeros_like(mix), where=totals > 0)
        left = np.zeros(len(intervals))
        for j, name in enumerate(sources):
            ax_mix.barh(range(len(intervals)), shares[:, j], left=left, label=name, color=f"C{j}")
            left += shares[:, j]
        ax_mix.set_yticks(range(len(intervals)), [f"{a}→{b}" for a, b in np.asarray(intervals)], fontsize=7)
        ax_mix.invert_yaxis()
        ax_mix.set_xlim(0, 1)
        ax_mix.set_xlabel("share of the interval's examples")
        ax_mix.legend(fontsize=7, loc="lower right")
    else:
        no_data(ax_mix, "no interval")
    left_out = ", ".join(map(str, excluded_steps))
    ax_mix.set_title("mix per interval (steps)" + (f"\nleft out (health flags): {left_out}" if left_out else ""),
                     fontsize=8)
    return fig
