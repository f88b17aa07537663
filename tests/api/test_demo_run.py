"""The notebook API and the exports over the trained demo series (tests/conftest.py `demo`): archives
of a real model, with every extract element (stop_prob, prompt_tokens, truncated), real tokens, a
model that learns, and every figure drawn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learnviz import readout
from learnviz.export import export
from learnviz.extract import ExtractResult
from learnviz.notebook import open_run
from learnviz.results import EXTRACT

from .test_export import projector

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_demo_tables_equal_the_archives(demo):
    archive = demo.archive_dir()
    run = open_run(Path(demo.demo_out))                         # the demo's run folder: <out>/archive
    assert run.dir == archive and run.steps == [a.step for a in readout.series(archive)]
    for a in readout.series(archive)[:: max(1, len(run.steps) // 3)]:
        r = ExtractResult.from_archive(a.read(EXTRACT), a.stage(EXTRACT).attrs)
        probes = run.probes(a.step)
        assert probes["probe_id"].tolist() == r.probe_ids and probes["greedy_answer"].tolist() == r.greedy_answer
        for col, values in (("correct", r.correct), ("answer_logprob", r.answer_logprob),
                            ("confidence", r.answer_confidence), ("first_divergence", r.first_divergence),
                            ("stop_prob", r.stop_prob), ("prompt_tokens", r.prompt_tokens),
                            ("truncated", r.truncated)):
            np.testing.assert_array_equal(probes[col].to_numpy(), values, err_msg=col)
        tokens = run.tokens(a.step)
        assert tokens["token_text"].tolist() == list(r.token_text.values)
        np.testing.assert_array_equal(tokens["token_id"].to_numpy(), r.answer_ids.values)
        np.testing.assert_array_equal(tokens["logprob"].to_numpy(), r.token_logprob.values)
        np.testing.assert_array_equal(tokens["is_argmax"].to_numpy(), r.token_is_argmax.values)
        for k in r.layers:
            np.testing.assert_array_equal(run.embeddings(a.step, k), r.embeddings[k])
        acc, skills = readout.archive_accuracy(a)
        row = run.checkpoints.set_index("step").loc[a.step]
        assert row["accuracy"] == acc and all(row[f"accuracy.{s}"] == v for s, v in skills.items())
    easy = run.history["skill_scores.syllo_easy"]
    assert easy.iloc[0] <= 0.6 and easy.iloc[-1] >= 0.9                  # the model learns, as status shows
    assert run.figure("loss_curve").is_file() and run.figure("umap_animated").suffix == ".gif"


def test_demo_projector_export(demo, tmp_path):
    run = open_run(demo.archive_dir())
    export(run, "tensorboard", tmp_path, which="latest")
    get = projector(tmp_path)
    (emb,) = get("/info", run=".").get_json()["embeddings"]
    shape = tuple(int(x) for x in emb["tensorShape"])
    tensor = np.frombuffer(get("/tensor", run=".", name=emb["tensorName"]).get_data(), dtype=np.float32)
    np.testing.assert_array_equal(tensor.reshape(shape), run.embeddings().astype(np.float32))
    lines = get("/metadata", run=".", name=emb["tensorName"]).get_data(as_text=True).split("\n")
    assert lines.pop() == "" and len(lines) == 1 + shape[0] and all(line.count("\t") == 5 for line in lines)


def test_example_script_over_the_demo(demo, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook.py"), str(demo.archive_dir())],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    assert "loss_curve.png" in out.stdout and (tmp_path / "accuracy_per_skill.png").is_file()
