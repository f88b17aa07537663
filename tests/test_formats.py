"""Checkpoint formats beyond safetensors: pytorch_model.bin, read with torch.load(weights_only=True)
only (transformers 5 saves no .bin, so the test writes one as older versions did, torch.save of the
state dict: what safe_serialization=False wrote)."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_peft_adapter_loads_onto_its_base(tmp_path, tokenizer):
    peft = pytest.importorskip("peft")
    base = make_checkpoint(tmp_path / "base", tokenizer, step=1, seed=3)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                      fan_in_fan_out=True, init_lora_weights=False))
    ck = tmp_path / "adapters" / "checkpoint-7"
    lora.save_pretrained(ck)                      # adapter_config.json names the base folder
    assert (ck / "adapter_config.json").exists() and not (ck / "config.json").exists()
    probes = write_small_probes(tmp_path / "probes.jsonl", every=50)

    def run(root, **kw):
        s = load_settings(overrides={"checkpoints": str(root), "probes": str(probes), "hard_examples": "",
                                     "settle_seconds": 0.0, "device": "cpu", "dtype": "float32", **kw}, environ={})
        return learnviz_run(s, cpu_stages=False, progress=False)

    report = run(tmp_path / "adapters")
    assert report.ok and [p.name for p in report.done] == ["checkpoint-7.h5"], report.failed
    with_adapter = arc.Archive(report.done[0]).read(EXTRACT, ["answer_logprob"])["answer_logprob"]
    # the base alone (its folder is a checkpoint too) answers otherwise
    plain = run(base, archive=str(tmp_path / "base-archive"))
    assert plain.ok and len(plain.done) == 1
    base_lp = arc.Archive(plain.done[0]).read(EXTRACT, ["answer_logprob"])["answer_logprob"]
    assert not np.allclose(with_adapter, base_lp, atol=1e-4)

    # the base moved away: the error names --base-model; given, it loads again, to the same numbers
    moved = tmp_path / "elsewhere"
    base.rename(moved)
    (tmp_path / "adapters" / "learnviz-archive" / "checkpoint-7.h5").unlink()
    failed = run(tmp_path / "adapters")
    ((_, reason),) = failed.failed
    assert "--base-model" in reason and "not a local folder" in reason
    again = run(tmp_path / "adapters", base_model=str(moved), retry_failed=True)
    assert again.ok and len(again.done) == 1
    lp = arc.Archive(again.done[0]).read(EXTRACT, ["answer_logprob"])["answer_logprob"]
    np.testing.assert_allclose(lp, with_adapter, rtol=1e-5, atol=1e-5)


def test_an_adapter_whose_weights_lack_a_tensor_fails_naming_it(tmp_path, tokenizer):
    """An adapter file without the LoRA A matrices its adapter_config.json asks for: peft filled
    them with random values and only warned, so the merged model was neither the base nor the
    trained adapter. The checkpoint fails, naming the file and the tensors."""
    peft = pytest.importorskip("peft")
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from learnviz.errors import CheckpointError
    from learnviz.model import load
    base = make_checkpoint(tmp_path / "base", tokenizer, step=1, seed=3)
    lora = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(base), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False))
    ck = tmp_path / "adapters" / "checkpoint-7"
    lora.save_pretrained(ck)
    tokenizer.save_pretrained(ck)
    load(ck, device="cpu")                                    # whole: it loads
    w = ck / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(w).items() if "h.1." not in k or "lora_A" not in k}, w)
    with pytest.raises(CheckpointError) as err:
        load(ck, device="cpu")
    assert err.value.path == str(w) and err.value.field == "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight"
    assert "the adapter's weights lack 1 tensor that its adapter_config.json asks for" in str(err.value)
