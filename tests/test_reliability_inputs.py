"""Bad inputs are recorded against the file that is bad, and nothing else stops, hides or changes:
a corrupt safetensors header, a probe longer than the model's context, a checkpoint without its
tokenizer files, a probe file that is not UTF-8. Real tiny checkpoints, real corruptions."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
import torch
from helpers import learnviz_run as run
from helpers import make_checkpoint, snapshot

from learnviz import archive as arc
from learnviz import extract as ex
from learnviz.checkpoints import STEP_NAMES, TOKENIZER_FILES, fingerprint, inspect
from learnviz.errors import CheckpointError, ProbeError
from learnviz.extract import ExtractResult
from learnviz.model import encode_probe, load
from learnviz.probes import Probe, ProbeSet, read_probe_file, write_jsonl

GARBAGE = b"not a length, just text"      # what a stray write leaves over the header length


def _probes() -> list[Probe]:
    return [Probe(f"p{i}", f"All cats are dogs. All dogs are fish {i}. What follows?", "All cats are fish.")
            for i in range(5)]


def _settings(settings, tmp_path, probes: list[Probe], **changes):
    """The `settings` fixture's run with a probe file of our own and no hard examples."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "probes.jsonl"
    write_jsonl(probes, path)
    return dataclasses.replace(settings, probes=str(path), hard_examples="", **changes)


def _stage(settings, ck_name: str) -> arc.StageInfo:
    return arc.Archive(settings.archive_dir() / f"{ck_name}.h5").stage("extract")


# ---------------------------------------------------------------- 1. a corrupt safetensors header

