"""Loss & metrics over training (the dashboard's first panel): training and evaluation loss,
probe-set accuracy (overall and per skill) and the learning rate, one point per checkpoint."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .common import MAX_CHECKPOINTS, figure, no_data, shorten, skill_colors, title

VERSION = 5            # 4: no two skills share a colour past twenty (common.skill_colors); 5: legend columns
LEGEND_ROWS = 15       # skill legend entries per column: one column of 41 squashed every panel to a sliver


def _finite(steps: np.ndarray, values) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    ok = np.isfinite(v)
    return steps[ok], v[ok]


def loss_curve(steps: Sequence[int], losses: Mapping[str, Sequence[float | None]],
               accuracy: Sequence[float | None], skill_accuracy: Mapping[str, Sequence[float | None]],
               learning_rate: Sequence[float | None]) -> Figure:
    """Three stacked panels sharing the step axis.

    `steps`: (k,) checkpoint steps, ascending. `losses`: name -> (k,) loss in nats per token
    (e.g. "train_loss", "eval_loss"), None/NaN where not logged. `accuracy`: (k,) fraction of
    probes right; `skill_accuracy`: skill -> (k,) fraction right; `learning_rate`: (k,).
    A panel without any finite value says so instead of drawing an empty frame.
    """
    steps = np.asarray(steps, dtype=np.int64)
    columns = max(1, -(-(len(skill_accuracy) + 1) // LEGEND_ROWS))      # the skills and "all probes"
    fig = figure(10 + 2.2 * (columns - 1), 8.5)
    ax_loss, ax_acc, ax_lr = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 1.4])
    title(fig, "Loss and probe accuracy over training")

    # a marker per checkpoint while they can be told apart; lines alone over a long run
    dot = {"marker": "o", "markersize": 4} if len(steps) <= MAX_CHECKPOINTS else {}
    small = {"marker": "."} if len(steps) <= MAX_CHECKPOINTS else {}
    drawn = False
    styles = {"train_loss": ("training loss", "C0", "-"), "eval_loss": ("evaluation loss", "C3", "--")}
    for i, (name, values) in enumerate(losses.items()):
        x, y = _finite(steps, values)
        if len(x) == 0:
            continue
        label, color, ls = styles.get(name, (name.replace("_", " "), f"C{i + 4}", "-"))
        ax_loss.plot(x, y, ls, color=color, label=label, **dot)
        drawn = True
    if drawn:
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("loss (nats per token, log scale)")
        ax_loss.legend(loc="upper right")
        ax_loss.grid(True, which="both", alpha=0.3)
        ax_loss.set_title("Loss logged by the trainer at each checkpoint", fontsize=10)
    else:
        no_data(ax_loss, "no loss in the learning history (no trainer_state.json log at the checkpoints)")
        ax_loss.set_ylabel("loss (nats per token)")

    colors = skill_colors(list(skill_accuracy))
    for name, values in skill_accuracy.items():
        x, y = _finite(steps, values)
        if len(x):
            ax_acc.plot(x, 100 * y, "-", color=colors[name], linewidth=1.2, label=shorten(name, 24), **small)
    x, y = _finite(steps, accuracy)
    if len(x):
        ax_acc.plot(x, 100 * y, "-", color="black", linewidth=2.4, label="all probes", **dot)
    ax_acc.set_ylim(-3, 103)
    ax_acc.set_ylabel("probes answered right (%)")
    ax_acc.grid(True, alpha=0.3)
    if len(x) or skill_accuracy:
        ax_acc.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), title="skill", fontsize=9, ncols=columns)
    ax_acc.set_title("Greedy answers that match the expected answer", fontsize=10)

    x, y = _finite(steps, learning_rate)
    if len(x):
        ax_lr.plot(x, y, "-", color="#555555", label="learning rate", **small)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax_lr.grid(True, alpha=0.3)
    else:
        no_data(ax_lr, "no learning rate logged")
    ax_lr.set_ylabel("learning rate\n(dimensionless)")
    ax_lr.set_xlabel("training step")
    return fig
