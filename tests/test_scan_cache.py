"""The scan cache (learnviz.scan_cache): a scan reads only the checkpoints and archives that changed
since an earlier scan, in this process or another, and plans exactly what a scan without it plans."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import learnviz_run, make_checkpoint, write_small_probes

from learnviz import archive as arc
from learnviz import checkpoints as cks
from learnviz import collect, scan_cache
from learnviz.checkpoints import TOKENIZER_FILES


@pytest.fixture
def counted(monkeypatch):
    """The checkpoint files a scan reads: each weight file fingerprinted or checked, by folder."""
    reads: list[str] = []
    real_hash, real_check = cks._hash_weight_file, cks.safetensors_problem
    monkeypatch.setattr(cks, "_hash_weight_file", lambda h, w: reads.append(w.parent.name) or real_hash(h, w))
    monkeypatch.setattr(cks, "safetensors_problem", lambda w: reads.append(w.parent.name) or real_check(w))
    monkeypatch.setattr(scan_cache, "MARGIN_NS", 0)    # the files below were written a moment ago
    return reads


def _plan(settings, *, new_process: bool = True):
    """What a scan plans, as comparable values: (checkpoint, key, stages) of each job, the archives
    found current, and the incomplete checkpoints."""
    if new_process:
        arc.clear_memo()        # what a new process has: only the files (the scan cache's included)
    current, incomplete = [], []
    jobs = collect.plan(settings, collect.load_probes(settings), current=current, incomplete=incomplete)
    return ([(j.checkpoint.name, j.checkpoint.step, j.key, j.stages, [w.name for w in j.checkpoint.weight_files])
             for j in jobs], sorted(p.name for p in current), incomplete)


def _fresh_plan(settings):
    """The same scan with nothing known beforehand: no cache file, nothing kept in-process."""
    cache = settings.archive_dir() / scan_cache.NAME
    kept = cache.read_bytes() if cache.exists() else None
    cache.unlink(missing_ok=True)
    try:
        return _plan(settings)
    finally:
        if kept is not None:
            cache.write_bytes(kept)


def _fresh_plan_here(settings):
    """`_fresh_plan` without forgetting what this process keeps (the caller hides it)."""
    cache = settings.archive_dir() / scan_cache.NAME
    kept = cache.read_bytes() if cache.exists() else None
    cache.unlink(missing_ok=True)
    try:
        return _plan(settings, new_process=False)
    finally:
        if kept is not None:
            cache.write_bytes(kept)


def test_a_scan_reads_only_what_changed_and_plans_as_a_fresh_scan(settings, tmp_path, tokenizer, counted):
    settings = dataclasses.replace(settings, probes=str(write_small_probes(tmp_path / "probes.jsonl", every=60)),
                                   hard_examples="")
    root = Path(settings.checkpoints)
    report = learnviz_run(settings, cpu_stages=False, progress=False)
    assert report.ok and len(report.done) == 3
    counted.clear()
    first = _plan(settings)            # a new process: the first scan since the extractions
    assert first == ([], ["checkpoint-10.h5", "checkpoint-20.h5", "checkpoint-30.h5"], [])
    entries = json.loads((settings.archive_dir() / scan_cache.NAME).read_text())["entries"]
    assert sorted(os.path.basename(p) for p in entries) == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]
    assert all(e["current"] for e in entries.values())
    counted.clear()
    assert _plan(settings) == first and counted == []                        # another new process
    assert _plan(settings, new_process=False) == first and counted == []    # a long-lived one

    # checkpoint-20's weights rewritten in place, same size, modification time set back
    w = f"{root}/checkpoint-20/model.safetensors"
    st = os.stat(w)
    other = make_checkpoint(tmp_path / "other" / "checkpoint-20", tokenizer, step=20, seed=7)
    data = (other / "model.safetensors").read_bytes()
    assert len(data) == st.st_size
    with open(w, "r+b") as fh:
        fh.write(data)
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    # checkpoint-10's archive deleted; checkpoint-30's tokenizer changed; a new checkpoint-40
    (settings.archive_dir() / "checkpoint-10.h5").unlink()
    tok = f"{root}/checkpoint-30/tokenizer_config.json"
    with open(tok, "a") as fh:
        fh.write(" ")
    make_checkpoint(root / "checkpoint-40", tokenizer, step=40, seed=4)
    counted.clear()
    changed = _plan(settings)
    jobs = {name: (step, stages) for name, step, _, stages, _ in changed[0]}
    assert jobs == {"checkpoint-10": (10, ["extract"]), "checkpoint-20": (20, ["extract"]),
                    "checkpoint-30": (30, ["extract"]), "checkpoint-40": (40, ["extract"])}
    assert changed[1] == []
    # checkpoint-10's files are as they were: its fingerprint is kept, only its archive is gone
    assert sorted(counted) == ["checkpoint-20", "checkpoint-20", "checkpoint-30", "checkpoint-30",
                               "checkpoint-40", "checkpoint-40"]
    assert changed == _fresh_plan(settings)
    keys = {name: key for name, _, key, _, _ in changed[0]}
    assert keys["checkpoint-10"].fingerprint == next(k for n, _, k, _, _ in _fresh_plan(settings)[0]
                                                     if n == "checkpoint-10").fingerprint

    # a checkpoint deleted: its entry is dropped
    shutil.rmtree(root / "checkpoint-40")
    _plan(settings)
    entries = json.loads((settings.archive_dir() / scan_cache.NAME).read_text())["entries"]
    assert sorted(os.path.basename(p) for p in entries) == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]


@pytest.mark.parametrize("damage", [b"{not json", b'{"version": 1, "entries": {"x": 5}}', b"[1, 2]",
                                    b'{"version": 1, "entries": {"/a": {"files": [""], "sig": [7], "step": 1}}}'])
def test_a_damaged_cache_is_as_good_as_none(settings, counted, damage):
    settings.archive_dir().mkdir(parents=True)
    expected = _fresh_plan(settings)
    cache = settings.archive_dir() / scan_cache.NAME
    assert sorted(os.path.basename(p) for p in json.loads(cache.read_text())["entries"]) == [
        "checkpoint-10", "checkpoint-20", "checkpoint-30"]
    cache.write_bytes(damage)
    counted.clear()
    assert _plan(settings) == expected and len(counted) == 6      # every checkpoint read again ...
    assert len(json.loads(cache.read_text())["entries"]) == 3      # ... and the cache written again
    counted.clear()
    assert _plan(settings) == expected and counted == []


def test_a_tokenizer_that_appears_beside_the_checkpoints_changes_their_key(settings, tokenizer, counted):
    root = Path(settings.checkpoints)
    settings.archive_dir().mkdir(parents=True)
    for step in (10, 20, 30):
        for name in TOKENIZER_FILES:
            (root / f"checkpoint-{step}" / name).unlink(missing_ok=True)
    before = _plan(settings)
    counted.clear()
    assert _plan(settings) == before and counted == []
    tokenizer.save_pretrained(root)         # the run folder gets the tokenizer's files
    after = _plan(settings)
    assert after == _fresh_plan(settings)
    assert [k.fingerprint for _, _, k, _, _ in after[0]] != [k.fingerprint for _, _, k, _, _ in before[0]]
    (root / "tokenizer.json").write_text((root / "tokenizer.json").read_text() + " ")   # changed in place
    again = _plan(settings)
    assert again == _fresh_plan(settings)
    assert [k.fingerprint for _, _, k, _, _ in again[0]] != [k.fingerprint for _, _, k, _, _ in after[0]]


def test_files_written_shortly_before_a_scan_are_looked_at_again(settings, monkeypatch):
    """The cache keeps nothing read while it may still have been written: a checkpoint whose files
    changed within MARGIN_NS of the scan's start is read again by the next scan."""
    settings.archive_dir().mkdir(parents=True)
    monkeypatch.setattr(scan_cache, "MARGIN_NS", 3600 * 10**9)
    _plan(settings)
    assert not (settings.archive_dir() / scan_cache.NAME).exists()      # nothing kept: nothing written
    monkeypatch.setattr(scan_cache, "MARGIN_NS", 0)
    _plan(settings)
    assert len(json.loads((settings.archive_dir() / scan_cache.NAME).read_text())["entries"]) == 3


