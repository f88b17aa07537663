"""One-pass extraction against independent per-probe Hugging Face computations (fp32)."""

import numpy as np
import pytest
import torch

from learnviz import extract as ex
from learnviz.model import encode_probe, load
from learnviz.probes import Probe, ProbeSet, load_probe_set
from learnviz.settings import SHIPPED_CONFIG_DIR


@pytest.fixture(scope="module")
def probes():
    ps = load_probe_set(SHIPPED_CONFIG_DIR / "probes.jsonl", SHIPPED_CONFIG_DIR / "hard_examples.yaml")
    # every skill, short and long prompts, and the plain-English hard examples
    return ProbeSet(ps.probes[::9] + ps.probes[-3:])


@pytest.fixture
def lm(ckpt_root):
    return load(ckpt_root / "checkpoint-10", device="cpu", dtype="float32")


def _reference(lm, probe):
    """Unbatched, unpadded forward of one probe: (token logprobs, entropies, top-1 probs)."""
    p, a = encode_probe(lm.tokenizer, probe.prompt, probe.expected)
    with torch.inference_mode():
        out = lm.model(torch.tensor([p + a]), output_hidden_states=True)
    lp = out.logits[0].float().log_softmax(-1)[len(p) - 1: len(p) + len(a) - 1]   # (answer, vocab)
    tok = lp.gather(1, torch.tensor(a)[:, None])[:, 0]
    ent = -(lp.exp() * lp).sum(-1)
    return tok.numpy(), ent.numpy(), lp.max(-1).values.exp().numpy(), out.hidden_states, len(p)


def test_token_logprobs_equal_an_independent_forward(lm, probes):
    r = ex.extract(lm, probes, ex.ExtractOptions(batch_size=16))
    for i, probe in enumerate(probes):
        tok, ent, top, _, _ = _reference(lm, probe)
        assert np.allclose(r.token_logprob.row(i), tok, atol=1e-4), probe.id
        assert np.allclose(r.token_entropy.row(i), ent, atol=1e-4), probe.id
        assert np.allclose(r.token_top1_prob.row(i), top, atol=1e-4), probe.id
        assert np.isclose(r.answer_logprob[i], tok.sum(), atol=1e-3)
        assert np.isclose(r.answer_confidence[i], np.prod(top), rtol=1e-3)


def test_pooled_embedding_does_not_depend_on_batch_mates(lm, probes):
    short = min(probes, key=lambda p: len(p.prompt))
    longer = sorted(probes, key=lambda p: -len(p.prompt))[:7]
    batched = ex.extract(lm, ProbeSet(tuple(longer) + (short,)),
                         ex.ExtractOptions(batch_size=8, layers=[0, "mid", "last"]))
    alone = ex.extract(lm, ProbeSet((short,)), ex.ExtractOptions(batch_size=8, layers=[0, "mid", "last"]))
    assert batched.layers == alone.layers == [0, 1]   # 2 blocks: mid == last == 1
    for layer in batched.layers:  # stored as float16: equal up to float16 rounding
        assert np.allclose(batched.embeddings[layer][-1].astype(np.float32),
                           alone.embeddings[layer][0].astype(np.float32), rtol=1e-3, atol=1e-5)
    # against the reference: the mean of block 0's output over the prompt tokens
    *_, hidden, p_len = _reference(lm, short)
    ref = hidden[1][0, :p_len].mean(0).numpy()  # hidden_states[0] is the embedding layer
    assert np.allclose(alone.embeddings[0][0].astype(np.float32), ref, rtol=1e-3, atol=1e-4)


def test_pooled_embedding_before_float16_is_batch_invariant(lm, probes):
    """The 1e-5 bound on the float32 pooled values themselves (float16 storage rounds later)."""
    short = min(probes, key=lambda p: len(p.prompt))
    longer = sorted(probes, key=lambda p: -len(p.prompt))[:7]
    captured = {}

    def run(ps):
        hooks = ex._PoolHooks(lm, [1])
        enc = ex.encode_all(lm, ps, 512)
        rows = [p + a for p, a, _ in enc]
        ids, mask, pos = ex._left_pad(rows, lm.tokenizer.pad_token_id, "cpu")
        width = ids.shape[1]
        hooks.mask = torch.zeros_like(ids, dtype=torch.bool)
        for r, (p, a, _) in enumerate(enc):
            start = width - len(p) - len(a)
            hooks.mask[r, start: start + len(p)] = True
        with torch.inference_mode():
            lm.model(input_ids=ids, attention_mask=mask, position_ids=pos)
        hooks.remove()
        return hooks.pooled[1]

    captured["batched"] = run(ProbeSet(tuple(longer) + (short,)))[-1]
    captured["alone"] = run(ProbeSet((short,)))[0]
    assert (captured["batched"] - captured["alone"]).abs().max().item() <= 1e-5


