"""Checkpoint folders named by trainers other than the HF Trainer: Pythia's `step1000`, OLMo's
`step1000-unsharded` (beside its sharded `step1000`), Megatron-LM's `iter_0001000`, Lightning's
`epoch=3-step=1200`, zero-padded `checkpoint-000100`; a `latest` link and a `final/` model beside
them. Each name that says its step is archived under it, end to end (run, status, export, the
dashboard); a name that says none is reported with what to do, never guessed.

(Names learnviz refuses, a step beyond what JSON holds, an archive name too long, are in
tests/test_names.py.)
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from helpers import learnviz_run, make_checkpoint, run_settings, write_small_probes

from learnviz import cli, readout
from learnviz.archive import step_from_file_name
from learnviz.checkpoints import inspect, step_from_name
from learnviz.settings import load_settings


@pytest.fixture
def small_probes(tmp_path):
    return write_small_probes(tmp_path / "probes.jsonl", every=50)


def _save(path: Path, tokenizer, step: int, seed: int = 0, *, state: bool = False) -> Path:
    """A Hugging Face save_pretrained folder; without `state`, no trainer_state.json (as other
    trainers than the HF Trainer write it)."""
    make_checkpoint(path, tokenizer, step=step, seed=seed)
    if not state:
        (path / "trainer_state.json").unlink()
    return path


@pytest.mark.parametrize("name, step", [
    ("checkpoint-100", 100), ("checkpoint-000100", 100), ("step_100", 100), ("step-100", 100),
    ("step100", 100), ("step1000-unsharded", 1000), ("global_step100", 100), ("iter_0001000", 1000),
    ("epoch=3-step=1200", 1200), ("step=1200", 1200), ("step0", 0),
    # names that do not say their step unambiguously: never read for one
    ("final", None), ("best", None), ("latest", None), ("last", None), ("epoch=3", None), ("epoch3", None),
    ("run3_1000", None), ("step1000-sharded", None), ("iter-1000", None), ("checkpoint-100-old", None),
    ("stepper100", None), ("epoch=3-step=1200-v1", None), ("step_", None),
])
def test_which_names_say_their_step(name, step):
    """The folder names and the archive file names that keep them read the same step: the archive
    side had a pattern of its own, which knew none of the names added to the scan's."""
    assert step_from_name(name) == step
    assert step_from_file_name(Path(f"{name}.h5")) == step
    assert step_from_file_name(Path(f"run-a__{name}.h5")) == step


def _layouts(root: Path, tokenizer) -> dict[str, list[tuple[int, str]]]:
    """One run per trainer's layout under `root`, none with a trainer_state.json: run -> the
    (step, folder) each must be archived as."""
    _save(root / "pythia" / "step1000", tokenizer, 1000)
    _save(root / "pythia" / "step2000", tokenizer, 2000, 1)
    (root / "pythia" / "latest").symlink_to("step2000")           # the newest, by a link
    _save(root / "pythia" / "final", tokenizer, 2000, 2)          # a model saved beside: no step
    _save(root / "olmo" / "step1000-unsharded", tokenizer, 1000)
    sharded = root / "olmo" / "step1000" / "model_and_optim"       # OLMo's sharded save, never HF
    sharded.mkdir(parents=True)
    (sharded / "__0_0.distcp").write_bytes(b"\0" * 64)
    (root / "olmo" / "step1000" / "config.yaml").write_text("model: {}\n")
    _save(root / "olmo" / "step2000-unsharded", tokenizer, 2000, 1)
    _save(root / "olmo" / "final", tokenizer, 2000, 2, state=True)   # its step is step2000-unsharded's
    _save(root / "megatron" / "iter_0001000", tokenizer, 1000)
    _save(root / "megatron" / "iter_0002000", tokenizer, 2000, 1)
    (root / "megatron" / "latest_checkpointed_iteration.txt").write_text("2000")
    _save(root / "lightning" / "epoch=0-step=600", tokenizer, 600)
    _save(root / "lightning" / "epoch=1-step=1200", tokenizer, 1200, 1)
    _save(root / "padded" / "checkpoint-000100", tokenizer, 100)
    _save(root / "padded" / "checkpoint-000200", tokenizer, 200, 1)
    return {"lightning": [(600, "epoch=0-step=600"), (1200, "epoch=1-step=1200")],
            "megatron": [(1000, "iter_0001000"), (2000, "iter_0002000")],
            "olmo": [(1000, "step1000-unsharded"), (2000, "step2000-unsharded")],
            "padded": [(100, "checkpoint-000100"), (200, "checkpoint-000200")],
            "pythia": [(1000, "step1000"), (2000, "step2000")]}


