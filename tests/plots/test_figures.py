"""The figure functions on tiny inputs: titles, labelled axes, legends, edge cases, bad input,
and the deterministic PNG and GIF writers."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from learnviz.plots import (
    calibration,
    common,
    entropy_positions,
    error_positions,
    geometry,
    gif,
    hard_board,
    layer_drift,
    logprob_heatmap,
    loss_curve,
    skill_radar,
    umap_scatter,
)


def pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]


def texts(fig) -> str:
    """Every piece of text drawn in the figure, one string."""
    fig.canvas.draw()
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text())


def check_labelled(fig, *, legend: bool) -> None:
    """A title; every data panel names both axes (polar panels and colorbars aside); a legend
    when colours carry meaning; no text outside the canvas."""
    assert fig._suptitle is not None and fig._suptitle.get_text().strip()
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>" and ax.name != "polar"
              and (ax.images or ax.lines or ax.collections or ax.patches)]
    assert panels or any(ax.name == "polar" for ax in fig.axes)
    for ax in panels:
        shared_x = ax.get_shared_x_axes().get_siblings(ax)
        shared_y = ax.get_shared_y_axes().get_siblings(ax)
        assert any(a.get_xlabel() for a in shared_x), f"panel {ax.get_title()!r} has no x label"
        assert any(a.get_ylabel() for a in shared_y), f"panel {ax.get_title()!r} has no y label"
    if legend:
        assert fig.legends or any(ax.get_legend() for ax in fig.axes)
    px = pixels(fig)
    assert px.std() > 5, "blank figure"
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    for t in drawn_texts(fig):
        box = t.get_window_extent(renderer)
        assert box.x0 >= -2 and box.x1 <= width + 2 and box.y0 >= -2 and box.y1 <= height + 2, \
            f"text {t.get_text()[:40]!r} overflows the figure"


def drawn_texts(fig) -> list:
    """The text artists the figure draws: titles, labels, legends, annotations, and the tick
    labels of ticks inside the view (matplotlib keeps labels for ticks outside it, undrawn)."""
    out = [fig._suptitle, *fig.texts] + [t for lg in fig.legends for t in (lg.get_texts() + [lg.get_title()])]
    axes = list(fig.axes) + [c for ax in fig.axes for c in ax.child_axes]
    for ax in axes:
        if not ax.get_visible():
            continue
        out += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend():
            out += ax.get_legend().get_texts()
        if ax.name == "polar":
            out += ax.get_xticklabels()
            continue
        for axis, lim in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks():
                if lim[0] - 1e-9 <= tick.get_loc() <= lim[1] + 1e-9 and tick.label1.get_visible():
                    out += [tick.label1, tick.label2] if tick.label2.get_visible() else [tick.label1]
    return [t for t in out if t is not None and t.get_visible() and t.get_text()]


STEPS = [10, 20, 40]


# ---------------------------------------------------------------- common

def test_shorten():
    assert common.shorten("short", 10) == "short"
    assert common.shorten("a  b\n c", 10) == "a b c"
    out = common.shorten("No cats are dogs. All dogs bark. Do cats bark?", 20)
    assert out == "No cats are dogs. A…" and len(out) == 20
    assert common.shorten("abc", 0) == ""


def test_skill_colors_stable_and_distinct():
    c = common.skill_colors(["b", "a", "b", "c"])
    assert list(c) == ["b", "a", "c"] and len(set(c.values())) == 3
    assert common.skill_colors(["b", "a"])["a"] == c["a"]
    assert len(set(common.skill_colors([str(i) for i in range(15)]).values())) == 15


@pytest.mark.parametrize("n", [20, 40, 60, 100])
def test_skill_colors_distinct_past_twenty_skills(n):
    """tab20 repeated past twenty skills: with 40, skills 1 and 21 shared a colour in the UMAP and
    the loss curve's accuracy lines, and the legend could not tell them apart."""
    colors = common.skill_colors([f"skill_{i}" for i in range(n)])
    assert len(set(colors.values())) == n


