"""weight_drift on real tiny GPT-2 checkpoints (2 blocks, n_embd 16) saved with save_pretrained."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import learnviz.analysis.weight_drift as wd
from learnviz.analysis.weight_drift import layer_of, safetensors_files, weight_drift

BLOCK1 = "transformer.h.1."


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50)).eval()


def _save(model, sd: dict, folder: Path) -> Path:
    model.load_state_dict(sd)
    model.save_pretrained(folder, safe_serialization=True)
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """base, an identical copy, block 1 perturbed by a known delta, block 0 scaled by 20 and by 0.01."""
    root = tmp_path_factory.mktemp("wd")
    model = _gpt2()
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    out = {"model": model, "base_sd": base_sd, "root": root}
    out["base"] = _save(model, base_sd, root / "base")
    (root / "same").mkdir()
    out["same"] = Path(shutil.copy(out["base"], root / "same" / "model.safetensors"))

    gen = torch.Generator().manual_seed(1)
    delta = 1e-3 * torch.randn(base_sd[BLOCK1 + "attn.c_attn.weight"].shape, generator=gen)
    sd = {k: v.clone() for k, v in base_sd.items()}
    sd[BLOCK1 + "attn.c_attn.weight"] += delta
    out["delta"] = delta
    out["perturbed"] = _save(model, sd, root / "perturbed")

    for tag, factor in (("x20", 20.0), ("x001", 0.01)):
        sd = {k: (v * factor if k.startswith("transformer.h.0.") else v.clone()) for k, v in base_sd.items()}
        out[tag] = _save(model, sd, root / tag)
    model.load_state_dict(base_sd)
    return out


def test_layer_of_names_across_architectures():
    assert layer_of("transformer.h.3.attn.c_attn.weight") == "block.3"          # GPT-2
    assert layer_of("transformer.wte.weight") == "embeddings"
    assert layer_of("transformer.wpe.weight") == "embeddings"
    assert layer_of("transformer.ln_f.weight") == "head"
    assert layer_of("lm_head.weight") == "head"
    assert layer_of("model.layers.3.mlp.up_proj.weight") == "block.3"           # Llama
    assert layer_of("model.layers.12.self_attn.q_proj.weight") == "block.12"
    assert layer_of("model.embed_tokens.weight") == "embeddings"
    assert layer_of("model.norm.weight") == "head"
    assert layer_of("model.decoder.layers.3.fc1.weight") == "block.3"           # OPT
    assert layer_of("model.decoder.embed_positions.weight") == "embeddings"
    assert layer_of("model.decoder.embed_tokens.weight") == "embeddings"
    assert layer_of("model.decoder.final_layer_norm.bias") == "head"
    # a block's experts and router count in the block, whatever the expert's index
    assert layer_of("model.layers.5.block_sparse_moe.experts.7.w1.weight") == "block.5"    # Mixtral
    assert layer_of("model.layers.5.block_sparse_moe.gate.weight") == "block.5"
    assert layer_of("model.layers.2.mlp.shared_expert.up_proj.weight") == "block.2"       # Qwen2-MoE
    assert layer_of("backbone.embeddings.weight") == "embeddings"                         # Mamba
    assert layer_of("backbone.layers.4.mixer.A_log") == "block.4"
    assert layer_of("backbone.norm_f.weight") == "head"
    # a language model beside a vision tower (Gemma 3): the tower is a layer of its own, not blocks
    # and embeddings of the language model (text never runs through it)
    assert layer_of("model.language_model.layers.1.mlp.up_proj.weight") == "block.1"
    assert layer_of("model.language_model.embed_tokens.weight") == "embeddings"
    assert layer_of("model.language_model.norm.weight") == "head"
    assert layer_of("model.vision_tower.encoder.layers.0.self_attn.q_proj.weight") == "vision_tower"
    assert layer_of("model.vision_tower.embeddings.patch_embedding.weight") == "vision_tower"
    assert layer_of("model.multi_modal_projector.mm_input_projection_weight") == "multi_modal_projector"
    assert layer_of("visual.blocks.3.attn.qkv.weight") == "visual"                        # Qwen2-VL


def test_layers_order_and_parameter_counts(ckpts):
    r = weight_drift([ckpts["base"]])
    assert r.layers == ["embeddings", "block.0", "block.1", "head"]
    # by hand: wte 50*16 + wpe 1024*16; a block: c_attn 16*48+48, attn.c_proj 16*16+16,
    # ln_1 + ln_2 4*16, c_fc 16*64+64, mlp.c_proj 64*16+16; head: ln_f 2*16 (lm_head is tied)
    assert r.parameters.tolist() == [17184, 3280, 3280, 32]
    assert r.parameters.sum() == ckpts["model"].num_parameters()
    sd = ckpts["base_sd"]
    want = np.sqrt(sum(float((v.double() ** 2).sum()) for k, v in sd.items() if k.startswith(BLOCK1)))
    assert r.norm[2] == pytest.approx(want, rel=1e-12)
    assert np.isnan(r.change_prev).all() and np.isnan(r.change_first).all() and np.isnan(r.norm_ratio_first).all()
    assert r.flags == {"exploding": [], "vanishing": [], "dead": []}
    assert not r.has_previous and not r.has_first


def test_identical_files_change_zero_and_dead(ckpts):
    r = weight_drift([ckpts["same"]], [ckpts["base"]], [ckpts["base"]])
    assert np.all(r.change_prev == 0) and np.all(r.change_first == 0)
    assert np.all(r.norm_ratio_first == 1)
    assert r.flags["dead"] == r.layers
    assert r.flags["exploding"] == [] and r.flags["vanishing"] == []
    assert r.mismatched == [] and r.tied == []


def test_known_perturbation_moves_exactly_that_block(ckpts):
    r = weight_drift([ckpts["perturbed"]], [ckpts["base"]], [ckpts["base"]])
    sd = ckpts["base_sd"]
    prev_norm = np.sqrt(sum(float((v.double() ** 2).sum()) for k, v in sd.items() if k.startswith(BLOCK1)))
    # the saved file holds float32(W + delta), so the delta that reached it is taken from float32 too
    moved = (sd[BLOCK1 + "attn.c_attn.weight"] + ckpts["delta"]).double() - sd[BLOCK1 + "attn.c_attn.weight"].double()
    want = float(moved.norm()) / prev_norm
    assert want > 1e-4  # the perturbation is real
    i = r.layers.index("block.1")
    assert r.change_prev[i] == pytest.approx(want, rel=1e-6)
    assert r.change_first[i] == pytest.approx(want, rel=1e-6)
    others = [j for j in range(len(r.layers)) if j != i]
    assert np.all(r.change_prev[others] == 0)
    assert r.flags["dead"] == ["embeddings", "block.0", "head"]


def test_scaled_block_explodes_and_vanishes(ckpts):
    r = weight_drift([ckpts["x20"]], [ckpts["base"]], [ckpts["base"]])
    assert r.flags["exploding"] == ["block.0"]
    assert r.norm_ratio_first[1] == pytest.approx(20.0, rel=1e-6)
    assert r.change_prev[1] == pytest.approx(19.0, rel=1e-6)   # ||20W - W|| / ||W||
    r = weight_drift([ckpts["x001"]], None, [ckpts["base"]])
    assert r.flags["vanishing"] == ["block.0"] and r.flags["exploding"] == []
    assert r.norm_ratio_first[1] == pytest.approx(0.01, rel=1e-6)
    assert r.flags["dead"] == []                               # no previous: nothing to call dead


def test_nan_weights_flag_exploding(ckpts, tmp_path):
    sd = load_file(ckpts["base"])
    sd["transformer.h.1.ln_1.weight"][0] = float("nan")
    save_file(sd, tmp_path / "nan.safetensors")
    r = weight_drift([tmp_path / "nan.safetensors"], [ckpts["base"]], [ckpts["base"]])
    assert r.flags["exploding"] == ["block.1"]
    assert np.isnan(r.norm[2]) and np.isfinite(r.norm[[0, 1, 3]]).all()


def test_shards_mismatch_tied_and_buffers(ckpts, tmp_path):
    sd = load_file(ckpts["base"])
    names = sorted(sd)
    # current: two shards, with a stored copy of the tied lm_head and an integer mask buffer
    a = {k: sd[k] for k in names[: len(names) // 2]}
    b = {k: sd[k] for k in names[len(names) // 2:]}
    b["lm_head.weight"] = sd["transformer.wte.weight"].clone()
    b["transformer.h.0.attn.bias"] = torch.tril(torch.ones(4, 4, dtype=torch.uint8))
    save_file(a, tmp_path / "model-00001-of-00002.safetensors")
    save_file(b, tmp_path / "model-00002-of-00002.safetensors")
    # previous lacks one tensor of block 0
    gone = "transformer.h.0.mlp.c_fc.bias"
    save_file({k: v for k, v in sd.items() if k != gone}, tmp_path / "prev.safetensors")
    shards = safetensors_files(tmp_path)[:2]
    assert [p.name for p in shards] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]

    r = weight_drift(shards, [tmp_path / "prev.safetensors"])
    assert r.tied == ["lm_head.weight"] and r.skipped == ["transformer.h.0.attn.bias"]
    assert r.mismatched == [gone]
    assert r.parameters.tolist() == [17184, 3280, 3280, 32]   # counted once, mask not a weight
    assert np.all(r.change_prev == 0)                         # the missing tensor is left out of the ratio


def test_memory_bound_three_tensors(ckpts, monkeypatch):
    alive = {"now": 0, "max": 0, "loads": 0}

    def _gone():
        alive["now"] -= 1

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, name):
            t = self.inner.get_tensor(name)
            alive["now"] += 1
            alive["loads"] += 1
            alive["max"] = max(alive["max"], alive["now"])
            weakref.finalize(t, _gone)
            return t

    real = wd.safe_open
    monkeypatch.setattr(wd, "safe_open", lambda *a, **k: Counting(real(*a, **k)))
    r = weight_drift([ckpts["perturbed"]], [ckpts["base"]], [ckpts["x20"]])
    n = len(load_file(ckpts["base"]))
    assert alive["loads"] == 3 * n            # every tensor of all three files was read once
    assert alive["max"] <= 3
    assert alive["now"] == 0                  # nothing kept after the call
    assert len(r.layers) == 4


def test_bad_inputs(ckpts, tmp_path):
    with pytest.raises(ValueError, match="no files"):
        weight_drift([])
    with pytest.raises(ValueError, match="does not exist"):
        weight_drift([tmp_path / "missing.safetensors"])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        weight_drift([ckpts["base"]], [tmp_path / "junk.safetensors"])
    with pytest.raises(ValueError, match="two current files"):
        weight_drift([ckpts["base"], ckpts["same"]])
    with pytest.raises(ValueError, match="thresholds"):
        weight_drift([ckpts["base"]], exploding=0)
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        safetensors_files(tmp_path / "nowhere")


def test_demo_checkpoints_match_whole_model_formula(demo):
    files = [safetensors_files(Path(demo.checkpoints) / f"checkpoint-{s}") for s in (500, 418, 10)]
    r = weight_drift(*files)
    cur, prev, first = (load_file(f[0]) for f in files)
    for i, layer in enumerate(r.layers):
        keys = [k for k in cur if layer_of(k) == layer]
        d2 = sum(float(((cur[k].double() - prev[k].double()) ** 2).sum()) for k in keys)
        p2 = sum(float((prev[k].double() ** 2).sum()) for k in keys)
        f2 = sum(float((first[k].double() ** 2).sum()) for k in keys)
        w2 = sum(float((cur[k].double() ** 2).sum()) for k in keys)
        assert r.change_prev[i] == pytest.approx(np.sqrt(d2 / p2), rel=1e-9)
        assert r.norm_ratio_first[i] == pytest.approx(np.sqrt(w2 / f2), rel=1e-9)
    assert r.layers == ["embeddings", "block.0", "block.1", "block.2", "block.3", "head"]
    assert r.flags["dead"] == []   # a trained model moves between checkpoints


def test_chunked_sums_equal_whole_tensor_sums(ckpts, monkeypatch):
    whole = weight_drift([ckpts["perturbed"]], [ckpts["base"]], [ckpts["x20"]])
    monkeypatch.setattr(wd, "_CHUNK", 7)   # many partial chunks, the last one short
    chunked = weight_drift([ckpts["perturbed"]], [ckpts["base"]], [ckpts["x20"]])
    for f in ("norm", "change_prev", "change_first", "norm_ratio_first"):
        np.testing.assert_allclose(getattr(chunked, f), getattr(whole, f), rtol=1e-12)


def _save_bin(sd: dict, folder: Path, shards: int = 1) -> list[Path]:
    """`sd` as older transformers' save_pretrained(safe_serialization=False) wrote it (transformers 5
    writes no .bin): torch.save of the state dict, as pytorch_model.bin or as `shards` shards
    pytorch_model-0000i-of-0000n.bin with pytorch_model.bin.index.json. Found like the pipeline does."""
    import json

    from learnviz.checkpoints import weight_files
    folder.mkdir(parents=True)
    if shards == 1:
        torch.save(sd, folder / "pytorch_model.bin")
    else:
        names = list(sd)
        weight_map = {}
        for i in range(shards):
            shard = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
            part = names[i::shards]
            torch.save({k: sd[k] for k in part}, folder / shard)
            weight_map.update(dict.fromkeys(part, shard))
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_files(folder)


def _assert_same_drift(a, b):
    assert a.layers == b.layers and a.parameters.tolist() == b.parameters.tolist()
    assert a.flags == b.flags and a.skipped == b.skipped and a.mismatched == b.mismatched
    for f in ("norm", "change_prev", "change_first", "norm_ratio_first"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=0)


def test_pytorch_bin_checkpoints_match_safetensors(ckpts, monkeypatch):
    """pytorch_model.bin checkpoints (single, and sharded with an index) give the drift that the
    same weights give as safetensors; torch.load runs weights-only and memory-mapped."""
    model, root = ckpts["model"], ckpts["root"]
    base = _save_bin(load_file(ckpts["base"]), root / "bin-base")
    perturbed = _save_bin(load_file(ckpts["perturbed"]), root / "bin-perturbed")
    x20 = _save_bin(load_file(ckpts["x20"]), root / "bin-x20", shards=3)
    assert [p.name for p in base] == ["pytorch_model.bin"]
    assert [p.name for p in x20] == [f"pytorch_model-0000{i}-of-00003.bin" for i in (1, 2, 3)]

    calls = []
    real_load = torch.load

    def spy(*a, **k):
        calls.append(k)
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    from_bin = weight_drift(perturbed, base, x20)
    monkeypatch.setattr(torch, "load", real_load)
    from_st = weight_drift([ckpts["perturbed"]], [ckpts["base"]], [ckpts["x20"]])
    _assert_same_drift(from_bin, from_st)
    assert from_bin.change_prev[from_bin.layers.index("block.1")] > 1e-4     # really compared
    assert from_bin.flags["vanishing"] == ["block.0"]                       # 1/20 of the first's norm
    assert len(calls) == 5 and all(k.get("weights_only") is True and k.get("mmap") is True for k in calls)

    # formats mixed within one call
    _assert_same_drift(weight_drift(perturbed, [ckpts["base"]], x20), from_st)

    # the whole state dict, with lm_head.weight: the tied copy that old .bin files stored too
    model.load_state_dict(ckpts["base_sd"])
    full = model.state_dict()
    assert full["lm_head.weight"].data_ptr() == full["transformer.wte.weight"].data_ptr()
    alone = weight_drift(_save_bin(full, root / "bin-tied"))
    _assert_same_drift(alone, weight_drift([ckpts["base"]]))
    assert alone.tied == ["lm_head.weight"]                                 # counted once


def test_legacy_pickle_bin_read_without_mmap(ckpts, tmp_path):
    sd = load_file(ckpts["perturbed"])
    torch.save(sd, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    _assert_same_drift(weight_drift([tmp_path / "pytorch_model.bin"], [ckpts["base"]], [ckpts["base"]]),
                       weight_drift([ckpts["perturbed"]], [ckpts["base"]], [ckpts["base"]]))


def test_unreadable_pytorch_bin_names_the_file(ckpts, tmp_path):
    good = tmp_path / "good" / "pytorch_model.bin"
    good.parent.mkdir()
    torch.save(load_file(ckpts["base"]), good)
    cut = tmp_path / "cut" / "pytorch_model.bin"
    cut.parent.mkdir()
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{cut}.* not a readable PyTorch weights file") as info:
        weight_drift([good], [cut])
    assert "safetensors" not in str(info.value)
    (tmp_path / "junk.bin").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="junk.bin is not a readable PyTorch weights file"):
        weight_drift([tmp_path / "junk.bin"])
    torch.save([torch.zeros(2)], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="list.bin is not a state dict"):
        weight_drift([tmp_path / "list.bin"])


def test_layer_added_since_has_nan_change_and_is_not_dead(tmp_path):
    # block.2 is new in the current checkpoint: there is nothing to compare it with, so its
    # changes are undefined (it was 0 over 0 = "nothing moved", and flagged dead); block.1 is
    # zero in both and present in both: 0 over 0 is 0, dead.
    old = {"transformer.h.0.w": torch.ones(2, 2), "transformer.h.1.w": torch.zeros(3)}
    new = {"transformer.h.0.w": torch.full((2, 2), 2.0), "transformer.h.1.w": torch.zeros(3),
           "transformer.h.2.w": torch.ones(4)}
    save_file(old, tmp_path / "old.safetensors")
    save_file(new, tmp_path / "new.safetensors")
    r = weight_drift(tmp_path / "new.safetensors", tmp_path / "old.safetensors", tmp_path / "old.safetensors")
    assert r.layers == ["block.0", "block.1", "block.2"]
    assert r.mismatched == ["transformer.h.2.w"]
    assert r.change_prev[0] == pytest.approx(1.0) and r.change_prev[1] == 0.0
    assert np.isnan(r.change_prev[2]) and np.isnan(r.change_first[2]) and np.isnan(r.norm_ratio_first[2])
    assert r.norm[2] == pytest.approx(2.0)
    assert r.flags["dead"] == ["block.1"]
