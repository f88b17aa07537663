"""Representation geometry over training, per archived layer: RSA drift (1 - Spearman rho between
the probes' cosine-similarity matrices; 0 = the same ordering of probe pairs) and linear CKA (1 =
the same representation up to rotation and scale), each against the previous checkpoint (solid)
and the first one (dashed). From the `geometry` stage, via learning_history.jsonl."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .common import MAX_CHECKPOINTS, figure, no_data, title

VERSION = 2


def _series(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def geometry_figure(steps: Sequence[int], layers: Mapping[str, Mapping[str, Sequence[float | None]]]) -> Figure:
    """`steps`: (k,) ascending; `layers`: layer label -> {"drift_prev", "drift_first",
    "cka_prev", "cka_first"} -> (k,) values, None/NaN where undefined (the first checkpoint has
    no previous one)."""
    s = np.asarray(steps, dtype=np.int64)
    fig = figure(11, 8)
    title(fig, "Representation geometry over training: RSA drift and linear CKA per layer")
    ax_d, ax_c = fig.subplots(2, 1, sharex=True)
    panels = ((ax_d, "drift", "RSA drift = 1 − Spearman ρ\n(0 = same geometry, 1 = unrelated)"),
              (ax_c, "cka", "linear CKA\n(1 = same representation)"))
    any_data = False
    for i, (_label, m) in enumerate(layers.items()):
        color = f"C{i % 10}"
        for ax, kind, _ in panels:
            for ref, ls in (("prev", "-"), ("first", "--")):
                v = _series(m.get(f"{kind}_{ref}", [None] * len(s)))
                ok = np.isfinite(v)
                if ok.any():
                    dots = ref == "prev" and len(s) <= MAX_CHECKPOINTS     # dots while they stay apart
                    ax.plot(s[ok], v[ok], ls, color=color, marker="o" if dots else None, markersize=4)
                    any_data = True
    for ax, _kind, ylabel in panels:
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_d.set_ylim(bottom=0)
    ax_c.set_ylim(top=1.02)
    ax_d.set_title("How much the probes' similarity structure moved", fontsize=10)
    ax_c.set_title("How similar the representation stayed", fontsize=10)
    ax_c.set_xlabel("training step")
    if not any_data:
        no_data(ax_d, "no geometry yet (it needs two checkpoints)")
        return fig
    handles = [Line2D([], [], color=f"C{i % 10}", linewidth=2.5, label=str(label)) for i, label in enumerate(layers)]
    handles += [Line2D([], [], color="#333333", linestyle="-", marker="o", markersize=4,
                       label="vs the previous checkpoint"),
                Line2D([], [], color="#333333", linestyle="--", label="vs the first checkpoint")]
    fig.legend(handles=handles, loc="outside right center", title="layer · compared with")
    return fig