def test_tick_positions_keep_first_and_last():
    assert common.tick_positions(5).tolist() == [0, 1, 2, 3, 4]
    t = common.tick_positions(100, max_labels=10)
    assert t.tolist() == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    # one stride (50 layers, 40 labels: every other one, not 0, 1, 3, 4, 5, 6, 8 ... with gaps)
    assert common.tick_positions(50, max_labels=40).tolist() == list(range(0, 49, 2)) + [49]
    assert common.tick_positions(41, max_labels=40).tolist() == list(range(0, 41, 2))
    for n in range(41, 400):
        t = common.tick_positions(n, max_labels=40)
        assert t[0] == 0 and t[-1] == n - 1 and len(t) <= 40 and len(set(np.diff(t[:-1]))) <= 1, n


def test_save_png_is_deterministic_and_carries_no_text_chunks(tmp_path):
    def make():
        return loss_curve.loss_curve(STEPS, {"train_loss": [3.0, 1.0, 0.5]}, [0.1, 0.5, 0.9], {}, [1e-3] * 3)
    a, b = common.save_png(make(), tmp_path / "a.png"), common.save_png(make(), tmp_path / "b.png")
    data = a.read_bytes()
    assert data == b.read_bytes()
    assert b"tEXt" not in data and b"tIME" not in data and b"Matplotlib" not in data
    assert not list(tmp_path.glob(".*.tmp"))
    with Image.open(a) as im:
        assert im.mode == "RGB" and im.size == (1000, 850)


# ---------------------------------------------------------------- figures

def test_loss_curve_labelled_and_without_losses():
    fig = loss_curve.loss_curve(STEPS, {"train_loss": [3.0, None, 0.5], "eval_loss": [3.2, 1.1, 0.6]},
                                [0.1, 0.5, 0.9], {"easy": [0.2, 0.6, 1.0], "hard": [0.0, 0.3, 0.7]}, [1e-3, 8e-4, 5e-4])
    check_labelled(fig, legend=True)
    assert "nats" in fig.axes[0].get_ylabel() and "%" in fig.axes[1].get_ylabel()
    train = fig.axes[0].lines[0]
    assert train.get_xdata().tolist() == [10, 40]          # the missing value is left out, not drawn as 0
    empty = loss_curve.loss_curve(STEPS, {}, [None] * 3, {}, [None] * 3)
    assert "no loss in the learning history" in texts(empty)


def test_skill_radar_polygons_and_labels():
    cur = {"syllo_easy": 1.0, "syllo_hard": 0.43, "edge_cases": 0.76, "hard_examples": float("nan")}
    base = {"syllo_easy": 0.0, "syllo_hard": 0.0, "edge_cases": 0.1, "hard_examples": 0.0}
    fig = skill_radar.skill_radar(cur, base, step=500, base_step=10, counts={"syllo_easy": 100})
    check_labelled(fig, legend=True)
    ax = fig.axes[0]
    assert ax.name == "polar" and ax.get_ylim() == (0.0, 1.0)
    current = ax.lines[-1].get_ydata()
    assert current.tolist() == [1.0, 0.43, 0.76, 0.0, 1.0]   # closed polygon, NaN drawn at 0
    text = texts(fig)
    assert "43% (base 0%)" in text and "n/a" in text and "100 probes" in text and "vs base (step 10)" in text


