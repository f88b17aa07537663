"""Writers killed outright (SIGKILL: the OOM killer, `docker kill`, a preempted job) in the middle of
a write, in a real subprocess: each leaves its hidden temporary file (`.<name>.<pid>.tmp`), which
no reader takes for a file of its own, and which a later writer removes once it is old enough that
no live writer can be filling it (learnviz.common.STALE_AFTER), never one that is still being
written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import default_sigint

from learnviz import archive as arc
from learnviz import common

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "archive_v1"
OLD = common.STALE_AFTER + 60          # seconds: older than any single write takes
KEY = arc.StageKey("f" * 16, "p" * 16, inputs="i")

# write_atomic held between its temporary file and the os.replace (the fsync that comes between):
# the test kills it there, or lets it go on with a line on its stdin.
HELD_WRITER = """
import os, sys
from learnviz.common import write_atomic
def held(fd):
    print("writing", flush=True)
    sys.stdin.readline()
os.fsync = held
write_atomic(sys.argv[1], sys.argv[2], fsync=True)
print("done", flush=True)
"""

# An archive write held with its whole image in the temporary file, just before the os.replace.
HELD_ARCHIVE_WRITER = """
import sys
import numpy as np
from learnviz import archive as arc
def held(new, old):
    print("writing", flush=True)
    sys.stdin.readline()
arc._newer_than = held
arc.write_stage(sys.argv[1], "extract", key=arc.StageKey("f" * 16, "p" * 16, inputs="i"), root_attrs={"step": 99},
                data={"v": np.ones(50_000)})
"""

# An export killed in its first file, half of which it had written.
HELD_EXPORT = """
import sys
import numpy as np
from learnviz import export
def half(fh, **arrays):
    fh.write(b"PK" + bytes(1000))
    fh.flush()
    print("writing", flush=True)
    sys.stdin.readline()
np.savez = half
export.export(sys.argv[1], "npz", sys.argv[2])
"""

# A later process that writes one file in the folder, as any learnviz writer does.
LATER_WRITER = """
import sys
from learnviz.common import write_atomic
write_atomic(sys.argv[1], sys.argv[2])
"""

LATER_ARCHIVE_WRITER = """
import sys
from learnviz import archive as arc
arc.write_stage(sys.argv[1], "extract", key=arc.StageKey("f" * 16, "p" * 16, inputs="i"), root_attrs={"step": 1},
                data={"v": [1.0]})
"""


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint, **kw)


def _run(code: str, *args: str) -> None:
    proc = _python(code, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def _held(code: str, *args: str) -> subprocess.Popen:
    """A writer stopped in the middle of its write (its temporary file written, not yet in place)."""
    proc = _python(code, *args)
    line = proc.stdout.readline().strip()
    if line != "writing":
        proc.kill()
        pytest.fail(f"the writer did not get to its write: {line!r} {proc.communicate()}")
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _age(path: Path, seconds: float) -> None:
    """Make `path` look untouched for `seconds` (as a leftover of a kill that long ago)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_file_is_kept_while_young_and_removed_by_a_later_writer(tmp_path):
    board = tmp_path / "hard_example_board.json"
    board.write_text("old")
    proc = _held(HELD_WRITER, str(board), "new board")
    _kill(proc)
    left = tmp_path / f".hard_example_board.json.{proc.pid}.tmp"
    assert left.read_text() == "new board" and board.read_text() == "old"   # the old file, whole

    # a process that writes in the folder right after the kill keeps it: as young as that, it could
    # be the file of a writer on another host that shares the folder
    _run(LATER_WRITER, str(tmp_path / "learning_history.jsonl"), "1")
    assert left.exists()
    # once it has lain there for longer than any write takes, the next writer removes it
    _age(left, OLD)
    _run(LATER_WRITER, str(tmp_path / "learning_history.jsonl"), "2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard_example_board.json", "learning_history.jsonl"]
    assert board.read_text() == "old" and (tmp_path / "learning_history.jsonl").read_text() == "2"


def test_a_writer_stopped_for_longer_keeps_its_file_and_finishes_its_write(tmp_path):
    """A live writer on this host whose file has not changed for a long time (stopped: SIGSTOP,
    a suspended machine) keeps it: its pid is alive here."""
    target = tmp_path / "manifest.json"
    proc = _held(HELD_WRITER, str(target), "drawn")
    try:
        tmp = tmp_path / f".manifest.json.{proc.pid}.tmp"
        _age(tmp, OLD)
        _run(LATER_WRITER, str(tmp_path / "other.json"), "x")
        assert tmp.read_text() == "drawn"
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out.strip() == "done", err
    assert target.read_text() == "drawn" and not tmp.exists()


