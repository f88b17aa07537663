"""The embedded pipeline over real tiny checkpoints: archives, idempotence, failures, kills."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
from helpers import learnviz_run as run
from helpers import make_checkpoint, snapshot

from learnviz import archive as arc
from learnviz import history
from learnviz.extract import ExtractResult
from learnviz.readout import status_rows
from learnviz.scan_cache import NAME as SCAN_CACHE

CLI = [sys.executable, "-m", "learnviz.cli"]


def _env(settings):
    return {**os.environ, "LEARNVIZ_SETTLE_SECONDS": "0", "LEARNVIZ_CHECKPOINTS": settings.checkpoints,
            "LEARNVIZ_ARCHIVE": settings.archive}


def test_run_archives_every_checkpoint(settings):
    report = run(settings, progress=False)
    assert len(report.done) == 3 and not report.failed
    archives = arc.list_archives(settings.archive_dir())
    assert [a.step for a in archives] == [10, 20, 30]
    a = archives[0]
    assert a.attrs["model_class"] == "GPT2LMHeadModel" and a.attrs["probe_count"] == 525
    info = a.stage("extract")
    assert info.ok and info.attrs["layers"] == "[1]" and info.attrs["dtype"] == "float32"
    assert info.attrs["timings"]["forward"] > 0 and info.attrs["worker"]
    r = ExtractResult.from_archive(a.read("extract"), info.attrs)
    assert len(r.probe_ids) == 525 and r.embeddings[1].shape == (525, 32)
    assert len(r.token_logprob) == 525 and np.all(r.token_logprob.values <= 0)
    rows = history.read(settings.archive_dir())
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert rows[0]["train_loss"] == 2.0 and rows[0]["learning_rate"] == 5e-4 and "syllo_easy" in rows[0]["skill_scores"]
    assert status_rows(settings.archive_dir())[0].stages == {"extract": "ok", "analysis": "ok", "geometry": "ok"}


def test_rerun_writes_nothing(settings):
    # (how fast a re-run is belongs to bench/, not to a test on a shared machine)
    run(settings, progress=False)
    before = snapshot(settings.archive_dir(), scan_cache=True)
    out = subprocess.run(CLI + ["-q", "run"], env=_env(settings), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "0 archived, 3 already current" in out.stdout
    after = snapshot(settings.archive_dir(), scan_cache=True)
    # the scan cache (.learnviz-scan.json) learns the checkpoints once their files are older than
    # its margin; nothing else is written, and a third run writes nothing at all
    assert {k: v for k, v in after.items() if k != SCAN_CACHE} == {k: v for k, v in before.items() if k != SCAN_CACHE}
    out = subprocess.run(CLI + ["-q", "run"], env=_env(settings), capture_output=True, text=True, timeout=300)
    assert "0 archived, 3 already current" in out.stdout
    assert snapshot(settings.archive_dir(), scan_cache=True) == after


def test_run_force_extracts_current_archives_again_and_redoes_their_cpu_stages(settings):
    """Archives are keyed by weights, probe set and extraction settings, not by --dtype nor by
    learnviz's own version: after an upgrade that changes extraction, or with another --dtype, a
    current archive was kept with no way to redo it but removing the file. `run --force` extracts
    every checkpoint again (and redoes its CPU stages); a plain run after it is a no-op again."""
    run(settings, progress=False)
    root = settings.archive_dir()
    out = subprocess.run(CLI + ["-q", "run", "--dtype", "bfloat16"], env=_env(settings), capture_output=True,
                         text=True, timeout=300)
    assert "0 archived, 3 already current" in out.stdout, out.stdout + out.stderr
    assert {a.stage("extract").attrs["dtype"] for a in arc.list_archives(root)} == {"float32"}
    analysed = {a.step: a.stage("analysis").attrs["finished"] for a in arc.list_archives(root)}
    out = subprocess.run(CLI + ["-q", "run", "--dtype", "bfloat16", "--force"], env=_env(settings),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "3 archived, 0 already current" in out.stdout, out.stdout + out.stderr
    again = arc.list_archives(root)
    assert {a.stage("extract").attrs["dtype"] for a in again} == {"bfloat16"}
    assert all(a.stage("analysis").ok and a.stage("analysis").attrs["finished"] > analysed[a.step] for a in again)
    assert [r["step"] for r in history.read(root)] == [10, 20, 30]
    out = subprocess.run(CLI + ["-q", "run", "--dtype", "bfloat16"], env=_env(settings), capture_output=True,
                         text=True, timeout=300)
    assert "0 archived, 3 already current" in out.stdout
    out = subprocess.run(CLI + ["run", "--force", "--watch"], env=_env(settings), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "--force" in out.stderr and "--watch" in out.stderr


def test_changed_weights_and_new_checkpoints_are_recomputed(settings, tokenizer):
    run(settings, progress=False)
    root = settings.archive_dir()
    first = snapshot(root)
    make_checkpoint(settings_ck(settings, 20), tokenizer, step=20, seed=99)     # retrained in place
    make_checkpoint(settings_ck(settings, 40), tokenizer, step=40, seed=4)      # a new one
    report = run(settings, progress=False)
    assert sorted(p.name for p in report.done) == ["checkpoint-20.h5", "checkpoint-40.h5"]
    after = snapshot(root)
    assert after["checkpoint-10.h5"] == first["checkpoint-10.h5"]
    assert after["checkpoint-20.h5"] != first["checkpoint-20.h5"]


def settings_ck(settings, step):
    from pathlib import Path
    return Path(settings.checkpoints) / f"checkpoint-{step}"


def test_truncated_weights_fail_alone(settings):
    w = settings_ck(settings, 20) / "model.safetensors"
    with open(w, "r+b") as fh:
        fh.truncate(w.stat().st_size // 2)
    out = subprocess.run(CLI + ["-q", "run"], env=_env(settings), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "checkpoint-20" in out.stdout and "truncated" in out.stdout
    archives = {a.step: a for a in arc.list_archives(settings.archive_dir())}
    assert archives[10].stage("extract").ok and archives[30].stage("extract").ok
    failed = archives[20].stage("extract")
    assert failed.status == "failed" and "model.safetensors is truncated" in failed.reason
    status = subprocess.run(CLI + ["status"], env=_env(settings), capture_output=True, text=True)
    assert "extract:failed" in status.stdout and "truncated" in status.stdout
    # the failure is recorded once; a re-run does not retry it unless asked
    again = run(settings, progress=False)
    assert not again.done and not again.failed
    assert len(run(dataclasses.replace(settings, retry_failed=True), progress=False).failed) == 1


def test_a_failing_model_load_is_recorded(settings):
    (settings_ck(settings, 30) / "tokenizer.json").write_text("{broken")
    (settings_ck(settings, 30) / "tokenizer_config.json").unlink()
    report = run(settings, progress=False)
    assert len(report.done) == 2 and len(report.failed) == 1
    assert "tokenizer cannot be loaded" in report.failed[0][1]


KILL_DURING_RUN = textwrap.dedent("""
    import sys, time
    from learnviz import archive as arc, pipeline
    from learnviz.settings import load_settings
    real, seen = arc.write_elem, []
    def slow(group, name, value):
        real(group, name, value)
        seen.append(name)
        if seen.count("token_logprob") == 2:      # halfway through the second checkpoint's archive
            print("writing", flush=True)
            time.sleep(120)
    arc.write_elem = slow
    pipeline.update(load_settings(), require_checkpoints=True, progress=False)
""")


def test_sigkill_during_run_then_next_run_completes(settings):
    proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_RUN], env=_env(settings),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    root = settings.archive_dir()
    for p in root.glob("*.h5"):
        arc.Archive(p)                                   # every archive readable
    assert [a.step for a in arc.list_archives(root)] == [10]
    report = run(settings, progress=False)
    assert [p.name for p in report.done] == ["checkpoint-20.h5", "checkpoint-30.h5"]
    assert all(a.stage("extract").ok for a in arc.list_archives(root))
    assert not list(root.glob(".*.tmp"))
    assert [r["step"] for r in history.read(root)] == [10, 20, 30]