def test_skill_radar_outlines_earlier_checkpoints_and_keeps_labels_outside():
    names = ["syllo_easy", "syllo_medium", "syllo_hard", "edge_cases", "training_mix"]
    earlier = [(s, dict.fromkeys(names, s / 1000)) for s in range(20, 100, 10)]     # 8 earlier checkpoints
    fig = skill_radar.skill_radar(dict.fromkeys(names, 1.0), dict.fromkeys(names, 0.0), step=100, base_step=10,
                                  earlier=earlier)
    ax = fig.axes[0]
    trail = [ln for ln in ax.lines if ln.get_alpha() is not None]
    assert len(trail) == skill_radar.TRAIL                                  # only the last TRAIL
    assert [ln.get_ydata()[0] for ln in trail] == [s / 1000 for s in range(40, 100, 10)]
    assert [ln.get_alpha() for ln in trail] == sorted(ln.get_alpha() for ln in trail)   # newer = darker
    assert "steps 40–90 (fainter = older)" in texts(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    rim = ax.get_window_extent(r)
    centre, radius = ((rim.x0 + rim.x1) / 2, (rim.y0 + rim.y1) / 2), rim.width / 2
    labels = list(ax.texts)
    assert len(labels) == len(names)
    for t in labels:                     # no corner of a label lies inside the 100 % circle
        b = t.get_window_extent(r)
        for x, y in ((b.x0, b.y0), (b.x0, b.y1), (b.x1, b.y0), (b.x1, b.y1)):
            assert math.hypot(x - centre[0], y - centre[1]) > radius * 0.98, t.get_text()
        fb = fig.bbox
        assert fb.x0 <= b.x0 and b.x1 <= fb.x1, t.get_text()               # and none leaves the figure


def test_skill_radar_base_checkpoint_and_two_skills():
    fig = skill_radar.skill_radar({"a": 0.5, "b": 0.2, "c": 0.1}, {"a": 0.5, "b": 0.2, "c": 0.1}, step=10, base_step=10)
    assert "vs base" not in fig._suptitle.get_text() and len(fig.axes[0].lines) == 1
    bars = skill_radar.skill_radar({"a": 0.5, "b": 0.25}, {"a": 0.0, "b": 0.0}, step=20, base_step=10)
    check_labelled(bars, legend=True)
    assert bars.axes[0].name != "polar"
    widths = sorted(p.get_width() for p in bars.axes[0].patches)
    assert widths == [0.0, 0.0, 25.0, 50.0]
    with pytest.raises(ValueError, match="at least one skill"):
        skill_radar.skill_radar({}, None, step=1)


@pytest.mark.parametrize("n", [skill_radar.MAX_AXES, 40])
def test_skill_radar_labels_never_overlap_however_many_skills(n):
    """40 skills around a rim crowded their two-line labels into one another (a run with a probe
    set per task has that many): past MAX_AXES the skills are drawn as bars, one row each."""
    names = [f"skill_{i:02d}_with_a_long_name" for i in range(n)]
    fig = skill_radar.skill_radar({k: (i % 5) / 5 for i, k in enumerate(names)}, dict.fromkeys(names, 0.2),
                                  step=20, base_step=10, counts=dict.fromkeys(names, 80))
    check_labelled(fig, legend=True)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = list(ax.texts) if ax.name == "polar" else [t for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) == n
    boxes = [t.get_window_extent(r) for t in labels]
    for i in range(n):
        for j in range(i + 1, n):
            assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
        assert fig.bbox.x0 <= boxes[i].x0 and boxes[i].x1 <= fig.bbox.x1   # and none leaves the figure
        assert fig.bbox.y0 <= boxes[i].y0 and boxes[i].y1 <= fig.bbox.y1


def test_umap_legend_of_many_skills_stays_inside_the_figure():
    """One legend column of 42 entries ran off the 6.6-inch figure (40 skills: the first and last
    four were cut off and the title covered): past LEGEND_ROWS the legend takes more columns."""
    n = 400
    skills = [f"skill_{i % 40:02d}_with_a_long_name" for i in range(n)]
    rng = np.random.default_rng(0)
    fig = umap_scatter.umap_scatter(20, {"decoder block 1": rng.normal(size=(n, 2))}, skills,
                                    rng.random(n) > 0.5, {})
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box, whole = legend.get_window_extent(r), fig.bbox
    assert len(legend.get_texts()) == 42
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1
    assert not box.overlaps(fig.axes[0].get_window_extent(r))
    assert not box.overlaps(fig._suptitle.get_window_extent(r))


def test_loss_curve_legend_of_many_skills_leaves_the_panels_their_height():
    """One legend column of 41 entries beside the accuracy panel squashed all three panels to
    slivers (40 skills): past LEGEND_ROWS the legend takes more columns, and long names are cut."""
    names = [f"skill_{i:02d}_with_a_long_name" for i in range(40)] + ["a" * 80]
    fig = loss_curve.loss_curve([10, 20, 30], {"train_loss": [3, 2, 1]}, [0.1, 0.2, 0.3],
                                {k: [0.1, 0.2, 0.3] for k in names}, [1e-3, 5e-4, 1e-4])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax_loss, ax_acc, _ = fig.axes
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() and len(ax.get_legend().get_texts()) > 2]
    box, whole = legend.get_window_extent(r), fig.bbox
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1
    for ax in (ax_loss, ax_acc):
        assert ax.get_window_extent(r).height > 2.0 * fig.dpi, ax.get_title()   # inches of plot, not a sliver
    assert max(len(t.get_text()) for t in legend.get_texts()) <= 24