def test_an_archive_writer_killed_midway_leaves_debris_that_a_write_of_another_archive_removes(tmp_path):
    """The checkpoint whose archive was being written when the writer was killed may never be
    written again (deleted, or its run moved on): before, its temporary file (a whole archive's
    image, megabytes in a real run) stayed for good; only a write of the same archive removed it."""
    gone = tmp_path / "checkpoint-99.h5"
    proc = _held(HELD_ARCHIVE_WRITER, str(gone))
    _kill(proc)
    left = tmp_path / f".checkpoint-99.h5.{proc.pid}.tmp"
    assert left.stat().st_size > 400_000 and not gone.exists()
    listing = arc.scan_archives(tmp_path)    # a reader lists nothing of it
    assert listing.archives == [] and listing.unreadable == []

    _run(LATER_ARCHIVE_WRITER, str(tmp_path / "checkpoint-1.h5"))
    assert left.exists()
    _age(left, OLD)
    _run(LATER_ARCHIVE_WRITER, str(tmp_path / "checkpoint-1.h5"))
    assert not left.exists()
    assert [a.step for a in arc.scan_archives(tmp_path).archives] == [1]


def test_an_export_killed_midway_leaves_a_part_that_the_next_export_removes(tmp_path):
    from learnviz import export
    out = tmp_path / "out"
    proc = _held(HELD_EXPORT, str(FIXTURE), str(out))
    _kill(proc)
    left = out / "embeddings" / f".checkpoint_10.npz.{proc.pid}.tmp"
    assert left.read_bytes() == b"PK" + bytes(1000)
    _age(left, OLD)
    written = export.export(FIXTURE, "npz", out)
    assert sorted(p.name for p in (out / "embeddings").iterdir()) == sorted(p.name for p in written)
    with np.load(out / "embeddings" / "checkpoint_10.npz") as z:
        assert int(z["step"]) == 10


def test_only_old_leftovers_of_dead_writers_are_removed(tmp_path):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        tid = 140_213_000_000_000
        files = {
            f".series.h5.{dead}.tmp": OLD,                          # removed
            f".learnviz-index.json.{dead}.{tid}.tmp": OLD,          # removed (the index's name)
            f".radar_10.png.{dead}.tmp": 60,                        # a minute old: kept
            f".umap_10.png.{live.pid}.tmp": OLD,                    # its writer is alive here: kept
            f".learnviz-index.json.{live.pid}.{tid}.tmp": OLD,      # kept
            f".{os.getpid()}.tmp": OLD,                             # no name before the pid: not a writer's
            ".notes.tmp": OLD,                                      # no pid
            "notes.123.tmp": OLD,                                   # not hidden: not a writer's
            f".notes.{dead}.txt": OLD,
        }
        for name, age in files.items():
            (tmp_path / name).write_bytes(b"part of a file")
            _age(tmp_path / name, age)
        folder = tmp_path / f".checkpoint-7.{dead}.tmp"            # a folder of that name is left alone
        folder.mkdir()
        _age(folder, OLD)

        removed = common.remove_leftovers(tmp_path)
        assert sorted(p.name for p in removed) == sorted([f".series.h5.{dead}.tmp",
                                                          f".learnviz-index.json.{dead}.{tid}.tmp"])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [n for n in files if n not in {p.name for p in removed}] + [folder.name])
        assert all((tmp_path / n).read_bytes() == b"part of a file" for n in files if (tmp_path / n).exists())
    finally:
        live.kill()
        live.wait()
    # its writer gone, its file goes too
    assert {p.name for p in common.remove_leftovers(tmp_path)} == {
        f".umap_10.png.{live.pid}.tmp", f".learnviz-index.json.{live.pid}.{tid}.tmp"}


@pytest.mark.parametrize("name, pids", [
    (".checkpoint-10.h5.4242.tmp", (4242,)),
    (".learnviz-index.json.4242.140213000000000.tmp", (140213000000000, 4242)),
    (".a.5.4242.tmp", (4242, 5)),          # which number is the pid is not known: both are asked
    (".hard_example_board.json.tmp", None),
    (".4242.tmp", None),
    ("checkpoint-10.h5.4242.tmp", None),
    (".checkpoint-10.h5.4242.tmp.png", None),
    (".x.٤٢.tmp", None),                   # digits, but not ASCII ones
])
def test_leftover_names(name, pids):
    assert common.leftover_pids(name) == pids


