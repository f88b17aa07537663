import multiprocessing as mp
import signal
import subprocess
import sys
import textwrap
import time

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
    assert list(tmp_path.glob(".c.h5.*.tmp")), "the killed writer's temporary file is left behind"
    a = arc.Archive(path)                                  # the old archive, intact
    assert set(a.stages) == {"extract"} and a.read("extract")["v"].sum() == 3
    arc.write_stage(path, "analysis", key=KEY, root_attrs=ROOT, data={"a": np.ones(2)})  # lock released by the kernel
    assert set(arc.Archive(path).stages) == {"extract", "analysis"}
    assert not list(tmp_path.glob(".c.h5.*.tmp")), "the next writer removes stale temporary files"