def test_a_sharded_checkpoint_is_known_by_every_shard(tmp_path, tokenizer, counted):
    """A checkpoint saved in shards (model.safetensors.index.json): each shard is one of the files
    a known checkpoint is checked by; a shard that goes missing makes it incomplete again."""
    from learnviz.settings import load_settings

    root = tmp_path / "run"
    ck = make_checkpoint(root / "step_5", tokenizer, step=5)
    from transformers import GPT2LMHeadModel
    GPT2LMHeadModel.from_pretrained(ck).save_pretrained(ck, max_shard_size="40KB")   # in shards instead
    (ck / "model.safetensors").unlink(missing_ok=True)
    shards = sorted(p.name for p in ck.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (ck / "model.safetensors.index.json").exists()
    s = load_settings(overrides={"checkpoints": str(root), "archive": str(tmp_path / "archive"),
                                 "settle_seconds": 0.0, "device": "cpu"}, environ={})
    s.archive_dir().mkdir(parents=True)
    first = _plan(s)
    assert first[0][0][:2] == ("step_5", 5) and first[0][0][4] == shards
    counted.clear()
    assert _plan(s) == first and counted == []
    entry, = json.loads((s.archive_dir() / scan_cache.NAME).read_text())["entries"].values()
    assert entry["weights"] == shards and set(shards) | {"model.safetensors.index.json"} <= set(entry["files"])
    (ck / shards[-1]).unlink()
    jobs, current, incomplete = _plan(s)
    assert jobs == [] and current == [] and [(p.name, why) for p, why in incomplete] == [
        ("step_5", f"weight shard {shards[-1]} is missing")]


# ---------------------------------------------------------------- a long-lived process's watches (learnviz.fswatch)

def _archived_run(settings, tmp_path):
    """The run extracted (a small probe set), for a process's watches; skips without inotify."""
    from learnviz import fswatch
    if fswatch.watcher() is None:
        pytest.skip("no inotify here")
    settings = dataclasses.replace(settings, probes=str(write_small_probes(tmp_path / "probes.jsonl", every=60)),
                                   hard_examples="")
    assert learnviz_run(settings, cpu_stages=False, progress=False).ok
    return settings


@pytest.fixture
def stats(monkeypatch):
    """The checkpoint folders, files and archives whose identity a scan looks up, by base name (the
    cache file's own, once a scan, left out)."""
    seen: list[str] = []
    real = scan_cache.stat_id

    def stat_id(p):
        if os.path.basename(p) != scan_cache.NAME:
            seen.append(os.path.basename(p.rstrip("/")))
        return real(p)
    monkeypatch.setattr(scan_cache, "stat_id", stat_id)
    return seen


def test_a_long_lived_scan_checks_only_what_the_kernel_reports_changed(settings, tmp_path, tokenizer, counted, stats):
    """From its second scan of a run on, a process watches the folders it checked: a third scan
    stats nothing unchanged, and still finds an in-place rewrite with the mtime set back, a deleted
    archive and a new checkpoint, planning exactly what a fresh scan plans."""
    settings = _archived_run(settings, tmp_path)
    root = Path(settings.checkpoints)
    arc.clear_memo()
    first = _plan(settings, new_process=False)        # a new process's first scan: no watches
    assert len(stats) > 6
    _plan(settings, new_process=False)                # its second: it checks, with the watches in place
    stats.clear()
    counted.clear()
    assert _plan(settings, new_process=False) == first and stats == [] and counted == []

    w = f"{root}/checkpoint-20/model.safetensors"     # rewritten in place, same size, mtime set back
    st = os.stat(w)
    data = (make_checkpoint(tmp_path / "other" / "checkpoint-20", tokenizer, step=20, seed=7)
            / "model.safetensors").read_bytes()
    with open(w, "r+b") as fh:
        fh.write(data)
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    (settings.archive_dir() / "checkpoint-10.h5").unlink()
    make_checkpoint(root / "checkpoint-40", tokenizer, step=40, seed=4)
    stats.clear()
    counted.clear()
    changed = _plan(settings, new_process=False)
    assert {name: stages for name, _, _, stages, _ in changed[0]} == {
        "checkpoint-10": ["extract"], "checkpoint-20": ["extract"], "checkpoint-40": ["extract"]}
    assert sorted(set(counted)) == ["checkpoint-20", "checkpoint-40"]
    assert "checkpoint-30" not in stats and "checkpoint-30.h5" not in stats and "checkpoint-10.h5" in stats
    assert changed == _fresh_plan(settings)


def test_a_long_lived_scan_keeps_the_run_folders_listing_and_follows_what_the_kernel_reports(
        settings, tmp_path, tokenizer, counted, monkeypatch):
    """A watched run folder is listed once: later scans look again only at the entries reported
    changed and at those that were no checkpoint folder yet. A checkpoint added, one renamed into
    place from a temporary name, one removed, and a folder that becomes a checkpoint when its
    config.json is written are each found, and every scan plans exactly what a fresh scan plans."""
    settings = _archived_run(settings, tmp_path)
    root = Path(settings.checkpoints)
    listed = []
    real = scan_cache._list
    monkeypatch.setattr(scan_cache, "_list", lambda *a: listed.append(a[0]) or real(*a))
    arc.clear_memo()
    _plan(settings, new_process=False)
    _plan(settings, new_process=False)            # watched from here on: listed this once more
    assert listed == [str(root)]

    def same_as_fresh():
        got = _plan(settings, new_process=False)
        kept, scans = dict(scan_cache._kept), dict(scan_cache._scans)    # this process's state, put back after
        scan_cache._kept.clear()
        scan_cache._scans.clear()          # a first scan: no watches, nothing kept, the folder listed
        try:
            assert got == _fresh_plan_here(settings)
        finally:
            scan_cache._kept.clear()
            scan_cache._kept.update(kept)
            scan_cache._scans.clear()
            scan_cache._scans.update(scans)
        return {name for name, *_ in got[0]}, set(got[1])

    final = make_checkpoint(tmp_path / "staging" / "final", tokenizer, step=50, seed=5)
    (final / "config.json").rename(tmp_path / "staging" / "config.json")
    shutil.move(str(final), str(root / "final"))          # a folder that is no checkpoint yet
    make_checkpoint(root / "tmp-checkpoint-60", tokenizer, step=60, seed=6)
    jobs, current = same_as_fresh()
    assert "final" not in jobs and "checkpoint-60" not in jobs
    (root / "tmp-checkpoint-60").rename(root / "checkpoint-60")           # renamed into place
    (tmp_path / "staging" / "config.json").rename(root / "final" / "config.json")   # now a checkpoint
    shutil.rmtree(root / "checkpoint-30")
    jobs, current = same_as_fresh()
    assert {"final", "checkpoint-60"} <= jobs and current == {"checkpoint-10.h5", "checkpoint-20.h5"}
    assert listed == [str(root)]                   # none of it listed the folder again


def test_a_long_lived_listing_of_the_archives_stats_only_what_the_kernel_reports_changed(
        settings, tmp_path, tokenizer, counted, monkeypatch):
    """With the archive folder watched (a process that scanned the run twice), listing the archives
    again stats none that reported nothing since its view was checked, and still gives a new view
    of one touched and of one replaced."""
    settings = _archived_run(settings, tmp_path)
    arc.clear_memo()
    _plan(settings, new_process=False)
    _plan(settings, new_process=False)                 # the archive folder is watched from here on
    folder = settings.archive_dir()
    statted = []
    real = arc.file_version
    monkeypatch.setattr(arc, "file_version", lambda p: statted.append(Path(p).name) or real(p))
    first = {a.path.name: a for a in arc.scan_archives(folder).archives}
    arc.scan_archives(folder)                          # checks each view once more, and marks it
    statted.clear()
    again = {a.path.name: a for a in arc.scan_archives(folder).archives}
    assert statted == [] and all(again[n] is first[n] for n in first)
    touched, replaced = sorted(first)[:2]
    os.utime(folder / touched, ns=(1, 1))              # its version changes: a new view
    shutil.copy2(folder / replaced, tmp_path / "copy.h5")
    os.replace(tmp_path / "copy.h5", folder / replaced)
    statted.clear()
    now = {a.path.name: a for a in arc.scan_archives(folder).archives}
    assert sorted(set(statted)) == sorted({touched, replaced})
    assert now[touched] is not first[touched] and now[replaced] is not first[replaced]
    assert now[touched].version == real(folder / touched)
    assert all(now[n] is first[n] for n in first if n not in (touched, replaced))


def test_watches_are_not_trusted_for_linked_files_remote_folders_or_when_turned_off(settings, counted, stats,
                                                                                     monkeypatch):
    from learnviz import fswatch
    local = fswatch._fs_type
    if fswatch.watcher() is None:
        pytest.skip("no inotify here")
    root = Path(settings.checkpoints)
    settings.archive_dir().mkdir(parents=True)
    real = root / "checkpoint-30" / "model.safetensors"
    kept = root.parent / "blobs"
    kept.mkdir()
    real.rename(kept / "w.safetensors")
    real.symlink_to(kept / "w.safetensors")          # a weight file that is a link (the hub's cache layout)
    for _ in range(3):
        _plan(settings, new_process=False)
    stats.clear()
    _plan(settings, new_process=False)
    assert stats == ["checkpoint-30", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]

    arc.clear_memo()                                  # a new process on a network file system
    monkeypatch.setattr(fswatch, "_fs_type", lambda path: "nfs4")
    for _ in range(3):
        _plan(settings, new_process=False)
    stats.clear()
    _plan(settings, new_process=False)
    assert {"checkpoint-10", "checkpoint-20", "checkpoint-30"} <= set(stats)

    arc.clear_memo()                                  # a local file system, the setting off
    monkeypatch.setattr(fswatch, "_fs_type", local)
    off = dataclasses.replace(settings, watch_folders=False)
    for _ in range(3):
        _plan(off, new_process=False)
    stats.clear()
    _plan(off, new_process=False)
    assert {"checkpoint-10", "checkpoint-20", "checkpoint-30"} <= set(stats)


def test_a_lost_event_unmarks_everything(tmp_path):
    """The kernel's queue overflowed: nothing is known to be unchanged any more. (The events are
    fed through a pipe in the kernel's own layout.)"""
    import struct

    from learnviz import fswatch
    if not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux's")
    w = fswatch.Watcher()
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            assert w.watch(str(tmp_path / name))
            w.mark(str(tmp_path / name))
            w.mark(str(tmp_path / name), "f.h5")
        (tmp_path / "a" / "other").write_text("x")        # a real event: a's folder, not a's f.h5
        w.drain()
        assert not w.checked(str(tmp_path / "a")) and w.checked(str(tmp_path / "a"), "f.h5")
        assert w.checked(str(tmp_path / "b"))
        os.replace(tmp_path / "a" / "other", tmp_path / "a" / "f.h5")
        w.drain()
        assert not w.checked(str(tmp_path / "a"), "f.h5") and w.checked(str(tmp_path / "b"), "f.h5")
        w.cap = len(w._folders)                            # no more watches than the cap
        (tmp_path / "c").mkdir()
        assert not w.watch(str(tmp_path / "c")) and w.watch(str(tmp_path / "a"))
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.close(w.fd)
        w.fd = read
        os.write(write, struct.pack("iIII", -1, fswatch.IN_Q_OVERFLOW, 0, 0))
        w.drain()
        assert not w.checked(str(tmp_path / "b")) and not w.checked(str(tmp_path / "b"), "f.h5")
        os.close(write)
    finally:
        w.close()


def test_a_forked_child_gets_its_own_watches(tmp_path):
    """A Celery pool process is forked: it must not read its parent's inotify events (each would
    miss the changes the other read)."""
    from learnviz import fswatch
    if not hasattr(os, "fork") or fswatch.watcher() is None:
        pytest.skip("no fork or no inotify here")
    parent = fswatch.watcher()
    (tmp_path / "a").mkdir()
    assert parent.watch(str(tmp_path / "a"))
    parent.mark(str(tmp_path / "a"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:       # the child: a watcher of its own, with nothing marked
        try:
            child = fswatch.watcher()
            ok = child is not None and child is not parent and child.fd != parent.fd \
                and not child.checked(str(tmp_path / "a"))
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    (tmp_path / "a" / "f").write_text("x")                  # the parent still reads its own events
    parent.drain()
    assert not parent.checked(str(tmp_path / "a")) and fswatch.watcher() is parent
    fswatch.forget()