def _generate(lm, probe, budget):
    p, a = encode_probe(lm.tokenizer, probe.prompt, probe.expected)
    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                max_new_tokens=budget, do_sample=False,
                                pad_token_id=lm.tokenizer.eos_token_id, eos_token_id=lm.tokenizer.eos_token_id)
    text = lm.tokenizer.decode(out[0, len(p):], skip_special_tokens=True)
    return ex._cut_at_stop(text, ["\n"]).strip(), len(a)


def _check_greedy(lm, probes, r):
    for i, probe in enumerate(probes):
        _, a_len = _generate(lm, probe, 1)
        text, _ = _generate(lm, probe, ex.answer_budget(a_len, 32))
        assert r.greedy_answer[i] == text, probe.id
        assert r.correct[i] == ex.answers_match(text, probe.expected)


def test_greedy_answers_equal_hf_generate_on_a_random_model(lm, probes):
    r = ex.extract(lm, probes, ex.ExtractOptions(batch_size=16))
    assert (r.first_divergence == 0).all()  # a random model departs at the first token
    _check_greedy(lm, probes, r)


def test_greedy_answers_equal_hf_generate_on_the_trained_demo(demo):
    ps = load_probe_set(SHIPPED_CONFIG_DIR / "probes.jsonl", SHIPPED_CONFIG_DIR / "hard_examples.yaml")
    probes = ProbeSet(ps.probes[::5])
    lm = load(f"{demo.checkpoints}/checkpoint-210", device="cpu", dtype="float32")
    r = ex.extract(lm, probes, ex.ExtractOptions(batch_size=32))
    d = r.first_divergence
    assert (d == -1).any() and (d > 0).any() and (d == 0).any()  # right, late and early departures
    _check_greedy(lm, probes, r)
    plain = ex._Greedy.__init__
    # the prefix-recomputation fallback (models with an unusual cache) gives the same answers
    def no_reuse(self, *a, **k):
        plain(self, *a, **k)
        self.reuse_cache = False
    ex._Greedy.__init__ = no_reuse
    try:
        r2 = ex.extract(lm, probes, ex.ExtractOptions(batch_size=32))
    finally:
        ex._Greedy.__init__ = plain
    assert r2.greedy_answer == r.greedy_answer


def test_never_a_full_vocabulary_softmax_over_the_batch(lm, probes, monkeypatch):
    shapes = []
    real = torch.log_softmax
    monkeypatch.setattr(torch, "log_softmax", lambda x, dim: shapes.append(tuple(x.shape)) or real(x, dim=dim))
    ex.extract(lm, probes, ex.ExtractOptions(batch_size=16, entropy_chunk=4))
    max_answer = max(len(encode_probe(lm.tokenizer, p.prompt, p.expected)[1]) for p in probes)
    assert shapes and all(s[0] <= 4 and s[1] <= max_answer + 1 for s in shapes)


