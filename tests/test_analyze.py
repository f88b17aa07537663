"""The CPU stages over real archives: every analysis filled, order, idempotence, the CLI."""

import json
import subprocess
import sys

import numpy as np
from helpers import learnviz_run as run
from helpers import make_checkpoint, snapshot

from learnviz import archive as arc
from learnviz import history, pipeline
from learnviz.results import BOARD_FILE

CLI = [sys.executable, "-m", "learnviz.cli"]


def test_demo_run_fills_every_analysis(demo):
    root = demo.archive_dir()
    archives = arc.list_archives(root)
    assert len(archives) >= 8
    for a in archives:
        for stage in ("extract", "analysis", "geometry"):
            assert a.stage(stage) is not None and a.stage(stage).ok, (a.step, stage, a.stage(stage))
        g = a.read("geometry")
        for layer in a.stage("extract").attrs["layers"].strip("[]").split(","):
            coords = g[f"layer_{layer.strip()}"]["coords"]
            assert coords.shape == (525, 2) and np.isfinite(coords).all()
        w = a.read("analysis", ["weights"])["weights"]
        assert list(w["layers"])[:2] == ["embeddings", "block.0"]
    rows = history.read(root)
    assert [r["step"] for r in rows] == [a.step for a in archives]
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["ece"] <= 1 and "syllo_easy" in r["skill_scores"]
    for r in rows[1:]:
        assert np.isfinite(r["geometry_drift"]) and 0 <= r["cka_prev"] <= 1.0001 and len(r["layer_drifts"]) >= 6
    board = json.loads((root / BOARD_FILE).read_text())
    assert any(e["first_right"] not in (None, archives[0].step) for e in board["examples"])
    s = arc.Archive(root / arc.SERIES_NAME)
    assert s.stage("series").ok and set(s.read("series")) >= {"trajectories", "cartography", "hard_examples"}


def _tiny_series(root, tokenizer, steps):
    for step in steps:
        make_checkpoint(root / f"checkpoint-{step}", tokenizer, step=step, seed=step)


def test_a_checkpoint_arriving_between_two_analysed_ones(tmp_path, tokenizer, settings):
    import dataclasses
    ckroot = tmp_path / "series"
    _tiny_series(ckroot, tokenizer, (100, 300, 400))
    s = dataclasses.replace(settings, checkpoints=str(ckroot), archive=str(tmp_path / "arch"))
    run(s, progress=False)
    root = s.archive_dir()
    before = snapshot(root)
    make_checkpoint(ckroot / "checkpoint-200", tokenizer, step=200, seed=200)
    report = run(s, progress=False)
    assert report.cpu.analysed == [200, 300]                  # the newcomer, and the one whose "previous" changed
    assert report.cpu.geometry == [200, 300, 400]             # the layout chain from the newcomer on
    after = snapshot(root)
    assert after["checkpoint-100.h5"] == before["checkpoint-100.h5"]
    by_step = {a.step: a for a in arc.list_archives(root)}
    assert by_step[300].stage("geometry").attrs["previous_step"] == 200
    rows = {r["step"]: r for r in history.read(root)}
    assert sorted(rows) == [100, 200, 300, 400] and "ece" in rows[200] and "cka_prev" in rows[200]
    again = run(s, progress=False)                            # nothing new: nothing written
    assert not again.cpu.analysed and not again.cpu.geometry and not again.cpu.series
    assert snapshot(root) == after


def test_geometry_keeps_no_similarity_matrix_and_health_reads_the_stages_own(tmp_path, tokenizer, settings):
    """An archive keeps no (n, n) similarity matrix (it outgrew everything else of an archive past a
    few thousand probes: 20 MB per layer at 3,200); the health's drift against an earlier
    checkpoint recomputes it from the embeddings, so it equals the geometry stage's own drift
    (the stored float16 copy could tie close values and move it)."""
    import dataclasses

    from learnviz.analysis.rsa import geometry_drift
    from learnviz.insight import _last_layer_similarity

    ckroot = tmp_path / "series"
    _tiny_series(ckroot, tokenizer, (100, 200))
    s = dataclasses.replace(settings, checkpoints=str(ckroot), archive=str(tmp_path / "arch"))
    run(s, progress=False)
    first, second = arc.list_archives(s.archive_dir())
    for a in (first, second):
        g = a.read("geometry")
        layers = [k for k in g if k.startswith("layer_")]
        assert layers and all("similarity" not in g[k] and "coords" in g[k] for k in layers), (a.step, g.keys())
    last = max(int(k.split("_")[1]) for k in second.read("geometry") if k.startswith("layer_"))
    row = next(r for r in history.read(s.archive_dir()) if r["step"] == 200 and "geometry" in r)
    drift = geometry_drift(_last_layer_similarity(second), _last_layer_similarity(first)).drift
    assert drift == row["geometry"][str(last)]["drift_prev"]


def test_analyze_cli_choices_and_errors(settings):
    run(settings, progress=False, cpu_stages=False)
    env = {"LEARNVIZ_ARCHIVE": settings.archive, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(CLI + ["-q", "analyze", "--checkpoint", "20"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    by_step = {a.step: a for a in arc.list_archives(settings.archive_dir())}
    assert by_step[20].stage("analysis").ok and by_step[30].stage("analysis") is None
    assert by_step[10].stage("geometry").ok and by_step[30].stage("geometry") is None  # the chain up to 20
    out = subprocess.run(CLI + ["-q", "analyze", "--checkpoint", "25"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "step '25'" in out.stderr and "10, 20, 30" in out.stderr
    out = subprocess.run(CLI + ["-q", "analyze"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and all(a.stage("analysis").ok for a in arc.list_archives(settings.archive_dir()))
    out = subprocess.run(CLI + ["-q", "analyze", "--checkpoint", "latest", "--force"], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0 and "analysis: 1 checkpoints" in out.stdout


def test_weights_gone_still_analyses_behaviour(settings):
    import shutil
    run(settings, progress=False, cpu_stages=False)
    shutil.rmtree(f"{settings.checkpoints}/checkpoint-20")
    report = pipeline.run_cpu_stages(settings)
    assert not report.failed
    a = {x.step: x for x in arc.list_archives(settings.archive_dir())}[20]
    assert a.stage("analysis").ok and "unavailable" in a.stage("analysis").attrs["weights"]
    assert "calibration" in a.read("analysis")
