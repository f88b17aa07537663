"""The driver on a small archived series: every file, decoded and not blank; GIFs with one
distinct frame per checkpoint; incremental redraws; deterministic bytes; the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learnviz import visualize
from learnviz.cli import main
from learnviz.errors import LearnvizError
from learnviz.plots import sources

from .conftest import LAST_STEP, STEPS, analyse, manifest, write_checkpoint

RUN_LEVEL = ["loss_curve.png", "layer_drift_heatmap.png", "calibration_latest.png", "hard_example_board.png",
             "logprob_canonical.png", "logprob_by_category.png", "error_positions.png", "entropy_by_position.png",
             "geometry_drift_cka.png", "checkpoint_health.png"]
LATEST = ["skill_radar_latest.png", "umap_latest.png"]
GIFS = ["skill_radar_animated.gif", "umap_animated.gif"]


def per_checkpoint(steps) -> list[str]:
    return [f"{kind}_{s}.png" for kind in ("radar", "umap") for s in steps]


def vis_dir(settings) -> Path:
    return Path(settings.archive) / "visualizations"


def not_blank(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.std() > 10, f"{path.name} is (nearly) blank"
    assert (px < 100).mean() > 0.002, f"{path.name} has almost no dark pixels (no text, no marks)"
    return px


def gif_frames(path: Path) -> list[np.ndarray]:
    frames = []
    with Image.open(path) as im:
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB")))
    return frames


def test_every_file_decodes_and_is_not_blank(drawn):
    settings, result = drawn
    out = vis_dir(settings)
    expected = RUN_LEVEL + per_checkpoint(STEPS) + LATEST + GIFS
    assert result["status"] == "ok" and not result["failed"], result
    assert list(result["skipped"]) == ["data_impact.png"] and "no data log" in result["skipped"]["data_impact.png"]
    assert sorted(result["drawn"]) == sorted(expected)
    for name in expected[:-2]:
        not_blank(out / name)
    assert (out / "skill_radar_latest.png").read_bytes() == (out / f"radar_{STEPS[-1]}.png").read_bytes()
    assert (out / "umap_latest.png").read_bytes() == (out / f"umap_{STEPS[-1]}.png").read_bytes()
    json.dumps(result)                          # what a Celery task returns must be JSON


def test_gifs_have_one_distinct_frame_per_checkpoint(drawn):
    settings, _ = drawn
    for name, kind in zip(GIFS, ("radar", "umap")):
        frames = gif_frames(vis_dir(settings) / name)
        assert len(frames) == len(STEPS)
        for a, b in zip(frames, frames[1:]):
            assert not np.array_equal(a, b)
        with Image.open(vis_dir(settings) / f"{kind}_{STEPS[0]}.png") as first:
            assert frames[0].shape[:2] == first.size[::-1]


def test_second_call_draws_nothing_and_changes_no_byte(drawn):
    settings, first = drawn
    out = vis_dir(settings)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = visualize.generate(settings, gifs=True)
    assert again["drawn"] == [] and again["current"] == len(first["drawn"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_umap_frames_share_fixed_axes(drawn):
    settings, _ = drawn
    limits = manifest(settings)["umap_limits"]
    run = sources.Run(Path(settings.archive))
    assert set(limits) == set(run.layouts(run.archives[0])[0])      # one box per layer panel
    for i, _a in enumerate(run.archives):
        data = sources.umap_data(run, i, limits)
        for name, xy in data["layouts"].items():
            x0, x1, y0, y1 = limits[name]
            assert x1 - x0 == pytest.approx(y1 - y0)                    # square: equal aspect
            assert x0 <= xy[:, 0].min() and xy[:, 0].max() <= x1 and y0 <= xy[:, 1].min() and xy[:, 1].max() <= y1
    # a frame outside the stored box widens it; frames inside keep it
    name = next(iter(limits))
    assert visualize._umap_limits(run, limits, [0], force=False) is limits
    tiny = {**limits, name: [0.0, 0.01, 0.0, 0.01]}
    widened = visualize._umap_limits(run, tiny, [0], force=False)
    for n, (a0, a1, b0, b1) in limits.items():    # widened with room to spare: it holds the first box
        x0, x1, y0, y1 = widened[n]
        assert x0 < a0 and x1 > a1 and y0 < b0 and y1 > b1
        assert x1 - x0 == pytest.approx((a1 - a0) * (1 + 2 * (0.05 + visualize.GROWTH)) / 1.1, rel=1e-3)


def test_force_redraws_the_same_bytes(drawn, tmp_path):
    settings, _ = drawn
    out = vis_dir(settings)
    names = ["loss_curve.png", "hard_example_board.png", f"radar_{STEPS[1]}.png", f"umap_{STEPS[2]}.png"]
    before = {n: (out / n).read_bytes() for n in names}
    result = visualize.generate(settings, only=["loss", "hard_examples", "radar", "umap"], force=True)
    assert set(names) <= set(result["drawn"])
    assert {n: (out / n).read_bytes() for n in names} == before


def test_new_checkpoint_draws_only_its_images_and_the_run_level_ones(series_settings):
    s = series_settings
    groups = ["radar", "umap", "loss", "hard_examples", "calibration"]   # a few run-level ones keep it quick
    first = visualize.generate(s, only=groups)
    assert not any(n.endswith(".gif") for n in first["drawn"]) and not list(vis_dir(s).glob("*.gif"))
    old_limits = manifest(s)["umap_limits"]
    write_checkpoint(Path(s.checkpoints), Path(s.archive), LAST_STEP)
    analyse(s)
    result = visualize.generate(s, only=groups)
    drawn = set(result["drawn"])
    assert {f"radar_{LAST_STEP}.png", f"umap_{LAST_STEP}.png", *LATEST, "loss_curve.png", "hard_example_board.png",
            "calibration_latest.png"} == drawn - {f"umap_{st}.png" for st in STEPS}
    assert not drawn & {f"radar_{st}.png" for st in STEPS}
    widened = manifest(s)["umap_limits"] != old_limits
    assert bool(drawn & {f"umap_{st}.png" for st in STEPS}) == widened      # old frames only for a new box
    assert "step 160" not in json.dumps(result["failed"])
    gif = visualize.generate(s, gifs=True, only=["radar"])
    assert gif["drawn"] == ["skill_radar_animated.gif"]
    assert len(gif_frames(vis_dir(s) / "skill_radar_animated.gif")) == len(STEPS) + 1


def test_out_of_order_checkpoint_redraws_the_stale_neighbours(series_settings):
    s = series_settings
    visualize.generate(s, only=["radar", "umap"])
    old_limits = manifest(s)["umap_limits"]
    write_checkpoint(Path(s.checkpoints), Path(s.archive), 30)          # between 20 and 40
    analyse(s)
    drawn = set(visualize.generate(s, only=["radar", "umap"])["drawn"])
    # 40's analysis compares with its previous checkpoint (now 30); every layout from 30 on moved;
    # the radars after 30 outline it among their earlier checkpoints; those before it do not
    assert {"radar_30.png", "radar_40.png", "radar_80.png", "umap_30.png", "umap_40.png", "umap_80.png"} <= drawn
    assert not drawn & {"radar_10.png", "radar_20.png"}
    widened = manifest(s)["umap_limits"] != old_limits
    assert bool(drawn & {"umap_10.png", "umap_20.png"}) == widened


def test_images_of_a_removed_checkpoint_are_removed(series_settings):
    s = series_settings
    visualize.generate(s, only=["radar", "umap", "loss"])
    (Path(s.archive) / "checkpoint-20.h5").unlink()
    kept = visualize.generate(s, only=["loss"])              # a pass over other figures removes none
    assert kept["removed"] == [] and (vis_dir(s) / "radar_20.png").exists()
    result = visualize.generate(s, only=["radar", "umap"])
    assert sorted(result["removed"]) == ["radar_20.png", "umap_20.png"]
    assert not (vis_dir(s) / "radar_20.png").exists() and "radar_20.png" not in manifest(s)["files"]
    assert (vis_dir(s) / "loss_curve.png").exists()


def test_only_steps_and_bad_groups(drawn):
    settings, _ = drawn
    result = visualize.generate(settings, only=["radar"], steps=[STEPS[1]], force=True)
    assert f"radar_{STEPS[1]}.png" in result["drawn"]
    assert set(result["drawn"]) <= {f"radar_{STEPS[1]}.png", "skill_radar_latest.png"}
    with pytest.raises(ValueError, match="unknown figure group"):
        visualize.generate(settings, only=["radar", "pie"])


def test_canonical_probe_choice(drawn):
    settings, _ = drawn
    run = sources.Run(Path(settings.archive))
    # hard examples are probes 24..29 with 2 + i % 4 answer tokens: probe 27 has the most (5)
    assert sources.canonical_probe(run, None) == 27
    assert sources.canonical_probe(run, "probe_03") == 3
    with pytest.raises(LearnvizError, match="no probe with id"):
        sources.canonical_probe(run, "nope")
    data = sources.canonical_data(run, None)
    assert data["probe_id"] == "trap_27" and data["logprobs"].shape == (len(STEPS), 5)
    assert data["tokens"] == [" tok0", " tok1", " tok2", " tok3", " tok4"]


def test_empty_archive_is_skipped(tmp_path):
    from learnviz.settings import load_settings
    s = load_settings(environ={}, overrides={"archive": str(tmp_path / "none")})
    result = visualize.generate(s)
    assert result["status"] == "skipped" and "no archived checkpoint" in result["skipped"]["all"]
    assert not (tmp_path / "none" / "visualizations").exists()


def test_cli_quick_start_commands(series_settings, capsys):
    archive = series_settings.archive
    assert main(["-q", "radar", "--archive", archive, "--checkpoint", "20"]) == 0
    out = capsys.readouterr().out
    assert "radar_20.png" in out and (vis_dir(series_settings) / "radar_20.png").exists()
    assert not (vis_dir(series_settings) / "radar_10.png").exists()
    assert main(["-q", "embed", "--archive", archive, "--visualize"]) == 0
    assert len(gif_frames(vis_dir(series_settings) / "umap_animated.gif")) == len(STEPS)
    assert main(["-q", "hard-examples", "--archive", archive]) == 0
    assert "hard_example_board.png" in capsys.readouterr().out
    assert main(["-q", "visualize", "--archive", archive]) == 0
    names = {p.name for p in vis_dir(series_settings).iterdir()}
    assert set(RUN_LEVEL + per_checkpoint(STEPS) + LATEST + GIFS) <= names
    assert main(["-q", "radar", "--archive", archive, "--checkpoint", "7"]) == 2
    assert "no archived checkpoint at step '7'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["radar", "embed", "hard-examples", "visualize"])
def test_figure_commands_explain_themselves(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "usage: learnviz" in out and "--archive" in out and len(out) > 300


def test_a_damaged_input_fails_its_figure_only_and_a_bad_probe_id_fails_early(series_settings):
    s = series_settings
    with pytest.raises(LearnvizError, match="no probe with id 'nope'"):
        visualize.generate(s, probe="nope")
    assert not vis_dir(s).exists() or not list(vis_dir(s).glob("*.png"))
    (Path(s.archive) / "hard_example_board.json").write_text("{not json")
    result = visualize.generate(s, only=["hard_examples", "loss"])
    assert result["status"] == "failed" and list(result["failed"]) == ["hard_example_board.png"]
    assert "not valid JSON" in result["failed"]["hard_example_board.png"]
    assert result["drawn"] == ["loss_curve.png"]
