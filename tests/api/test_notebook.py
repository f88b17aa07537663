"""learnviz.open_run: every table and array equals what the archives hold, reads are lazy and
happen once per archive file version, and errors name the path and what to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest

import learnviz
from learnviz import archive as arc
from learnviz import readout
from learnviz.errors import LearnvizError
from learnviz.notebook import Run, flatten, open_run
from learnviz.results import EXTRACT, GEOMETRY_METRICS, SERIES

from .conftest import plain, rewrite_extract

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- opening

def test_open_run_finds_the_archive_folder(series_folder, series_dir, v1, tmp_path):
    assert open_run(series_dir).dir == series_dir                       # an archive folder
    assert open_run(series_folder).dir == series_dir                    # a run folder holding archive/
    root = tmp_path / "root"
    shutil.copytree(v1, root / "learnviz-archive")
    assert open_run(root).dir == root / "learnviz-archive"              # a checkpoints root
    run = learnviz.open_run(str(v1))
    assert isinstance(run, learnviz.Run) and run.steps == [10, 20, 40] and run.name == "v1"


def test_open_run_errors_name_the_path_and_what_to_do(series_folder, tmp_path):
    with pytest.raises(LearnvizError) as e:
        open_run(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(LearnvizError) as e:
        open_run(series_folder / "run")                                  # checkpoints, never archived
    text = str(e.value)
    assert str(series_folder / "run") in text and "learnviz-archive" in text and "learnviz run --checkpoints" in text


def _two_run_root(tmp_path, v1, series_dir) -> Path:
    """<root>/runA/checkpoint-N and <root>/runB/checkpoint-N, archived as `learnviz run --checkpoints
    <root>` archives several runs: <root>/learnviz-archive/runA (archive_v1) and .../runB (the series)."""
    root = tmp_path / "root"
    for run, source in (("runA", v1), ("runB", series_dir)):
        for step in open_run(source).steps:
            (root / run / f"checkpoint-{step}").mkdir(parents=True)
            (root / run / f"checkpoint-{step}" / "config.json").write_text("{}")
        shutil.copytree(source, root / "learnviz-archive" / run)
    return root


def test_open_run_of_a_root_holding_several_runs(v1, series_dir, tmp_path):
    from learnviz import pipeline
    from learnviz.settings import load_settings

    root = _two_run_root(tmp_path, v1, series_dir)
    top = root / "learnviz-archive"
    steps_b = open_run(series_dir).steps
    # the archive folders `learnviz run --checkpoints root` gives each run (pipeline.runs)
    settings = load_settings(overrides={"checkpoints": str(root)}, environ={})
    assert {name: rs.archive_dir() for name, rs in pipeline.runs(settings)} == {"runA": top / "runA",
                                                                                  "runB": top / "runB"}
    # a run's checkpoint folder finds its archive folder under the root's learnviz-archive
    a, b = open_run(root / "runA"), open_run(root / "runB")
    assert (a.dir, a.name, a.steps) == (top / "runA", "runA", [10, 20, 40])
    assert (b.dir, b.name, b.steps) == (top / "runB", "runB", steps_b) and len(steps_b) == 4
    # run= picks one, from the root or from its archive folder
    assert open_run(root, run="runA").steps == [10, 20, 40]
    assert open_run(top, run="runB").steps == steps_b and open_run(str(top), run="runB").dir == top / "runB"
    assert learnviz.open_run(root, run="runB").name == "runB"
    assert open_run(top / "runA").dir == top / "runA"                    # the run's archive folder, as before
    # the root alone is ambiguous: the error lists the runs and says how to open one
    for path in (root, top):
        with pytest.raises(LearnvizError) as e:
            open_run(path)
        text = str(e.value)
        assert "holds 2 archived runs (runA, runB)" in text and f"open_run({str(path)!r}, run='runA')" in text
        assert "holds no learnviz archive" not in text and str(path) in text
    with pytest.raises(LearnvizError) as e:
        open_run(root, run="runC")
    assert "no archived run named 'runC' (its runs: runA, runB)" in str(e.value)
    # a root with one run under it opens that run
    shutil.rmtree(top / "runB")
    assert open_run(root).dir == top / "runA" and open_run(root).steps == [10, 20, 40]


def test_import_is_cheap_and_the_arrays_need_no_pandas(v1):
    code = ("import sys, learnviz\n"
            "assert 'pandas' not in sys.modules and 'h5py' not in sys.modules\n"
            f"run = learnviz.open_run({str(v1)!r})\n"
            "print(run.embeddings(20, 1).shape, run.coords(20, 2).shape)\n"
            "assert 'pandas' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(30, 8) (30, 2)"


def test_without_pandas_the_error_names_the_extra(v1, tmp_path):
    """The core imports and runs without pandas; a table asks for learnviz[notebook]."""
    block = "import sys; sys.modules['pandas'] = None\n"
    code = block + ("import learnviz\n"
                    f"run = learnviz.open_run({str(v1)!r})\n"
                    "assert run.embeddings(40).shape == (30, 8)\n"
                    "try:\n    run.history\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pandas is not installed" in out.stdout and "learnviz[notebook]" in out.stdout
    cli = block + "from learnviz.cli import main; sys.exit(main(sys.argv[1:]))"
    status = subprocess.run([sys.executable, "-c", cli, "status", "--archive", str(v1)], capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.count("extract:ok") == 3, status.stderr
    export = subprocess.run([sys.executable, "-c", cli, "export", "csv", "--archive", str(v1), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert export.returncode == 2 and "learnviz[notebook]" in export.stderr and "Traceback" not in export.stderr


# ---------------------------------------------------------------- tables equal the archives

def test_history_is_the_merged_rows_flattened(series_dir):
    run = open_run(series_dir)
    rows = readout.history_rows(series_dir, run.probe_hash)
    df = run.history
    assert df["step"].tolist() == [r["step"] for r in rows] == run.steps
    assert "skill_scores.syllo_easy" in df.columns and "skill_scores" not in df.columns
    assert "geometry.2.cka_prev" in df.columns
    for i, row in enumerate(rows):
        flat = flatten(row)
        for col in df.columns:
            assert plain(df[col].iloc[i]) == plain(flat.get(col)), (row["step"], col)
    assert df["skill_scores.syllo_easy"].tolist() == [r["skill_scores"]["syllo_easy"] for r in rows]


def test_flatten():
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": [3]}}, "f": {}}) == {"a": 1, "b.c": 2, "b.d.e": [3]}


def test_checkpoints_table_equals_the_archives(series_dir):
    run = open_run(series_dir)
    df = run.checkpoints
    archives = readout.series(series_dir)
    assert df["step"].tolist() == [a.step for a in archives]
    for i, a in enumerate(archives):
        row = df.iloc[i]
        assert row["name"] == f"checkpoint-{a.step}" and row["archive"] == a.path.name
        assert (row["extract"], row["analysis"], row["geometry"]) == ("ok", "ok", "ok")
        d = a.read(EXTRACT, ["correct", "probe_skill"])
        assert row["accuracy"] == pytest.approx(np.mean(d["correct"]))
        for skill in set(d["probe_skill"]):
            assert row[f"accuracy.{skill}"] == pytest.approx(np.mean(d["correct"][d["probe_skill"] == skill]))
        cal = readout.read_analysis(a, ["calibration"]).calibration
        assert (row["ece"], row["mce"], row["brier"]) == (cal.ece, cal.mce, cal.brier)
        assert row["calibration_direction"] == cal.direction
        geo = readout.read_geometry(a)
        for k, layer in geo.layers.items():
            for m in GEOMETRY_METRICS:
                assert plain(row[f"layer_{k}.{m}"]) == layer.metrics.get(m), (a.step, k, m)
        assert plain(row["cka_prev"]) == geo.layers[max(geo.layers)].metrics.get("cka_prev")
    assert np.isnan(df["drift_prev"].iloc[0]) and (df["drift_prev"].iloc[1:] > 0).all()
    assert df["accuracy"].iloc[-1] > df["accuracy"].iloc[0]          # the synthetic model learns


def test_checkpoints_lists_failed_stages_with_their_reason(v1):
    a = arc.Archive(v1 / "checkpoint-20.h5")
    arc.write_stage(a.path, "geometry", key=a.stage("geometry").key, root_attrs=a.attrs, status="failed",
                    reason="UMAP ran out of memory")
    df = open_run(v1).checkpoints.set_index("step")
    assert df.loc[20, "geometry"] == "failed" and "UMAP ran out of memory" in df.loc[20, "reason"]
    assert df.loc[40, "geometry"] == "ok" and df.loc[40, "reason"] == ""
    assert np.isnan(df.loc[20, "layer_2.cka_prev"]) and df.loc[20, "ece"] > 0
    with pytest.raises(LearnvizError) as e:
        open_run(v1).coords(20)
    assert "UMAP ran out of memory" in str(e.value) and "learnviz analyze" in str(e.value)


def test_probes_equal_the_extract_group(series_dir):
    run = open_run(series_dir)
    for a in readout.series(series_dir):
        d = a.read(EXTRACT)
        df = run.probes(a.step)
        assert len(df) == len(d["probe_ids"]) and (df["step"] == a.step).all()
        for col, key in (("probe_id", "probe_ids"), ("skill", "probe_skill"), ("category", "probe_category"),
                         ("prompt", "prompt"), ("expected", "expected"), ("greedy_answer", "greedy_answer")):
            assert df[col].tolist() == list(d[key]), col
        for col, key in (("correct", "correct"), ("answer_logprob", "answer_logprob"),
                         ("confidence", "answer_confidence"), ("first_divergence", "first_divergence")):
            np.testing.assert_array_equal(df[col].to_numpy(), d[key], err_msg=col)
        assert df["answer_tokens"].tolist() == np.diff(d["answer_ids"].offsets).tolist()
        # the analysis stage computed the same per-probe mean entropy independently
        stored = readout.read_analysis(a, ["entropy"]).entropy.probe_mean
        np.testing.assert_allclose(df["mean_entropy"].to_numpy(), stored)
    every = run.probes("all")
    assert len(every) == len(run.steps) * 30 and every["step"].unique().tolist() == run.steps
    assert run.probes().equals(run.probes(run.steps[-1]))
    changed = run.probes(10)
    changed.loc[0, "answer_logprob"] = 99.0                                       # a copy: the kept read is intact
    assert run.probes(10).loc[0, "answer_logprob"] == readout.series(series_dir)[0].read(
        EXTRACT, ["answer_logprob"])["answer_logprob"][0]


def test_probes_say_which_probes_failed(v1):
    """A probe that could not be run holds placeholder numbers: the table says so (`failed`)."""
    def fail(d):
        d["failed"] = np.zeros(len(d["probe_ids"]), dtype=bool)
        d["failed"][[3, 7]] = True
        d["correct"][[3, 7]] = False
    assert not open_run(v1).probes(20)["failed"].any()                  # an archive from before `failed`
    rewrite_extract(v1 / "checkpoint-20.h5", fail)
    run = open_run(v1)
    stored = arc.Archive(v1 / "checkpoint-20.h5").read(EXTRACT, ["failed"])["failed"]
    df = run.probes(20)
    assert df["failed"].dtype == bool and df["failed"].tolist() == stored.tolist()
    assert df.loc[df["failed"], "probe_id"].tolist() == [run.probes(20)["probe_id"][i] for i in (3, 7)]
    every = run.probes("all")
    assert every.groupby("step")["failed"].sum().to_dict() == {10: 0, 20: 2, 40: 0}


def test_tokens_equal_the_ragged_arrays(series_dir):
    run = open_run(series_dir)
    a = readout.series(series_dir)[1]
    d = a.read(EXTRACT)
    df = run.tokens(a.step)
    ids = d["answer_ids"]
    assert len(df) == len(ids.values)
    for i in (0, 7, 29):
        rows = df[df["probe_id"] == d["probe_ids"][i]]
        assert rows["position"].tolist() == list(range(len(ids.row(i))))
        assert rows["token_id"].tolist() == ids.row(i).tolist()
        assert rows["token_text"].tolist() == list(d["token_text"].row(i))
        np.testing.assert_array_equal(rows["logprob"].to_numpy(), d["token_logprob"].row(i))
        np.testing.assert_array_equal(rows["entropy"].to_numpy(), d["token_entropy"].row(i))
        np.testing.assert_array_equal(rows["top1_prob"].to_numpy(), d["token_top1_prob"].row(i))
        np.testing.assert_array_equal(rows["argmax"].to_numpy(), d["token_argmax"].row(i))
        assert rows["is_argmax"].tolist() == (ids.row(i) == d["token_argmax"].row(i)).tolist()


def test_embeddings_and_coords_equal_the_archive(series_dir):
    run = open_run(series_dir)
    a = readout.series(series_dir)[2]
    stored = a.read(EXTRACT, ["embeddings"])["embeddings"]
    for k in (1, 2):
        e = run.embeddings(a.step, k)
        assert e.dtype == np.float16 and e.shape == (30, 8)
        np.testing.assert_array_equal(e, stored[f"layer_{k}"])
        c = run.coords(a.step, k)
        assert c.shape == (30, 2)
        np.testing.assert_array_equal(c, readout.read_geometry(a).layers[k].coords)
    np.testing.assert_array_equal(run.embeddings(a.step), stored["layer_2"])     # default: the last layer
    np.testing.assert_array_equal(run.embeddings(a.step, -1), stored["layer_2"])  # of 3 blocks: block 2
    e = run.embeddings(a.step, 1)
    e[:] = 0                                                                      # a copy: the kept one is intact
    np.testing.assert_array_equal(run.embeddings(a.step, 1), stored["layer_1"])
    with pytest.raises(LearnvizError) as err:
        run.embeddings(a.step, 0)
    assert str(a.path) in str(err.value) and "pooled layers (decoder blocks, 0-based): 1, 2" in str(err.value)
    with pytest.raises(LearnvizError) as err:
        run.embeddings(15)
    assert str(series_dir) in str(err.value) and "archived steps: 10, 20, 40, 80" in str(err.value)


def test_trajectories_and_cartography_equal_series_h5(series_dir):
    run = open_run(series_dir)
    s = arc.Archive(series_dir / arc.SERIES_NAME)
    d = s.read(SERIES)
    probes = run.probes()
    traj = run.trajectories()
    learned_at = d["trajectories"]["learned_at"]
    assert traj["learned_at"].tolist() == learned_at.values.tolist()
    assert traj["learned"].tolist() == (learned_at.values >= 0).tolist()
    for i in (0, 12, 29):
        rows = traj[traj["probe_id"] == probes["probe_id"][i]]
        assert rows["learned_at"].tolist() == learned_at.row(i).tolist()
        assert set(rows["skill"]) == {probes["skill"][i]}
    ranked = traj.sort_values("rank")
    order = d["trajectories"]["order"]
    assert ranked["rank"].tolist() == list(range(len(order)))
    assert ranked["probe_id"].tolist() == [probes["probe_id"][p] for p in order[:, 0]]
    assert ranked["position"].tolist() == order[:, 1].tolist()
    assert ranked["learned_at"].tolist() == order[:, 2].tolist()
    assert traj.attrs["steps"] == run.steps

    cart = run.cartography()
    assert cart["probe_id"].tolist() == probes["probe_id"].tolist()
    for f in ("confidence", "variability", "correctness"):
        np.testing.assert_array_equal(cart[f].to_numpy(), d["cartography"][f])
        np.testing.assert_array_equal(cart[f"late.{f}"].to_numpy(), d["cartography_late"][f])
    assert cart["region"].tolist() == list(d["cartography"]["region"])
    assert cart.attrs["late.first_step"] == int(d["cartography_late"]["first_step"]) == 40


def test_series_errors_say_what_to_do(v1):
    (v1 / arc.SERIES_NAME).unlink()
    with pytest.raises(LearnvizError) as e:
        open_run(v1).trajectories()
    assert str(v1 / arc.SERIES_NAME) in str(e.value) and "learnviz analyze" in str(e.value)


def test_figure_path_or_an_error_listing_the_figures(v1):
    run = open_run(v1)
    with pytest.raises(LearnvizError) as e:
        run.figure("loss_curve")
    assert str(v1 / "visualizations" / "loss_curve.png") in str(e.value) and "learnviz visualize" in str(e.value)
    (v1 / "visualizations").mkdir()
    for name in ("loss_curve.png", "umap_animated.gif", "radar_20.png", "manifest.json"):
        (v1 / "visualizations" / name).write_bytes(b"x")
    assert run.figure("loss_curve") == v1 / "visualizations" / "loss_curve.png"
    assert run.figure("umap_animated") == v1 / "visualizations" / "umap_animated.gif"
    assert run.figure("radar_20.png").name == "radar_20.png"
    assert run.figures() == ["loss_curve.png", "radar_20.png", "umap_animated.gif"]
    with pytest.raises(LearnvizError) as e:
        run.figure("radar_40")
    assert "radar_40.png" in str(e.value) and "loss_curve.png, radar_20.png, umap_animated.gif" in str(e.value)


def test_compare_joins_two_runs_on_the_step(v1, series_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(v1, other)
    a, b = open_run(series_dir), open_run(other)
    cmp = a.compare(b)
    assert cmp.index.tolist() == [10, 20, 40, 80]
    assert a.name == series_dir.parent.name and b.name == "other"         # <run>/archive is named after <run>
    assert cmp.columns.get_level_values(0).unique().tolist() == [a.name, "other"]
    assert cmp[(a.name, "accuracy")].tolist() == a.checkpoints["accuracy"].tolist()
    assert plain(cmp[("other", "ece")].tolist()) == plain(b.checkpoints["ece"].tolist() + [float("nan")])
    hist = a.compare(str(other), table="history", names=("synthetic", "fixture"))
    assert hist.loc[40, ("fixture", "skill_scores.edge_cases")] == b.history.set_index("step").loc[
        40, "skill_scores.edge_cases"]

    rewrite = tmp_path / "rewritten"
    rewrite.mkdir()
    shutil.copy(v1 / "checkpoint-10.h5", rewrite)
    x = arc.Archive(rewrite / "checkpoint-10.h5")
    info = x.stage(EXTRACT)
    key = arc.StageKey(info.key.fingerprint, "otherprobes00002")
    arc.write_stage(x.path, EXTRACT, key=key, root_attrs=x.attrs, data=x.read(EXTRACT), attrs=info.attrs)
    with pytest.raises(LearnvizError) as e:
        a.compare(rewrite)
    assert "testprobes000001" in str(e.value) and "otherprobes00002" in str(e.value)
    assert str(series_dir) in str(e.value) and str(rewrite) in str(e.value)


# ---------------------------------------------------------------- each archive read once

def count_reads():
    return mock.patch.object(arc.Archive, "read", autospec=True, side_effect=arc.Archive.read)


def test_each_archive_is_read_once_per_file_version(v1):
    arc.clear_memo()
    run = open_run(v1)
    with count_reads() as reads:
        run.probes(20)
        run.tokens(20)
        run.probes(20)
    assert reads.call_count == 1                     # one read of the extract group serves both tables
    with count_reads() as reads:
        first = run.checkpoints
    assert reads.call_count == 3 * 3                 # extract, analysis, geometry of each archive
    with count_reads() as reads:
        again = open_run(v1).checkpoints              # a fresh Run: kept per file version in-process
        run.embeddings(20, 1)
        run.embeddings(20, 1)
    assert reads.call_count == 1
    pd.testing.assert_frame_equal(first, again)

    rewrite_extract(v1 / "checkpoint-20.h5", lambda d: d["correct"].__setitem__(slice(None), True))
    with count_reads() as reads:
        df = run.checkpoints.set_index("step")
        probes = run.probes(20)
    assert df.loc[20, "accuracy"] == 1.0 and probes["correct"].all()      # the new version, read again
    assert df.loc[10, "accuracy"] == 0.0
    assert reads.call_count == 3 + 1                 # checkpoint 20's row and its extract; the others kept


def test_a_new_checkpoint_appears_without_reopening(v1, tmp_path):
    run = open_run(v1)
    assert run.steps == [10, 20, 40]
    first = run.history
    shutil.copy(v1 / "checkpoint-40.h5", tmp_path / "x.h5")
    a = arc.Archive(tmp_path / "x.h5")
    arc.write_stage(v1 / "checkpoint-80.h5", EXTRACT, key=a.stage(EXTRACT).key,
                    root_attrs={**a.attrs, "step": 80, "checkpoint_name": "checkpoint-80"},
                    data=a.read(EXTRACT), attrs=a.stage(EXTRACT).attrs)
    with open(v1 / readout.HISTORY_FILE, "a") as fh:
        fh.write(json.dumps({"step": 80, "probe_hash": run.probe_hash, "accuracy": 0.5}) + "\n")
    assert run.steps == [10, 20, 40, 80]
    df = run.checkpoints.set_index("step")
    assert df.loc[80, "extract"] == "ok" and pd.isna(df.loc[80, "analysis"]) and np.isnan(df.loc[80, "ece"])
    assert run.history["step"].tolist() == first["step"].tolist() + [80]


def test_probe_set_choice(v1):
    run = open_run(v1, probe_hash="no-such-set")
    assert run.steps == [] and run.checkpoints.empty
    for which in ("latest", "all"):
        with pytest.raises(LearnvizError) as e:
            run.probes(which)
        assert str(v1) in str(e.value) and "learnviz status" in str(e.value)
    assert isinstance(open_run(v1), Run) and "testprobes000001" in repr(open_run(v1))


# ---------------------------------------------------------------- the example script

def test_example_notebook_script_runs(v1, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook.py"), str(v1)], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "3 checkpoints" in out.stdout and "probes at step 40: 30 rows" in out.stdout
    assert "compared with itself" in out.stdout


def test_a_step_that_is_no_step_names_the_forms_the_method_takes(v1):
    """probes() and tokens() take 'all' and lists too; their error listed only a number or 'latest'."""
    run = open_run(v1)
    with pytest.raises(LearnvizError) as e:
        run.probes("first")
    assert "a step is a number, 'latest', 'all' or a list of numbers, got 'first'" in str(e.value)
    with pytest.raises(LearnvizError) as e:
        run.coords("first")
    assert "a step is a number or 'latest', got 'first'" in str(e.value)