def test_runs_of_other_trainers_are_archived_end_to_end(tmp_path, tokenizer, small_probes, capsys):
    """Each of these runs was 'no checkpoints found' (its folders 'not a checkpoint: no step'), but
    the zero-padded one. Now each folder is archived under the step its name says; the sharded
    OLMo folder beside its unsharded copy is neither archived nor reported at every run as
    incomplete, nor refused as a second folder of step 1000 when the run has another clash (a final
    model whose trainer_state.json says step2000-unsharded's step); `latest` (a link to step2000) is
    not a second archive of step 2000 nor a clash; the final model, which says no step, is reported
    with what to do."""
    root = tmp_path / "runs"
    want = _layouts(root, tokenizer)
    top = tmp_path / "archive"
    settings = run_settings(root, small_probes, archive=str(top))
    report = learnviz_run(settings, progress=False)
    runs = {r.run: r for r in report.runs}
    assert sorted(runs) == sorted(want)
    for name, steps in want.items():
        r = runs[name]
        assert r.failed == [] and r.incomplete == [], name
        assert sorted(p.name for p in r.done) == sorted(f"{folder}.h5" for _, folder in steps), name
        assert [(a.step, a.attrs["checkpoint_name"]) for a in readout.series(top / name)] == steps, name
        assert [row["step"] for row in readout.history_rows(top / name)] == [s for s, _ in steps], name
    assert [p for p, _ in runs["pythia"].beside] == [root / "pythia" / "final"]
    assert "stepN" in runs["pythia"].beside[0][1]
    assert [p for p, _ in runs["olmo"].beside] == [root / "olmo" / "final"]     # (and step1000/ no clash either)
    assert all(r.beside == [] for name, r in runs.items() if name not in ("pythia", "olmo"))

    again = learnviz_run(settings, progress=False)            # a rerun: nothing to do, nothing failed
    assert all(not r.done and not r.failed and not r.incomplete for r in again.runs)
    assert sum(len(r.current) for r in again.runs) == 10

    capsys.readouterr()
    assert cli.main(["status", "--archive", str(top), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {name: [(row["step"], row["name"]) for row in rows] for name, rows in listed.items()} == want

    out = tmp_path / "tables"
    assert cli.main(["export", "csv", "--archive", str(top), "--out", str(out)]) == 0
    for name, steps in want.items():
        with open(out / name / "checkpoints.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [(int(r["step"]), r["name"]) for r in rows] == steps, name

    from dashboard import create_app
    client = create_app(load_settings(overrides={"archive": str(top)}, environ={}),
                        test_config={"TESTING": True}).test_client()
    listed = client.get("/api/runs.json").get_json()["runs"]
    assert sorted(r["label"] for r in listed) == sorted(want)
    for r in listed:
        overview = client.get(f"/api/runs/{r['id']}/overview.json").get_json()
        assert overview["steps"] == [s for s, _ in want[r["label"]]], r["label"]
        assert client.get(f"/api/runs/{r['id']}/calibration/{overview['steps'][-1]}.json").status_code == 200


def test_a_link_to_a_checkpoint_of_the_run_is_not_archived_again(tmp_path, tokenizer, small_probes):
    """`latest -> save-b` beside save-a and save-b, whose steps come from their trainer_state.json:
    `latest` sorted first by name and took step 20, so save-b, the real checkpoint, was refused
    as a failure at every run and the link archived as latest.h5 (which the next save would have
    repointed to another step). A link named with a step keeps its own archive (test_names.py)."""
    root = tmp_path / "run"
    _save(root / "save-a", tokenizer, 10, state=True)
    _save(root / "save-b", tokenizer, 20, 1, state=True)
    (root / "latest").symlink_to("save-b")
    (root / "best").symlink_to(root / "save-a")       # an absolute link as well
    settings = run_settings(root, small_probes, archive=str(tmp_path / "archive"))
    for _ in range(2):
        report = learnviz_run(settings, progress=False, cpu_stages=False)
        assert report.failed == [] and report.beside == [] and report.ok
    assert sorted(p.name for p in (tmp_path / "archive").glob("*.h5")) == ["save-a.h5", "save-b.h5"]
    assert [(a.step, a.path.name) for a in readout.series(tmp_path / "archive")] == [
        (10, "save-a.h5"), (20, "save-b.h5")]


def test_a_run_whose_folders_say_no_step_is_told_so(tmp_path, tokenizer, small_probes, capsys):
    """Model folders whose names say no step, without trainer_state.json: `learnviz run` said 'no
    checkpoints found ... learnviz looks for checkpoint-N, step_N, step-N or global_stepN' and then
    listed the very folders it had found, as 'not a checkpoint'. It now says that it found them and
    what they lack, and names each with what would give it a step."""
    root = tmp_path / "run"
    _save(root / "ckpt_a", tokenizer, 10)
    _save(root / "ckpt_b", tokenizer, 20, 1)
    assert cli.main(["run", "--checkpoints", str(root), "--archive", str(tmp_path / "archive"), "--probes",
                     str(small_probes), "--hard-examples", "", "--device", "cpu", "--settle-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "no checkpoints found" not in out
    assert (f"no checkpoint with a step in {root}: 2 model folders found, but no step in their names nor a "
            f"trainer_state.json global_step (see below); learnviz reads the step from folders named "
            f"checkpoint-N, step_N, step-N, stepN") in out
    for name in ("ckpt_a", "ckpt_b"):
        assert (f"  not a checkpoint: {root / name}: no step: the folder name has none and there is no "
                f"trainer_state.json: not archived (a folder named after its step, checkpoint-N") in out
    assert not list((tmp_path / "archive").glob("*.h5"))


def test_a_step_folder_in_another_trainers_format_says_what_it_holds(tmp_path):
    """A folder named after its step but without config.json was 'incomplete: config.json is
    missing' at every run, whatever it held; when it holds another trainer's own format, or its
    Hugging Face files one folder down, the reason says so and what to do."""
    megatron = tmp_path / "iter_0003000" / "mp_rank_00"
    megatron.mkdir(parents=True)
    (megatron / "model_optim_rng.pt").write_bytes(b"\0")
    olmo = tmp_path / "step3000" / "model_and_optim"
    olmo.mkdir(parents=True)
    (olmo / "__0_0.distcp").write_bytes(b"\0")
    nested = tmp_path / "iter_0004000" / "hf"
    nested.mkdir(parents=True)
    (nested / "config.json").write_text("{}")
    os.mkdir(tmp_path / "checkpoint-5")                 # the HF Trainer, still writing: as before
    reasons = {p: inspect(tmp_path / p, settle_seconds=0) for p in
               ("iter_0003000", "step3000", "iter_0004000", "checkpoint-5")}
    assert {p: (c.step, c.state) for p, c in reasons.items()} == {
        "iter_0003000": (3000, "incomplete"), "step3000": (3000, "incomplete"),
        "iter_0004000": (4000, "incomplete"), "checkpoint-5": (5, "incomplete")}
    assert reasons["iter_0003000"].reason == (
        "config.json is missing: the folder holds Megatron-LM's own model-parallel checkpoint (mp_rank_00/), "
        "which learnviz does not read; convert it to a Hugging Face save (config.json, model.safetensors) into "
        "the folder itself")
    assert reasons["step3000"].reason.startswith(
        "config.json is missing: the folder holds OLMo's sharded torch.distributed checkpoint (model_and_optim/)")
    assert reasons["iter_0004000"].reason.startswith(
        "config.json is missing: the Hugging Face files are in hf/; move them into the folder itself")
    assert reasons["checkpoint-5"].reason == "config.json is missing"
