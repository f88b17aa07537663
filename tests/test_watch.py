"""`learnviz run --watch`: a real subprocess follows a checkpoint folder without Redis, and an
interrupt leaves only whole archives; checkpoints deleted while processed (save_total_limit) are
gone, not failed, and the archives of deleted checkpoints stay in the series."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import default_sigint, learnviz_run, make_checkpoint, write_small_probes

from learnviz import archive as arc
from learnviz import collect, readout
from learnviz.results import EXTRACT
from learnviz.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _wait_for(predicate, proc, what: str) -> None:
    """Poll until `predicate()` holds; fail at once if the watcher died. (No time limit here:
    pytest-timeout guards against a hang.)"""
    while not predicate():
        assert proc.poll() is None, f"the watcher exited ({proc.returncode}) before {what}"
        time.sleep(0.2)


def test_watch_archives_a_dropped_checkpoint_and_stops_cleanly_on_sigint(tmp_path, tokenizer):
    root, archive = tmp_path / "run", tmp_path / "archive"
    root.mkdir()
    probes = write_small_probes(tmp_path / "probes.jsonl")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "watch.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "learnviz.cli", "-q", "run", "--watch", "--interval", "0.3",
                             "--checkpoints", str(root), "--archive", str(archive), "--probes", str(probes),
                             "--hard-examples", "", "--settle-seconds", "0", "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, preexec_fn=default_sigint)
    try:
        # dropped in whole, as the Trainer does (written elsewhere, then renamed into the run folder)
        make_checkpoint(tmp_path / "staging" / "checkpoint-8", tokenizer, step=8)
        os.rename(tmp_path / "staging" / "checkpoint-8", root / "checkpoint-8")
        _wait_for(lambda: (archive / "series.h5").exists(), proc, "the series was written")
        make_checkpoint(tmp_path / "staging" / "checkpoint-16", tokenizer, step=16, seed=1)
        os.rename(tmp_path / "staging" / "checkpoint-16", root / "checkpoint-16")
        _wait_for(lambda: (archive / "checkpoint-16.h5").exists(), proc, "the second checkpoint was archived")
        time.sleep(1.0)   # let it get into the CPU stages or the figures of the second checkpoint
        proc.send_signal(signal.SIGINT)
        assert proc.wait() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    out = (tmp_path / "watch.log").read_text()
    assert "watching" in out and "stopped watching" in out and "Traceback" not in out, out
    # every archive opens, and no temporary file is left anywhere
    files = sorted(p.name for p in archive.glob("*.h5"))
    assert {"checkpoint-8.h5", "checkpoint-16.h5"} <= set(files)
    for p in archive.glob("*.h5"):
        arc.Archive(p)
    assert not [p for p in archive.rglob("*") if p.name.endswith(".tmp")]
    assert arc.Archive(archive / "checkpoint-16.h5").stage(EXTRACT).ok
    # stopped between an archive and its history row, the next run restores the row and redoes nothing
    settings = load_settings(overrides={"checkpoints": str(root), "archive": str(archive), "probes": str(probes),
                                        "hard_examples": "", "settle_seconds": 0.0, "device": "cpu"}, environ={})
    after = learnviz_run(settings, cpu_stages=False, progress=False)
    assert not after.done and len(after.current) == 2
    assert [r["step"] for r in readout.history_rows(archive)] == [8, 16]


def test_a_deleted_checkpoint_is_gone_not_failed_and_stays_in_the_series(tmp_path, tokenizer):
    root = tmp_path / "run"
    for i, step in enumerate((1, 2, 3)):
        make_checkpoint(root / f"checkpoint-{step}", tokenizer, step=step, seed=i)
    settings = load_settings(overrides={"checkpoints": str(root), "archive": str(tmp_path / "archive"),
                                        "probes": str(write_small_probes(tmp_path / "p.jsonl")),
                                        "hard_examples": "", "settle_seconds": 0.0, "device": "cpu"}, environ={})
    report = learnviz_run(settings, cpu_stages=False, progress=False)
    assert len(report.done) == 3
    # a history row lost between the archive and its append comes back from the archive, the same
    path = settings.archive_dir() / "learning_history.jsonl"
    lines = path.read_text().splitlines()
    kept = [line for line in lines if '"step": 3,' not in line]
    assert len(kept) == len(lines) - 1
    row3 = {k: v for k, v in readout.history_rows(settings.archive_dir())[2].items() if k != "timestamp"}
    path.write_text("\n".join(kept) + "\n")
    assert [r["step"] for r in readout.history_rows(settings.archive_dir())] == [1, 2]
    assert collect.restore_history(settings) == [3]
    back = {k: v for k, v in readout.history_rows(settings.archive_dir())[2].items() if k != "timestamp"}
    assert back == row3 and collect.restore_history(settings) == []
    # checkpoint 4 is planned, then rotated away before it is loaded
    make_checkpoint(root / "checkpoint-4", tokenizer, step=4, seed=9)
    probes = collect.load_probes(settings)
    (job,) = collect.plan(settings, probes)
    shutil.rmtree(root / "checkpoint-4")
    try:
        collect.run_extract(job, settings, probes)
        raise AssertionError("expected CheckpointGone")
    except collect.CheckpointGone as exc:
        assert "deleted while it was processed" in str(exc)
    assert not job.archive_path.exists()
    # the rotation deletes 1 and 2: their archives stay, and the series covers all three steps
    shutil.rmtree(root / "checkpoint-1")
    shutil.rmtree(root / "checkpoint-2")
    again = learnviz_run(settings, progress=False)
    assert again.ok and not again.failed and not again.done and again.failed_total == 0
    assert [a.step for a in readout.series(settings.archive_dir())] == [1, 2, 3]
    series = arc.Archive(settings.archive_dir() / arc.SERIES_NAME)
    assert series.stage("series").ok
