"""One-pass extraction: everything the analyses need from a checkpoint, in one batched forward.

For each probe, teacher forced on prompt + expected answer:
  - mean-pooled hidden states of the prompt tokens at the chosen layers (hooks on those blocks
    only; the output of block i, before any final norm),
  - per answer token: its logprob, the entropy of the next-token distribution, the top-1
    probability and token, and whether the answer token is that argmax,
  - answer logprob (sum over tokens) and answer confidence (the product of the top-1
    probabilities over the answer positions: the model's confidence in its own teacher-forced
    prediction, the top-label confidence calibration uses),
  - the greedy answer, correct or not, and the first position where it departs from the expected.

Efficiency, as the design asks: batches sorted by length and left-padded (position ids from the
attention mask, so padding changes nothing), `torch.inference_mode`, bf16/fp16 on a GPU, logits
only for the last max(answer)+1 positions (`logits_to_keep`), a batch split where those logits
would pass `LOGITS_BYTES` (long answers over a large vocabulary), the full-vocabulary log-softmax
taken a few rows at a time. The greedy answer costs no extra forward when the model reproduces
the expected answer (greedy decoding then IS the teacher-forced argmax path); only probes that
depart from it are continued greedily from the first departing token, batched, with a KV cache.

Length: prompt + answer take at most `max_length` tokens and, past it, at most the model's
positions less one (the greedy answer's first token after the answer). A longer prompt loses
tokens on the left (`truncated`), and a greedy answer ends at the model's last position. A probe
whose answer alone does not fit the model is recorded as failed (`failed`, its id and why in
`failures`): its row holds the answer tokens that fit, after one prompt token, and no greedy
answer; the other probes are recorded as usual.
"""

from __future__ import annotations

import inspect
import time
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import torch

from .archive import Ragged
from .model import LoadedModel, encode_probes, resolve_layers
from .probes import ProbeSet


@dataclass
class ExtractOptions:
    layers: list = field(default_factory=lambda: ["mid", "last"])
    batch_size: int = 64
    max_length: int = 512
    max_new_tokens: int = 32
    stop_strings: list[str] = field(default_factory=lambda: ["\n"])
    answer_match: str = "exact"   # exact | prefix
    entropy_chunk: int = 8        # rows per full-vocabulary log-softmax

    @classmethod
    def from_settings(cls, s) -> "ExtractOptions":
        return cls(layers=list(s.layers), batch_size=s.batch_size, max_length=s.max_length,
                   max_new_tokens=s.max_new_tokens, stop_strings=list(s.stop_strings),
                   answer_match=s.answer_match, entropy_chunk=s.entropy_chunk)


