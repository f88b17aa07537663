"""Several runs under one checkpoint root are kept apart: each gets its own archive folder,
history and series (learnviz.checkpoints.find_runs, pipeline.runs)."""

from __future__ import annotations

import json

import pytest
from helpers import learnviz_run, make_checkpoint, write_small_probes

from learnviz import cli, pipeline, readout
from learnviz.checkpoints import find_runs
from learnviz.settings import load_settings


@pytest.fixture
def small_probes(tmp_path):
    return write_small_probes(tmp_path / "probes.jsonl")


def _settings(root, **kw):
    return load_settings(overrides={"checkpoints": str(root), "settle_seconds": 0.0, "device": "cpu",
                                    "probes": str(kw.pop("probes")), "hard_examples": "", **kw}, environ={})


def test_two_runs_with_the_same_steps_get_two_archive_folders(tmp_path, tokenizer, small_probes, capsys):
    root = tmp_path / "runs"
    for run, loss in (("alpha", 1.0), ("beta", 3.0)):
        for i, step in enumerate((10, 20)):
            make_checkpoint(root / run / f"checkpoint-{step}", tokenizer, step=step, seed=i + (run == "beta") * 7,
                            loss=loss + i)
    assert [(r.name, r.path.name) for r in find_runs(root)] == [("alpha", "alpha"), ("beta", "beta")]
    settings = _settings(root, probes=small_probes)
    report = learnviz_run(settings, progress=False)
    assert report.ok and [r.run for r in report.runs] == ["alpha", "beta"] and len(report.done) == 4
    top = settings.archive_dir()
    for run, loss in (("alpha", 1.0), ("beta", 3.0)):
        folder = top / run
        assert sorted(p.name for p in folder.glob("*.h5")) == ["checkpoint-10.h5", "checkpoint-20.h5", "series.h5"]
        rows = readout.history_rows(folder)
        assert [r["step"] for r in rows] == [10, 20]
        assert [r["train_loss"] for r in rows] == [loss, loss + 1]          # this run's own loss, never merged
        assert all(r["checkpoint"].startswith("checkpoint-") for r in rows)
        assert [a.step for a in readout.series(folder)] == [10, 20]
    assert not list(top.glob("*.h5")) and not (top / readout.HISTORY_FILE).exists()   # nothing at the top
    assert readout.run_archives(top) == [("alpha", top / "alpha"), ("beta", top / "beta")]

    # a second run finds both current; status lists each run, from the root or the archive folder
    again = learnviz_run(settings, progress=False)
    assert not again.done and len(again.current) == 4
    capsys.readouterr()
    assert cli.main(["status", "--archive", str(top), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(listed) == ["alpha", "beta"] and [r["step"] for r in listed["alpha"]] == [10, 20]
    assert cli.main(["status", "--checkpoints", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"run alpha: {top / 'alpha'}" in out and f"run beta: {top / 'beta'}" in out
    # a run's own archive folder is an archive folder like any other
    assert cli.main(["status", "--archive", str(top / "beta"), "--json"]) == 0
    assert [r["step"] for r in json.loads(capsys.readouterr().out)] == [10, 20]
    # the distributed entry points find the run of a checkpoint
    res = pipeline.collect_embeddings(settings, root / "beta" / "checkpoint-20")
    assert res.status == "current" and res.archive == str(top / "beta" / "checkpoint-20.h5")
    assert pipeline.pending(settings) == [] and not pipeline.history_stale(settings)
    # one step of several runs: the runs that have it, checked before anything is written
    (top / "beta" / "checkpoint-20.h5").rename(tmp_path / "moved.h5")
    out_dir = tmp_path / "out"
    assert cli.main(["export", "csv", "--checkpoints", str(root), "--out", str(out_dir), "--checkpoint", "20"]) == 0
    out = capsys.readouterr().out
    assert "run beta: no archived checkpoint at step 20 (it has 10): left out" in out
    assert sorted(p.parent.name for p in out_dir.rglob("*.csv")) == ["alpha"] * 3
    assert cli.main(["export", "csv", "--checkpoints", str(root), "--out", str(tmp_path / "none"),
                     "--checkpoint", "30"]) == 2
    err = capsys.readouterr().err
    assert "no run has an archived checkpoint at step 30" in err and "alpha: 10, 20; beta: 10" in err
    assert not (tmp_path / "none").exists()


def test_a_root_that_is_one_run_keeps_its_layout(tmp_path, tokenizer, small_probes):
    root = tmp_path / "run"
    make_checkpoint(root / "checkpoint-5", tokenizer, step=5)
    settings = _settings(root, probes=small_probes, archive=str(tmp_path / "archive"))
    assert [(r.name, r.path) for r in find_runs(root)] == [("", root)]
    assert [name for name, _ in pipeline.runs(settings)] == [""]
    report = learnviz_run(settings, progress=False, cpu_stages=False)
    assert report.ok and not report.runs and report.done == [tmp_path / "archive" / "checkpoint-5.h5"]


def test_a_root_whose_runs_lie_one_level_deeper_says_which_folders_to_pass(tmp_path, tokenizer, small_probes, capsys):
    """sweep/<group>/<run>/checkpoint-N: the root holds no run (runs are looked for one level down),
    and the message said only where learnviz looked. It now names the folders that hold runs."""
    root = tmp_path / "sweeps"
    make_checkpoint(root / "lr" / "3e-4" / "checkpoint-10", tokenizer, step=10)
    make_checkpoint(root / "wd" / "0.1" / "checkpoint-10", tokenizer, step=10)
    (root / "notes").mkdir()
    argv = ["-q", "run", "--checkpoints", str(root), "--probes", str(small_probes), "--hard-examples", "",
            "--settle-seconds", "0"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"no checkpoints found in {root}" in out
    assert (f"runs lie one level deeper, in {root / 'lr'}, {root / 'wd'}: pass --checkpoints {root / 'lr'} "
            "(and each of the others)") in out
    assert not list((root / "learnviz-archive").glob("**/*.h5"))          # nothing merged or archived
    assert cli.main([*argv[:3], str(root / "lr"), *argv[4:]]) == 0           # as said: its run is archived
    assert (root / "lr" / "learnviz-archive" / "3e-4" / "checkpoint-10.h5").exists()
