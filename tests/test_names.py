"""Checkpoint folders, runs and archive folders whose names learnviz cannot keep as they are: a
step no JSON reader holds exactly, a name too long for its archive's file, a folder too deep for a
path. Each is refused with a reason that names the folder and what to do, and the others go on.

(Run names that learnviz keeps as they are, spaces, '#', '?', '%2F', a leading '_' or '+', are in
tests/web/test_dashboard_api.py.)
"""

from __future__ import annotations

import json
import os

import pytest
from helpers import learnviz_run, make_checkpoint, run_settings, write_small_probes

from learnviz import cli, pipeline
from learnviz.archive import NAME_MAX
from learnviz.checkpoints import MAX_STEP


@pytest.fixture
def small_probes(tmp_path):
    return write_small_probes(tmp_path / "probes.jsonl", every=25)


def test_steps_beyond_what_json_holds_exactly_are_refused_naming_the_folder(tmp_path, tokenizer, small_probes,
                                                                           capsys):
    """checkpoint-99999999999999999999 stopped `learnviz run` with a traceback from h5py (a step
    beyond int64 has no HDF5 type), every other checkpoint and run left unarchived; a step beyond
    2**53 was archived, and the dashboard's charts (JavaScript numbers) drew it at the step before."""
    root = tmp_path / "run"
    make_checkpoint(root / "checkpoint-10", tokenizer, step=10)
    make_checkpoint(root / f"checkpoint-{MAX_STEP}", tokenizer, step=MAX_STEP, seed=1)
    make_checkpoint(root / f"checkpoint-{MAX_STEP + 2}", tokenizer, step=MAX_STEP, seed=2)
    make_checkpoint(root / "checkpoint-99999999999999999999", tokenizer, step=MAX_STEP, seed=3)
    make_checkpoint(root / "final", tokenizer, step=2**60, seed=4)      # the step from trainer_state.json
    settings = run_settings(root, small_probes, archive=str(tmp_path / "archive"))
    latest = learnviz_run(settings, progress=False, cpu_stages=False, which="latest")   # not a refused one
    assert [p.name for p in latest.done] == [f"checkpoint-{MAX_STEP}.h5"] and not latest.failed
    report = learnviz_run(settings, progress=False, cpu_stages=False)
    assert [p.name for p in report.done] == ["checkpoint-10.h5"]
    failed = {p.name: why for p, why in report.failed}
    assert sorted(failed) == [f"checkpoint-{MAX_STEP + 2}", "checkpoint-99999999999999999999", "final"]
    assert failed["checkpoint-99999999999999999999"] == (
        f"step 99999999999999999999 (from its folder name) is beyond {MAX_STEP} (2**53 - 1), the largest step "
        "JSON readers and the dashboard's charts hold exactly; rename the folder to its training step (checkpoint-N)")
    assert failed["final"].startswith(f"step {2**60} (from trainer_state.json's global_step) is beyond")
    assert sorted(p.name for p in (tmp_path / "archive").glob("*.h5")) == [
        "checkpoint-10.h5", f"checkpoint-{MAX_STEP}.h5"]                 # nothing written for the others
    capsys.readouterr()
    assert cli.main(["status", "--archive", str(tmp_path / "archive"), "--json"]) == 0
    assert [r["step"] for r in json.loads(capsys.readouterr().out)] == [10, MAX_STEP]
    # the distributed entry point says the same, and writes nothing
    res = pipeline.collect_embeddings(settings, root / "checkpoint-99999999999999999999")
    assert res.status == "failed" and res.reason == failed["checkpoint-99999999999999999999"] and not res.archive
    assert not (tmp_path / "archive" / "checkpoint-99999999999999999999.h5").exists()


