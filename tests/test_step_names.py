"""Checkpoint folders named by trainers other than the HF Trainer: Pythia's `step1000`, OLMo's
`step1000-unsharded` (beside its sharded `step1000`), Megatron-LM's `iter_0001000`, Lightning's
`epoch=3-step=1200`, zero-padded `checkpoint-000100`; a `latest` link and a `final/` model beside
them. Each name that says its step is archived under it, end to end (run, status, export, the
dashboard); a name that says none is reported with what to do, never guessed.

(Names learnviz refuses, a step beyond what JSON holds, an archive name too long, are in
tests/test_names.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_checkpoint, write_small_probes

from learnviz import cli
from learnviz.archive import step_from_file_name
from learnviz.checkpoints import inspect, step_from_name
from learnviz.settings import load_settings


@pytest.fixture
def small_probes(tmp_path):
    return write_small_probes(tmp_path / "probes.jsonl", every=50)


def _settings(root, probes, **kw):
    return load_settings(overrides={"checkpoints": str(root), "settle_seconds": 0.0, "device": "cpu",
                                    "probes": str(probes), "hard_examples": "", **kw}, environ={})


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
