"""One-process commands stopped by a signal (Ctrl-C, a scheduler's SIGTERM) at a chosen moment, in a
real subprocess: the process ends at once with one line that says what it kept and what the next
run redoes, leaves nothing half-written or locked, and the next run finishes the work."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import default_sigint, learnviz_run, write_small_probes

from learnviz import archive as arc
from learnviz import pipeline, readout
from learnviz.results import ANALYSIS, EXTRACT, GEOMETRY

ROOT = Path(__file__).resolve().parents[1]


def _start(settings, probes, *command):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "learnviz.cli", "-q", *command,
                             "--checkpoints", settings.checkpoints, "--archive", settings.archive,
                             "--probes", str(probes), "--settle-seconds", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)


def _wait_for(predicate, proc, what: str) -> None:
    while not predicate():
        assert proc.poll() is None, f"learnviz exited ({proc.returncode}) before {what}: {proc.communicate()}"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_run_stopped_after_its_first_archive_says_so_and_the_next_run_finishes(settings, tmp_path, sig, code, name):
    probes = write_small_probes(tmp_path / "probes.jsonl")
    archive = settings.archive_dir()
    proc = _start(settings, probes, "run")
    try:
        _wait_for(lambda: (archive / "checkpoint-10.h5").exists(), proc, "the first archive was written")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"learnviz: run interrupted ({name}): kept ") and "checkpoint-10.h5" in last, err
    assert "`learnviz run` again does only what is left" in last, err
    # nothing half-written, and no note of a holder of the run lock that is gone
    assert not [p for p in archive.rglob("*") if p.name.endswith(".tmp")]
    assert not (archive / arc.LOCK_DIR / (pipeline.RUN_LOCK + ".holder")).exists()
    for p in archive.glob("*.h5"):
        arc.Archive(p)

    # the next run takes the lock at once and does what was left, nothing twice
    settings = dataclasses.replace(settings, probes=str(probes))
    report = learnviz_run(settings, progress=False)
    assert report.ok and archive / "checkpoint-10.h5" not in report.done
    for step in (10, 20, 30):
        a = arc.Archive(archive / f"checkpoint-{step}.h5")
        assert all(a.stage(s).ok for s in (EXTRACT, ANALYSIS, GEOMETRY)), step
    assert sorted({r["step"] for r in readout.history_rows(archive)}) == [10, 20, 30]


def test_visualize_stopped_midway_keeps_what_it_drew(settings, tmp_path):
    from learnviz.visualize import MANIFEST_NAME, generate, visualizations_dir
    settings = dataclasses.replace(settings, probes=str(write_small_probes(tmp_path / "probes.jsonl")))
    pipeline.update(settings, require_checkpoints=True, stages=pipeline.STAGES[:-1], progress=False)   # no figures yet
    out = visualizations_dir(settings)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for _ in range(3):
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen([sys.executable, "-m", "learnviz.cli", "-q", "visualize", "--no-gifs",
                                 "--archive", settings.archive], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, preexec_fn=default_sigint)
        try:
            _wait_for(lambda: (out / "radar_10.png").exists(), proc, "the first figure was drawn")
            proc.send_signal(signal.SIGINT)
            out_text, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        # Python drops a KeyboardInterrupt raised inside a finalizer ("Exception ignored in: ...
        # weakref ... KeyboardInterrupt"), and the command then finishes: a lost Ctrl-C, which a
        # user presses again. Only then is the interrupt delivered again, to a fresh pass.
        if not (proc.returncode == 0 and "Exception ignored" in err and "KeyboardInterrupt" in err):
            break
    assert proc.returncode == 130 and "Traceback" not in err, err
    drawn = sorted(p.name for p in out.glob("*.png"))
    assert "radar_10.png" in drawn and (out / MANIFEST_NAME).exists()
    # the next pass draws only what the interrupted one had not
    again = generate(settings, gifs=False)
    assert again["current"] >= len(drawn) and not set(drawn) & set(again["drawn"]), again


def test_the_interrupt_line_says_what_the_same_command_does_again():
    from learnviz.cli import interrupted
    from learnviz.errors import Terminated
    assert interrupted("status", KeyboardInterrupt()) == "learnviz: status interrupted (Ctrl-C)"
    assert interrupted("export", Terminated()).endswith("`learnviz export` again writes the whole export again")
    # the demo's training has no resume: it says so rather than promise to do only what is left
    demo = interrupted("demo", Terminated())
    assert "`learnviz demo` again retrains the model unless every checkpoint was saved" in demo


KILLED_AFTER_SERIES = """
import os, signal, sys
from learnviz import archive as arc, pipeline
from learnviz.settings import load_settings
write = arc.write_stage
def write_stage(path, stage, **kw):
    out = write(path, stage, **kw)
    if os.path.basename(str(path)) == arc.SERIES_NAME:
        os.kill(os.getpid(), signal.SIGKILL)      # the OOM killer, right after series.h5 is in place
    return out
arc.write_stage = write_stage
settings = load_settings(overrides={"checkpoints": sys.argv[1], "archive": sys.argv[2], "probes": sys.argv[3],
                                    "settle_seconds": 0.0, "device": "cpu"}, environ={})
pipeline.update(settings, require_checkpoints=True, stages=pipeline.STAGES[:-1], progress=False)
"""


def test_a_run_killed_once_series_h5_is_written_loses_no_health_flag_nor_the_board(settings, tmp_path):
    settings = dataclasses.replace(settings, probes=str(write_small_probes(tmp_path / "probes.jsonl")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_SERIES, settings.checkpoints, settings.archive,
                             settings.probes], env=env, capture_output=True, text=True, timeout=600)
    archive = settings.archive_dir()
    assert killed.returncode == -signal.SIGKILL and (archive / arc.SERIES_NAME).exists(), killed.stderr
    pipeline.update(settings, require_checkpoints=True, stages=pipeline.STAGES[:-1], progress=False)
    assert readout.read_board(archive) is not None
    flags = readout.health_flags(archive)
    # what a series computed from scratch says: no health row differs, none is appended
    def health_rows():
        return [line for line in (archive / readout.HISTORY_FILE).read_text().splitlines() if "health_flags" in line]
    before = health_rows()
    pipeline.update(settings, stages=pipeline.CPU_STAGES, force=True, progress=False)
    assert readout.health_flags(archive) == flags and health_rows() == before