@dataclass
class ExtractResult:
    probe_ids: list[str]
    layers: list[int]                     # block indices, sorted
    embeddings: dict[int, np.ndarray]     # layer -> (n_probes, hidden) float16
    answer_ids: Ragged                    # int32 answer token ids per probe
    token_text: Ragged                    # str, each answer token decoded alone
    token_logprob: Ragged                 # float32 logprob of each answer token
    token_entropy: Ragged                 # float32 entropy (nats) of the distribution at each answer position
    token_top1_prob: Ragged               # float32 top-1 probability at each answer position
    token_argmax: Ragged                  # int32 top-1 token at each answer position
    answer_logprob: np.ndarray            # (n,) float32 sum of token logprobs
    answer_confidence: np.ndarray         # (n,) float32 product of top-1 probs over the answer
    stop_prob: np.ndarray                 # (n,) float32 P(stop token) right after the answer
    first_divergence: np.ndarray          # (n,) int32: -1 greedy == expected; else first answer position that differs
    greedy_answer: list[str]              # free greedy answer (text up to a stop)
    correct: np.ndarray                   # (n,) bool greedy answer matches expected (answer_match)
    prompt_tokens: np.ndarray             # (n,) int32 prompt length in tokens (after truncation)
    truncated: np.ndarray                 # (n,) bool prompt lost tokens on the left
    timings: dict[str, float] = field(default_factory=dict)
    # (n,) bool: the answer alone does not fit the model, so the row holds only the answer tokens
    # that fit and no greedy answer (never correct). None when read from an archive older than it.
    failed: np.ndarray | None = None
    # probe id -> why it failed; archived as the stage's `reason`, not read back by from_archive
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The failed probes and why, for the stage's `reason` ("" when none failed)."""
        return "; ".join(f"probe {pid!r}: {why}" for pid, why in self.failures.items())

    @property
    def token_is_argmax(self) -> Ragged:
        return Ragged(self.answer_ids.values == self.token_argmax.values, self.answer_ids.offsets)

    def to_archive(self) -> dict:
        """The elements of the archive's `extract` group (see docs/archive.md)."""
        data = {
            "probe_ids": np.asarray(self.probe_ids, dtype=object),
            "embeddings": {f"layer_{k}": v for k, v in self.embeddings.items()},
            "answer_ids": self.answer_ids, "token_text": self.token_text,
            "token_logprob": self.token_logprob, "token_entropy": self.token_entropy,
            "token_top1_prob": self.token_top1_prob, "token_argmax": self.token_argmax,
            "answer_logprob": self.answer_logprob, "answer_confidence": self.answer_confidence,
            "stop_prob": self.stop_prob, "first_divergence": self.first_divergence,
            "greedy_answer": np.asarray(self.greedy_answer, dtype=object), "correct": self.correct,
            "prompt_tokens": self.prompt_tokens, "truncated": self.truncated,
        }
        if self.failed is not None:
            data["failed"] = self.failed
        return data

    @classmethod
    def from_archive(cls, data: dict, attrs: dict) -> "ExtractResult":
        layers = sorted(int(k.split("_")[1]) for k in data["embeddings"])
        return cls(
            probe_ids=list(data["probe_ids"]), layers=layers,
            embeddings={k: data["embeddings"][f"layer_{k}"] for k in layers},
            answer_ids=data["answer_ids"], token_text=data["token_text"],
            token_logprob=data["token_logprob"], token_entropy=data["token_entropy"],
            token_top1_prob=data["token_top1_prob"], token_argmax=data["token_argmax"],
            answer_logprob=data["answer_logprob"], answer_confidence=data["answer_confidence"],
            stop_prob=data["stop_prob"], first_divergence=data["first_divergence"],
            greedy_answer=list(data["greedy_answer"]), correct=data["correct"],
            prompt_tokens=data["prompt_tokens"], truncated=data["truncated"],
            timings=attrs.get("timings", {}), failed=data.get("failed"))


def normalize_answer(text: str) -> str:
    """Case, surrounding and repeated whitespace, and a final period do not count."""
    return " ".join(text.split()).rstrip(".").strip().casefold()


def answers_match(greedy: str, expected: str, mode: str = "exact") -> bool:
    g, e = normalize_answer(greedy), normalize_answer(expected)
    return g == e if mode == "exact" else g.startswith(e)


_CACHE: dict[tuple, object] = {}   # per-process results keyed by tokenizer (a worker sees many checkpoints)


def _cached(key: tuple, make):
    if key not in _CACHE:
        if len(_CACHE) >= 16:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = make()
    return _CACHE[key]


def stop_token_ids(lm: LoadedModel, stop_strings: list[str]) -> torch.Tensor:
    """The tokenizer's EOS, the model's own end-of-sequence ids (`LoadedModel.eos_ids`: config.json's
    and generation_config.json's eos_token_id), and every vocabulary token whose text contains a
    stop string."""
    if lm.tokenizer_key:
        return _cached(("stop", lm.tokenizer_key, lm.eos_ids, tuple(stop_strings)),
                       lambda: _stop_token_ids(lm, stop_strings))
    return _stop_token_ids(lm, stop_strings)


def _stop_token_ids(lm: LoadedModel, stop_strings: list[str]) -> torch.Tensor:
    tok = lm.tokenizer
    ids = set(lm.eos_ids)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    if stop_strings:
        vocab = len(tok)
        texts = tok.batch_decode([[i] for i in range(vocab)])
        ids.update(i for i, t in enumerate(texts) if any(s in t for s in stop_strings))
    return torch.tensor(sorted(ids), dtype=torch.long)


def _cut_at_stop(text: str, stop_strings: list[str]) -> str:
    """The text before the first stop string."""
    for s in stop_strings:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text