def _overwrite(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_a_garbage_header_length_is_broken_and_fingerprinted_without_allocating(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    w = ck / "model.safetensors"
    good = fingerprint(inspect(ck, settle_seconds=0))
    original = w.read_bytes()[:8]
    _overwrite(w, 0, GARBAGE[:8])
    (n,) = struct.unpack("<Q", GARBAGE[:8])
    c = inspect(ck, settle_seconds=0)
    assert c.state == "broken"
    assert c.reason == (f"model.safetensors: unreadable safetensors header: header length {n} is implausible "
                        "(the file's first 8 bytes are not a length)")
    tracemalloc.start()
    try:
        fp = fingerprint(c)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20                      # a few sampled blocks, never the length the file claims
    assert fp == fingerprint(inspect(ck, settle_seconds=0)) != good   # a key of its own, stable
    _overwrite(w, 0, original)
    assert fingerprint(inspect(ck, settle_seconds=0)) == good        # repaired: the old key again


def test_a_header_length_past_the_end_of_the_file_is_never_read(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    w = ck / "model.safetensors"
    size = w.stat().st_size
    _overwrite(w, 0, struct.pack("<Q", 50_000_000))          # plausible, but longer than the file
    c = inspect(ck, settle_seconds=0)
    assert c.state == "broken"
    assert c.reason == (f"model.safetensors: unreadable safetensors header: header length 50000000 runs past "
                        f"the end of the file ({size} bytes)")
    tracemalloc.start()
    try:
        fingerprint(c)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("size", [0, 4])
def test_a_weight_file_cut_inside_its_length_field_is_broken(tmp_path, tokenizer, size):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    with open(ck / "model.safetensors", "r+b") as fh:
        fh.truncate(size)
    c = inspect(ck, settle_seconds=0)
    assert c.state == "broken"
    assert c.reason == (f"model.safetensors: unreadable safetensors header: the file has {size} bytes, fewer than "
                        "the 8-byte header length (a crashed save?)")
    assert len(fingerprint(c)) == 16


def test_a_garbage_shard_index_is_broken_and_fingerprinted(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    (ck / "model.safetensors").unlink()
    (ck / "model.safetensors.index.json").write_bytes(b'{"weight_map": ["a list"]}')
    c = inspect(ck, settle_seconds=0)
    assert c.state == "broken" and c.reason == "model.safetensors.index.json cannot be read as a shard index"
    assert len(fingerprint(c)) == 16


def test_a_run_with_a_corrupt_header_archives_the_good_checkpoints(settings, tmp_path):
    settings = _settings(settings, tmp_path, _probes())
    root = tmp_path / "run"
    w = root / "checkpoint-20" / "model.safetensors"
    original = w.read_bytes()[:8]
    _overwrite(w, 0, GARBAGE[:8])
    (n,) = struct.unpack("<Q", GARBAGE[:8])
    report = run(settings, cpu_stages=False, progress=False)

    assert [p.name for p in report.done] == ["checkpoint-10.h5", "checkpoint-30.h5"]
    reason = (f"model.safetensors: unreadable safetensors header: header length {n} is implausible "
              "(the file's first 8 bytes are not a length)")
    assert report.failed == [(root / "checkpoint-20", reason)]
    assert _stage(settings, "checkpoint-10").ok and _stage(settings, "checkpoint-30").ok
    bad = _stage(settings, "checkpoint-20")
    assert bad.status == "failed" and bad.reason == reason

    before = snapshot(settings.archive_dir())
    again = run(settings, cpu_stages=False, progress=False)           # the failure is recorded: a no-op
    assert not again.done and not again.failed and snapshot(settings.archive_dir()) == before

    _overwrite(w, 0, original)                                          # repaired: its new key retries it
    fixed = run(settings, cpu_stages=False, progress=False)
    assert [p.name for p in fixed.done] == ["checkpoint-20.h5"] and not fixed.failed
    assert _stage(settings, "checkpoint-20").ok


# ---------------------------------------------------------------- 5. a probe longer than the model's context

def _long_probe(expected: str = "All cats are fish.") -> Probe:
    prompt = ("All cats are dogs. " * 1100)[:20_000] + "What follows?"
    return Probe("too_long", prompt, expected)


ROW_FIELDS = ("token_logprob", "token_entropy", "token_top1_prob", "token_argmax", "answer_ids")
PROBE_FIELDS = ("answer_logprob", "answer_confidence", "stop_prob", "first_divergence", "correct",
                "prompt_tokens", "truncated")


def _assert_same_probes(with_long: ExtractResult, at: list[int], alone: ExtractResult) -> None:
    """The probes at `at` of one result equal the probes of another (batch mates change float rounding only)."""
    for i, j in enumerate(at):
        for name in ROW_FIELDS:
            assert np.allclose(getattr(with_long, name).row(j), getattr(alone, name).row(i), atol=1e-5), name
        for name in PROBE_FIELDS:
            assert np.allclose(getattr(with_long, name)[j], getattr(alone, name)[i], atol=1e-5), name
        assert with_long.greedy_answer[j] == alone.greedy_answer[i]
        for layer in alone.layers:
            assert np.allclose(with_long.embeddings[layer][j].astype(np.float32),
                               alone.embeddings[layer][i].astype(np.float32), rtol=1e-3, atol=1e-4)


def test_a_prompt_longer_than_the_model_is_cut_to_its_positions(ckpt_root, monkeypatch):
    lm = load(ckpt_root / "checkpoint-10", device="cpu", dtype="float32")
    assert lm.max_positions == 128 < 512                      # make_checkpoint's GPT-2: n_positions=128
    others, long = _probes(), _long_probe()
    opts = ex.ExtractOptions(max_length=512, batch_size=4)
    r = ex.extract(lm, ProbeSet(tuple(others[:2]) + (long,) + tuple(others[2:])), opts)
    alone = ex.extract(lm, ProbeSet(tuple(others)), opts)

    prompt, answer = encode_probe(lm.tokenizer, long.prompt, long.expected)
    assert r.truncated.tolist() == [False, False, True, False, False, False]
    kept = 128 - len(answer) - 1                    # one position left for a greedy token after the answer
    assert r.prompt_tokens[2] == kept
    assert r.answer_ids.row(2).tolist() == answer                      # the answer is kept whole
    assert r.failed is not None and not r.failed.any() and r.reason == ""
    assert np.isfinite(r.answer_logprob).all()
    _assert_same_probes(r, [0, 1, 3, 4, 5], alone)

    # against Hugging Face on the kept prompt: teacher-forced logprobs, and greedy decoding that
    # ends at the model's last position (its budget capped so that no token is fed past 127)
    ids = torch.tensor([prompt[-kept:] + answer])
    with torch.inference_mode():
        lp = lm.model(ids).logits[0].float().log_softmax(-1)[kept - 1: kept + len(answer) - 1]
    assert np.allclose(r.token_logprob.row(2), lp.gather(1, torch.tensor(answer)[:, None])[:, 0].numpy(), atol=1e-4)
    budget = min(ex.answer_budget(len(answer), opts.max_new_tokens), 128 - kept + 1)
    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([prompt[-kept:]]), attention_mask=torch.ones(1, kept, dtype=torch.long),
                                max_new_tokens=budget, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id,
                                eos_token_id=lm.tokenizer.eos_token_id)
    text = lm.tokenizer.decode(out[0, kept:], skip_special_tokens=True)
    assert r.greedy_answer[2] == ex._cut_at_stop(text, opts.stop_strings).strip()

    plain = ex._Greedy.__init__          # the prefix-recomputation path ends there too

    def no_reuse(self, *a, **k):
        plain(self, *a, **k)
        self.reuse_cache = False
    monkeypatch.setattr(ex._Greedy, "__init__", no_reuse)
    assert ex.extract(lm, ProbeSet((long,) + tuple(others)), opts).greedy_answer == [r.greedy_answer[2]] + [
        r.greedy_answer[i] for i in (0, 1, 3, 4, 5)]


def test_an_answer_longer_than_the_model_fails_that_probe_alone(ckpt_root):
    lm = load(ckpt_root / "checkpoint-10", device="cpu", dtype="float32")
    others = _probes()
    long = Probe("answer_too_long", "What follows?", " ".join(["All cats are fish."] * 60))
    _, answer = encode_probe(lm.tokenizer, long.prompt, long.expected)
    assert len(answer) > 128
    opts = ex.ExtractOptions(max_length=512, batch_size=4)
    r = ex.extract(lm, ProbeSet((long,) + tuple(others)), opts)
    alone = ex.extract(lm, ProbeSet(tuple(others)), opts)

    assert r.failed.tolist() == [True] + [False] * 5
    assert r.failures == {"answer_too_long": f"its answer is {len(answer)} tokens and needs {len(answer) + 2} "
                                             "positions (one prompt token before it, one greedy token after it); "
                                             "the model has 128"}
    assert r.reason.startswith("probe 'answer_too_long': its answer is")
    assert not r.correct[0] and r.greedy_answer[0] == "" and r.first_divergence[0] == 0
    assert r.answer_ids.row(0).tolist() == answer[:127] and r.prompt_tokens[0] == 1
    assert np.isfinite(r.answer_logprob).all() and np.isfinite(r.token_entropy.values).all()
    _assert_same_probes(r, [1, 2, 3, 4, 5], alone)


def test_a_run_with_an_over_long_probe_archives_every_probe(settings, tmp_path):
    others = _probes()
    plain = _settings(settings, tmp_path / "plain", others, archive=str(tmp_path / "plain-archive"))
    probes = others[:3] + [_long_probe()] + others[3:]
    with_long = _settings(settings, tmp_path / "long", probes, max_length=512)
    assert run(with_long, cpu_stages=False, progress=False).failed == []
    run(plain, cpu_stages=False, progress=False)
    for name in ("checkpoint-10", "checkpoint-20", "checkpoint-30"):
        info = _stage(with_long, name)
        assert info.ok and info.reason == ""
        got = ExtractResult.from_archive(arc.Archive(with_long.archive_dir() / f"{name}.h5").read("extract"), {})
        base = ExtractResult.from_archive(arc.Archive(plain.archive_dir() / f"{name}.h5").read("extract"), {})
        assert got.probe_ids == [p.id for p in probes]
        assert got.truncated.tolist() == [False, False, False, True, False, False]
        _assert_same_probes(got, [0, 1, 2, 4, 5], base)


def test_a_run_with_an_over_long_answer_names_the_probe(settings, tmp_path):
    long = Probe("answer_too_long", "What follows?", " ".join(["All cats are fish."] * 60))
    s = _settings(settings, tmp_path, _probes() + [long])
    report = run(s, cpu_stages=False, progress=False)
    assert len(report.done) == 3 and report.failed == []
    info = _stage(s, "checkpoint-10")
    assert info.ok and info.reason.startswith("probe 'answer_too_long': its answer is ")
    got = arc.Archive(s.archive_dir() / "checkpoint-10.h5").read("extract", ["failed", "correct", "probe_ids"])
    assert got["failed"].tolist() == [False] * 5 + [True] and not got["correct"][-1]
    # said where people look, not only in the archive: the run's summary and `learnviz status`
    root = tmp_path / "run"
    assert [(p, why) for p, why in report.notes] == [(root / f"checkpoint-{k}", info.reason) for k in (10, 20, 30)]
    from learnviz import readout
    rows = readout.status_rows(s.archive_dir())
    assert [r.notes for r in rows] == [info.reason] * 3 and [r.reason for r in rows] == [""] * 3
    text = readout.format_status(readout.newest_and_notable(rows, 0))
    assert f"step 10 (checkpoint-10) archived, with probes failed alone: {info.reason}" in text


# ---------------------------------------------------------------- 6. a checkpoint without its tokenizer files

def test_a_checkpoint_without_tokenizer_files_fails_early_and_is_retried_when_they_return(settings, tmp_path):
    settings = _settings(settings, tmp_path, _probes())
    ck = tmp_path / "run" / "checkpoint-20"
    saved = tmp_path / "saved-tokenizer"
    saved.mkdir()
    present = [name for name in TOKENIZER_FILES if (ck / name).is_file()]
    assert present
    for name in present:
        shutil.move(ck / name, saved / name)

    report = run(settings, cpu_stages=False, progress=False)
    assert [p.name for p in report.done] == ["checkpoint-10.h5", "checkpoint-30.h5"]
    reason = (f"{ck} field 'tokenizer': the tokenizer files are missing in the checkpoint folder, the run folder "
              f"or its parent, and no --tokenizer DIR was given (looked for {', '.join(TOKENIZER_FILES)}) "
              "(pass --tokenizer DIR (or set `tokenizer`) naming the folder of the tokenizer the run was trained "
              "with, or copy its files into the checkpoint folder, the run folder or its parent)")
    assert report.failed == [(ck, reason)]
    assert _stage(settings, "checkpoint-20").reason == reason

    before = snapshot(settings.archive_dir())
    again = run(settings, cpu_stages=False, progress=False)
    assert not again.done and not again.failed and snapshot(settings.archive_dir()) == before

    for name in present:
        shutil.move(saved / name, ck / name)
    fixed = run(settings, cpu_stages=False, progress=False)
    assert [p.name for p in fixed.done] == ["checkpoint-20.h5"] and not fixed.failed
    assert _stage(settings, "checkpoint-20").ok
    after = snapshot(settings.archive_dir())
    for name in ("checkpoint-10.h5", "checkpoint-30.h5"):           # the others were left alone
        assert after[name] == before[name]
    assert not run(settings, cpu_stages=False, progress=False).done   # and now it is current


def test_a_tokenizer_without_its_vocabulary_names_the_files(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    (ck / "tokenizer.json").unlink()
    (ck / "tokenizer_config.json").unlink()
    # special tokens alone: AutoTokenizer builds GPT-2's tokenizer with an empty vocabulary
    (ck / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    with pytest.raises(CheckpointError) as info:
        load(ck, device="cpu", dtype="float32")
    message = str(info.value)
    assert message.startswith(f"{ck} field 'tokenizer': the tokenizer has no vocabulary")
    assert f"looked for {', '.join(TOKENIZER_FILES)}; found only special_tokens_map.json" in message


def test_the_key_of_a_complete_checkpoint_follows_its_tokenizer_and_nothing_else(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    key = fingerprint(inspect(ck, settle_seconds=0))
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 1}))   # not an input of extraction
    assert fingerprint(inspect(ck, settle_seconds=0)) == key
    config = ck / "tokenizer_config.json"
    text = config.read_text()
    config.write_text(text.replace("{", '{"model_max_length": 64, ', 1))
    assert fingerprint(inspect(ck, settle_seconds=0)) != key
    config.write_text(text)
    assert fingerprint(inspect(ck, settle_seconds=0)) == key


# ---------------------------------------------------------------- 8a. a probe file that is not UTF-8

def test_a_utf16_probe_file_is_a_clean_probe_error(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_bytes('{"id": "a", "prompt": "p", "expected": "e"}\n'.encode("utf-16"))   # starts b"\xff\xfe"
    with pytest.raises(ProbeError) as info:
        read_probe_file(path)
    assert info.value.path == str(path) and info.value.line == 1
    assert str(info.value) == (f"{path} line 1: not UTF-8: byte 0xff at byte offset 0 is not valid UTF-8 "
                               "(invalid start byte) (save it as UTF-8; it starts with a UTF-16 byte-order mark)")


@pytest.mark.parametrize("suffix", [".jsonl", ".yaml", ".json"])
def test_a_latin1_probe_file_names_the_line_and_byte(tmp_path, suffix):
    probes = [{"id": "a", "prompt": "p", "expected": "e"}, {"id": "b", "prompt": "Caf\u00e9?", "expected": "e"}]
    if suffix == ".jsonl":
        text = "\n".join(json.dumps(p, ensure_ascii=False) for p in probes) + "\n"
    elif suffix == ".json":
        text = "[\n" + ",\n".join(json.dumps(p, ensure_ascii=False) for p in probes) + "\n]\n"
    else:
        text = "".join(f"- id: {p['id']}\n  prompt: {p['prompt']}\n  expected: {p['expected']}\n" for p in probes)
    data = text.encode("latin-1")
    offset = data.index(b"\xe9")
    path = tmp_path / f"probes{suffix}"
    path.write_bytes(data)
    with pytest.raises(ProbeError) as info:
        read_probe_file(path)
    line = data[:offset].count(b"\n") + 1
    assert line == (2 if suffix == ".jsonl" else 3 if suffix == ".json" else 5)
    assert info.value.line == line and info.value.path == str(path)
    assert f"byte 0xe9 at byte offset {offset} is not valid UTF-8" in str(info.value)


# ---------------------------------------------------------------- config.json, the model's kind, the device

def _config(ck, **changes):
    path = ck / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_config_json_that_is_no_object_is_that_checkpoint_broken(settings, tmp_path):
    """Valid JSON that is not an object (a list): that checkpoint is broken, named with its file;
    the others are archived (it once stopped the whole run with an AttributeError)."""
    settings = _settings(settings, tmp_path, _probes())
    root = tmp_path / "run"
    (root / "checkpoint-20" / "config.json").write_text("[1, 2]")
    report = run(settings, cpu_stages=False, progress=False)
    assert [p.name for p in report.done] == ["checkpoint-10.h5", "checkpoint-30.h5"]
    assert report.failed == [(root / "checkpoint-20", "config.json is not a JSON object (it holds a list)")]


@pytest.mark.parametrize("change, field, words", [
    ({"architectures": ["BertForMaskedLM"], "model_type": "bert"}, "architectures",
     "BertForMaskedLM is not a causal language model"),
    ({"architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}, "is_encoder_decoder",
     "an encoder-decoder model (T5ForConditionalGeneration)"),
    # a ...ForConditionalGeneration that AutoModelForCausalLM does not build itself (Gemma 3's, which
    # it does, is probed: tests/test_extract.py)
    ({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"}, "architectures",
     "LlavaForConditionalGeneration is not a causal language model"),
    ({"n_layer": "two"}, None, "transformers cannot read it: "),
    # transformers took the dtype for a torch attribute: "module 'torch' has no attribute 'auto'"
    ({"dtype": "auto"}, "dtype", "'auto' is no torch dtype"),
    ({"dtype": None, "torch_dtype": "bf16"}, "torch_dtype", "'bf16' is no torch dtype"),   # older configs' key
    # it ran, scoring probes with the left padding mixed in, then failed in greedy decoding
    # ("'CausalLMOutput' object has no attribute 'cache'")
    ({"model_type": "recurrent_gemma"}, "model_type", "do not take the padding mask"),
])
def test_a_config_learnviz_cannot_probe_names_config_json_and_its_field(ckpt_root, change, field, words):
    """An encoder-only or encoder-decoder model, a dtype that is none, or a field transformers
    refuses: the error names config.json (not the tokenizer, which reads it too) and the field,
    before any weight loads."""
    ck = ckpt_root / "checkpoint-10"
    _config(ck, **change)
    with pytest.raises(CheckpointError) as err:
        load(ck, device="cpu")
    assert err.value.path == str(ck / "config.json") and err.value.field == field
    assert words in str(err.value) and len(str(err.value)) < 700


@pytest.mark.parametrize("content, fields, words", [
    ({"max_new_tokens": 0, "eos_token_id": [0, 5]}, "'max_new_tokens'", "must be greater than 0"),
    ({"max_new_tokens": "ten", "num_beams": 0, "early_stopping": "x", "eos_token_id": [0, 5]},
     "'max_new_tokens', 'early_stopping'", "transformers refuses it: "),
    ([1, 2], None, "is not a JSON object (it holds a list)"),
])
def test_a_generation_config_transformers_refuses_loses_nothing_but_its_bad_fields(settings, tmp_path, caplog,
                                                                                  content, fields, words):
    """generation_config.json with a value transformers' checks reject (max_new_tokens 0, a string
    for a number, no JSON object) made every checkpoint of the run fail, "model cannot be loaded:
    `max_new_tokens` must be greater than 0", naming neither the file nor the field, though learnviz
    decodes greedily by itself and uses nothing of that file but eos_token_id. The run archives
    every checkpoint as without the file, the fields refused are named once in a warning, and the
    file's other fields are kept (eos_token_id 5 ends greedy answers: a stop token)."""
    plain = _settings(settings, tmp_path / "plain", _probes(), archive=str(tmp_path / "plain-archive"))
    assert run(plain, cpu_stages=False, progress=False).failed == []
    s = _settings(settings, tmp_path, _probes())
    root = tmp_path / "run"
    for ck in root.glob("checkpoint-*"):
        (ck / "generation_config.json").write_text(json.dumps(content))
    with caplog.at_level("WARNING", logger="learnviz.model"):
        report = run(s, cpu_stages=False, progress=False)
    assert report.failed == [] and len(report.done) == 3, report.failed
    for name in ("checkpoint-10", "checkpoint-20", "checkpoint-30"):
        got = arc.Archive(s.archive_dir() / f"{name}.h5").read("extract", ["answer_logprob", "stop_prob"])
        want = arc.Archive(plain.archive_dir() / f"{name}.h5").read("extract", ["answer_logprob", "stop_prob"])
        assert np.array_equal(got["answer_logprob"], want["answer_logprob"])
        if isinstance(content, dict):   # its eos_token_id kept: token 5 stops a greedy answer too
            assert (got["stop_prob"] > want["stop_prob"]).all()
    said = [r.getMessage() for r in caplog.records
            if r.name == "learnviz.model" and "generation_config" in r.getMessage()]
    assert len(said) == 1, said                                       # once for the run, not per checkpoint
    assert str(root / "checkpoint-10" / "generation_config.json") in said[0] and words in said[0]
    assert (f"field{'s' if ',' in (fields or '') else ''} {fields}" in said[0]) if fields else "field" not in said[0]


def _rename_tensor(ck, old: str, new: str | None, extra: dict | None = None) -> None:
    from safetensors.torch import load_file, save_file
    w = ck / "model.safetensors"
    tensors = load_file(w)
    value = tensors.pop(old)
    if new is not None:
        tensors[new] = value
    tensors.update(extra or {})
    save_file(tensors, w, metadata={"format": "pt"})


def test_weights_that_lack_a_tensor_of_the_model_fail_naming_it_not_random_numbers(settings, tmp_path):
    """A checkpoint whose weights lack a tensor the model class needs (a layer renamed, another
    architecture than config.json says): transformers filled it with random numbers, silently, and
    every analysis described a partly random model. That checkpoint fails, naming the weights and
    the tensor; the others are archived."""
    settings = _settings(settings, tmp_path, _probes())
    root = tmp_path / "run"
    _rename_tensor(root / "checkpoint-20", "transformer.h.1.mlp.c_proj.weight", "transformer.h.1.mlp.c_projX.weight")
    report = run(settings, cpu_stages=False, progress=False)
    assert [p.name for p in report.done] == ["checkpoint-10.h5", "checkpoint-30.h5"]
    ck = root / "checkpoint-20"
    assert report.failed == [(ck, f"{ck / 'model.safetensors'} field 'transformer.h.1.mlp.c_proj.weight': the "
                              "weights lack 1 tensor that transformers' GPT2LMHeadModel needs "
                              "(transformer.h.1.mlp.c_proj.weight), which it would fill with random numbers (a "
                              "checkpoint of another architecture than its config.json says, or with layers "
                              "renamed: save it again with the model class it was trained with)")]
    bad = _stage(settings, "checkpoint-20")
    assert bad.status == "failed" and "c_proj.weight" in bad.reason


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module."])
def test_weights_saved_from_a_wrapped_model_name_the_prefix(ckpt_root, prefix):
    """A state_dict saved from a torch.compile'd or DDP-wrapped model: every name carries a prefix,
    so the model would have been all random numbers; the error says which prefix."""
    from safetensors.torch import load_file, save_file
    ck = ckpt_root / "checkpoint-10"
    w = ck / "model.safetensors"
    save_file({prefix + k: v for k, v in load_file(w).items()}, w, metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        load(ck, device="cpu")
    assert err.value.path == str(w) and err.value.field == "lm_head.weight"     # the first of them, sorted
    assert "that transformers' GPT2LMHeadModel needs" in str(err.value)
    assert f"the weights' names carry the prefix {prefix!r}" in err.value.hint


@pytest.mark.parametrize("fault", ["config of another size", "empty tensors"])
def test_weights_of_another_shape_name_the_tensors_and_their_shapes(ckpt_root, fault):
    """transformers' own message said only "look at the above report", a report learnviz does not
    show: the error names the tensors, their shapes in the file and in the model, and the likely
    cause (a config.json of another size; a ZeRO-3 save whose tensors are empty)."""
    from safetensors.torch import load_file, save_file
    ck = ckpt_root / "checkpoint-10"
    w = ck / "model.safetensors"
    if fault == "empty tensors":
        save_file({k: torch.empty(0, dtype=v.dtype) for k, v in load_file(w).items()}, w, metadata={"format": "pt"})
        words, hint, shape = "every tensor of the weights is empty", "zero_to_fp32.py", "[0] in the file, [96]"
    else:
        _config(ck, n_embd=64)
        words = "28 tensors of the weights have another shape than the model that config.json builds (GPT2LMHeadModel)"
        hint, shape = "save the config the weights were trained with", "[96] in the file, [192]"
    with pytest.raises(CheckpointError) as err:
        load(ck, device="cpu")
    assert err.value.path == str(w) and err.value.field == "transformer.h.0.attn.c_attn.bias"
    assert words in str(err.value) and hint in err.value.hint
    assert f"transformer.h.0.attn.c_attn.bias: {shape} in the model" in str(err.value)
    assert "above report" not in str(err.value)


def test_unused_tensors_and_custom_code_not_run_are_said_and_the_model_loads(ckpt_root, caplog):
    """Tensors the class does not use (old GPT-2 checkpoints carry attn.masked_bias buffers) load
    the model and are logged, named; so is an auto_map naming custom code for a model type that
    transformers builds itself, which learnviz does not run."""
    ck = ckpt_root / "checkpoint-10"
    _rename_tensor(ck, "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_attn.bias",
                   {"transformer.h.0.attn.masked_bias": torch.tensor(-1e4)})
    _config(ck, auto_map={"AutoModelForCausalLM": "modeling_mine.MyGPT2LMHeadModel"})
    with caplog.at_level("WARNING", logger="learnviz.model"):
        loaded = load(ck, device="cpu")
    assert type(loaded.model).__name__ == "GPT2LMHeadModel"
    said = [r.getMessage() for r in caplog.records if r.name == "learnviz.model"]
    assert any("1 tensor that transformers' GPT2LMHeadModel does not use (transformer.h.0.attn.masked_bias)"
               in m and str(ck / "model.safetensors") in m for m in said), said
    assert any("auto_map names custom code (modeling_mine.MyGPT2LMHeadModel)" in m and "--trust-remote-code" in m
               for m in said), said


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_custom_code_is_never_run_and_the_error_names_auto_map_and_the_flag(ckpt_root, tmp_path, file):
    """A model or tokenizer that only its own code can build (auto_map, trust_remote_code): the code
    is not run, and the error names the file, auto_map, the .py files and --trust-remote-code
    (transformers' message told to pass `trust_remote_code=True` and pointed at https://hf.co//<path>)."""
    ck = ckpt_root / "checkpoint-10"
    ran = tmp_path / "ran"
    for module in ("modeling_x", "configuration_x", "tokenization_x"):
        (ck / f"{module}.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    path = ck / file
    raw = json.loads(path.read_text())
    if file == "config.json":
        raw.update(model_type="xmodel", auto_map={"AutoConfig": "configuration_x.XConfig",
                                                  "AutoModelForCausalLM": "modeling_x.XForCausalLM"})
        names = "configuration_x.py, modeling_x.py"
    else:   # beside a GPT-2 config transformers takes GPT-2's own tokenizer class; beside Llama's, none
        from transformers import LlamaConfig
        LlamaConfig(vocab_size=500, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2).save_pretrained(ck)
        raw.update(tokenizer_class="XTokenizer", auto_map={"AutoTokenizer": ["tokenization_x.XTokenizer", None]})
        names = "tokenization_x.py"
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError) as err:
        load(ck, device="cpu")
    assert err.value.path == str(path) and err.value.field == "auto_map"
    assert f"names Python code in the checkpoint folder ({names})" in str(err.value)
    assert "--trust-remote-code" in str(err.value) and "hf.co" not in str(err.value)
    assert not ran.exists()


def test_a_sentencepiece_tokenizer_without_its_package_names_tokenizer_model_and_sentencepiece(tmp_path):
    """A tokenizer that is only tokenizer.model (Llama, Mistral, Gemma checkpoints of older tools)
    needs the sentencepiece package; without it transformers took the file for a tiktoken one and
    asked for `pip install tiktoken`."""
    import importlib.util

    from transformers.utils import sentencepiece_model_pb2_new as spm_pb

    from learnviz.model import load_tokenizer
    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed: the tokenizer loads")
    proto = spm_pb.ModelProto()     # a valid SentencePiece unigram model, written without the package
    for piece, kind in [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("\u2581All", 1), ("\u2581cats", 1), ("s", 1)]:
        added = proto.pieces.add()
        added.piece, added.score, added.type = piece, -1.0, kind
    proto.trainer_spec.model_type = 1
    (tmp_path / "tokenizer.model").write_bytes(proto.SerializeToString())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    with pytest.raises(CheckpointError) as err:
        load_tokenizer(tmp_path)
    assert err.value.path == str(tmp_path / "tokenizer.model")
    assert "sentencepiece package it needs is not installed" in str(err.value)
    assert "pip install sentencepiece" in str(err.value) and "tiktoken" not in str(err.value)


def test_a_tokenizer_larger_than_the_model_s_vocabulary_names_vocab_size(tmp_path, tokenizer):
    """Token ids past the embedding would fail deep in the forward pass ("index out of range in
    self"): the loader names config.json's vocab_size and both sizes."""
    from transformers import GPT2Config, GPT2LMHeadModel
    ck = tmp_path / "checkpoint-1"
    small = len(tokenizer) - 100
    GPT2LMHeadModel(GPT2Config(vocab_size=small, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(ck)
    tokenizer.save_pretrained(ck)
    with pytest.raises(CheckpointError) as err:
        load(ck, device="cpu")
    assert err.value.field == "vocab_size" and err.value.path == str(ck / "config.json")
    assert f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {small}" in str(err.value)


@pytest.mark.parametrize("device, words", [("xla", "learnviz runs on 'cpu', 'cuda' or 'mps'"),
                                           ("tpu", "is no device"),
                                           ("cuda", "CUDA is not available here")])
def test_a_device_this_machine_lacks_stops_the_run_and_records_nothing(settings, tmp_path, device, words):
    """A device setting that cannot work is the setting's fault, not the checkpoints': the run stops
    with the field named, and no checkpoint is recorded as failed (a later run with a good device
    then archives them all, without --retry-failed)."""
    from learnviz.errors import ConfigError
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    settings = _settings(settings, tmp_path, _probes())
    with pytest.raises(ConfigError) as err:
        run(dataclasses.replace(settings, device=device), cpu_stages=False, progress=False)
    assert err.value.field == "device" and words in str(err.value)
    assert not list(settings.archive_dir().glob("*.h5"))
    report = run(settings, cpu_stages=False, progress=False)
    assert len(report.done) == 3 and not report.failed


def test_two_folders_of_one_step_archive_the_first_and_name_both(settings, tmp_path, tokenizer):
    """checkpoint-20 and step_20 in one run: a run's checkpoints are told apart by step (the
    series, the history, the dashboard), so the first by name is archived and the other refused,
    each run, naming both (both used to be archived, and the series failed on every run, blamed on
    the newest step). An archive of such a second folder from before is left out of the series."""
    from learnviz.readout import series
    settings = _settings(settings, tmp_path, _probes())
    root = tmp_path / "run"
    make_checkpoint(root / "step_20", tokenizer, step=20, seed=5)
    why = ("step 20 is also checkpoint-20's (archived instead): a run's checkpoints are told apart by step; "
           "move or rename one of the two folders")
    for _ in range(2):
        report = run(settings, cpu_stages=False, progress=False)
        assert report.failed == [(root / "step_20", why)]
    assert sorted(p.name for p in settings.archive_dir().glob("*.h5")) == [
        "checkpoint-10.h5", "checkpoint-20.h5", "checkpoint-30.h5"]
    shutil.copy(settings.archive_dir() / "checkpoint-20.h5", settings.archive_dir() / "step_20.h5")
    assert [(a.step, a.path.name) for a in series(settings.archive_dir())] == [
        (10, "checkpoint-10.h5"), (20, "checkpoint-20.h5"), (30, "checkpoint-30.h5")]


@pytest.mark.parametrize("where", ["root", "final"])
def test_a_model_saved_beside_the_checkpoints_leaves_its_step_to_the_checkpoint(settings, tmp_path, where, capsys):
    """trainer.save_model() and save_state() at the end of a training put the last model and a
    trainer_state.json into the output folder itself (or final/): its step, read from that file,
    is the last checkpoint's. checkpoint-30 is archived and keeps step 30; the model folder, whose
    name gives no step, is not archived and not a failure either: it is reported as a model saved
    beside the checkpoints (the output folder sorted first by name and took the step: checkpoint-30
    was reported failed and the run's own folder archived as step 30; then, the model folder was
    a failure at every run, and `learnviz run` exited 1 at every scan after the training)."""
    settings = _settings(settings, tmp_path, _probes())
    root = tmp_path / "run"
    model = root if where == "root" else root / "final"
    model.mkdir(exist_ok=True)
    for f in (root / "checkpoint-30").iterdir():
        shutil.copy(f, model / f.name)
    why = ("saved beside the checkpoints with step 30 in its trainer_state.json, checkpoint-30's: not archived "
           "(a folder named checkpoint-N is a step of its own)")
    for _ in range(2):
        report = run(settings, cpu_stages=False, progress=False)
        assert report.failed == [] and report.ok
        assert report.beside == [(model, why)]
    from learnviz.cli import print_report
    print_report(report, settings)
    out = capsys.readouterr().out
    assert f"  not a checkpoint: {model}: {why}" in out and "0 failed now" in out
    assert sorted(p.name for p in settings.archive_dir().glob("*.h5")) == [
        "checkpoint-10.h5", "checkpoint-20.h5", "checkpoint-30.h5"]


@pytest.mark.parametrize("where", ["root", "final"])
def test_a_model_saved_without_a_step_is_no_checkpoint_and_no_failure(settings, tmp_path, where, capsys):
    """trainer.save_model() (or save_pretrained) without save_state(): a model folder whose name and
    files give no step. It is said to be no checkpoint at every run, with why, and neither archived
    nor counted as a failure (it was archived as a failed step -1 and counted 'failed in all'
    forever)."""
    settings = _settings(settings, tmp_path, _probes())
    root = tmp_path / "run"
    model = root if where == "root" else root / "final"
    model.mkdir(exist_ok=True)
    for f in (root / "checkpoint-30").iterdir():
        if f.name != "trainer_state.json":
            shutil.copy(f, model / f.name)
    why = ("no step: the folder name has none and there is no trainer_state.json: not archived (a folder named "
           f"after its step, {STEP_NAMES}, or a trainer_state.json with its global_step, makes it a step of the run)")
    for _ in range(2):
        report = run(settings, cpu_stages=False, progress=False)
        assert report.failed == [] and report.ok and report.failed_total == 0
        assert report.beside == [(model, why)]
    assert sorted(p.name for p in settings.archive_dir().glob("*.h5")) == [
        "checkpoint-10.h5", "checkpoint-20.h5", "checkpoint-30.h5"]
    from learnviz.cli import print_report
    print_report(report, settings)
    assert f"  not a checkpoint: {model}: {why}" in capsys.readouterr().out