def test_hard_board_of_thousands_of_examples_draws_at_most_max_examples_rows():
    """2,500 hard examples drew a 75,000-pixel-tall image (107 s, 2.4 GB): the board draws
    MAX_EXAMPLES rows, those that regressed first, and says how many it left out."""
    steps = [10, 20]
    examples = [{"id": f"h{i}", "prompt": "p" * 50, "expected": "e", "first_right": None, "regressed": i % 500 == 7,
                 "rows": [{"step": s, "correct": False, "error_type": "content_word"} for s in steps]}
                for i in range(2500)]
    fig = hard_board.hard_example_board_figure({"steps": steps, "examples": examples})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == hard_board.MAX_EXAMPLES
    assert [x.split(":")[0] for x in labels[:5]] == ["h7", "h507", "h1007", "h1507", "h2007"]   # regressed first
    assert fig.get_size_inches()[1] * fig.dpi < 5000
    assert f"{hard_board.MAX_EXAMPLES} of 2500 hard examples shown" in fig._suptitle.get_text()


def test_fixed_limits_square_box_with_margin():
    lim = umap_scatter.fixed_limits([np.array([[0.0, 0.0], [2.0, 1.0]]), np.array([[1.0, np.nan]])], margin=0.05)
    assert np.allclose(lim, (-0.1, 2.1, -0.6, 1.6))
    assert umap_scatter.fixed_limits([np.full((3, 2), np.nan)]) is None
    assert umap_scatter.contains(lim, np.array([[2.05, 1.5]]))
    assert not umap_scatter.contains(lim, np.array([[2.2, 0.0]]))


def test_umap_scatter_fixed_axes_fill_and_colours():
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5], [0.5, 2.0]])
    limits = {"block 1": (-5.0, 5.0, -5.0, 5.0)}
    fig = umap_scatter.umap_scatter(7, {"block 1": xy}, ["a", "a", "b", "b"], np.array([True, False, True, True]),
                                    limits, notes={"block 1": "trustworthiness 0.9"})
    check_labelled(fig, legend=True)
    ax = fig.axes[0]
    assert ax.get_xlim() == (-5.0, 5.0) and ax.get_ylim() == (-5.0, 5.0)
    wrong, right = ax.collections
    assert len(wrong.get_offsets()) == 1 and len(right.get_offsets()) == 3
    assert len(wrong.get_facecolors()) == 0               # hollow markers for wrong answers
    assert "step 7" in fig._suptitle.get_text() and "trustworthiness 0.9" in ax.get_title()
    with pytest.raises(ValueError, match="one row per probe"):
        umap_scatter.umap_scatter(7, {"block 1": xy[:3]}, ["a"] * 4, None, limits)