def test_a_folder_is_listed_once_per_process_and_quarter_of_an_hour_not_per_write(tmp_path):
    dead = _dead_pid()
    common.write_atomic(tmp_path / "a.json", "1")      # this process's first write there: it looks
    left = tmp_path / f".b.json.{dead}.tmp"
    left.write_text("part")
    _age(left, OLD)
    for i in range(3):
        common.write_atomic(tmp_path / "a.json", str(i))
    assert left.exists(), "a write looked for leftovers although the folder was looked at just now"
    key = (os.getpid(), os.fspath(tmp_path))
    common._swept[key] -= common.STALE_AFTER + 1        # the last look was a quarter of an hour ago
    common.write_atomic(tmp_path / "a.json", "4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_age_is_measured_on_the_clock_of_the_folder(tmp_path, monkeypatch):
    """A host whose clock runs an hour ahead of the file server's (which stamps the files of a
    shared folder) would take every fresh file for an old one; the file just written there says
    the server's time."""
    dead = _dead_pid()
    left = tmp_path / f".b.json.{dead}.tmp"
    left.write_text("part")
    _age(left, 60)
    ahead = types.SimpleNamespace(time=lambda: time.time() + 3600, monotonic=time.monotonic)
    monkeypatch.setattr(common, "time", ahead)
    common.write_atomic(tmp_path / "a.json", "1")
    assert left.exists()
    assert common.remove_leftovers(tmp_path) == [left]     # by this host's clock alone, it went


def test_readers_never_take_a_leftover_for_an_archive_or_a_figure(tmp_path, capsys):
    """Leftovers as killed writers leave them, some whole (a killed writer may have written all of
    its file and died before the os.replace): the status, the dashboard, the notebook API and the
    exports show the same with them as without them."""
    from PIL import Image

    from dashboard import create_app
    from learnviz import cli, export, notebook, readout

    archive = shutil.copytree(FIXTURE, tmp_path / "archive")

    def read_all(out: Path):
        assert cli.main(["status", "--archive", str(archive)]) == 0
        status = capsys.readouterr().out
        client = create_app(test_config={"LEARNVIZ_ARCHIVE": str(archive), "TESTING": True}).test_client()
        api = client.get("/api/status.json").get_json()
        run = notebook.Run(archive)
        written = export.export(run, "npz", out)
        exported = {p.relative_to(out).as_posix(): np.load(p) if p.suffix == ".npz" else p.read_bytes()
                    for p in written}
        exported = {k: {n: v[n].tolist() for n in v.files} if hasattr(v, "files") else v for k, v in exported.items()}
        return (status, api, [a.path.name for a in arc.scan_archives(archive).archives],
                [u.path.name for u in arc.scan_archives(archive).unreadable],
                [name for name, _ in readout.run_archives(archive)], run.figures(), exported)

    before = read_all(tmp_path / "out-before")
    pid = _dead_pid()
    whole = (archive / "checkpoint-40.h5").read_bytes()
    (archive / f".checkpoint-50.h5.{pid}.tmp").write_bytes(whole)             # a whole archive
    (archive / f".checkpoint-10.h5.{pid}.tmp").write_bytes(whole[:5000])      # a torn one
    (archive / f".series.h5.{pid}.tmp").write_bytes(whole[:5000])
    (archive / f".hard_example_board.json.{pid}.tmp").write_text('{"probes": [')
    (archive / f".learnviz-index.json.{pid}.1234567890.tmp").write_text('{"version"')
    vis = archive / "visualizations"
    vis.mkdir()
    Image.new("RGB", (4, 4)).save(vis / f".radar_10.png.{pid}.tmp", format="PNG")
    after = read_all(tmp_path / "out-after")
    assert after == before
    assert before[2] == ["checkpoint-10.h5", "checkpoint-20.h5", "checkpoint-40.h5"] and before[5] == []

    client = create_app(test_config={"LEARNVIZ_ARCHIVE": str(archive), "TESTING": True}).test_client()
    assert client.get(f"/figures/.radar_10.png.{pid}.tmp").status_code == 404
