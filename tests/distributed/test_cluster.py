"""End to end with real processes: a gpu-queue worker, a cpu-queue worker and the beat over one
watched folder, our own Redis, tiny real checkpoints dropped in as a trainer writes them.

One cluster serves the module (workers take ~15 s to warm up on 2 cores); each test drops its own
checkpoints (new steps) and checks only them, so the tests do not depend on one another's order.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from learnviz.archive import Archive
from workers import dispatch as dsp

from .conftest import PASSWORD, children, drop_checkpoint, needs_redis

pytestmark = [needs_redis, pytest.mark.slow]


def rows_of(rows: list[dict], step: int, key: str) -> list[dict]:
    """History rows of one step written by one stage: extract rows carry `accuracy`, analysis rows
    `ece`, geometry rows `geometry`."""
    return [r for r in rows if r["step"] == step and key in r]


def task_lines(log: str, task: str, outcome: str) -> list[str]:
    return [line for line in log.splitlines() if f"Task {task}[" in line and outcome in line]


def test_checkpoints_dropped_one_by_one_are_archived_by_the_right_workers(cluster, tokenizer):
    steps = (10, 20, 30, 40)
    cks = []
    for i, step in enumerate(steps):
        cks.append(drop_checkpoint(cluster.run, tokenizer, step, seed=i))
        time.sleep(0.7)
    cluster.wait(lambda: cluster.complete(cks), 150, "every archive to hold extract, analysis and geometry")

    for ck in cks:
        stages = cluster.stages(ck)
        assert stages["extract"][1].startswith("gpu-test@"), stages      # every GPU stage on the gpu worker
        assert stages["analysis"][1].startswith("cpu-test@") and stages["geometry"][1].startswith("cpu-test@")
    rows = cluster.history()
    for step in steps:
        assert len(rows_of(rows, step, "accuracy")) == 1, f"step {step} extracted more than once"
        assert rows_of(rows, step, "ece") and rows_of(rows, step, "geometry")
    assert Archive(cluster.archive / "series.h5").stage("series").ok

    # The visualizations follow the history, debounced: fewer draws than checkpoints, the last
    # one after the last history update.
    client = cluster.redis.client()
    cluster.wait(lambda: not client.exists(f"{dsp.PREFIX}queued:visualize")
             and task_lines(cluster.log("cpu"), "generate_visualizations", "succeeded"), 30, "the draw")
    log = cluster.log("cpu")
    draws = task_lines(log, "generate_visualizations", "succeeded")
    assert 1 <= len(draws) < len(steps)
    assert "'status': 'ok'" in draws[-1], draws[-1]       # drawn: neither skipped nor failed
    pngs = {p.name for p in (cluster.archive / "visualizations").glob("*.png")}
    assert {"loss_curve.png", "skill_radar_latest.png", "umap_latest.png", "calibration_latest.png"} <= pngs
    assert {f"radar_{s}.png" for s in steps} <= pngs
    last_history = max(log.rfind(line) for line in task_lines(log, "update_learning_history", "succeeded"))
    assert log.rfind(draws[-1]) > last_history


def test_sigkill_of_the_gpu_child_during_extraction_runs_the_task_again(cluster, tokenizer):
    gpu = cluster.procs["gpu"]
    # Wider than the others (same layers, so the geometry chain goes on): extraction takes ~5 s.
    ck = drop_checkpoint(cluster.run, tokenizer, 50, seed=5, n_embd=256)
    client = cluster.redis.client()
    key = dsp.Dispatcher.queued_key("extract", str(ck.resolve()))
    task_id = cluster.wait(lambda: client.get(key), 30, "the scan to send the checkpoint").decode()
    cluster.wait(lambda: f"collect_embeddings[{task_id}] received" in cluster.log("gpu"), 30,
                 "the gpu worker to take it")
    (child,) = children(gpu.pid)
    time.sleep(1.0)
    assert not cluster.archive_of(ck).exists(), "extraction finished before the kill: make the checkpoint bigger"
    os.kill(child, signal.SIGKILL)

    cluster.wait(lambda: cluster.stages(ck).get("extract", ("",))[0] == "ok", 90, "the extraction to run again")
    log = cluster.log("gpu")
    assert "signal 9 (SIGKILL)" in log
    assert log.count(f"collect_embeddings[{task_id}] received") == 2          # the same task, run again
    (new_child,) = children(gpu.pid)
    assert new_child != child and gpu.poll() is None                         # the parent survived
    # no torn temp file of the killed writer (the CPU worker may be writing the analysis right now: its
    # own temp file, named by its pid, comes and goes)
    assert not (cluster.archive / f".checkpoint-50.h5.{child}.tmp").exists()
    assert (cluster.archive / "checkpoint-50.h5").exists()
    a = Archive(cluster.archive_of(ck))
    assert a.stage("extract").attrs["worker"] == f"gpu-test@{os.uname().nodename}:{new_child}"
    assert a.read("extract", ["correct"])["correct"].shape == (a.attrs["probe_count"],)
    cluster.wait(lambda: cluster.complete([ck]), 60, "the rest of its stages")
    assert len(rows_of(cluster.history(), 50, "accuracy")) == 1          # completed once


def test_redis_restart_mid_run_loses_no_checkpoint_and_repeats_none(cluster, tokenizer):
    steps = (60, 70, 80)
    cks = [drop_checkpoint(cluster.run, tokenizer, step, seed=step) for step in steps]
    client = cluster.redis.client()
    keys = [dsp.Dispatcher.queued_key("extract", str(ck.resolve())) for ck in cks]
    cluster.wait(lambda: all(client.exists(k) for k in keys), 30, "the scan to send all three")
    lost = [client.get(k).decode() for k in keys]
    cluster.redis.restart()                      # no persistence: queued messages and marks are gone

    cluster.wait(lambda: cluster.complete(cks), 150, "every checkpoint to finish after the restart")
    rows = cluster.history()
    for step in steps:
        assert len(rows_of(rows, step, "accuracy")) == 1, f"step {step} extracted twice"
        assert len(rows_of(rows, step, "ece")) == 1, f"step {step} analysed twice"
    log = cluster.log("gpu")
    never_run = [t for t in lost if f"collect_embeddings[{t}] received" not in log]
    assert never_run, "the restart came too late to lose a queued message"
    assert "Connection to broker lost" in log or "Cannot connect to" in log or "Connection refused" in log
    assert cluster.procs["gpu"].poll() is None and cluster.procs["cpu"].poll() is None
    for name in ("gpu", "cpu"):     # workers.consumer: a held message does not stop the consumer
        assert "Unrecoverable error" not in cluster.log(name)


def test_a_pickled_message_is_refused(cluster):
    from celery import Celery

    url = dsp.with_password(cluster.redis.url, PASSWORD)
    sender = Celery("attacker", broker=url, backend=url, set_as_current=False)
    sender.conf.update(task_serializer="pickle", accept_content=["pickle", "json"],
                       broker_transport_options={"priority_steps": list(range(10))})
    bad = sender.send_task("generate_visualizations", queue="cpu", serializer="pickle")
    good = sender.send_task("generate_visualizations", queue="cpu", serializer="json")
    cluster.wait(lambda: f"generate_visualizations[{good.id}] succeeded" in cluster.log("cpu"), 60, "the JSON message")
    log = cluster.log("cpu")
    assert "Refusing to deserialize untrusted content of type pickle" in log
    assert f"[{bad.id}] received" not in log                  # never accepted as a task, never run
    assert good.state == "SUCCESS" and bad.state == "PENDING"
    r = cluster.redis.client()      # dropped, not redelivered forever: in no list of the cpu queue (the
    queued = [m for key in r.keys("cpu*") if r.type(key) == b"list"       # beat's scans may wait there,
              for m in r.lrange(key, 0, -1)]                              # at priority 0)
    assert not [m for m in queued if bad.id.encode() in m]
    assert [m for m in queued if good.id.encode() in m] == []


def test_a_message_of_another_learnviz_version_is_run_or_refused_by_name(cluster):
    """A field this learnviz does not know is dropped with a warning; a missing or mistyped one is
    refused naming it. They used to be TypeErrors from Celery's call or from pathlib, the latter
    raised again in on_failure ("Exception raised outside body")."""
    from celery import Celery

    url = dsp.with_password(cluster.redis.url, PASSWORD)
    sender = Celery("newer", broker=url, backend=url, set_as_current=False)
    sender.conf.update(broker_transport_options={"priority_steps": list(range(10))})
    ck = str(cluster.run / "checkpoint-999")                      # never archived: the analysis is skipped
    newer = sender.send_task("analyze", args=[ck, "extra"], kwargs={"probe_set_version": 2}, queue="cpu")
    mistyped = sender.send_task("analyze", args=[{"path": ck}], queue="cpu")
    missing = sender.send_task("collect_embeddings", queue="gpu")
    cluster.wait(lambda: all(r.ready() for r in (newer, mistyped, missing)), 60, "the three messages")
    assert newer.state == "SUCCESS" and newer.result["status"] == "skipped"
    assert (f"analyze[{newer.id}]: ignored the fields #1, probe_set_version of a message from another learnviz "
            "version (run the same learnviz on every worker") in cluster.log("cpu")
    assert mistyped.state == "FAILURE" and str(mistyped.result) == (
        f"analyze[{mistyped.id}]: the message's field 'checkpoint' is dict {{'path': '{ck}'}}, not a path: it came "
        "from another learnviz version (run the same learnviz on every worker, the beat and `learnviz submit`)")
    assert missing.state == "FAILURE" and str(missing.result).startswith(
        f"collect_embeddings[{missing.id}]: the message lacks the field 'checkpoint': it came from another learnviz")
    assert "Exception raised outside body" not in cluster.log("cpu")
    assert cluster.procs["gpu"].poll() is None and cluster.procs["cpu"].poll() is None