def test_a_checkpoint_whose_archive_name_is_too_long_is_refused_alone(tmp_path, tokenizer, small_probes):
    """A folder name the file system takes (up to 255 bytes) makes an archive name 3 bytes longer
    and a temporary file's 16: a name of 240 bytes and more stopped `learnviz run` with an OSError
    (File name too long) and no archive of any checkpoint after it. Bytes count, not characters:
    80 CJK characters are 240 bytes."""
    root = tmp_path / "run"
    zeros = "checkpoint-" + "0" * 240 + "20"                 # 253 bytes: a folder, not an archive
    cjk = "模型" * 40                                         # 80 characters, 240 bytes: step 30 from trainer_state
    assert len(os.fsencode(zeros)) <= NAME_MAX and len(os.fsencode(cjk)) <= NAME_MAX
    make_checkpoint(root / "checkpoint-10", tokenizer, step=10)
    make_checkpoint(root / zeros, tokenizer, step=20, seed=1)
    make_checkpoint(root / cjk, tokenizer, step=30, seed=2)
    settings = run_settings(root, small_probes, archive=str(tmp_path / "archive"))
    report = learnviz_run(settings, progress=False, cpu_stages=False)
    assert [p.name for p in report.done] == ["checkpoint-10.h5"]
    failed = {p.name: why for p, why in report.failed}
    assert sorted(failed) == sorted([zeros, cjk])
    assert failed[zeros].endswith(f"would be {len(zeros) + 3} bytes, and its temporary file's {len(zeros) + 16}: "
                                  "beyond the 255 bytes a file system allows a file name; rename the checkpoint "
                                  "folder (or its parent folders under the run) shorter")
    assert "would be 243 bytes, and its temporary file's 256" in failed[cjk]
    assert sorted(p.name for p in (tmp_path / "archive").iterdir() if p.suffix == ".h5") == ["checkpoint-10.h5"]


def _deep(base, length: int) -> str:
    """A folder whose path is `length` characters long (folders of at most 200 characters each)."""
    deep = str(base)
    while len(deep) < length:
        deep = os.path.join(deep, "d" * min(200, length - len(deep) - 1))
    os.makedirs(deep)
    return deep


def test_an_archive_or_out_folder_too_deep_for_a_path_stops_naming_the_file(tmp_path, tokenizer, small_probes,
                                                                           capsys):
    """An archive (or --out) folder within a few bytes of PATH_MAX (4096) holds no file learnviz
    writes: `learnviz run` and `learnviz export` ended in a traceback (OSError: File name too
    long). They stop as for a full disk: the file named, what to do, exit status 2."""
    root = tmp_path / "run"
    make_checkpoint(root / "checkpoint-10", tokenizer, step=10)
    deep = _deep(tmp_path / "deep", 4080)
    argv = ["-q", "run", "--checkpoints", str(root), "--probes", str(small_probes), "--hard-examples", "",
            "--settle-seconds", "0", "--device", "cpu"]
    capsys.readouterr()
    assert cli.main([*argv, "--archive", deep]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"learnviz: error: {deep}/") and "File name too long" in err
    assert "its path is longer than the system allows: pass a folder higher up, or with shorter names" in err
    assert learnviz_run(run_settings(root, small_probes, archive=str(tmp_path / "archive")), progress=False).ok
    assert cli.main(["export", "csv", "--archive", str(tmp_path / "archive"), "--out", deep]) == 2
    err = capsys.readouterr().err
    assert f"{deep}/" in err and "File name too long" in err and "pass a folder higher up" in err


def test_a_checkpoint_folder_that_is_a_link_keeps_its_own_name(tmp_path, tokenizer, small_probes, capsys):
    """checkpoint-30 -> checkpoint-10 (one folder, two steps: a link a user made for the final
    checkpoint): the archive's name came from the link's target, so step 30 was written into
    checkpoint-10.h5 over step 10, and step 10 was gone from the run with nothing said. A link to a
    folder elsewhere keeps its name as before."""
    root = tmp_path / "run"
    make_checkpoint(root / "checkpoint-10", tokenizer, step=10)
    make_checkpoint(tmp_path / "elsewhere" / "x", tokenizer, step=20, seed=1)
    (root / "checkpoint-20").symlink_to(tmp_path / "elsewhere" / "x")
    (root / "checkpoint-30").symlink_to(root / "checkpoint-10")
    settings = run_settings(root, small_probes, archive=str(tmp_path / "archive"))
    report = learnviz_run(settings, progress=False, cpu_stages=False)
    assert report.ok and [p.name for p in report.done] == ["checkpoint-10.h5", "checkpoint-20.h5", "checkpoint-30.h5"]
    capsys.readouterr()
    assert cli.main(["status", "--archive", str(tmp_path / "archive"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["step"], r["name"]) for r in rows] == [(10, "checkpoint-10"), (20, "checkpoint-20"),
                                                      (30, "checkpoint-30")]
    assert not learnviz_run(settings, progress=False, cpu_stages=False).done     # and a rerun is a no-op
