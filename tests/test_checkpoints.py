import json
import os
import time

import pytest
from helpers import make_checkpoint

from learnviz.checkpoints import discover, fingerprint, inspect, training_metrics


def _age(path, seconds=60):
    """Make every file look written `seconds` ago (settled)."""
    t = time.time() - seconds
    for p in path.rglob("*"):
        os.utime(p, (t, t))


def test_naming_patterns_and_steps(tmp_path, tokenizer):
    root = tmp_path / "run"
    make_checkpoint(root / "checkpoint-20", tokenizer, step=20)
    make_checkpoint(root / "step_5", tokenizer, step=5)
    make_checkpoint(root / "global_step7", tokenizer, step=7)
    make_checkpoint(root / "final", tokenizer, step=99)          # step from trainer_state.json
    make_checkpoint(root / "sweep" / "checkpoint-3", tokenizer, step=3)  # one level down
    make_checkpoint(root / "tmp-checkpoint-30", tokenizer, step=30)      # an in-flight HF write
    make_checkpoint(root / ".tmp-checkpoint-40", tokenizer, step=40)
    found = discover(root, settle_seconds=0)
    assert [(c.path.name, c.step) for c in found] == [
        ("checkpoint-3", 3), ("step_5", 5), ("global_step7", 7), ("checkpoint-20", 20), ("final", 99)]
    assert all(c.complete for c in found)


def test_incomplete_checkpoints_are_skipped_until_settled(tmp_path, tokenizer):
    root = tmp_path / "run"
    ck = make_checkpoint(root / "checkpoint-1", tokenizer, step=1)
    (root / "checkpoint-2").mkdir()
    (root / "checkpoint-2" / "config.json").write_text("{}")           # weights not written yet
    (c1, c2) = discover(root, settle_seconds=30)
    assert c1.state == "incomplete" and "changed" in c1.reason        # files still fresh
    assert c2.state == "incomplete" and "model.safetensors is missing" in c2.reason
    _age(ck)
    assert inspect(ck, settle_seconds=30).complete


