"""Figures of a long run: heatmaps and the hard-example board bin or thin their checkpoint axis to
what a screen shows and say so in their titles; GIFs cap their frames, evenly spaced, the first
and the latest always in, and name the steps they show."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from learnviz.plots.common import MAX_CHECKPOINTS, MAX_HEIGHT, bin_checkpoints, evenly_spaced
from learnviz.plots.gif import capped, write_gif


def test_evenly_spaced_keeps_first_and_latest():
    assert list(evenly_spaced(5, 40)) == [0, 1, 2, 3, 4]
    idx = evenly_spaced(500, 40)
    assert len(idx) == 40 and idx[0] == 0 and idx[-1] == 499
    assert (np.diff(idx) >= 12).all() and (np.diff(idx) <= 13).all()
    assert list(evenly_spaced(3, 2)) == [0, 2]


def test_bin_checkpoints_means_and_labels():
    steps = list(range(100, 1100, 100))                      # 10 checkpoints
    values = np.arange(20, dtype=float).reshape(2, 10)       # (layers, checkpoints)
    values[0, 1] = np.nan
    out, labels, note = bin_checkpoints(values, steps, axis=1, most=4)
    assert out.shape == (2, 4)
    # bins of [0,1,2] [3,4] [5,6,7] [8,9] (np.linspace(0, 10, 5).round() = 0, 2, 5, 8, 10 -> 0-2, 2-5 ...)
    edges = np.linspace(0, 10, 5).round().astype(int)
    for b in range(4):
        chunk = values[:, edges[b]:edges[b + 1]]
        assert np.allclose(out[:, b], np.nanmean(chunk, axis=1))
    assert labels[0] == f"{steps[0]}–{steps[edges[1] - 1]}"
    assert "10 checkpoints binned into 4" in note
    same, labels, note = bin_checkpoints(values, steps, axis=1, most=40)
    assert same is not values or np.array_equal(same, values, equal_nan=True)
    assert labels == [str(s) for s in steps] and note == ""
    allnan = np.full((1, 10), np.nan)
    assert np.isnan(bin_checkpoints(allnan, steps, axis=1, most=3)[0]).all()


@pytest.mark.parametrize("figure", ["drift", "errors", "entropy", "canonical", "category"])
def test_heatmaps_of_500_checkpoints_are_binned_and_say_so(figure):
    from learnviz.plots import entropy_positions, error_positions, layer_drift, logprob_heatmap
    k = 500
    steps = [100 * (i + 1) for i in range(k)]
    rng = np.random.default_rng(0)
    if figure == "drift":
        fig = layer_drift.layer_drift_heatmap(steps, ["embeddings", "block.0", "head"], rng.uniform(0.01, 1, (3, k)))
    elif figure == "errors":
        fig = error_positions.error_positions_figure(steps, rng.integers(0, 9, (k, 5)))
    elif figure == "entropy":
        fig = entropy_positions.entropy_positions_figure(steps, rng.uniform(0.01, 2, (k, 4)), [5, 5, 4, 2])
    elif figure == "canonical":
        fig = logprob_heatmap.canonical_heatmap(steps, -rng.uniform(0, 5, (k, 3)), [" All", " A", "."],
                                                probe_id="p", prompt="q?", expected="All A.")
    else:
        fig = logprob_heatmap.category_heatmaps(steps, ["a", "b"], -rng.uniform(0, 5, (2, k, 3)))
    most = logprob_heatmap.TILE_CHECKPOINTS if figure == "category" else MAX_CHECKPOINTS
    assert f"{k} checkpoints binned into {most}" in fig._suptitle.get_text()
    w, h = fig.get_size_inches()
    assert w <= 24 and h <= 24
    if figure in ("errors", "entropy", "canonical"):      # a row per checkpoint: no taller than a screen
        assert h <= MAX_HEIGHT
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert images and all(most in im.get_array().shape for im in images)


def test_board_of_500_checkpoints_is_thinned_and_says_so():
    from learnviz.plots.hard_board import hard_example_board_figure
    steps = [100 * (i + 1) for i in range(500)]
    examples = [{"id": f"h{j}", "prompt": "p", "expected": "Yes", "first_right": None, "regressed": False,
                 "rows": [{"step": s, "correct": (i + j) % 3 == 0, "error_type": "wrong_token", "answer": "No"}
                          for i, s in enumerate(steps)]} for j in range(3)]
    fig = hard_example_board_figure({"steps": steps, "examples": examples})
    assert f"{MAX_CHECKPOINTS} of 500 checkpoints shown" in fig._suptitle.get_text()
    (im,) = fig.axes[0].get_images()
    grid = im.get_array()
    assert grid.shape == (3, MAX_CHECKPOINTS)
    shown = evenly_spaced(500, MAX_CHECKPOINTS)
    assert grid[1, -1] == (0 if (shown[-1] + 1) % 3 == 0 else 2)      # the latest column is the latest step
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "100" and labels[-1] == "50000"


def test_gif_frames_are_capped_and_named(tmp_path):
    frames = []
    for i in range(7):
        p = tmp_path / f"radar_{100 * (i + 1)}.png"
        Image.new("RGB", (20, 10), (30 * i, 0, 0)).save(p)
        frames.append(p)
    shown = capped(frames, 3)
    assert shown == [frames[0], frames[3], frames[6]]
    out = write_gif(shown, tmp_path / "a.gif", comment="steps 100, 400, 700")
    with Image.open(out) as gif:
        assert gif.n_frames == 3
        assert gif.info.get("comment") == b"steps 100, 400, 700"
    assert capped(frames) == frames                          # under the cap: every frame


def test_health_timeline_of_500_checkpoints_bins_to_the_worst_and_keeps_every_flag():
    """Binned by the worst z of each bin (a mean would hide the one broken checkpoint), a bin
    outlined when any checkpoint in it is flagged, the weight flags of a bin kept."""
    from matplotlib.patches import Rectangle

    from learnviz.plots.common import checkpoint_bins
    from learnviz.plots.health import health_timeline
    k = 500
    steps = [100 * (i + 1) for i in range(k)]
    signals = ["accuracy_drop", "regression_burst"]
    z = np.zeros((2, k))
    z[1, 321] = 9.0                                          # one burst
    z[0, 77] = -8.0                                          # one drop (bad is negative: shown as +8)
    flags = [{} for _ in range(k)]
    flags[321] = {"regression_burst": "why"}
    flags[77] = {"accuracy_drop": "why"}
    flags[400] = {"weights_dead": "block.0"}
    fig = health_timeline(steps, signals, z, flags, 3.5)
    assert f"{k} checkpoints binned into {MAX_CHECKPOINTS}" in fig._suptitle.get_text()
    w, _ = fig.get_size_inches()
    assert w <= 24
    ax = fig.axes[0]
    (im,) = ax.get_images()
    grid = np.ma.filled(im.get_array(), np.nan)
    assert grid.shape == (3, MAX_CHECKPOINTS)
    edges = checkpoint_bins(k, MAX_CHECKPOINTS)
    burst, drop, dead = (int(np.searchsorted(edges, i, side="right") - 1) for i in (321, 77, 400))
    assert grid[1, burst] == pytest.approx(9.0) and grid[0, drop] == pytest.approx(8.0)
    assert np.nanmax(np.delete(grid[1], burst)) == 0.0       # the other bins of that row: no spike
    outlined = {(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in ax.patches if isinstance(p, Rectangle)}
    assert outlined == {(burst, 1), (drop, 0)}
    assert [t.get_text() for t in ax.texts if t.get_text() == "dead"] == ["dead"]
    texts = {round(t.get_position()[0]) for t in ax.texts if t.get_text() == "dead"}
    assert texts == {dead}


@pytest.mark.parametrize("categories", [1, 3, 11])
def test_category_tiles_of_a_long_run_keep_their_labels_apart_and_on_the_canvas(categories):
    """The tiles' step labels are y ticks, so the layout puts the axis label beside them, not over
    them (11 tiles: two rows, the label ran through '25100–27500'); a figure of one or a few tiles
    is wide enough for its title and its binning note."""
    from learnviz.plots import logprob_heatmap
    from plots.test_figures import check_labelled  # (tests/ is on the path: conftest.py)

    steps = [100 * (i + 1) for i in range(500)]
    values = -np.random.default_rng(1).uniform(0, 5, (categories, 500, 6))
    fig = logprob_heatmap.category_heatmaps(steps, [f"skill_{i}/category_{i}" for i in range(categories)], values)
    check_labelled(fig, legend=False)           # renders; no text beyond the canvas
    ax, r = fig.axes[0], fig.canvas.get_renderer()
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    rows = -(-categories // 6)
    assert [t.get_text() for t in labels] == ["100–2500", "25100–27500", "47600–50000"] * rows
    ylabel = ax.yaxis.label.get_window_extent(r)
    for t in labels:
        assert not ylabel.overlaps(t.get_window_extent(r)), t.get_text()
