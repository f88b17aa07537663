"""A checkpoint with a corrupt safetensors header among good ones, against real worker processes:
the gpu worker records it as failed, naming the file, and archives the next checkpoint; no worker
process exits. (Trusting the header's length used to raise MemoryError in the fingerprint: in the
scan, which the cpu worker runs, Celery takes it as an unrecoverable error and the worker stops.)

A module of its own: the `cluster` fixture is module-scoped, so this test gets a fresh cluster
whose logs hold nothing but this test's checkpoints.
"""

from __future__ import annotations

import shutil
import struct

import pytest

from learnviz.archive import Archive

from .conftest import children, drop_checkpoint, needs_redis

pytestmark = [needs_redis, pytest.mark.slow]

GARBAGE = b"not a length"      # text over the 8-byte header length, as a stray write leaves it


def test_a_corrupt_header_is_recorded_as_failed_and_the_next_checkpoint_is_archived(cluster, tokenizer, tmp_path):
    procs = {name: cluster.procs[name] for name in ("gpu", "cpu", "beat")}
    (gpu_child,) = children(procs["gpu"].pid)

    good = [drop_checkpoint(cluster.run, tokenizer, 10, seed=1)]
    # Corrupted outside the watched folder, then moved in whole: no scan ever sees it intact.
    staged = drop_checkpoint(tmp_path, tokenizer, 20, seed=2)
    with open(staged / "model.safetensors", "r+b") as fh:
        fh.write(GARBAGE[:8])
    bad = cluster.run / staged.name
    shutil.move(staged, bad)
    good.append(drop_checkpoint(cluster.run, tokenizer, 30, seed=3))

    cluster.wait(lambda: cluster.stages(bad).get("extract", ("",))[0] == "failed", 150,
                 "the corrupt checkpoint to be recorded as failed")
    cluster.wait(lambda: cluster.complete(good), 150, "both good checkpoints to hold extract, analysis and geometry")

    (n,) = struct.unpack("<Q", GARBAGE[:8])
    info = Archive(cluster.archive_of(bad)).stage("extract")
    assert info.reason == (f"model.safetensors: unreadable safetensors header: header length {n} is implausible "
                           "(the file's first 8 bytes are not a length)")
    assert info.attrs["worker"].startswith("gpu-test@")
    assert set(cluster.stages(bad)) == {"extract"}           # nothing runs on a failed extraction
    steps = sorted(row["step"] for row in cluster.history() if "accuracy" in row)
    assert steps == [10, 30]                                   # each good checkpoint extracted once

    for name, proc in procs.items():
        assert proc.poll() is None, f"the {name} process exited:\n{cluster.log(name)[-3000:]}"
    assert children(procs["gpu"].pid) == [gpu_child]          # the same pool child: it never died
    for name in procs:   # the scan (a cpu task) and the extraction fingerprint it without raising
        log = cluster.log(name)
        assert "MemoryError" not in log and "Unrecoverable error" not in log and "WorkerLostError" not in log, name