class _PoolHooks:
    """Forward hooks that mean-pool the prompt tokens of chosen blocks and keep nothing else."""

    def __init__(self, lm: LoadedModel, layers: list[int]):
        self.mask: torch.Tensor | None = None   # (batch, seq) bool, True on prompt tokens
        self.pooled: dict[int, torch.Tensor] = {}
        self.handles = [lm.layers[i].register_forward_hook(self._hook(i)) for i in layers]

    def _hook(self, layer: int):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output   # (batch, seq, hidden)
            if self.mask is None:
                return
            m = self.mask[:, :, None]                                     # (batch, seq, 1)
            # where(), not multiply: padded positions may hold NaN, and NaN * 0 is NaN
            summed = torch.where(m, hidden.float(), 0.0).sum(dim=1)       # (batch, hidden)
            self.pooled[layer] = summed / m.sum(dim=1).clamp(min=1)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def pad_token(tokenizer) -> int:
    """The id left padding uses: the pad token, else EOS, else 0 (a tokenizer with neither; padded
    positions are masked, so any id does)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), each (batch, width), padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


@dataclass(frozen=True)
class Encoded:
    """Token ids of a probe set against one model: `rows` (prompt ids, answer ids, truncated) per
    probe, and `failed`, probe index -> why its answer does not fit the model."""
    rows: list[tuple[list[int], list[int], bool]]
    failed: dict[int, str]


def encode_all(lm: LoadedModel, probes: ProbeSet, max_length: int) -> list[tuple[list[int], list[int], bool]]:
    """Token ids for every probe: (prompt ids, answer ids, truncated) with prompts cut on the left."""
    return encode_fitted(lm, probes, max_length).rows


def encode_fitted(lm: LoadedModel, probes: ProbeSet, max_length: int) -> Encoded:
    """`encode_all` with the probes whose answer does not fit the model (see `fit`)."""
    positions = lm.max_positions
    if lm.tokenizer_key:
        return _cached(("encode", lm.tokenizer_key, probes.hash, max_length, positions),
                       lambda: _encode_all(lm, probes, max_length, positions))
    return _encode_all(lm, probes, max_length, positions)


def _encode_all(lm: LoadedModel, probes: ProbeSet, max_length: int, positions: int | None) -> Encoded:
    rows, failed = [], {}
    pairs = encode_probes(lm.tokenizer, [p.prompt for p in probes], [p.expected for p in probes])
    stand_in = None
    unk = lm.tokenizer.unk_token_id
    for i, (prompt_ids, answer_ids) in enumerate(pairs):
        probe = probes.probes[i]
        empty = [(name, text) for name, text, ids in (("prompt", probe.prompt, prompt_ids),
                                                      ("expected answer", probe.expected, answer_ids)) if not ids]
        if empty:   # the tokenizer drops every character (combining marks, zero-width spaces)
            if stand_in is None:
                stand_in = unk if unk is not None else pad_token(lm.tokenizer)
            prompt_ids, answer_ids = prompt_ids or [stand_in], answer_ids or [stand_in]
        row, why = fit(prompt_ids, answer_ids, max_length, positions)
        rows.append(row)
        if empty:
            # its row holds one stand-in token (every reader expects one) and no greedy answer
            why = " and ".join(f"its {name} {_shown(text)}" for name, text in empty) + " tokenizes to no tokens"
        elif unk is not None and all(t == unk for t in answer_ids):
            # scored as the unknown token, never answered right (the greedy answer decodes to its name)
            why = (f"its expected answer {_shown(probe.expected)} is only the tokenizer's unknown token "
                   f"{lm.tokenizer.unk_token!r}: the tokenizer has no tokens for it")
        if why:
            failed[i] = why
    return Encoded(rows, failed)


def _shown(text: str) -> str:
    """A probe text quoted for a message: escaped (ascii) when it holds marks, controls or unusual
    spaces, which print invisibly or onto the quote; as it is otherwise (CJK, emoji)."""
    hidden = any(unicodedata.category(c)[0] in "MCZ" and c != " " for c in text)
    return ascii(text) if hidden else repr(text)


def fit(prompt_ids: list[int], answer_ids: list[int], max_length: int,
        positions: int | None) -> tuple[tuple[list[int], list[int], bool], str]:
    """((prompt ids, answer ids, truncated), why it failed or "") of one probe.

    `max_length` bounds prompt + answer softly: a prompt keeps at least one token (the first
    answer token is predicted from it). The model's `positions` bound them hard, less one: when
    the model repeats the answer and does not stop, greedy decoding feeds one token after it.
    When not even one prompt token fits, the probe fails: it keeps one prompt token and the
    answer tokens that fit, and is not decoded.
    """
    a = len(answer_ids)
    room = max(1, max_length - a)
    if positions is not None:
        room = min(room, positions - a - 1)
    if room >= 1:
        if len(prompt_ids) <= room:
            return (prompt_ids, answer_ids, False), ""
        return (prompt_ids[-room:], answer_ids, True), ""
    why = (f"its answer is {a} tokens and needs {a + 2} positions (one prompt token before it, one greedy "
           f"token after it); the model has {positions}")
    return (prompt_ids[-1:], answer_ids[: max(1, positions - 1)], len(prompt_ids) > 1), why


def batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted by length, longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


# Most bytes of one forward's logits, (batch, longest answer + 1, vocab) as float32. The model
# returns that tensor whole, before any chunked softmax: 64 probes with 170-token answers over a
# 120k vocabulary would take 5 GB (and as much again in the model's own casts).
LOGITS_BYTES = 1 << 30


def logit_batches(idx: list[int], answer_lengths: list[int], vocab: int, budget: int) -> list[list[int]]:
    """`idx` (one batch) split so that each part's logits, len(part) x (its longest answer + 1)
    x `vocab` float32, fit `budget`; at least one probe per part. Longest answers first, so that
    short answers are not held to a long one's width. A batch that fits stays as it is."""
    def size(n: int, longest: int) -> int:
        return n * (longest + 1) * vocab * 4
    if size(len(idx), max(answer_lengths[i] for i in idx)) <= budget:
        return [idx]
    parts: list[list[int]] = []
    for i in sorted(idx, key=lambda i: -answer_lengths[i]):
        if parts and size(len(parts[-1]) + 1, answer_lengths[parts[-1][0]]) <= budget:
            parts[-1].append(i)
        else:
            parts.append([i])
    return parts


