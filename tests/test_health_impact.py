"""Health flags and data impact through the pipeline, over real tiny checkpoints: stored in
series.h5 and the history, shown by `learnviz status`; a run without a data log gets no data
impact panel and no error, and gets one once its trainer writes a data log."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import learnviz_run as run

from learnviz import archive as arc
from learnviz import datalog, history
from learnviz.readout import read_data_impact, status_rows
from learnviz.visualize import generate


def test_health_and_data_impact_in_the_series(settings):
    run(settings, progress=False)
    series = arc.Archive(settings.archive_dir() / arc.SERIES_NAME)
    health = series.read("series", ["health"])["health"]
    assert [str(s) for s in health["signals"]][:2] == ["accuracy_drop", "regression_burst"]
    flags = [json.loads(f) for f in health["flags"]]
    # random-init checkpoints: too few to judge a signal; their untrained final norm is "dead" (unchanged)
    assert health["z"].shape == (5, 3) and all(set(f) <= {"weights_dead"} for f in flags), flags
    assert flags[0] == {} and flags[1] == {"weights_dead": "head"}
    assert health["reference_step"].tolist() == [-1, 10, 20]
    rows = history.read(settings.archive_dir())
    assert [r.get("health_flags", {}) for r in rows] == flags     # a checkpoint without flags gets no row
    assert read_data_impact(settings.archive_dir()) is None            # no data log: no group ...
    vis = generate(settings)
    assert "data_impact.png" in vis["skipped"] and "data_impact.png" not in vis["failed"]   # ... no panel, no error
    figures = settings.archive_dir() / "visualizations"
    assert (figures / "checkpoint_health.png").exists() and not (figures / "data_impact.png").exists()

    # the trainer writes a data log: the series is recomputed with the data impact
    for step, easy, hard in ((10, 50, 0), (20, 300, 20), (30, 100, 220)):
        datalog.append(settings.checkpoints, step, {"easy": easy, "hard": hard})
    with open(datalog.log_path(settings.checkpoints), "a") as fh:
        fh.write('{"step": 30, "source": "hard"}\n')
    report = run(settings, progress=False)
    assert report.cpu.series
    d = read_data_impact(settings.archive_dir())
    assert [str(s) for s in d["sources"]] == ["easy", "hard"]
    assert d["intervals"].tolist() == [[10, 20], [20, 30]] and d["mix"].tolist() == [[300, 20], [100, 220]]
    assert "line 6 field 'examples'" in str(d["problems"][0])
    assert "needs at least" in str(d["accuracy"]["note"])      # two intervals cannot separate two sources
    assert "syllo_hard" in [str(t) for t in d["accuracy"]["targets"]]
    assert d["logprob"]["change"].shape[0] == 2
    assert (figures / "data_impact.png").exists()
    assert generate(settings)["failed"] == {}


def test_status_shows_and_filters_flags(settings):
    run(settings, progress=False)
    history.append(settings.archive_dir(), {"step": 20, "health_flags": {"loss_spike": "loss changed by +80%"}})
    rows = status_rows(settings.archive_dir())
    assert rows[1].flags == {"loss_spike": "loss changed by +80%"} and "loss_spike" not in rows[2].flags
    cli = [sys.executable, "-m", "learnviz.cli", "status", "--archive", str(settings.archive_dir())]
    out = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    assert "step 20 (checkpoint-20) flagged loss_spike: loss changed by +80%" in out
    out = subprocess.run(cli + ["--flags"], capture_output=True, text=True, check=True).stdout
    lines = [line.split()[0] for line in out.splitlines()[1:] if line[:1].isdigit()]
    assert "20" in lines and "10" not in lines, out     # 30 may carry the untrained norm's weights_dead
    out = subprocess.run(cli + ["--flags", "loss_spike,accuracy_drop"], capture_output=True, text=True,
                         check=True).stdout
    assert [line.split()[0] for line in out.splitlines()[1:] if line[:1].isdigit()] == ["20"], out
    out = subprocess.run(cli + ["--flags", "accuracy_drop"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("no checkpoint flagged accuracy_drop (3 archived")
    out = subprocess.run(cli + ["--flags", "--json"], capture_output=True, text=True, check=True).stdout
    assert 20 in [r["step"] for r in json.loads(out)] and 10 not in [r["step"] for r in json.loads(out)]


def test_status_refuses_a_flag_name_that_does_not_exist(tmp_path):
    """`--flags loss_spik` (a typo) is an error naming it and the flags there are, not "no checkpoint
    flagged loss_spik" over a run that has loss spikes; the names are the health stage's own."""
    import pytest

    from learnviz.analysis.health import SIGNALS, WEIGHT_FLAGS
    from learnviz.errors import LearnvizError
    from learnviz.readout import HEALTH_FLAGS, StatusRow, filter_flags

    assert set(HEALTH_FLAGS) == {*SIGNALS, *(f"weights_{w}" for w in WEIGHT_FLAGS), "non_finite"}
    row = StatusRow(step=20, name="checkpoint-20", stages={"extract": "ok"}, reason="", accuracy=0.5, skills={},
                    flags={"loss_spike": "+80%"})
    assert filter_flags([row], "loss_spike, accuracy_drop") == [row]
    with pytest.raises(LearnvizError, match="'loss_spik'"):
        filter_flags([row], "loss_spik")
    (tmp_path / "archive").mkdir()
    cli = [sys.executable, "-m", "learnviz.cli", "status", "--archive", str(tmp_path / "archive"), "--flags"]
    done = subprocess.run(cli + ["loss_spike,loss_spik"], capture_output=True, text=True)
    assert done.returncode == 2 and "'loss_spik'" in done.stderr and "loss_spike" in done.stderr
    assert done.stdout == ""
