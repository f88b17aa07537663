"""The hard-example board ("rogues gallery"): one row per hard example, one column per
checkpoint, each cell right (green ✓) or wrong, coloured by the kind of error (the `series`
stage's hard_example_board.json); on the right, the step each example was first answered right
and whether it regressed later."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .common import MAX_CHECKPOINTS, MAX_WIDTH, evenly_spaced, figure, no_data, shorten, tick_positions, title

VERSION = 3          # 3: at most MAX_EXAMPLES rows
# cell value -> (colour, legend label, mark)
KINDS = {
    "right": ("#2ca02c", "right", "✓"),
    "wrong_polarity": ("#d62728", "wrong: polarity (yes/no, all/some/no…)", "✗"),
    "wrong_token": ("#ff7f0e", "wrong: a content word", "✗"),
    "malformed": ("#9467bd", "wrong: malformed or off-format", "✗"),
    "empty": ("#7f7f7f", "wrong: empty answer", "∅"),
}
MARKERS = {"✓": r"$\checkmark$", "✗": "x", "∅": r"$\emptyset$"}
PROMPT_WIDTH = 44
EXPECTED_WIDTH = 22
ANSWER_WIDTH = 24
# Most rows drawn: 2,500 hard examples made a 75,000-pixel-tall image that took 107 s and 2.4 GB
# to draw; the regressed ones come first, the json (and the dashboard) keep them all.
MAX_EXAMPLES = 120


def hard_example_board_figure(board: Mapping[str, Any]) -> Figure:
    """`board`: the content of hard_example_board.json (`steps` and `examples`, each with `id`,
    `prompt`, `expected`, `first_right`, `regressed` and one row per step with `correct` and
    `error_type`). Prompts and answers are shortened to fit. ValueError on rows that do not
    match the steps."""
    steps = [int(s) for s in board.get("steps", [])]
    examples = list(board.get("examples", []))
    many = ""
    if len(examples) > MAX_EXAMPLES:
        many = (f"\n{MAX_EXAMPLES} of {len(examples)} hard examples shown, those that regressed first "
                "(hard_example_board.json holds them all)")
        examples = sorted(examples, key=lambda ex: not ex.get("regressed"))[:MAX_EXAMPLES]
    kinds = list(KINDS)
    grid = np.full((len(examples), len(steps)), np.nan)
    for r, ex in enumerate(examples):
        rows = ex.get("rows", [])
        if [int(x["step"]) for x in rows] != steps:
            raise ValueError(f"hard example {ex.get('id')!r}: its rows are for steps "
                             f"{[x.get('step') for x in rows]}, the board's steps are {steps}")
        for c, row in enumerate(rows):
            kind = "right" if row.get("correct") else (row.get("error_type") or "malformed")
            grid[r, c] = kinds.index(kind if kind in KINDS else "malformed")

    shown = evenly_spaced(len(steps), MAX_CHECKPOINTS)      # a long run: evenly spaced columns
    grid = grid[:, shown]
    note = (f"\n{len(shown)} of {len(steps)} checkpoints shown, evenly spaced (the first and the latest included); "
            "first right / regressed count every checkpoint" if len(shown) < len(steps) else "")
    steps = [steps[i] for i in shown]
    fig = figure(min(MAX_WIDTH, max(12, 9.5 + 0.55 * len(steps))), max(4.5, 2.2 + 0.3 * len(examples)))
    title(fig, "Hard-example board: each hard example at each checkpoint" + note + many)
    ax = fig.add_subplot()
    if not examples or not steps:
        no_data(ax, "no hard examples in the probe set (config/hard_examples.yaml)")
        ax.set_xlabel("checkpoint (training step)")
        ax.set_ylabel("hard example")
        return fig
    cmap = ListedColormap([v[0] for v in KINDS.values()])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(kinds) - 0.5, aspect="auto", interpolation="nearest")
    if grid.size <= 4000:
        # one marker collection per kind, not a text per cell: a board can have thousands of cells
        size = 40 if grid.size <= 600 else 16
        for k, (_, _, mark) in enumerate(KINDS.values()):
            r, c = np.nonzero(grid == k)
            if len(r):
                ax.scatter(c, r, s=size, marker=MARKERS[mark], color="white", linewidths=1.2)
    labels = [f"{shorten(ex.get('id', ''), 18)}: {shorten(ex.get('prompt', ''), PROMPT_WIDTH)} → "
              f"{shorten(ex.get('expected', ''), EXPECTED_WIDTH)}" for ex in examples]
    ax.set_yticks(np.arange(len(examples)), labels, fontsize=8)
    ci = tick_positions(len(steps))
    ax.set_xticks(ci, [str(steps[i]) for i in ci], rotation=45)
    ax.set_xticks(np.arange(len(steps) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(examples) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("checkpoint (training step)")
    ax.set_ylabel("hard example\n(id: prompt → expected)")

    right = ax.secondary_yaxis("right")
    notes = []
    for ex in examples:
        fr = ex.get("first_right")
        note = "never right" if fr is None else f"first right: step {fr}"
        last = (ex.get("rows") or [{}])[-1]
        if not last.get("correct", True):   # what it says now, when that is wrong
            note += f" · now: {shorten(repr(str(last.get('answer', ''))), ANSWER_WIDTH)}"
        notes.append(note + (" · regressed" if ex.get("regressed") else ""))
    right.set_yticks(np.arange(len(examples)), notes, fontsize=8)
    right.tick_params(length=0)
    for lbl, ex in zip(right.get_yticklabels(), examples):
        if ex.get("regressed"):
            lbl.set_color("#d62728")
    right.set_ylabel("first right at; now: latest wrong answer;\nregressed: wrong again later")

    handles = [Patch(facecolor=v[0], label=f"{v[2]} {v[1]}") for v in KINDS.values()]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8.5, title="cell")
    return fig
