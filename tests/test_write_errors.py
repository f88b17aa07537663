"""A full disk or a read-only archive folder: learnviz cannot write a file of its own. The run
stops with an error that names the file, nothing is recorded against a checkpoint (it is not the
checkpoint's fault), and what was archived before is kept as it was.

The write errors are real ones where a test can make them: a subprocess under a file-size limit
(RLIMIT_FSIZE: each write past it fails with EFBIG, as one on a full disk fails with ENOSPC)."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import learnviz_run as run
from helpers import write_small_probes

from learnviz import archive as arc
from learnviz.errors import WriteError

resource = pytest.importorskip("resource")


def _limited(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run `code` in a new Python whose files may not grow past `limit` bytes."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("limit", [8_000, 60_000, 300_000])
def test_an_archive_write_that_finds_no_room_is_a_named_error_and_the_old_file_stays(tmp_path, limit):
    """HDF5 that met the failed write in a file of its own left it open in the library: the
    process printed dozens of "Can't decrement id ref count" and died of a segmentation fault."""
    path = tmp_path / "checkpoint-1.h5"
    key = arc.StageKey("f" * 16, "p" * 16, inputs="i")
    arc.write_stage(path, "extract", key=key, root_attrs={"step": 1}, data={"x": [1.0, 2.0]})
    before = path.read_bytes()
    done = _limited(f"""
        import numpy as np
        from learnviz import archive as arc
        from learnviz.errors import WriteError
        key = arc.StageKey("f" * 16, "p" * 16, inputs="i")
        try:
            arc.write_stage({str(path)!r}, "extract", key=key, root_attrs={{"step": 1}},
                            data={{f"a{{i}}": np.random.rand(3000) for i in range(30)}})
        except WriteError as exc:
            print("WriteError:", exc)
    """, limit)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (f"WriteError: {path}: cannot write: File too large "
                                   f"(free some space or make the folder writable, then run again)")
    assert "decrement" not in done.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", "checkpoint-1.h5"]


def test_a_full_disk_records_nothing_against_the_checkpoint(settings, tmp_path, monkeypatch):
    """checkpoint-30's extraction was fine, but its archive did not fit on the disk: the failure
    used to be recorded in that archive as the checkpoint's ("OSError: [Errno 28] ..."), held for
    good (only --retry-failed or new weights retried it), and the run went on as if it were a
    broken checkpoint. Now the run stops naming the file, and the next run archives it."""
    settings = dataclasses.replace(settings, probes=str(write_small_probes(tmp_path / "probes.jsonl")))
    real = arc._write_tmp

    def full_for_checkpoint_30(tmp, path, old, stage, **kw):
        if path.name == "checkpoint-30.h5" and kw["status"] == "ok":
            raise OSError(errno.ENOSPC, "Unable to synchronously create file (file write failed)")
        return real(tmp, path, old, stage, **kw)

    monkeypatch.setattr(arc, "_write_tmp", full_for_checkpoint_30)
    with pytest.raises(WriteError) as caught:
        run(settings, cpu_stages=False, progress=False)
    target = settings.archive_dir() / "checkpoint-30.h5"
    assert str(caught.value) == (f"{target}: cannot write: No space left on device "
                                 f"(free some space or make the folder writable, then run again)")
    assert not target.exists()
    assert [arc.Archive(settings.archive_dir() / f"checkpoint-{s}.h5").stage("extract").status
            for s in (10, 20)] == ["ok", "ok"]

    monkeypatch.setattr(arc, "_write_tmp", real)     # room again: no --retry-failed needed
    report = run(settings, cpu_stages=False, progress=False)
    assert report.failed == []
    assert arc.Archive(target).stage("extract").status == "ok"


def test_a_plain_file_that_finds_no_room_names_itself(tmp_path):
    """The history, the figures' manifest, the indexes: a write() that fails names no file (its
    OSError has no filename), and one into the temporary sibling names that one."""
    path = tmp_path / "manifest.json"
    done = _limited(f"""
        from learnviz.common import write_atomic
        try:
            write_atomic({str(path)!r}, "x" * 10_000)
        except OSError as exc:
            print(exc.errno, exc.filename)
    """, 1_000)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(errno.EFBIG), str(path)]
    assert list(tmp_path.iterdir()) == []


def test_the_cli_names_the_file_it_could_not_write_without_a_traceback(tmp_path, monkeypatch, capsys):
    """`learnviz: error: FILE: reason` and exit status 2, instead of a traceback, when the archive
    folder is read-only (here: its run lock) or the disk full."""
    from learnviz import cli, pipeline
    lock = tmp_path / "learnviz-archive" / ".locks" / "run.lock"

    def read_only(*args, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(lock))

    monkeypatch.setattr(pipeline, "update", read_only)
    assert cli.main(["run", "--checkpoints", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"learnviz: error: {lock}: Read-only file system\n"