def test_logits_of_one_forward_stay_within_the_budget(lm, probes, monkeypatch):
    """Long answers over a large vocabulary: the model's logits, (batch, longest answer + 1,
    vocab), come whole out of one forward before any chunked softmax (64 probes with 170-token
    answers over 120k tokens took 7 GB more). A batch is split to fit LOGITS_BYTES, with the
    same results."""
    long = tuple(Probe(f"long{i}", p.prompt, " ".join([p.expected] * (1 + i % 4)), p.skill)
                 for i, p in enumerate(probes.probes[:24]))
    probes = ProbeSet(long)
    whole = ex.extract(lm, probes, ex.ExtractOptions(batch_size=24))
    vocab = lm.model.config.vocab_size
    budget = 8 * 40 * vocab * 4        # about eight probes of the longest answer (~37 tokens)
    monkeypatch.setattr(ex, "LOGITS_BYTES", budget)
    sizes, softmax = [], []
    hook = lm.model.get_output_embeddings().register_forward_hook(
        lambda m, i, out: sizes.append(out.shape[0] * out.shape[1] * out.shape[2] * 4))
    real = torch.log_softmax
    monkeypatch.setattr(torch, "log_softmax", lambda x, dim: softmax.append(x.numel() * 4) or real(x, dim=dim))
    try:
        split = ex.extract(lm, probes, ex.ExtractOptions(batch_size=24))
    finally:
        hook.remove()
    first = max(len(encode_probe(lm.tokenizer, p.prompt, p.expected)[1]) for p in long)
    assert 24 * (first + 1) * vocab * 4 > 2 * budget      # the batch of 24 does not fit
    assert len(sizes) >= 3 and max(sizes) <= budget and max(softmax) <= budget / 4
    np.testing.assert_allclose(split.answer_logprob, whole.answer_logprob, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(split.token_entropy.values, whole.token_entropy.values, rtol=1e-4, atol=1e-4)
    assert split.greedy_answer == whole.greedy_answer and (split.correct == whole.correct).all()
    np.testing.assert_allclose(split.embeddings[1].astype(np.float32), whole.embeddings[1].astype(np.float32),
                               atol=2e-2)


def test_logit_batches_split_only_what_does_not_fit():
    lengths = [10, 2, 30, 3]
    assert ex.logit_batches([0, 1, 2, 3], lengths, vocab=100, budget=4 * 31 * 100 * 4) == [[0, 1, 2, 3]]
    # longest first; a part holds as many as fit at its longest answer's width; one probe at least
    assert ex.logit_batches([0, 1, 2, 3], lengths, vocab=100, budget=2 * 11 * 100 * 4) == [[2], [0, 3], [1]]
    assert ex.logit_batches([0, 2], lengths, vocab=100, budget=1) == [[2], [0]]


def test_layers_kept_are_only_those_asked_for(lm, probes):
    r = ex.extract(lm, ProbeSet(probes.probes[:5]), ex.ExtractOptions(layers=["last"]))
    assert list(r.embeddings) == [1] and r.embeddings[1].shape == (5, 32) and r.embeddings[1].dtype == np.float16


def test_answer_matching_rules():
    assert ex.answers_match("all cats are fish", "All cats are fish.")
    assert not ex.answers_match("All cats are fish. No", "All cats are fish.")
    assert ex.answers_match("All cats are fish. No", "All cats are fish.", "prefix")
    assert ex.normalize_answer("  Yes.  ") == "yes"


def test_long_prompts_are_cut_on_the_left(lm):
    long = Probe("long", "All cats are dogs. " * 200 + "What follows about cats and dogs?", "All cats are dogs.")
    r = ex.extract(lm, ProbeSet((long,)), ex.ExtractOptions(max_length=100))
    assert r.truncated[0] and r.prompt_tokens[0] + len(r.answer_ids.row(0)) == 100


def test_fit_cuts_the_prompt_to_max_length_softly_and_to_the_model_hard():
    prompt, answer = list(range(100, 110)), [1, 2, 3, 4, 5]
    assert ex.fit(prompt, answer, 8, None) == ((prompt[-3:], answer, True), "")        # max_length: 3 + 5
    assert ex.fit(prompt, answer, 4, None) == ((prompt[-1:], answer, True), "")        # one prompt token stays
    assert ex.fit(prompt, answer, 512, 12) == ((prompt[-6:], answer, True), "")        # 6 + 5 + one greedy token
    assert ex.fit(prompt, answer, 512, 16) == ((prompt, answer, False), "")
    (kept, why) = ex.fit(prompt, answer, 512, 6)                                        # 1 + 5 + 1 > 6
    assert kept == (prompt[-1:], answer, True)
    assert why == "its answer is 5 tokens and needs 7 positions (one prompt token before it, one greedy token " \
                  "after it); the model has 6"
    assert ex.fit(prompt, answer, 512, 5)[0] == (prompt[-1:], answer[:4], True)        # the answer tokens that fit


def test_fused_gelu_is_the_same_function(ckpt_root, probes):
    """load() swaps GPT-2's op-by-op gelu_new for the fused tanh GELU: logits of the loaded model
    equal those of the model as transformers builds it, to float rounding."""
    from transformers import AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    from learnviz.model import TanhGELU
    lm = load(ckpt_root / "checkpoint-10", device="cpu", dtype="float32")
    plain = AutoModelForCausalLM.from_pretrained(ckpt_root / "checkpoint-10", dtype=torch.float32).eval()
    assert any(isinstance(m, NewGELUActivation) for m in plain.modules())
    assert not any(isinstance(m, NewGELUActivation) for m in lm.model.modules())
    assert sum(isinstance(m, TanhGELU) for m in lm.model.modules()) == plain.config.n_layer
    p, a = encode_probe(lm.tokenizer, probes.probes[0].prompt, probes.probes[0].expected)
    ids = torch.tensor([p + a])
    with torch.inference_mode():
        fused, ref = lm.model(ids).logits, plain(ids).logits
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)


