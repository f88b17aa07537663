import multiprocessing as mp
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from learnviz import archive as arc

KEY = arc.StageKey("fp1", "ph1")
ROOT = {"step": 7, "checkpoint": "/x/checkpoint-7"}


def test_elements_round_trip_with_encodings(tmp_path):
    path = tmp_path / "c.h5"
    data = {"emb": np.arange(6, dtype=np.float16).reshape(2, 3), "names": np.array(["a", "é\x00"], dtype=object),
            "tok": arc.Ragged.from_rows([[1, 2], [], [3]], np.int32), "nested": {"x": np.ones(2)}}
    arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT, data=data, attrs={"layers": [1, 3]},
                    timings={"total": 1.5})
    a = arc.Archive(path)
    assert a.step == 7 and a.attrs["schema_version"] == arc.SCHEMA_VERSION and a.attrs["fingerprint"] == "fp1"
    info = a.stage("extract")
    assert info.ok and info.key == KEY and info.attrs["timings"] == {"total": 1.5}
    got = a.read("extract")
    assert got["emb"].dtype == np.float16 and np.array_equal(got["emb"], data["emb"])
    assert list(got["names"]) == ["a", "é\ufffd"]   # NUL cannot live in an HDF5 string
    assert [list(got["tok"].row(i)) for i in range(3)] == [[1, 2], [], [3]]
    assert np.array_equal(got["nested"]["x"], np.ones(2))
    with h5py.File(path) as f:
        assert f["extract/tok"].attrs["encoding-type"] == "ragged-array"
        assert f["extract"].attrs["encoding-version"] == arc.STAGE_VERSION


def test_stages_accumulate_and_stale_ones_drop(tmp_path):
    path = tmp_path / "c.h5"
    arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT, data={"v": np.ones(3)})
    arc.write_stage(path, "analysis", key=KEY, root_attrs=ROOT, data={"w": np.zeros(2)})
    a = arc.Archive(path)
    assert set(a.stages) == {"extract", "analysis"} and a.is_current("extract", KEY)
    created = a.attrs["created"]
    arc.write_stage(path, "analysis", key=KEY, root_attrs=ROOT, status="failed", reason="boom")
    a = arc.Archive(path)
    assert a.stage("analysis").reason == "boom" and a.is_current("analysis", KEY)
    assert not a.is_current("analysis", KEY, retry_failed=True) and a.attrs["created"] == created
    new = arc.StageKey("fp2", "ph1")   # the weights changed: every old group is stale
    arc.write_stage(path, "extract", key=new, root_attrs=ROOT, data={"v": np.ones(3)})
    assert set(arc.Archive(path).stages) == {"extract"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_unknown_versions_give_clear_errors(tmp_path):
    path = tmp_path / "c.h5"
    arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT, data={"v": np.ones(3)})
    with h5py.File(path, "a") as f:
        f["extract/v"].attrs["encoding-type"] = "sparse-tensor"
    with pytest.raises(arc.ArchiveError, match="unknown encoding-type 'sparse-tensor'"):
        arc.Archive(path).read("extract")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(arc.ArchiveError, match="schema_version 99"):
        arc.Archive(path)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(arc.ArchiveError, match="bad.h5"):
        arc.Archive(tmp_path / "bad.h5")
    assert [x.path.name for x in arc.list_archives(tmp_path)] == []


def _write_many(path, stage, n):
    for i in range(n):
        arc.write_stage(path, stage, key=KEY, root_attrs=ROOT, data={"i": np.array([i]), "pad": np.zeros(20000)})


def test_concurrent_stages_never_lose_each_other(tmp_path):
    """Two processes finishing different stages at once: both groups survive."""
    path = tmp_path / "c.h5"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, s, 15)) for s in ("extract", "analysis")]
    for p in procs:
        p.start()
    seen_unreadable = 0
    while any(p.is_alive() for p in procs):   # readers never lock and never see a half file
        if path.exists():
            try:
                arc.Archive(path)
            except arc.ArchiveError:
                seen_unreadable += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    a = arc.Archive(path)
    assert set(a.stages) == {"extract", "analysis"}
    assert a.read("extract", ["i"])["i"][0] == 14 and a.read("analysis", ["i"])["i"][0] == 14
    assert seen_unreadable == 0


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from learnviz import archive as arc
    path = sys.argv[1]
    real = arc.write_elem
    def slow(group, name, value):
        real(group, name, value)
        if name == "b":
            print("writing", flush=True)
            time.sleep(60)          # SIGKILLed here, halfway through the temporary file
    arc.write_elem = slow
    arc.write_stage(path, "analysis", key=arc.StageKey("fp1", "ph1"), root_attrs={"step": 7},
                    data={"a": np.ones(1000), "b": np.ones(1000), "c": np.ones(1000)})