def test_layer_drift_heatmap_cells_and_first_column():
    change = np.array([[np.nan, 0.5, 0.05], [np.nan, 0.2, 0.01]])
    fig = layer_drift.layer_drift_heatmap(STEPS, ["embeddings", "block.0"], change)
    check_labelled(fig, legend=False)
    assert "0.500" in texts(fig) and "0.010" in texts(fig)
    assert any("‖W − W_prev‖" in ax.get_ylabel() for ax in fig.axes)    # the colorbar says what colour means
    one = layer_drift.layer_drift_heatmap([10], ["embeddings"], np.array([[np.nan]]))
    assert "no weight drift recorded" in texts(one)
    with pytest.raises(ValueError, match="layers, checkpoints"):
        layer_drift.layer_drift_heatmap(STEPS, ["a"], np.zeros((2, 3)))


def test_calibration_figure_bins_and_ece_series():
    edges = np.linspace(0, 1, 5)
    fig = calibration.calibration_figure(40, edges, np.array([np.nan, 0.4, 0.6, 0.9]),
                                         np.array([np.nan, 0.5, 0.3, 0.95]),
                                         np.array([0, 3, 5, 20]), 0.081, STEPS, [0.2, None, 0.081], mce=0.3, brier=0.1)
    check_labelled(fig, legend=True)
    assert "ECE 0.081" in texts(fig) and "step 40" in fig._suptitle.get_text()
    ece_ax = [ax for ax in fig.axes if "ECE" in ax.get_ylabel()][0]
    assert ece_ax.lines[0].get_xdata().tolist() == [10, 40]
    with pytest.raises(ValueError, match="bins disagree"):
        calibration.calibration_figure(1, edges, np.zeros(3), np.zeros(4), np.zeros(4), 0.0, [1], [0.0])


def _board(steps, rows):
    return {"steps": steps, "examples": [
        {"id": f"trap_{j}", "prompt": "No cats are dogs. All dogs bark. Do cats bark? " * 3, "expected": "No",
         "first_right": next((s for s, (ok, _) in zip(steps, r) if ok), None), "regressed": j == 1,
         "rows": [{"step": s, "correct": ok, "error_type": et, "answer": "Yes" if not ok else "No"}
                  for s, (ok, et) in zip(steps, r)]} for j, r in enumerate(rows)]}


def test_hard_board_cells_notes_and_short_labels():
    board = _board(STEPS, [[(False, "wrong_polarity"), (True, None), (True, None)],
                           [(True, None), (False, "malformed"), (False, "empty")]])
    fig = hard_board.hard_example_board_figure(board)
    check_labelled(fig, legend=True)
    ax = fig.axes[0]
    grid = ax.images[0].get_array()
    kinds = list(hard_board.KINDS)
    assert grid[0].tolist() == [kinds.index("wrong_polarity"), 0, 0]
    assert grid[1].tolist() == [0, kinds.index("malformed"), kinds.index("empty")]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert all(len(label) < 100 and "…" in label for label in labels)
    text = texts(fig)
    assert "first right: step 20" in text and "regressed" in text and "now: 'Yes'" in text
    assert "no hard examples" in texts(hard_board.hard_example_board_figure({"steps": [], "examples": []}))
    bad = _board([10, 20], [[(True, None), (True, None)]])
    bad["steps"] = [10, 30]
    with pytest.raises(ValueError, match="rows are for steps"):
        hard_board.hard_example_board_figure(bad)