def test_a_tokenizer_without_pad_or_eos_token_is_padded_and_extracted(tmp_path, tokenizer):
    """A tokenizer_config.json naming neither a pad nor an EOS token (nor padding_side right):
    extraction pads with id 0 (masked) instead of failing the checkpoint with a TypeError of
    torch.full, and a probe's numbers do not depend on its batch mates' padding."""
    import json

    from helpers import make_checkpoint
    ck = make_checkpoint(tmp_path / "checkpoint-10", tokenizer, step=10)
    cfg_path = ck / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("pad_token", "eos_token", "bos_token"):
        cfg.pop(key, None)
    cfg["padding_side"] = "left"
    cfg_path.write_text(json.dumps(cfg))
    lm = load(ck, device="cpu", dtype="float32")
    assert lm.tokenizer.pad_token_id is None and lm.tokenizer.eos_token_id is None
    probes = ProbeSet((Probe("short", "All cats are", "dogs"),
                       Probe("long", "All cats are dogs. All dogs are birds. So all cats are", "birds")))
    both = ex.extract(lm, probes, ex.ExtractOptions(batch_size=2))
    alone = ex.extract(lm, ProbeSet(probes.probes[:1]), ex.ExtractOptions(batch_size=2))
    assert not both.failed.any()
    assert np.allclose(both.token_logprob.row(0), alone.token_logprob.row(0), atol=1e-4)
    tok, *_ = _reference(lm, probes.probes[0])
    assert np.allclose(alone.token_logprob.row(0), tok, atol=1e-4)


