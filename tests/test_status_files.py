"""The plan's status files (training_status.json, curriculum_eval.json, model_comparisons.json,
deployment_status.json): ingested into the history by `learnviz run --status-dir`, shown by
`learnviz status`; a malformed one is named with its problem and skipped."""

from __future__ import annotations

import json

from helpers import make_checkpoint, write_small_probes

from learnviz import cli, history, readout, status_files

TRAINING = {"step": 40, "loss": 2.25, "learning_rate": 3e-4, "tokens_seen": 81920, "gpu": "A100"}
CURRICULUM = {"step": 40, "skills": {"syllo_easy": 0.75, "syllo_hard": 0.25}, "stage": "phase-2"}
COMPARISONS = {"step": 40, "metric": "accuracy",
               "rankings": [{"checkpoint": "checkpoint-20", "score": 0.5},
                            {"checkpoint": "checkpoint-40", "score": 0.75, "judge": "gpt"}]}
DEPLOYMENT = {"deployed_checkpoint": "checkpoint-20", "endpoint": "https://example.invalid/v1", "step": 40}


def _write(folder, name, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(data if isinstance(data, str) else json.dumps(data))


def test_each_status_file_becomes_a_history_row(tmp_path):
    status, archive = tmp_path / "status", tmp_path / "archive"
    for name, data in ((status_files.TRAINING, TRAINING), (status_files.CURRICULUM, CURRICULUM),
                       (status_files.COMPARISONS, COMPARISONS), (status_files.DEPLOYMENT, DEPLOYMENT)):
        _write(status, name, data)
    got = status_files.ingest(status, archive)
    assert got.appended == list(status_files.FILES) and not got.malformed
    rows = {r["source"]: r for r in history.read_rows(archive)}
    t = rows["training_status.json"]
    assert (t["step"], t["train_loss"], t["learning_rate"]) == (40, 2.25, 3e-4)
    assert t["fields"]["tokens_seen"] == 81920 and t["fields"]["gpu"] == "A100"          # unknown fields kept
    assert rows["curriculum_eval.json"]["curriculum_skills"] == {"syllo_easy": 0.75, "syllo_hard": 0.25}
    assert rows["curriculum_eval.json"]["fields"]["stage"] == "phase-2"
    ranking = rows["model_comparisons.json"]["checkpoint_ranking"]
    assert [e["checkpoint"] for e in ranking] == ["checkpoint-40", "checkpoint-20"]     # best score first
    assert rows["model_comparisons.json"]["fields"]["rankings"][1]["judge"] == "gpt"
    assert rows["deployment_status.json"]["deployed_checkpoint"] == "checkpoint-20"
    # the merged history row of step 40 holds them all
    (merged,) = readout.history_rows(archive)
    assert merged["train_loss"] == 2.25 and merged["deployed_checkpoint"] == "checkpoint-20"

    # unchanged files are not appended again; a changed one is
    assert status_files.ingest(status, archive).appended == []
    _write(status, status_files.DEPLOYMENT, {**DEPLOYMENT, "deployed_checkpoint": "checkpoint-40", "step": 41})
    assert status_files.ingest(status, archive).appended == [status_files.DEPLOYMENT]
    summary = readout.training_status(archive)
    assert summary["deployed"] == "checkpoint-40" and summary["deployed_step"] == 41
    assert summary["ranking"][0] == {"checkpoint": "checkpoint-40", "score": 0.75}
    lines = readout.format_training_status(summary)
    assert lines == ["deployed: checkpoint-40 (as of step 41)",
                     "ranking by accuracy (as of step 40): 1. checkpoint-40 (0.75), 2. checkpoint-20 (0.5)"]
    # the dashboard's overview shows the same lines
    from dashboard import create_app
    from learnviz.settings import load_settings
    app = create_app(load_settings(environ={}, overrides={"archive": str(archive)}))
    page = app.test_client().get("/", headers={"Host": "127.0.0.1"}).get_data(as_text=True)
    assert "<li>deployed: checkpoint-40 (as of step 41)</li>" in page
    assert "1. checkpoint-40 (0.75), 2. checkpoint-20 (0.5)" in page


def test_malformed_files_are_named_and_skipped(tmp_path):
    status, archive = tmp_path / "status", tmp_path / "archive"
    _write(status, status_files.TRAINING, "{\"step\": 3, \"loss\": ")                       # torn write
    _write(status, status_files.CURRICULUM, {"step": 3, "skills": {"syllo_easy": 1.5}})
    _write(status, status_files.COMPARISONS, {"step": 3, "rankings": [{"score": 0.5}]})
    _write(status, status_files.DEPLOYMENT, {"deployed_checkpoint": "checkpoint-3", "step": 3})
    got = status_files.ingest(status, archive)
    assert got.appended == [status_files.DEPLOYMENT]
    problems = {p.name: why for p, why in got.malformed}
    assert "is not valid JSON" in problems["training_status.json"]
    assert "'skills.syllo_easy' must be an accuracy between 0 and 1, got 1.5" in problems["curriculum_eval.json"]
    assert "'rankings[0]' must be an object with a 'checkpoint' name" in problems["model_comparisons.json"]
    _write(status, status_files.TRAINING, [1, 2])
    (path, why), = [m for m in status_files.ingest(status, archive).malformed if m[0].name == status_files.TRAINING]
    assert why == "must be a JSON object, got a list"


def test_run_ingests_and_status_shows_ranking_and_deployment(tmp_path, tokenizer, capsys):
    root, status = tmp_path / "run", tmp_path / "status"
    make_checkpoint(root / "checkpoint-20", tokenizer, step=20)
    _write(status, status_files.COMPARISONS, COMPARISONS)
    _write(status, status_files.DEPLOYMENT, DEPLOYMENT)
    _write(status, status_files.CURRICULUM, {"skills": []})
    probes = write_small_probes(tmp_path / "probes.jsonl")
    args = ["--checkpoints", str(root), "--archive", str(tmp_path / "archive")]
    rc = cli.main(["-q", "run", *args, "--status-dir", str(status), "--probes", str(probes), "--hard-examples", "",
                   "--settle-seconds", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "status files ingested: model_comparisons.json, deployment_status.json" in out
    assert f"status file skipped: {status / 'curriculum_eval.json'}: field 'skills' must be an object" in out
    assert rc == 0
    assert cli.main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert "deployed: checkpoint-20 (as of step 40)" in out
    assert "ranking by accuracy (as of step 40): 1. checkpoint-40 (0.75), 2. checkpoint-20 (0.5)" in out
