"""LearnvizCallback with the real transformers Trainer: a tiny GPT-2 trained a few steps, saving
three times with save_total_limit=2 and no tokenizer given to the Trainer; the embedded process
archives all three although the Trainer rotates one away."""

from __future__ import annotations

import pytest
from helpers import doc_blocks, snapshot, tiny_tokenizer, write_small_probes

from learnviz import cli, readout
from learnviz.checkpoints import TOKENIZER_FILES

pytest.importorskip("accelerate")   # the Trainer needs it


def _model_and_data(tokenizer):
    """A tiny random GPT-2 and 16 equal-length examples (the default collator stacks them)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=eos, eos_token_id=eos, pad_token_id=eos))
    ids = tokenizer("All cats are dogs. All dogs are birds. So all cats are birds.")["input_ids"][:16]
    return model, [{"input_ids": ids, "labels": ids}] * 16


def test_trainer_with_embedded_callback_archives_every_saved_checkpoint(tmp_path, monkeypatch):
    from learnviz.integrations.hf import KEEP_DIR, LearnvizCallback

    tok = tiny_tokenizer()
    tok_dir = tmp_path / "tokenizer"
    tok.save_pretrained(tok_dir)
    probes = write_small_probes(tmp_path / "probes.jsonl")
    out = tmp_path / "out"
    # docs/integrations.md's example, as written, in tmp_path; a small probe set through the environment
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEARNVIZ_PROBES", str(probes))
    monkeypatch.setenv("LEARNVIZ_HARD_EXAMPLES", "")
    model, train_data = _model_and_data(tok)
    (example,) = doc_blocks("integrations.md", "test: hf")
    namespace = {"model": model, "train_data": train_data}
    exec(compile(example, "docs/integrations.md", "exec"), namespace)
    assert isinstance(namespace["callback"], LearnvizCallback)

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

    # `learnviz run --tokenizer DIR` afterwards finds everything current and writes nothing (but
    # its scan cache, which may learn the checkpoints: helpers.snapshot leaves it out)
    before = {k: v for k, v in snapshot(archive).items() if not k.startswith(".locks")}
    rc = cli.main(["-q", "run", "--checkpoints", str(out), "--tokenizer", str(tok_dir), "--probes", str(probes),
                   "--hard-examples", "", "--settle-seconds", "0", "--device", "cpu"])
    assert rc == 0
    after = {k: v for k, v in snapshot(archive).items() if not k.startswith(".locks")}
    assert after == before


def test_source_column_writes_the_data_log(tmp_path):
    """source_column + callback.collator(): a real Trainer run writes data_log.jsonl whose counts
    add up to what the Trainer fed per source, at steps it logged, readable by learnviz.datalog."""
    from transformers import Trainer, TrainingArguments

    from learnviz import datalog
    from learnviz.integrations.hf import LearnvizCallback

    tok = tiny_tokenizer()
    model, data = _model_and_data(tok)
    data = [{**ex, "source": "easy" if i < 12 else "hard"} for i, ex in enumerate(data)]   # 12 easy, 4 hard
    callback = LearnvizCallback(tokenizer=tmp_path, source_column="source")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=8, per_device_train_batch_size=4,
                             save_strategy="no", report_to=[], use_cpu=True, remove_unused_columns=False,
                             dataloader_num_workers=0, logging_steps=100)
    Trainer(model=model, args=args, train_dataset=data, data_collator=callback.collator(),
            callbacks=[callback]).train()
    log = datalog.read(tmp_path / "out" / datalog.FILE_NAME)
    assert not log.problems
    totals: dict[str, int] = {}
    for src, k in zip(log.sources, log.examples):
        totals[src] = totals.get(src, 0) + int(k)
    # 8 steps x 4 examples = two epochs of the 16: each example twice, each step its own batch of 4
    assert totals == {"easy": 24, "hard": 8}
    per_step = {s: 0 for s in range(1, 9)}
    for s, k in zip(log.steps, log.examples):
        per_step[int(s)] += int(k)
    assert per_step == {s: 4 for s in range(1, 9)}
    with pytest.raises(ValueError, match="no 'source' column"):
        callback.collator()([{"input_ids": [1]}])