def test_a_prompt_or_answer_the_tokenizer_drops_entirely_fails_alone(tmp_path):
    """A WordPiece tokenizer that strips accents turns a lone combining mark (or a zero-width
    space) into no tokens: that probe is failed by id, with a stand-in token in its row, and the
    others are extracted as usual (an empty answer row made the series stage fail for the run,
    and an empty prompt scored the answer from a padding position)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(["all cats are dogs", "some dogs are birds", "word mark"] * 20,
                            trainers.WordPieceTrainer(vocab_size=80, special_tokens=["[UNK]", "[PAD]", "[EOS]"],
                                                      show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=16, n_layer=2, n_head=2))
    ck = tmp_path / "checkpoint-1"
    model.save_pretrained(ck)
    fast.save_pretrained(ck)
    lm = load(ck, device="cpu", dtype="float32")
    probes = ProbeSet((Probe("ok", "all cats are", "dogs"), Probe("mark", "word", "\u0301"),
                       Probe("zw", "\u0301\u0301", "dogs"), Probe("ok2", "some dogs are", "birds"),
                       Probe("unk", "all cats are", "\u6771\u4eac")))
    r = ex.extract(lm, probes, ex.ExtractOptions(batch_size=4))
    assert r.failed.tolist() == [False, True, True, False, True]
    assert set(r.failures) == {"mark", "zw", "unk"}
    # an answer the tokenizer knows no token of is scored as [UNK] and never right: failed, said so
    assert "answer '\u6771\u4eac' is only the tokenizer's unknown token '[UNK]'" in r.failures["unk"]
    assert "expected answer '\\u0301' tokenizes to no tokens" in r.failures["mark"]
    assert "prompt '\\u0301\\u0301' tokenizes to no tokens" in r.failures["zw"]
    assert (np.diff(r.answer_ids.offsets) >= 1).all()          # every row has an answer token
    assert not r.correct[[1, 2]].any() and r.greedy_answer[1] == r.greedy_answer[2] == ""
    tok_lp, *_ = _reference(lm, probes.probes[3])
    assert np.allclose(r.token_logprob.row(3), tok_lp, atol=1e-4)


def _scripted_gpt2(vocab_size: int, due: dict[int, int], *, bos, eos, pad, n: int = 32):
    """A one-block GPT-2 that says token `due[p]` after position p (p < n): each position's hidden
    state is its own direction, which the output head maps to the token due there."""
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=vocab_size, n_positions=n, n_embd=n, n_layer=1, n_head=2, tie_word_embeddings=False,
                        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.weight.fill_(1.0)
        for block in model.transformer.h:
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        model.transformer.wpe.weight.copy_(torch.eye(n))                  # position p: direction p
        direction = torch.nn.functional.layer_norm(torch.eye(n), (n,))
        for pos, token in due.items():
            model.lm_head.weight[token] += direction[pos]
    return model


def _normalizing_tokenizer():
    """A WordPiece tokenizer that lowercases, strips accents and splits off punctuation (BERT's),
    trained here: it cannot spell 'Café au lait, isn't it.' back as it was written."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    corpus = ["Order: café au lait, isn't it. Order: tea."] * 20
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=120,
                                                              special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


def test_an_answer_in_the_expected_tokens_is_right_under_a_normalizing_tokenizer(tmp_path):
    """A model whose greedy answer is exactly the expected answer's tokens answered right, even where
    its tokenizer decodes them as other text ('cafe au lait , isn ' t it.' for "Café au lait, isn't
    it."): it was scored wrong at every checkpoint, whatever the model learnt. The model is built to
    emit those tokens at those positions (each position's hidden state is its own direction; the
    output head maps it to the token due there), then EOS; a second probe stays wrong."""
    tok = _normalizing_tokenizer()
    prompt, expected = "Order:", "Café au lait, isn't it."
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(expected, add_special_tokens=False)["input_ids"]
    assert tok.decode(a_ids) != expected and "[UNK]" not in tok.decode(a_ids)
    due = {len(p_ids) - 1 + k: t for k, t in enumerate(a_ids + [tok.eos_token_id])}   # position -> next token
    model = _scripted_gpt2(len(tok), due, bos=tok.eos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id)
    model.save_pretrained(tmp_path / "ck", safe_serialization=True)
    tok.save_pretrained(tmp_path / "ck")
    lm = load(tmp_path / "ck", device="cpu", dtype="float32")
    probes = ProbeSet((Probe(id="right", prompt=prompt, expected=expected, skill="s", category="c"),
                       Probe(id="other", prompt=prompt, expected="Tea.", skill="s", category="c")))
    r = ex.extract(lm, probes, ex.ExtractOptions(batch_size=2, stop_strings=[]))
    assert r.greedy_answer[0] == tok.decode(a_ids) and r.first_divergence.tolist() == [-1, 0]
    assert r.correct.tolist() == [True, False]


def _family_checkpoint(path, tokenizer, family: str):
    """A tiny random checkpoint of another family: Gemma2 (scaled embeddings, soft-capped logits,
    sliding window), Mixtral (mixture of experts), Mamba (a state-space model: no attention), Gemma 3
    with its vision tower (a ...ForConditionalGeneration)."""
    import transformers as T
    eos = tokenizer.eos_token_id
    common = dict(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                  hidden_size=32, num_hidden_layers=2)
    attn = dict(intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    config, cls = {
        "gemma2": (lambda: T.Gemma2Config(head_dim=8, sliding_window=16, **attn, **common), T.Gemma2ForCausalLM),
        "mixtral": (lambda: T.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **attn, **common),
                    T.MixtralForCausalLM),
        "mamba": (lambda: T.MambaConfig(state_size=8, expand=2, conv_kernel=4, **common), T.MambaForCausalLM),
        # a language model beside a vision tower (Gemma 3 from 4B on): AutoModelForCausalLM builds the
        # ...ForConditionalGeneration; the decoder's sizes are in text_config, the tower's layers come first
        "gemma3": (lambda: T.Gemma3Config(
            text_config=dict(head_dim=8, sliding_window=16, **attn, **common),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                               image_size=28, patch_size=14),
            mm_tokens_per_image=4, image_token_index=3, boi_token_index=4, eoi_token_index=5,
            bos_token_id=eos, eos_token_id=eos, pad_token_id=eos), T.Gemma3ForConditionalGeneration),
    }[family]
    torch.manual_seed(0)
    cls(config()).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("family", ["gemma2", "mixtral", "mamba", "gemma3"])