def test_a_deepspeed_checkpoint_with_only_zero_shards_says_how_to_get_weights(tmp_path, tokenizer):
    """Under ZeRO-3 without stage3_gather_16bit_weights_on_model_save the Trainer saves no model
    file, only the engine's shards in global_stepN/ (and zero_to_fp32.py): the checkpoint was
    "incomplete: model.safetensors is missing" on every run, as if it were still being written.
    Beside a checkpoint with weights, the shard folder changes nothing."""
    ck = make_checkpoint(tmp_path / "checkpoint-8", tokenizer, step=8)
    (ck / "global_step8").mkdir()
    (ck / "global_step8" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"shard")
    (ck / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    (ck / "latest").write_text("global_step8")
    assert inspect(ck, settle_seconds=0).state == "complete"
    weights = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").unlink()
    got = inspect(ck, settle_seconds=0)
    assert (got.state, got.reason) == ("incomplete", (
        "model.safetensors is missing (and there is no pytorch_model.bin): the folder holds only DeepSpeed's "
        "ZeRO shards (global_step8/), which learnviz does not read; run the zero_to_fp32.py saved beside them "
        "to write the weights into the folder, or train with stage3_gather_16bit_weights_on_model_save: true"))
    (ck / "model.safetensors").write_bytes(weights)            # what zero_to_fp32.py writes
    assert inspect(ck, settle_seconds=0).state == "complete"


@pytest.mark.parametrize("other, names", [
    ("pytorch_model_fsdp_0", ("pytorch_model_fsdp_0/", "PyTorch FSDP's sharded state dict",
                              "accelerate merge-weights pytorch_model_fsdp_0 OUT", "FULL_STATE_DICT")),
    ("tf_model.h5", ("tf_model.h5", "TensorFlow weights", "from_tf=True")),
    ("flax_model.msgpack", ("flax_model.msgpack", "Flax weights", "from_flax=True")),
])
def test_a_checkpoint_with_weights_learnviz_does_not_read_names_them_and_the_way_out(tmp_path, tokenizer,
                                                                                    other, names):
    """An FSDP SHARDED_STATE_DICT save (pytorch_model_fsdp_0/ of .distcp files) or a TensorFlow/Flax
    export was only "model.safetensors is missing", skipped for now on every run, as if still written."""
    ck = make_checkpoint(tmp_path / "checkpoint-8", tokenizer, step=8)
    (ck / "model.safetensors").unlink()
    if other.startswith("pytorch_model_fsdp"):
        (ck / other).mkdir()
        (ck / other / "__0_0.distcp").write_bytes(b"shard")
    else:
        (ck / other).write_bytes(b"weights")
    got = inspect(ck, settle_seconds=0)
    assert got.state == "incomplete" and got.reason.startswith("model.safetensors is missing")
    assert "which learnviz does not read" in got.reason
    for name in names:
        assert name in got.reason

def test_truncated_weights_are_broken_once_settled(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    w = ck / "model.safetensors"
    size = w.stat().st_size
    with open(w, "r+b") as fh:
        fh.truncate(size - 100)
    assert inspect(ck, settle_seconds=30).state == "incomplete"      # might still be being written
    _age(ck)
    c = inspect(ck, settle_seconds=30)
    assert c.state == "broken" and "truncated" in c.reason and str(size) in c.reason
    with open(w, "r+b") as fh:
        fh.truncate(4)
    _age(ck)
    assert "unreadable safetensors header" in inspect(ck, settle_seconds=30).reason


def test_weights_longer_than_their_header_are_broken_naming_the_file_until_they_change(tmp_path, tokenizer):
    """A file whose space was allocated before it was written (zeros at its end), or written past
    its end: safetensors refuses it ("incomplete metadata, file not fully covered"), and the
    checkpoint failed only once its model was loaded, with a reason naming no file."""
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    w = ck / "model.safetensors"
    whole = w.read_bytes()
    w.write_bytes(whole + bytes(4096))
    c = inspect(ck, settle_seconds=0)
    assert (c.state, c.reason) == ("broken", (
        f"model.safetensors is longer than its header says: {len(whole)} bytes, the file has {len(whole) + 4096} "
        f"(space allocated before it was written, or bytes written past its end)"))
    w.write_bytes(whole)
    assert inspect(ck, settle_seconds=0).complete


def test_pickle_only_and_bad_config(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1)
    (ck / "model.safetensors").rename(ck / "pytorch_model.bin")      # safetensors bytes under a torch name
    c = inspect(ck, settle_seconds=0)
    assert c.state == "broken" and "not a torch zip file" in c.reason and "weights_only=True" in c.reason
    ck2 = make_checkpoint(tmp_path / "checkpoint-2", tokenizer, step=2)
    (ck2 / "config.json").write_text("{not json")
    c = inspect(ck2, settle_seconds=0)
    assert c.state == "broken" and "config.json" in c.reason


def test_fingerprint_follows_the_weights(tmp_path, tokenizer):
    a = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1, seed=0)
    fa = fingerprint(inspect(a, settle_seconds=0))
    assert fingerprint(inspect(a, settle_seconds=0)) == fa
    make_checkpoint(a, tokenizer, step=1, seed=1)   # same shapes, new values: headers are identical
    assert fingerprint(inspect(a, settle_seconds=0)) != fa


def test_training_metrics_from_log_history(tmp_path, tokenizer):
    ck = make_checkpoint(tmp_path / "checkpoint-10", tokenizer, step=10, loss=1.5)
    m = training_metrics(ck, 10)
    assert m["train_loss"] == 1.5 and m["eval_loss"] == 1.6 and m["learning_rate"] == 5e-4
    state = json.loads((ck / "trainer_state.json").read_text())
    state["log_history"].append({"step": 11, "loss": 0.1})            # after this checkpoint: ignored
    (ck / "trainer_state.json").write_text(json.dumps(state))
    assert training_metrics(ck, 10)["train_loss"] == 1.5
    (ck / "trainer_state.json").write_text("{torn")
    assert training_metrics(ck, 10) == {}


def test_a_long_lived_process_reads_each_checkpoint_once_until_a_file_changes(tmp_path, tokenizer, monkeypatch):
    """`learnviz run --watch` and the beat fingerprint the same checkpoints on every pass: the
    fingerprint is kept with the files' inodes, sizes and times, and any write since (in place,
    its modification time even set back, or a tokenizer file that appears) reads them again."""
    from learnviz import checkpoints as cks

    ck = make_checkpoint(tmp_path / "checkpoint-1", tokenizer, step=1, seed=0)
    cks.forget_fingerprints()
    reads = []
    real = cks._hash_weight_file
    monkeypatch.setattr(cks, "_hash_weight_file", lambda h, w: reads.append(w.name) or real(h, w))
    first = fingerprint(inspect(ck, settle_seconds=0))
    assert fingerprint(inspect(ck, settle_seconds=0)) == first and reads == ["model.safetensors"]
    w = ck / "model.safetensors"
    st = os.stat(w)
    other = make_checkpoint(tmp_path / "other" / "checkpoint-1", tokenizer, step=1, seed=1)
    data = (other / "model.safetensors").read_bytes()      # same shapes, new values, same size ...
    assert len(data) == st.st_size
    with open(w, "r+b") as fh:                              # ... written in place
        fh.write(data)
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))        # ... and its modification time set back
    second = fingerprint(inspect(ck, settle_seconds=0))
    assert len(reads) == 2 and second != first
    (ck / "tokenizer.json").write_text((ck / "tokenizer.json").read_text() + " ")
    assert fingerprint(inspect(ck, settle_seconds=0)) not in (first, second) and len(reads) == 3


@pytest.mark.parametrize("state, why", [
    (None, "there is no trainer_state.json"),
    ("{torn", "trainer_state.json cannot be read as JSON (Expecting property name"),
    ('{"log_history": []}', "trainer_state.json has no global_step"),
    ('{"global_step": "ten"}', "trainer_state.json's global_step is 'ten', not a whole number"),
])
def test_a_folder_without_a_step_says_why_trainer_state_gave_none(tmp_path, tokenizer, state, why):
    ck = make_checkpoint(tmp_path / "final", tokenizer, step=5)
    if state is None:
        (ck / "trainer_state.json").unlink()
    else:
        (ck / "trainer_state.json").write_text(state)
    got = inspect(ck, settle_seconds=0)
    assert got.state == "broken" and got.reason.startswith(f"no step: the folder name has none and {why}")