def vocab_size(lm: LoadedModel) -> int:
    """The width of the model's logits: its config's vocab_size, else the output embedding's rows."""
    size = getattr(lm.model.config, "vocab_size", None)
    if isinstance(size, int) and size > 0:
        return size
    head = lm.model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else len(lm.tokenizer)


@torch.inference_mode()
def extract(lm: LoadedModel, probes: ProbeSet, opts: ExtractOptions | None = None,
            progress=None) -> ExtractResult:
    """Run the probe set through the model once. See the module docstring for what is recorded.

    `progress(n)` is called after each batch with the number of probes done in it.
    """
    opts = opts or ExtractOptions()
    t_start = time.perf_counter()
    layers = resolve_layers(opts.layers, lm.n_layers)
    fitted = encode_fitted(lm, probes, opts.max_length)
    encoded = fitted.rows
    stop_ids = stop_token_ids(lm, opts.stop_strings).to(lm.device)
    t_tok = time.perf_counter()

    found = _Collected(len(encoded))
    greedy = _Greedy(lm, encoded, stop_ids, opts, frozenset(fitted.failed))
    hooks = _PoolHooks(lm, layers)
    answer_lengths = [len(a) for _, a, _ in encoded]
    vocab = vocab_size(lm)
    try:
        for idx in batches([len(p) + len(a) for p, a, _ in encoded], opts.batch_size):
            for part in logit_batches(idx, answer_lengths, vocab, LOGITS_BYTES):
                _run_batch(lm, encoded, part, hooks, greedy, stop_ids, opts, found)
            if progress:
                progress(len(idx))
    finally:
        hooks.remove()

    t_greedy0 = time.perf_counter()
    answers, correct, divergence = greedy.finish(probes)
    t_end = time.perf_counter()
    timings = {"tokenize": t_tok - t_start, "forward": found.t_forward, "softmax": found.t_softmax,
               "greedy": t_end - t_greedy0 + greedy.seconds, "total": t_end - t_start}
    return _result(lm, probes, fitted, layers, found, (answers, correct, divergence), timings)


