"""Runs that move: a run folder (checkpoints and archives) moved or copied elsewhere (`mv`,
`cp -a`, `rsync -a` to the machine where the results are looked at). The archives record each
checkpoint's absolute path when it was extracted; what the CPU stages read beside the checkpoints
(their weight files, the data log) must come from where the run is now, not from the old place
(gone after a move, another run's after a copy)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

from helpers import learnviz_run as run
from helpers import write_small_probes

from learnviz import archive as arc
from learnviz import datalog, pipeline
from learnviz.readout import read_analysis, read_data_impact, series


def _small(settings, tmp_path):
    return dataclasses.replace(settings, probes=str(write_small_probes(tmp_path / "probes.jsonl")),
                               hard_examples="")


def _moved(settings, where):
    """The settings of the run folder and archive folder moved under `where`."""
    where.mkdir()
    ckpts, archive = where / "run", where / "archive"
    shutil.move(settings.checkpoints, ckpts)
    shutil.move(str(settings.archive_dir()), archive)
    return dataclasses.replace(settings, checkpoints=str(ckpts), archive=str(archive))


def _log(folder, easy_then_hard):
    for step, (easy, hard) in zip((10, 20, 30), easy_then_hard):
        datalog.append(folder, step, {"easy": easy, "hard": hard})


def test_a_moved_run_keeps_its_data_impact(settings, tmp_path):
    settings = _small(settings, tmp_path)
    _log(settings.checkpoints, ((50, 0), (300, 20), (100, 220)))
    run(settings, progress=False)
    assert read_data_impact(settings.archive_dir()) is not None
    moved = _moved(settings, tmp_path / "elsewhere")
    run(moved, progress=False)
    d = read_data_impact(moved.archive_dir())
    # the data log beside the moved checkpoints: not dropped because the old place is gone
    assert d is not None, "the series lost its data impact after the run folder moved"
    assert str(d["data_log"]) == str(datalog.log_path(moved.checkpoints).resolve())
    assert d["mix"].tolist() == [[300, 20], [100, 220]]


def test_a_copied_run_reads_its_own_data_log(settings, tmp_path):
    settings = _small(settings, tmp_path)
    _log(settings.checkpoints, ((50, 0), (300, 20), (100, 220)))
    run(settings, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy / "run", symlinks=True)
    shutil.copytree(settings.archive_dir(), copy / "archive", symlinks=True)
    copied = dataclasses.replace(settings, checkpoints=str(copy / "run"), archive=str(copy / "archive"))
    datalog.log_path(copied.checkpoints).unlink()          # the copy's training logged another mix
    _log(copied.checkpoints, ((50, 0), (10, 310), (200, 120)))
    run(copied, progress=False)
    d = read_data_impact(copied.archive_dir())
    assert str(d["data_log"]) == str(datalog.log_path(copied.checkpoints).resolve())
    assert d["mix"].tolist() == [[10, 310], [200, 120]], "the copy read the original run's data log"
    assert read_data_impact(settings.archive_dir())["mix"].tolist() == [[300, 20], [100, 220]]


def test_a_moved_run_reanalysed_finds_its_weights(settings, tmp_path):
    settings = _small(settings, tmp_path)
    run(settings, progress=False)
    moved = _moved(settings, tmp_path / "elsewhere")
    pipeline.update(moved, stages=pipeline.CPU_STAGES, force=True, progress=False)
    for a in series(moved.archive_dir()):
        result = read_analysis(a)
        # the weight files are there, under the run's new folder: not "gone"
        assert result.weights is not None, (a.step, result.weights_note)
        assert not result.weights_note
    a = series(moved.archive_dir())[-1]
    assert arc.Archive(a.path).attrs["checkpoint"].startswith(str(tmp_path / "run"))   # recorded: as extracted


def test_status_of_a_sweep_whose_archives_alone_were_copied(settings, tmp_path):
    """The results of a sweep downloaded without the checkpoints (`sweep/learnviz-archive/<run>/`):
    `learnviz status --checkpoints sweep` said "no archives in sweep/learnviz-archive" (the runs
    were looked for among checkpoint folders only), though --archive showed both runs."""
    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"id": "q1", "prompt": "All cats are", "expected": "dogs", "skill": "s"}\n')
    settings = dataclasses.replace(settings, probes=str(probes), hard_examples="")
    run(settings, progress=False)
    sweep = tmp_path / "downloaded" / "sweep"
    for name in ("runA", "runB"):
        shutil.copytree(settings.archive_dir(), sweep / "learnviz-archive" / name)
    out = subprocess.run([sys.executable, "-m", "learnviz.cli", "status", "--checkpoints", str(sweep)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "no archives" not in out.stdout, out.stdout
    for name in ("runA", "runB"):
        assert f"run {name}: {sweep / 'learnviz-archive' / name}" in out.stdout
    assert out.stdout.count("checkpoint-30") >= 2