def test_logprob_heatmaps():
    lp = np.array([[-5.0, -3.0], [-1.0, -0.001]])
    fig = logprob_heatmap.canonical_heatmap([10, 20], lp, [" All", "\n"], probe_id="trap_1",
                                            prompt="No cats are dogs. " * 10, expected="All")
    check_labelled(fig, legend=False)
    text = texts(fig)
    assert "␣All" in text and "⏎" in text and "-5.0" in text and "-0.0" not in text   # -0.001 shows as 0.0
    with pytest.raises(ValueError, match="checkpoints, tokens"):
        logprob_heatmap.canonical_heatmap([10], lp, ["a", "b"], probe_id="x", prompt="", expected="")
    values = np.full((40, 2, 3), -1.0)
    values[0, :, 2] = np.nan
    cats = logprob_heatmap.category_heatmaps([10, 20], [f"cat{i}" for i in range(40)], values)
    check_labelled(cats, legend=False)
    assert "first 36 of 40 categories" in cats._suptitle.get_text()
    tiles = cats.axes[0]
    assert len(tiles.images) == 36                               # one tile per category shown
    names = {t.get_text() for t in tiles.texts}
    assert "cat35" in names and "cat36" not in names
    assert tiles.images[0].get_extent()[1] - tiles.images[0].get_extent()[0] == 3      # 3 positions wide
    assert np.ma.is_masked(tiles.images[0].get_array()[0, 2])     # NaN: transparent over the grey tile


def test_error_positions_and_entropy_heatmaps():
    hist = np.array([[5, 2, 0], [1, 0, 3]])
    fig = error_positions.error_positions_figure([10, 20], hist)
    check_labelled(fig, legend=False)
    text = texts(fig)
    assert "≥2" in text and "ran on" in text and "\n7\n" in f"\n{text}\n"       # row total 5 + 2 + 0
    with pytest.raises(ValueError, match="negative"):
        error_positions.error_positions_figure([10], np.array([[-1, 0]]))
    ent = entropy_positions.entropy_positions_figure([10, 20], np.array([[5.9, 4.0], [0.2, np.nan]]), [30, 12])
    check_labelled(ent, legend=False)
    assert "(n=12)" in texts(ent) and "5.90" in texts(ent)
    assert "no entropy recorded" in texts(entropy_positions.entropy_positions_figure([10], np.full((1, 2), np.nan)))


def test_geometry_figure_lines_and_single_checkpoint():
    layers = {"decoder block 1": {"drift_prev": [None, 0.3, 0.1], "drift_first": [None, 0.3, 0.4],
                                  "cka_prev": [None, 0.8, 0.95], "cka_first": [None, 0.8, 0.7]}}
    fig = geometry.geometry_figure(STEPS, layers)
    check_labelled(fig, legend=True)
    drift_ax = fig.axes[0]
    assert drift_ax.lines[0].get_xdata().tolist() == [20, 40]
    one = geometry.geometry_figure([10], {"decoder block 1": {"drift_prev": [None]}})
    assert "it needs two checkpoints" in texts(one)


def test_write_gif_one_frame_per_png(tmp_path):
    frames = []
    for i in range(3):
        px = np.full((20, 30, 3), 255, np.uint8)
        px[:, i * 10:(i + 1) * 10] = (200, 30, 30)
        frames.append(tmp_path / f"f{i}.png")
        Image.fromarray(px).save(frames[-1])
    out = gif.write_gif(frames, tmp_path / "a.gif", frame_ms=100, last_ms=900)
    with Image.open(out) as im:
        assert im.n_frames == 3 and im.info["loop"] == 0
        seen = []
        for k in range(3):
            im.seek(k)
            seen.append(np.asarray(im.convert("RGB")))
            assert im.info["duration"] == (900 if k == 2 else 100)
    assert not np.array_equal(seen[0], seen[1]) and seen[2][0, 25].tolist() == [200, 30, 30]
    again = gif.write_gif(frames, tmp_path / "b.gif", frame_ms=100, last_ms=900)
    assert out.read_bytes() == again.read_bytes()
    with pytest.raises(ValueError, match="at least one frame"):
        gif.write_gif([], tmp_path / "c.gif")
    assert isinstance(io.BytesIO(out.read_bytes()).read(6), bytes)
