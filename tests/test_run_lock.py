"""Two `learnviz run` at once on the same run: every stage runs once (the second waits for the
first, then finds its work done), and nothing is written twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from learnviz import archive as arc
from learnviz import history
from learnviz.pipeline import run_lock

CLI = [sys.executable, "-m", "learnviz.cli", "-q"]


def _env(settings):
    return {**os.environ, "LEARNVIZ_SETTLE_SECONDS": "0", "LEARNVIZ_CHECKPOINTS": settings.checkpoints,
            "LEARNVIZ_ARCHIVE": settings.archive, "LEARNVIZ_DEVICE": "cpu"}


def _writes(archive_dir):
    """Every stage group written (checkpoint, stage, worker) and every history row."""
    groups = [(a.path.name, name, info.attrs.get("worker")) for a in arc.list_archives(archive_dir)
              for name, info in a.stages.items()]
    lines = history.history_path(archive_dir).read_text().splitlines()
    return groups, [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
def test_two_runs_at_once_do_each_stage_once(settings):
    env = _env(settings)
    procs = [subprocess.Popen(CLI + ["run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    groups, rows = _writes(settings.archive_dir())
    assert len(groups) == 3 * 3                            # extract, analysis, geometry for 3 checkpoints
    assert len({w.rsplit(":", 1)[1] for _, _, w in groups}) == 1, groups     # one process did them all
    # one history row per (step, kind of row): nothing appended twice
    kinds = [(r["step"], tuple(sorted(k for k in r if k not in ("timestamp",)))) for r in rows]
    assert len(kinds) == len(set(kinds)), kinds
    # the three stage rows per checkpoint (the series' health rows come on top, once per change)
    assert len([k for k in kinds if "health_flags" not in k[1]]) == 9, kinds
    summaries = sorted(o[0] for o in outs)
    assert "3 archived" in summaries[-1] and "0 archived, 3 already current" in summaries[0], summaries
    assert "waiting for" in "".join(o[1] for o in outs)    # the second said why it waited

    # and a third run afterwards writes nothing at all
    before = _writes(settings.archive_dir())
    again = subprocess.run(CLI + ["run"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and _writes(settings.archive_dir()) == before


def test_run_lock_waits_and_says_who_holds_it(tmp_path):
    said, order = [], []
    with run_lock(tmp_path):
        t = threading.Thread(target=lambda: _second(tmp_path, said, order))
        t.start()
        t.join(0.5)
        assert t.is_alive() and order == []                # waits while the first holds it
        order.append("first done")
    t.join(10)
    assert order == ["first done", "second"]
    assert len(said) == 1 and f":{os.getpid()} (since" in said[0] and str(tmp_path) in said[0]
    assert not (tmp_path / arc.LOCK_DIR / "run.lock.holder").exists()


def _second(folder, said, order):
    with run_lock(folder, on_wait=said.append):
        order.append("second")


def test_a_holder_stopped_with_ctrl_z_is_named_with_how_to_resume_or_end_it(tmp_path):
    """A `learnviz run` paused with Ctrl-Z keeps the run lock: the next one waited in silence
    about why. It now says the holder is stopped and how to resume or end it."""
    code = ("import sys, time; from pathlib import Path; from learnviz.pipeline import run_lock\n"
            "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        os.kill(child.pid, signal.SIGSTOP)
        said, order = [], []
        t = threading.Thread(target=lambda: _second(tmp_path, said, order))
        t.start()
        for _ in range(100):
            if said:
                break
            t.join(0.1)
        assert order == [] and len(said) == 1, said
        assert f"process {child.pid} is stopped" in said[0], said[0]
        assert f"kill -CONT {child.pid}" in said[0] and f"kill {child.pid}" in said[0]
        os.kill(child.pid, signal.SIGKILL)                 # the lock goes with it
        t.join(30)
        assert order == ["second"]
    finally:
        child.kill()
        child.wait()
    # a holder that runs is named without the hint
    said = []
    with run_lock(tmp_path):
        t = threading.Thread(target=lambda: _second(tmp_path, said, []))
        t.start()
        t.join(0.5)
    t.join(10)
    assert len(said) == 1 and "is stopped" not in said[0] and "kill" not in said[0]
