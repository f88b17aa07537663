"""LearnvizCallback with the real transformers Trainer: a tiny GPT-2 trained a few steps, saving
three times with save_total_limit=2 and no tokenizer given to the Trainer; the embedded process
archives all three although the Trainer rotates one away."""

from __future__ import annotations

import pytest
from helpers import snapshot, tiny_tokenizer, write_small_probes

from learnviz import cli, readout
from learnviz.checkpoints import TOKENIZER_FILES

pytest.importorskip("accelerate")   # the Trainer needs it


def _trainer(out, callbacks, tokenizer):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=eos, eos_token_id=eos, pad_token_id=eos))
    texts = ["All cats are dogs. All dogs are birds. So all cats are birds."] * 16
    ids = [tokenizer(t)["input_ids"][:16] for t in texts]
    data = [{"input_ids": x, "labels": x} for x in ids]
    args = TrainingArguments(output_dir=str(out), max_steps=6, save_steps=2, save_total_limit=2, logging_steps=1,
                             per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0)
    return Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)


def test_trainer_with_embedded_callback_archives_every_saved_checkpoint(tmp_path):
    from learnviz.integrations.hf import KEEP_DIR, LearnvizCallback

    tok = tiny_tokenizer()
    tok_dir = tmp_path / "tokenizer"
    tok.save_pretrained(tok_dir)
    probes = write_small_probes(tmp_path / "probes.jsonl")
    out = tmp_path / "out"
    callback = LearnvizCallback(tokenizer=tok_dir, embedded=True, probes=str(probes), hard_examples="")
    _trainer(out, [callback], tok).train()

    archive = out / "learnviz-archive"
    on_disk = sorted(p.name for p in out.glob("checkpoint-*"))
    assert on_disk == ["checkpoint-4", "checkpoint-6"]                      # the Trainer rotated checkpoint-2 away
    assert not any((out / "checkpoint-4" / n).exists() for n in TOKENIZER_FILES)   # saved without a tokenizer
    assert sorted(p.name for p in archive.glob("checkpoint-*.h5")) == [
        "checkpoint-2.h5", "checkpoint-4.h5", "checkpoint-6.h5"]
    assert [a.step for a in readout.series(archive)] == [2, 4, 6]
    series = readout.open_series_archive(archive)
    assert series is not None and series.stage("series").ok
    rows = readout.history_rows(archive)
    trainer_rows = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in trainer_rows] == [1, 2, 3, 4, 5, 6]            # every logged step
    assert all(r["train_loss"] > 0 and "learning_rate" in r for r in trainer_rows)
    assert not (archive / KEEP_DIR).exists() or not any((archive / KEEP_DIR).iterdir())   # the kept links went

    # `learnviz run --tokenizer DIR` afterwards finds everything current and writes nothing
    before = {k: v for k, v in snapshot(archive).items() if not k.startswith(".locks")}
    rc = cli.main(["-q", "run", "--checkpoints", str(out), "--tokenizer", str(tok_dir), "--probes", str(probes),
                   "--hard-examples", "", "--settle-seconds", "0", "--device", "cpu"])
    assert rc == 0
    after = {k: v for k, v in snapshot(archive).items() if not k.startswith(".locks")}
    assert after == before
