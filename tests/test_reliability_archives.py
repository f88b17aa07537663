"""A bad archive file is reported with a reason that names it, and never stops, hides or
rewrites anything else (docs/archive.md, "Unreadable archives"); a checkpoint folder with nothing
in it says so.

Two kinds of real runs: tiny real checkpoints archived by the real extraction (`learnviz run`,
built once per module, copied per test), and the no-model series of tests/plots/conftest.py
(real archives written through the archive API, real CPU stages with UMAP replaced by PCA), for
`status` and `analyze`. `learnviz run` runs here without its figures (the `run` wrapper below):
they take most of a run's time and read only what the CPU stages wrote.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from helpers import make_checkpoint, tiny_tokenizer
from plots.conftest import fake_umap, make_series

from learnviz import archive as arc
from learnviz import cli, pipeline
from learnviz.results import ANALYSIS, EXTRACT, GEOMETRY
from learnviz.settings import load_settings

STEPS = (10, 20, 30)
PROBES = [   # (prompt, expected, skill): few, so that an extraction takes a moment
    ("All cats are dogs. All dogs are pets. What follows about cats and pets?", "All cats are pets.", "easy"),
    ("No cats are dogs. All dogs are pets. What follows about cats and pets?", "Nothing follows.", "hard"),
    ("Some cats are dogs. All dogs are pets. What follows about cats and pets?", "Some cats are pets.", "easy"),
]
NEWER = "written by a newer learnviz? upgrade learnviz, or move it away to rebuild"


# ---------------------------------------------------------------- helpers

def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def truncate_half(path: Path) -> bytes:
    os.truncate(path, path.stat().st_size // 2)
    return path.read_bytes()


def set_root_attr(path: Path, name: str, value) -> None:
    with h5py.File(path, "a") as f:
        f.attrs[name] = value


def learnviz(capsys, *argv: str) -> tuple[int, str, str]:
    """`learnviz ARGV` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main(["-q", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def run(monkeypatch):
    """`learnviz run` without the figures (the extraction and the CPU stages, UMAP as PCA)."""
    real = pipeline.update
    monkeypatch.setattr(pipeline, "update", functools.partial(real, stages=(EXTRACT, *pipeline.CPU_STAGES)))
    with fake_umap():
        yield


def status_json(capsys, archive: Path) -> list[dict]:
    rc, out, _ = learnviz(capsys, "status", "--archive", str(archive), "--json")
    assert rc == 0
    return json.loads(out)


# ---------------------------------------------------------------- a real run of tiny checkpoints

@pytest.fixture(scope="module")
def built_run(tmp_path_factory) -> Path:
    """Three tiny real checkpoints and a probe file, archived once by the real extraction."""
    from helpers import learnviz_run
    base = tmp_path_factory.mktemp("reliability")
    tok = tiny_tokenizer()
    for i, step in enumerate(STEPS):
        make_checkpoint(base / "run" / f"checkpoint-{step}", tok, step=step, seed=i)
    (base / "probes.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "prompt": p, "expected": e, "skill": s, "category": "c"}) + "\n"
        for i, (p, e, s) in enumerate(PROBES)))
    report = learnviz_run(settings_of(base), cpu_stages=False, progress=False)
    assert len(report.done) == len(STEPS) and not report.failed, report
    return base


def settings_of(base: Path):
    return load_settings(overrides={"checkpoints": str(base / "run"), "archive": str(base / "archive"),
                                    "probes": str(base / "probes.jsonl"), "hard_examples": "",
                                    "settle_seconds": 0.0, "device": "cpu"}, environ={})


@pytest.fixture
def copy(built_run, tmp_path) -> Path:
    """A fresh copy of the built run (checkpoints, probes, archives) that a test may change."""
    base = tmp_path / "copy"
    shutil.copytree(built_run, base, ignore=shutil.ignore_patterns(".locks"))
    return base


def run_args(base: Path) -> list[str]:
    return ["run", "--checkpoints", str(base / "run"), "--archive", str(base / "archive"),
            "--probes", str(base / "probes.jsonl"), "--hard-examples", "", "--settle-seconds", "0",
            "--device", "cpu"]


def test_archive_of_another_schema_is_left_byte_identical_and_reported(copy, run, capsys):
    archive = copy / "archive"
    newer = archive / "checkpoint-20.h5"
    set_root_attr(newer, "schema_version", 2)
    before, mtime = digest(newer), newer.stat().st_mtime_ns
    (archive / "checkpoint-30.h5").unlink()                     # the run goes on with the others: 30 is archived
    rc, out, _ = learnviz(capsys, *run_args(copy))
    assert rc == 1, out
    assert "1 archived, 1 already current, 1 failed now, 1 failed in all (see `learnviz status`)" in out, out
    failed = [line for line in out.splitlines() if line.startswith("  failed: ")]
    assert failed == [f"  failed: {copy / 'run' / 'checkpoint-20'}: {newer} field 'schema_version': "
                      f"schema_version 2; this learnviz reads 1 ({NEWER})"], out
    assert digest(newer) == before and newer.stat().st_mtime_ns == mtime        # not rewritten, not touched
    assert not list(archive.glob("checkpoint-20.h5.*"))                          # nor moved aside
    assert arc.Archive(archive / "checkpoint-30.h5").stage(EXTRACT).ok
    # the CPU stages of what comes after it wait, and say so
    assert "waiting: analysis of step 30; geometry of step 30; the series: held back while checkpoint-20.h5" in out

    rc, out, _ = learnviz(capsys, "status", "--archive", str(archive))
    assert rc == 0
    lines = out.splitlines()
    assert lines[2].split() == ["20", "checkpoint-20", "archive:unreadable", "-", "-", "-", "-"], out   # health: -
    assert f"step 20 (checkpoint-20) unreadable: {newer} field 'schema_version': schema_version 2" in out
    rows = status_json(capsys, archive)
    assert [(r["step"], r["stages"]) for r in rows] == [
        (10, {"extract": "ok", "analysis": "ok", "geometry": "ok"}), (20, {"archive": "unreadable"}),
        (30, {"extract": "ok"})]
    assert "checkpoint-20.h5" in rows[1]["reason"] and "schema_version 2" in rows[1]["reason"]

    rc, out, _ = learnviz(capsys, *run_args(copy))               # again: still refused, still untouched
    assert rc == 1 and "0 archived, 2 already current, 1 failed now, 1 failed in all" in out, out
    assert digest(newer) == before


def test_damaged_archive_is_moved_aside_and_rebuilt_from_its_checkpoint(copy, run, capsys):
    archive = copy / "archive"
    damaged = archive / "checkpoint-20.h5"
    cut = truncate_half(damaged)
    rc, out, _ = learnviz(capsys, *run_args(copy))
    assert rc == 0, out
    assert "1 archived, 2 already current, 0 failed now, 0 incomplete" in out, out
    assert f"  moved aside: {damaged} was unreadable, now checkpoint-20.h5.corrupt, and archived again: " \
           f"{damaged}: cannot be read as HDF5" in out, out
    assert (archive / "checkpoint-20.h5.corrupt").read_bytes() == cut           # kept as it was
    rebuilt = arc.Archive(damaged)
    assert rebuilt.step == 20 and rebuilt.stage(EXTRACT).ok and rebuilt.stage(ANALYSIS).ok
    assert [r["stages"] for r in status_json(capsys, archive)] == [
        {"extract": "ok", "analysis": "ok", "geometry": "ok"}] * 3


def test_failed_in_all_counts_the_failures_of_earlier_runs(copy, run, capsys):
    (copy / "run" / "checkpoint-30" / "config.json").write_text("{not json")
    rc, out, _ = learnviz(capsys, *run_args(copy))
    assert rc == 1 and "0 archived, 2 already current, 1 failed now, 1 failed in all" in out, out
    rc, out, _ = learnviz(capsys, *run_args(copy))
    assert rc == 0, out
    assert "0 archived, 3 already current, 0 failed now, 1 failed in all (see `learnviz status`), " \
           "0 incomplete" in out, out


# ---------------------------------------------------------------- where it looked

def test_empty_folder_and_wrong_folder_say_nothing_was_found_and_where(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = tmp_path / "wrong"                     # exists, but holds no checkpoint (notes, a folder of logs)
    (wrong / "logs").mkdir(parents=True)
    (wrong / "notes.txt").write_text("not a checkpoint")
    for folder in (empty, wrong):
        rc, out, _ = learnviz(capsys, "run", "--checkpoints", str(folder), "--archive", str(tmp_path / "a"))
        assert rc == 0, out
        assert f"no checkpoints found in {folder}: learnviz looks for {pipeline.CHECKPOINT_NAMES}" in out, out
        assert "checkpoint-N, step_N" in out and "global_stepN" in out and "config.json" in out
        assert "0 archived, 0 already current, 0 failed now, 0 incomplete" in out


def test_missing_folder_is_an_error_naming_it_and_nothing_is_created(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    rc, out, err = learnviz(capsys, "run", "--checkpoints", str(missing))
    assert rc == 2 and out == ""
    assert err.startswith(f"learnviz: error: {missing} field 'checkpoints': checkpoint folder not found"), err
    assert not missing.exists()                     # the default archive folder lies inside: not made either


# ---------------------------------------------------------------- status and analyze without a model

@pytest.fixture(scope="module")
def built_series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("series")
    make_series(folder)                              # steps 10, 20, 40, 80, every stage
    return folder


@pytest.fixture
def series(built_series, tmp_path) -> Path:
    """A fresh copy of the series' archive folder (its checkpoints stay where they were built)."""
    shutil.copytree(built_series / "archive", tmp_path / "archive", ignore=shutil.ignore_patterns(".locks"))
    return tmp_path / "archive"


def test_truncated_archive_has_a_status_row_with_its_reason(series, capsys):
    truncate_half(series / "checkpoint-20.h5")
    rc, out, _ = learnviz(capsys, "status", "--archive", str(series))
    assert rc == 0
    table = out.splitlines()
    assert [line.split()[:3] for line in table[1:5]] == [
        ["10", "checkpoint-10", "extract:ok"], ["20", "checkpoint-20", "archive:unreadable"],
        ["40", "checkpoint-40", "extract:ok"], ["80", "checkpoint-80", "extract:ok"]]
    assert table[5].startswith(f"step 20 (checkpoint-20) unreadable: {series / 'checkpoint-20.h5'}: "
                               "cannot be read as HDF5: ")
    row = status_json(capsys, series)[1]
    assert row["step"] == 20 and row["stages"] == {"archive": "unreadable"} and row["accuracy"] is None
    assert row["reason"].startswith(f"{series / 'checkpoint-20.h5'}: cannot be read as HDF5")


def test_later_analyses_wait_for_an_unreadable_archive_instead_of_skipping_it(series, capsys):
    damaged = series / "checkpoint-20.h5"
    truncate_half(damaged)
    later = {p: digest(p) for p in (series / "checkpoint-40.h5", series / "checkpoint-80.h5", series / "series.h5",
                                    series / "hard_example_board.json")}
    with fake_umap():
        rc, out, _ = learnviz(capsys, "analyze", "--archive", str(series), "--force")
    assert rc == 1, out
    assert "analysis: 1 checkpoints, geometry: 1, series: waiting" in out, out          # step 10, forced
    assert f"  unreadable: step 20 {damaged}: cannot be read as HDF5" in out
    assert "  waiting: analysis of steps 40, 80; geometry of steps 40, 80; the series: held back while " \
           "checkpoint-20.h5 (step 20) cannot be read" in out, out
    assert {p: digest(p) for p in later} == later               # nothing after it recomputed against step 10

    shutil.move(damaged, series.parent / "checkpoint-20.h5.kept")    # the user goes on without it
    with fake_umap():
        rc, out, _ = learnviz(capsys, "analyze", "--archive", str(series))
    assert rc == 0, out
    assert "analysis: 1 checkpoints, geometry: 2, series: updated" in out, out    # 40's previous is now 10
    a40 = {a.step: a for a in arc.list_archives(series)}[40]
    assert a40.stage(GEOMETRY).attrs["previous_step"] == 10


def test_the_distributed_entry_points_wait_too(built_series, series):
    """The beat queues nothing that waits, and the analyze task answers `skipped` with the reason."""
    settings = load_settings(environ={}, overrides={"checkpoints": str(built_series / "run"),
                                                    "archive": str(series), "settle_seconds": 0.0})
    assert pipeline.pending(settings) == [] and not pipeline.history_stale(settings)
    truncate_half(series / "checkpoint-20.h5")
    assert pipeline.pending(settings) == [] and not pipeline.history_stale(settings)
    before = digest(series / "checkpoint-40.h5")
    result = pipeline.analyze_checkpoint(settings, built_series / "run" / "checkpoint-40")
    assert (result.status, result.step) == ("skipped", 40)
    assert result.reason.startswith("held back while checkpoint-20.h5 (step 20) cannot be read")
    assert digest(series / "checkpoint-40.h5") == before
    with fake_umap():
        summary = pipeline.update_learning_history(settings)
    assert summary["geometry"] == [] and summary["series"] is False
    assert summary["waiting"] == {GEOMETRY: [40, 80], "series": []} and len(summary["unreadable"]) == 1


def test_non_integer_step_is_an_unreadable_archive_naming_the_field(series, capsys):
    path = series / "checkpoint-40.h5"
    set_root_attr(path, "step", "abc")
    with pytest.raises(arc.ArchiveError) as err:
        arc.Archive(path)
    assert err.value.field == "step" and str(err.value).startswith(
        f"{path} field 'step': root attribute step is 'abc', not an integer")
    listing = arc.scan_archives(series)
    assert [a.step for a in listing.archives] == [10, 20, 80]
    assert [(u.path.name, u.step, u.field, u.foreign) for u in listing.unreadable] == [
        ("checkpoint-40.h5", 40, "step", False)]
    rc, out, _ = learnviz(capsys, "status", "--archive", str(series))
    assert rc == 0
    assert f"step 40 (checkpoint-40) unreadable: {path} field 'step': root attribute step is 'abc'" in out
    assert [r["step"] for r in status_json(capsys, series)] == [10, 20, 40, 80]


def test_corrupt_board_is_reported_by_status(series, capsys):
    (series / "hard_example_board.json").write_text('{"steps": [10,')
    rc, out, _ = learnviz(capsys, "status", "--archive", str(series))
    assert rc == 0
    assert out.splitlines()[-1].startswith(f"unreadable: {series / 'hard_example_board.json'}: is not valid JSON")
    rc, out, err = learnviz(capsys, "status", "--archive", str(series), "--json")
    assert rc == 0 and len(json.loads(out)) == 4 and "hard_example_board.json: is not valid JSON" in err


# ---------------------------------------------------------------- the archive API

KEY = arc.StageKey("fp1", "ph1")
ROOT = {"step": 7, "checkpoint": "/x/checkpoint-7"}


def test_writer_never_overwrites_another_schema_nor_an_unknown_encoding(tmp_path):
    path = tmp_path / "checkpoint-7.h5"
    arc.write_stage(path, EXTRACT, key=KEY, root_attrs=ROOT, data={"v": np.ones(3)})
    with h5py.File(path, "a") as f:
        f[f"{EXTRACT}/v"].attrs["encoding-type"] = "sparse-tensor"
    before = path.read_bytes()
    new_weights = arc.StageKey("fp2", "ph1")              # would drop every old group
    with pytest.raises(arc.ForeignArchiveError, match="unknown|sparse-tensor") as err:
        arc.write_stage(path, EXTRACT, key=new_weights, root_attrs=ROOT, data={"v": np.zeros(3)})
    assert err.value.field == f"/{EXTRACT}/v" and str(path) in str(err.value)
    assert path.read_bytes() == before
    set_root_attr(path, "schema_version", 3)
    before = path.read_bytes()
    with pytest.raises(arc.ForeignArchiveError, match="schema_version 3; this learnviz reads 1"):
        arc.write_stage(path, ANALYSIS, key=KEY, root_attrs=ROOT)
    with pytest.raises(arc.ForeignArchiveError):
        arc.set_aside(path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.corrupt*")) and not list(tmp_path.glob(".*.tmp"))
    [u] = arc.scan_archives(tmp_path).unreadable
    assert (u.step, u.field, u.foreign) == (7, "schema_version", True) and NEWER in u.reason


def test_writer_moves_a_damaged_archive_aside_and_never_over_an_earlier_one(tmp_path):
    path = tmp_path / "checkpoint-7.h5"
    kept = []
    for i in range(2):
        arc.write_stage(path, EXTRACT, key=KEY, root_attrs=ROOT, data={"v": np.full(3, i)})
        kept.append(truncate_half(path))
    arc.write_stage(path, EXTRACT, key=KEY, root_attrs=ROOT, data={"v": np.full(3, 9)})
    assert (tmp_path / "checkpoint-7.h5.corrupt").read_bytes() == kept[0]
    assert (tmp_path / "checkpoint-7.h5.corrupt.1").read_bytes() == kept[1]
    assert arc.Archive(path).read(EXTRACT)["v"].tolist() == [9, 9, 9]
    assert arc.set_aside(path) is None                   # readable: stays
    (tmp_path / "other.h5").write_bytes(b"not hdf5")
    assert arc.set_aside(tmp_path / "other.h5") == tmp_path / "other.h5.corrupt"


def test_scan_lists_unreadable_files_with_the_step_their_name_gives(tmp_path):
    arc.write_stage(tmp_path / "checkpoint-7.h5", EXTRACT, key=KEY, root_attrs=ROOT)
    for name in ("runs__a__global_step30.h5", "step_5.h5", "my-model.h5"):
        (tmp_path / name).write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    listing = arc.scan_archives(tmp_path)
    assert [a.path.name for a in listing.archives] == ["checkpoint-7.h5"] == \
        [a.path.name for a in arc.list_archives(tmp_path)]
    assert [(u.path.name, u.step, u.foreign) for u in listing.unreadable] == [
        ("step_5.h5", 5, False), ("runs__a__global_step30.h5", 30, False), ("my-model.h5", None, False)]
    assert all(u.reason.startswith(f"{u.path}: cannot be read as HDF5") for u in listing.unreadable)
    with mock.patch.object(arc.h5py, "File", side_effect=AssertionError("opened again")):
        assert len(arc.scan_archives(tmp_path).unreadable) == 3      # kept per file version, as headers are