def test_other_families_extract_like_an_independent_forward(tmp_path, tokenizer, probes, family):
    ck = _family_checkpoint(tmp_path / family, tokenizer, family)
    lm = load(ck, device="cpu", dtype="float32")
    assert lm.n_layers == 2
    # the language model's blocks (Gemma 3's vision tower also has two, and came first: it was taken,
    # and its hooks never fired on text)
    decoder = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else lm.model
    assert all(any(block is m for m in decoder.modules()) for block in lm.layers)
    few = ProbeSet(probes.probes[::4])
    r = ex.extract(lm, few, ex.ExtractOptions(batch_size=8, layers=[0, 1]))
    for i, probe in enumerate(few):
        tok, *_ = _reference(lm, probe)
        assert np.allclose(r.token_logprob.row(i), tok, atol=1e-4), probe.id
    _check_greedy(lm, few, r)


def _model_that_ends_its_turn(ck, *, stop_in: str) -> tuple[str, str, str]:
    """A checkpoint whose model answers "All cats are fish." after its prompt, then ends its turn
    with a token that is not the tokenizer's EOS, '<|eot|>' (as gemma-2-it's <end_of_turn> or
    Llama-3-Instruct's <|eot_id|>), and would run on into another turn after it. That token is an
    end-of-sequence id of the model, listed with the tokenizer's EOS in `stop_in`'s eos_token_id
    (generation_config.json or config.json). Each position's hidden state is its own direction;
    the output head maps it to the token due there. Returns (prompt, expected, the turn end)."""
    import json

    from helpers import tiny_tokenizer
    from transformers import AutoTokenizer
    tiny_tokenizer().save_pretrained(ck)
    tok = AutoTokenizer.from_pretrained(ck)
    tok.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    tok.save_pretrained(ck)
    eot = tok.convert_tokens_to_ids("<|eot|>")
    prompt, expected = "All cats are dogs. What follows?", "All cats are fish."
    p_ids, a_ids = encode_probe(tok, prompt, expected)
    runs_on = tok(" Some dogs", add_special_tokens=False)["input_ids"]
    due = {len(p_ids) - 1 + k: t for k, t in enumerate(a_ids + [eot] + runs_on)}   # position -> next token
    eos = tok.eos_token_id
    listed = [eos, eot]
    model = _scripted_gpt2(len(tok), due, bos=eos, pad=eos, eos=listed if stop_in == "config.json" else eos)
    model.save_pretrained(ck, safe_serialization=True)
    if stop_in == "generation_config.json":
        (ck / "generation_config.json").write_text(json.dumps({"bos_token_id": eos, "eos_token_id": listed,
                                                               "pad_token_id": eos}))
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": []}))
    return prompt, expected, "<|eot|>"


@pytest.mark.parametrize("stop_in", ["generation_config.json", "config.json"])
def test_a_model_that_ends_its_answer_with_its_own_eos_token_answered_right(tmp_path, stop_in):
    """A model whose config lists several end-of-sequence ids (eos_token_id: [<|endoftext|>,
    <|eot|>]) ends its answer with one that is not the tokenizer's EOS: greedy decoding stopped
    only at the tokenizer's, ran on past the model's end into another turn, and a right answer was
    archived wrong ("All cats are fish.<|eot|> Some dogs"), with no stop probability after it."""
    from helpers import learnviz_run, run_settings

    from learnviz import archive as arc
    from learnviz.probes import write_jsonl
    from learnviz.results import EXTRACT
    prompt, expected, eot = _model_that_ends_its_turn(tmp_path / "run" / "checkpoint-1", stop_in=stop_in)
    write_jsonl([Probe("right", prompt, expected, skill="s", category="c")], tmp_path / "probes.jsonl")
    report = learnviz_run(run_settings(tmp_path / "run", tmp_path / "probes.jsonl"), cpu_stages=False, progress=False)
    assert report.ok and len(report.done) == 1, report.failed
    got = arc.Archive(report.done[0]).read(EXTRACT, ["greedy_answer", "correct", "stop_prob", "first_divergence"])
    assert [str(a) for a in got["greedy_answer"]] == [expected]
    assert got["correct"].tolist() == [True] and got["first_divergence"].tolist() == [-1]
    assert got["stop_prob"][0] > 0.5            # the model's own end, right after the answer