""")


def test_sigkill_mid_write_leaves_a_readable_archive(tmp_path):
    path = tmp_path / "c.h5"
    arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT, data={"v": np.ones(3)})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the archive is built in memory, so a writer killed while building it leaves no temporary
    # file; one killed while writing the image out leaves part of it, which the next writer removes
    assert not list(tmp_path.glob(".c.h5.*.tmp"))
    (tmp_path / f".c.h5.{proc.pid}.tmp").write_bytes(b"\x89HDF\r\n\x1a\n part of an image")
    a = arc.Archive(path)                                  # the old archive, intact
    assert set(a.stages) == {"extract"} and a.read("extract")["v"].sum() == 3
    arc.write_stage(path, "analysis", key=KEY, root_attrs=ROOT, data={"a": np.ones(2)})  # lock released by the kernel
    assert set(arc.Archive(path).stages) == {"extract", "analysis"}
    assert not list(tmp_path.glob(".c.h5.*.tmp")), "the next writer removes stale temporary files"


def test_header_and_derived_values_are_read_once_per_file_version(tmp_path, monkeypatch):
    """Listing unchanged archives again opens none of them; a rewritten archive (a new file
    replaced over the old) is read again, so nothing stale is ever served."""
    from learnviz.readout import archive_accuracy
    opened = []
    real_open = arc.Archive._open
    monkeypatch.setattr(arc.Archive, "_open", lambda self: opened.append(self.path) or real_open(self))
    path = tmp_path / "c.h5"
    skills = np.array(["a", "a", "b"], dtype=object)
    arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT,
                    data={"correct": np.array([True, False, True]), "probe_skill": skills})
    assert archive_accuracy(arc.Archive(path)) == (2 / 3, {"a": 0.5, "b": 1.0})
    assert len(opened) == 2                                   # the header, then the accuracy
    again = arc.Archive(path)
    assert archive_accuracy(again) == (2 / 3, {"a": 0.5, "b": 1.0}) and len(opened) == 2
    assert again.stage("extract").ok

    arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT,
                    data={"correct": np.array([True, True, True]), "probe_skill": skills})
    assert archive_accuracy(arc.Archive(path)) == (1.0, {"a": 1.0, "b": 1.0}) and len(opened) == 4

    # a view made before the file was replaced computes from the new file but keeps nothing
    old_view = arc.Archive(path)
    arc.write_stage(path, "analysis", key=KEY, root_attrs=ROOT, data={"w": np.zeros(2)})
    assert old_view.memo("probe", lambda: 1) == 1 and old_view.memo("probe", lambda: 2) == 2
    # an exception is raised each time, never kept
    current = arc.Archive(path)
    with pytest.raises(KeyError):
        current.memo("fails", lambda: {}["x"])
    assert current.memo("fails", lambda: 3) == 3 and current.memo("fails", lambda: 4) == 3


def test_memo_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(arc, "MEMO_SIZE", 3)
    monkeypatch.setattr(arc, "_memo", arc.OrderedDict())
    path = tmp_path / "c.h5"
    arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT, data={"v": np.ones(3)})
    a = arc.Archive(path)
    for i in range(10):
        a.memo(f"value {i}", lambda i=i: i)
    assert len(arc._memo) == 3 and a.memo("value 9", lambda: -1) == 9 and a.memo("value 0", lambda: -1) == -1


def test_each_rewrite_is_a_new_file_version(tmp_path):
    """Same size, written within one tick of the file-system clock, inode numbers reused: every
    version still differs from every earlier one (the memo keys on it)."""
    path = tmp_path / "c.h5"
    seen = []
    for i in range(6):
        arc.write_stage(path, "extract", key=KEY, root_attrs=ROOT, data={"v": np.full(3, i)})
        seen.append(arc.file_version(path))
        assert arc.Archive(path).read("extract")["v"][0] == i
    assert len(set(seen)) == len(seen)
    assert [v[-1] for v in seen] == sorted(v[-1] for v in seen)     # modification times only grow