@dataclass
class _Collected:
    """What the batches of one extraction gather, per probe (filled in as batches come)."""
    n: int
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)   # layer -> (n, hidden) float16
    token_logprob: list = field(default_factory=list)                  # per probe (answer_len,)
    token_entropy: list = field(default_factory=list)
    token_top1: list = field(default_factory=list)
    token_argmax: list = field(default_factory=list)
    stop_prob: np.ndarray | None = None                                 # (n,)
    t_forward: float = 0.0
    t_softmax: float = 0.0

    def __post_init__(self):
        self.token_logprob, self.token_entropy, self.token_top1, self.token_argmax = ([None] * self.n
                                                                                   for _ in range(4))
        self.stop_prob = np.zeros(self.n, dtype=np.float32)


def _run_batch(lm: LoadedModel, encoded: list, idx: list[int], hooks: _PoolHooks, greedy: _Greedy,
               stop_ids: torch.Tensor, opts: ExtractOptions, found: _Collected) -> None:
    """One forward pass over the probes `idx` (left-padded prompt + answer): pooled embeddings,
    the answer tokens' statistics, and the hand-off of departing probes to greedy decoding."""
    t0 = time.perf_counter()
    device = lm.device
    rows = [encoded[i][0] + encoded[i][1] for i in idx]
    ids, mask, pos = _left_pad(rows, pad_token(lm.tokenizer), device)
    width = ids.shape[1]
    a_len = torch.tensor([len(encoded[i][1]) for i in idx])                 # (batch,)
    p_len = torch.tensor([len(encoded[i][0]) for i in idx])                 # (batch,)
    col = torch.arange(width)
    start = width - (a_len + p_len)                                           # first real token
    hooks.mask = ((col[None, :] >= start[:, None]) & (col[None, :] < (start + p_len)[:, None])).to(device)
    keep = int(a_len.max()) + 1
    out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=greedy.reuse_cache,
                   logits_to_keep=keep)
    t1 = time.perf_counter()
    found.t_forward += t1 - t0
    for layer, pooled in hooks.pooled.items():
        if layer not in found.embeddings:
            found.embeddings[layer] = np.zeros((found.n, pooled.shape[1]), dtype=np.float16)
        found.embeddings[layer][idx] = pooled.to(torch.float16).cpu().numpy()

    targets = torch.zeros((len(idx), keep - 1), dtype=torch.long)
    for r, i in enumerate(idx):
        targets[r, : len(encoded[i][1])] = torch.tensor(encoded[i][1])
    got = _answer_stats(out.logits, a_len, targets.to(device), stop_ids, opts.entropy_chunk)
    for r, i in enumerate(idx):
        a = len(encoded[i][1])
        found.token_logprob[i], found.token_entropy[i] = got["lp"][r, :a], got["ent"][r, :a]
        found.token_top1[i], found.token_argmax[i] = got["top"][r, :a], got["arg"][r, :a]
        found.stop_prob[i] = got["stop"][r]
    found.t_softmax += time.perf_counter() - t1
    cache = getattr(out, "cache", None)
    greedy.after_batch(idx, got["arg"], got["post"], mask, pos,
                       cache if cache is not None else getattr(out, "past_key_values", None))
    del out


