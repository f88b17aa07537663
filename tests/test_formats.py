"""Checkpoint formats beyond safetensors: pytorch_model.bin, read with torch.load(weights_only=True)
only (transformers 5 saves no .bin, so the test writes one as older versions did, torch.save of the
state dict: what safe_serialization=False wrote)."""

from __future__ import annotations

import numpy as np
import torch
from helpers import learnviz_run, make_checkpoint, write_small_probes
from safetensors.torch import load_file

from learnviz import archive as arc
from learnviz.checkpoints import inspect
from learnviz.results import EXTRACT
from learnviz.settings import load_settings


def _to_bin(ck, *, legacy: bool = False, payload=None) -> None:
    sd = load_file(ck / "model.safetensors")
    (ck / "model.safetensors").unlink()
    torch.save(payload if payload is not None else sd, ck / "pytorch_model.bin",
               _use_new_zipfile_serialization=not legacy)


class Evil:
    """An object whose unpickling would run code: torch.load(weights_only=True) refuses it."""
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pytorch_model_bin_archives_like_safetensors(tmp_path, tokenizer, capfd):
    for name in ("st", "bin"):
        make_checkpoint(tmp_path / name / "checkpoint-3", tokenizer, step=3, seed=5)
    _to_bin(tmp_path / "bin" / "checkpoint-3")
    probes = write_small_probes(tmp_path / "probes.jsonl", every=50)
    got = {}
    for name in ("st", "bin"):
        s = load_settings(overrides={"checkpoints": str(tmp_path / name), "probes": str(probes), "hard_examples": "",
                                     "settle_seconds": 0.0, "device": "cpu", "dtype": "float32"}, environ={})
        report = learnviz_run(s, cpu_stages=False, progress=False)
        assert report.ok and len(report.done) == 1, report.failed
        got[name] = arc.Archive(report.done[0]).read(EXTRACT, ["answer_logprob", "correct"])
    assert np.array_equal(got["st"]["correct"], got["bin"]["correct"])
    np.testing.assert_allclose(got["st"]["answer_logprob"], got["bin"]["answer_logprob"], rtol=1e-5, atol=1e-5)

    # the legacy pickle format and a truncated file are refused before any unpickling
    legacy = make_checkpoint(tmp_path / "legacy" / "checkpoint-1", tokenizer, step=1)
    _to_bin(legacy, legacy=True)
    c = inspect(legacy, settle_seconds=0)
    assert c.state == "broken" and "pytorch_model.bin is not a torch zip file" in c.reason

    # a torch file holding code is refused by torch.load(weights_only=True): recorded as failed, never run
    evil = make_checkpoint(tmp_path / "evil" / "checkpoint-1", tokenizer, step=1)
    _to_bin(evil, payload={"transformer.wte.weight": Evil()})
    s = load_settings(overrides={"checkpoints": str(tmp_path / "evil"), "probes": str(probes), "hard_examples": "",
                                 "settle_seconds": 0.0, "device": "cpu"}, environ={})
    capfd.readouterr()
    report = learnviz_run(s, cpu_stages=False, progress=False)
    ((path, reason),) = report.failed
    assert path.name == "checkpoint-1" and "model cannot be loaded" in reason and "weights_only" in reason.lower()
    assert "this must never run" not in capfd.readouterr().out