def _answer_stats(logits: torch.Tensor, a_len: torch.Tensor, targets: torch.Tensor, stop_ids: torch.Tensor,
                  chunk: int) -> dict[str, np.ndarray]:
    """Per answer position of each row: logprob of the expected token ("lp"), entropy ("ent"),
    top-1 probability ("top") and token ("arg"), each (batch, max_answer); and, after the answer,
    the probability of a stop token ("stop") and the argmax ("post"), each (batch,).

    `logits` (batch, keep, vocab) are the last `keep` = max answer + 1 positions. Answer token j of
    row r is predicted at window index keep-1-A_r+j; index keep-1 predicts the token after the
    answer (a stop, if the model has learnt to end). The full-vocabulary softmax runs `chunk`
    rows at a time to bound memory, fewer where a chunk's float32 copy would pass a quarter of
    `LOGITS_BYTES` (it makes three: log-probabilities, probabilities and their product)."""
    keep = logits.shape[1]
    device = logits.device
    chunk = max(1, min(chunk, LOGITS_BYTES // 4 // (keep * logits.shape[2] * 4)))
    j = torch.arange(keep - 1)
    win = ((keep - 1 - a_len)[:, None] + j[None, :]).clamp(max=keep - 1).to(device)   # (batch, max_a)
    parts: dict[str, list] = {k: [] for k in ("lp", "ent", "top", "arg", "stop", "post")}
    for c in range(0, logits.shape[0], chunk):
        sl = slice(c, c + chunk)
        lp = torch.log_softmax(logits[sl].float(), dim=-1)                   # (chunk, keep, vocab)
        ent = -(lp.exp() * lp).sum(-1)                                        # (chunk, keep)
        top, arg = lp.max(-1)                                                 # (chunk, keep)
        rows_c = torch.arange(lp.shape[0], device=device)[:, None]
        parts["lp"].append(lp[rows_c, win[sl], targets[sl]])                  # (chunk, max_a)
        parts["ent"].append(ent.gather(1, win[sl]))
        parts["top"].append(top.gather(1, win[sl]).exp())
        parts["arg"].append(arg.gather(1, win[sl]))
        parts["stop"].append(lp[:, -1, :].exp()[:, stop_ids].sum(-1))         # (chunk,)
        parts["post"].append(arg[:, -1])
    return {k: torch.cat(v).cpu().numpy() for k, v in parts.items()}


def _result(lm: LoadedModel, probes: ProbeSet, fitted: Encoded, layers: list[int], found: _Collected,
            decoded: tuple, timings: dict[str, float]) -> ExtractResult:
    """The per-probe rows packed as ragged arrays, with the answer-level sums and confidences."""
    answers, correct, divergence = decoded
    encoded = fitted.rows
    n = len(encoded)
    failed = np.zeros(n, dtype=bool)
    failed[list(fitted.failed)] = True
    correct = correct & ~failed     # an answer that was never decoded is not right
    answer_rows = [e[1] for e in encoded]
    vocab_text = {t: lm.tokenizer.decode([t]) for t in {t for row in answer_rows for t in row}}
    text_rows = [[vocab_text[t] for t in row] for row in answer_rows]
    lp_r = Ragged.from_rows(found.token_logprob, np.float32)
    top_r = Ragged.from_rows(found.token_top1, np.float32)
    row_of = np.repeat(np.arange(n), np.diff(lp_r.offsets))
    sums = np.bincount(row_of, weights=lp_r.values, minlength=n)
    conf = np.exp(np.bincount(row_of, weights=np.log(np.clip(top_r.values, 1e-30, None)), minlength=n))
    return ExtractResult(
        probe_ids=[p.id for p in probes], layers=layers, embeddings=found.embeddings,
        answer_ids=Ragged.from_rows(answer_rows, np.int32), token_text=Ragged.from_rows(text_rows, object),
        token_logprob=lp_r, token_entropy=Ragged.from_rows(found.token_entropy, np.float32), token_top1_prob=top_r,
        token_argmax=Ragged.from_rows(found.token_argmax, np.int32),
        answer_logprob=sums.astype(np.float32), answer_confidence=conf.astype(np.float32),
        stop_prob=found.stop_prob, first_divergence=divergence, greedy_answer=answers, correct=correct,
        prompt_tokens=np.array([len(e[0]) for e in encoded], dtype=np.int32),
        truncated=np.array([e[2] for e in encoded], dtype=bool),
        timings=timings, failed=failed,
        failures={probes.probes[i].id: why for i, why in sorted(fitted.failed.items())},
    )


def answer_budget(expected_tokens: int, max_new_tokens: int) -> int:
    """Most tokens a greedy answer may have: twice the expected answer plus 4, capped by the
    setting. Enough to show how a wrong answer goes wrong, without decoding essays."""
    return min(max_new_tokens, 2 * expected_tokens + 4)


@dataclass
class _Row:
    """A probe whose greedy answer is still being decoded."""
    probe: int
    answer: list[int]                 # answer tokens so far; the last one is fed next
    budget: int                       # most answer tokens
    pos: int                          # position id of the token fed next
    prefix: list[int] = field(default_factory=list)  # prompt + answer so far (recomputation only)


@dataclass
class _CachedBlock:
    """Rows of one main-pass batch, with their slice of that batch's KV cache."""
    rows: list[_Row]
    kv: list[tuple[torch.Tensor, torch.Tensor]]   # per layer, each (rows, heads, width, head_dim)
    mask: torch.Tensor                            # (rows, width): 1 where the cache holds a prefix token


class _Greedy:
    """Free greedy answers without a second pass over the probe set.

    Greedy decoding equals the teacher-forced argmax path up to the first position where the
    argmax departs from the expected answer, so a probe whose argmax path matches and then
    stops needs nothing more. The others continue from the departing token. The main pass's
    KV cache already holds prompt + answer[:d]; the answer tokens from d on are masked out of it
    and decoding resumes there, all pending probes in one wide batch (for small models each
    step costs a call's overhead more than FLOPs). Models whose cache is not a plain per-layer
    key/value cache (sliding windows, recurrent state) recompute the prefix instead.
    """

    MAX_CACHE_BYTES = 1 << 30  # pending caches kept before decoding them (bounds GPU memory)

    def __init__(self, lm: LoadedModel, encoded, stop_ids: torch.Tensor, opts: ExtractOptions,
                 failed: frozenset[int] = frozenset()):
        self.lm, self.encoded, self.opts = lm, encoded, opts
        self.failed = failed   # probes whose answer does not fit the model: no room to decode
        self.positions = lm.max_positions
        self.stop_ids = stop_ids
        self.stop_set = set(stop_ids.tolist())
        n = len(encoded)
        self.divergence = np.full(n, -1, dtype=np.int32)
        self.answers: list[list[int] | None] = [None] * n
        self.blocks: list[_CachedBlock] = []
        self.plain: list[_Row] = []
        self.pending_bytes = 0
        self.reuse_cache = True
        self.seconds = 0.0
        self.cache_kw = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"

    def after_batch(self, idx, argmax, post, mask, pos, cache) -> None:
        t0 = time.perf_counter()
        kv_layers = _kv_layers(cache) if self.reuse_cache else None
        if self.reuse_cache and kv_layers is None:
            self.reuse_cache = False  # an unusual cache: recompute prefixes from now on
        starts = []   # (batch row, row to decode, departure position)
        for r, i in enumerate(idx):
            p_ids, a_ids, _ = self.encoded[i]
            a = len(a_ids)
            if i in self.failed:
                self.answers[i], self.divergence[i] = [], 0
                continue
            mism = np.nonzero(argmax[r, :a] != np.asarray(a_ids))[0]
            if len(mism):
                d = int(mism[0])
                so_far = list(a_ids[:d]) + [int(argmax[r, d])]
            elif int(post[r]) in self.stop_set or not a_ids:
                self.answers[i] = list(a_ids)
                continue
            else:  # the answer is right but the model does not stop after it
                d = a
                so_far = list(a_ids) + [int(post[r])]
            self.divergence[i] = d
            if so_far[-1] in self.stop_set:
                self.answers[i] = so_far[:-1]
                continue
            row = _Row(i, so_far, self.budget(len(p_ids), a), len(p_ids) + d)
            starts.append((r, row, d))
        if starts and kv_layers is not None:
            sel = torch.tensor([r for r, _, _ in starts], device=mask.device)
            kv = [(k.index_select(0, sel), v.index_select(0, sel)) for k, v in kv_layers]
            kv_mask = mask.index_select(0, sel).clone()
            width = mask.shape[1]
            for n_row, (_, row, d) in enumerate(starts):
                a = len(self.encoded[row.probe][1])
                kv_mask[n_row, width - a + d:] = 0   # the teacher-forced answer from the departure on
            self.blocks.append(_CachedBlock([row for _, row, _ in starts], kv, kv_mask))
            self.pending_bytes += sum(k.numel() * k.element_size() * 2 for k, _ in kv)
        else:
            for _, row, _ in starts:
                row.prefix = self.encoded[row.probe][0] + row.answer
                self.plain.append(row)
        if self.pending_bytes > self.MAX_CACHE_BYTES:
            self._flush()
        self.seconds += time.perf_counter() - t0

    def budget(self, prompt_tokens: int, answer_tokens: int) -> int:
        """`answer_budget`, ending at the model's last position: the k-th answer token is fed at
        position prompt + k - 1, so an answer of n tokens feeds positions up to prompt + n - 2."""
        budget = answer_budget(answer_tokens, self.opts.max_new_tokens)
        if self.positions is not None:
            budget = min(budget, self.positions - prompt_tokens + 1)
        return budget

    def finish(self, probes):
        self._flush()
        tok, opts = self.lm.tokenizer, self.opts
        texts, correct = [], np.zeros(len(self.encoded), dtype=bool)
        for i, p in enumerate(probes):
            text = _cut_at_stop(tok.decode(self.answers[i] or []), opts.stop_strings).strip()
            texts.append(text)
            # A tokenizer that normalizes (lowercases, strips accents, splits off punctuation, has
            # [UNK] for characters it lacks) cannot spell the expected text back: a model that
            # answers with exactly the expected answer's tokens answers it as those tokens decode.
            correct[i] = answers_match(text, p.expected, opts.answer_match) or (
                i not in self.failed and answers_match(text, tok.decode(self.encoded[i][1]).strip(), opts.answer_match))
        return texts, correct, self.divergence

    def _flush(self) -> None:
        blocks, plain = self.blocks, self.plain
        self.blocks, self.plain, self.pending_bytes = [], [], 0
        if blocks:
            self._decode_cached(blocks)
        for idx in batches([len(r.prefix) for r in plain], max(self.opts.batch_size * 4, 1)):
            self._decode_plain([plain[k] for k in idx])

    def _decode_cached(self, blocks: list[_CachedBlock]) -> None:
        """One batch from several blocks: caches right-aligned into one, one copy per block and layer."""
        device = self.lm.device
        rows = [row for b in blocks for row in b.rows]
        width = max(b.mask.shape[1] for b in blocks)
        n = len(rows)
        kv = []
        for layer in range(len(blocks[0].kv)):
            k0, v0 = blocks[0].kv[layer]
            ks = k0.new_zeros((n, k0.shape[1], width, k0.shape[3]))      # (n, heads, width, head_dim)
            vs = v0.new_zeros((n, v0.shape[1], width, v0.shape[3]))
            at = 0
            for b in blocks:
                w, m = b.mask.shape[1], b.mask.shape[0]
                ks[at: at + m, :, width - w:] = b.kv[layer][0]
                vs[at: at + m, :, width - w:] = b.kv[layer][1]
                at += m
            kv.append((ks, vs))
        mask = torch.zeros((n, width + 1), dtype=torch.long, device=device)
        at = 0
        for b in blocks:
            w, m = b.mask.shape[1], b.mask.shape[0]
            mask[at: at + m, width - w: width] = b.mask
            at += m
        mask[:, -1] = 1
        for b in blocks:
            b.kv = []   # free the per-block copies before decoding
        feed = torch.tensor([[r.answer[-1]] for r in rows], device=device)
        pos = torch.tensor([[r.pos] for r in rows], device=device)
        out = self.lm.model(input_ids=feed, attention_mask=mask, position_ids=pos, use_cache=True,
                            **{self.cache_kw: _make_cache(kv)})
        self._loop(rows, out, mask, pos)

    def _decode_plain(self, rows: list[_Row]) -> None:
        ids, mask, pos = _left_pad([r.prefix for r in rows], pad_token(self.lm.tokenizer), self.lm.device)
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        self._loop(rows, out, mask, pos[:, -1:])

    def _loop(self, rows: list[_Row], out, mask, pos) -> None:
        device = self.lm.device
        budget = torch.tensor([max(0, r.budget - len(r.answer)) for r in rows], device=device)
        done = budget <= 0
        step = 0
        while not bool(done.all()):
            nxt = out.logits[:, -1, :].argmax(-1)                                     # (n,)
            is_stop = torch.isin(nxt, self.stop_ids)
            keep = (~done & ~is_stop).tolist()
            for r, t in enumerate(nxt.tolist()):
                if keep[r]:
                    rows[r].answer.append(t)
            step += 1
            done = done | is_stop | (step >= budget)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos + 1
            if self.positions is not None:
                # rows that are done are fed on with the others (their tokens are dropped): keep
                # them inside the model's positions; the rows still decoding stay there by budget
                pos = pos.clamp(max=self.positions - 1)
            cache = getattr(out, "cache", None)
            cache = cache if cache is not None else out.past_key_values
            out = self.lm.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                                use_cache=True, **{self.cache_kw: cache})
        for r in rows:
            self.answers[r.probe] = r.answer


def _kv_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per-layer (key, value) tensors, each (batch, heads, seq, head_dim), of a plain cache; else None."""
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    if layers is not None:
        if not all(type(layer).__name__ == "DynamicLayer" and getattr(layer, "keys", None) is not None
                   for layer in layers):
            return None
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):  # transformers 4.x
        return list(zip(cache.key_cache, cache.value_cache))
    return None


def _make_cache(kv):
    from transformers import DynamicCache
    return DynamicCache(kv)
