"""The demo's tiny trainer: a GPT-2-style causal LM trained from scratch on SYLLO, on the CPU.

It writes checkpoints in the Hugging Face Trainer layout (`checkpoint-N/` with config.json,
model.safetensors, tokenizer files and trainer_state.json with log_history), each written into a
temporary folder and renamed into place, so a watcher never sees half a checkpoint.

The training data comes from two sources whose mix changes mid-run (`hard_share`): `easy_chains`
(SYLLO's easy and medium chains and edge cases) alone for the first `hard_from` of the steps, then
`hard_chains` (shuffled four-premise chains with a distractor) mixed in at a share that ramps up.
Which source fed which steps goes to `data_log.jsonl` beside the checkpoints (learnviz.datalog),
for the data impact analysis. One checkpoint (`fault_at`) is a planted fault: it is saved with its
weights perturbed by noise (training itself goes on from the clean weights), so the health flags
have a broken checkpoint to find.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import datalog, syllo
from ..model import encode_probes

EOS = "<|endoftext|>"
EASY_SOURCE, HARD_SOURCE = "easy_chains", "hard_chains"
# easy_chains: the SYLLO training mix without its hard chains
EASY_MIX = {k: v for k, v in syllo.TRAINING_MIX.items() if k != "syllo_hard"}


@dataclass
class DemoConfig:
    steps: int = 500            # optimizer steps
    n_checkpoints: int = 10     # checkpoints written, dense early (see checkpoint_steps)
    seed: int = 0
    batch_size: int = 32        # examples per step
    lr: float = 3e-3            # peak learning rate (AdamW), after linear warm-up
    warmup: int = 30            # warm-up steps
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128      # longest prompt+answer is about 60 tokens
    vocab_size: int = 512       # BPE vocabulary trained on the task's text
    log_every: int = 10         # steps between log_history rows
    threads: int = 2            # torch CPU threads
    hard_from: float = 0.4      # share of the steps trained on easy_chains alone
    hard_start: float = 0.1     # hard_chains' share of the examples right after hard_from ...
    # (0.3 made the switch a shock: on some machines' float arithmetic the checkpoint just after it
    # forgot 14% of its right answers and was flagged regression_burst beside the planted fault)
    hard_end: float = 0.7       # ... ramping up to this at the last step
    fault_at: int = 8           # the planted fault: this checkpoint (1-based) is saved with noisy weights; 0: none
    fault_noise: float = 1.0    # its noise: per tensor, Gaussian with this times the tensor's standard deviation
    device: str = "cpu"         # where it trains (bench/extract.py --trained trains a GPT-2-small on "cuda")


def hard_share(step: int, cfg: DemoConfig) -> float:
    """The share of hard_chains examples at `step` (1-based): 0 until hard_from, then a ramp."""
    start = cfg.hard_from * cfg.steps
    if step <= start:
        return 0.0
    return cfg.hard_start + (cfg.hard_end - cfg.hard_start) * (step - start) / max(1.0, cfg.steps - start)


def planted_fault_step(cfg: DemoConfig) -> int | None:
    """The step of the checkpoint saved with noisy weights, or None."""
    steps = checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    return steps[cfg.fault_at - 1] if 1 <= cfg.fault_at <= len(steps) else None


def _example(rng: random.Random, step: int, cfg: DemoConfig) -> tuple[str, syllo.Example]:
    """One training example at `step`, and the source it came from."""
    if rng.random() < hard_share(step, cfg):
        return HARD_SOURCE, syllo.hard(rng)
    skill = rng.choices(list(EASY_MIX), weights=list(EASY_MIX.values()))[0]
    return EASY_SOURCE, syllo.GENERATORS[skill](rng)


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """n steps from early to `steps`, spaced as (i/n)^1.7 so the fast early learning is sampled densely."""
    out: list[int] = []
    for i in range(1, n + 1):
        s = max(1, round(steps * (i / n) ** 1.7))
        while out and s <= out[-1]:
            s += 1
        out.append(s)
    out[-1] = max(out[-1], steps)
    return out


def build_tokenizer(seed: int, vocab_size: int = 512, corpus_size: int = 20000):
    """A byte-level BPE tokenizer (GPT-2 style) trained on SYLLO text with the `tokenizers` package."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stream = syllo.training_stream(seed + 1)
    corpus = []
    for _ in range(corpus_size):
        ex = next(stream)
        corpus.append(ex.prompt + " " + ex.expected)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   model_max_length=128)


def _batch(examples, tokenizer, eos_id: int):
    """Right-padded (input_ids, attention_mask, labels); loss only on answer tokens and the EOS."""
    pairs = encode_probes(tokenizer, [ex.prompt for ex in examples], [ex.expected for ex in examples])
    rows = [(p, a + [eos_id]) for p, a in pairs]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), eos_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, a) in enumerate(rows):
        seq = p + a
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p): len(seq)] = torch.tensor(a)
    return ids, mask, labels


def _lr(step: int, cfg: DemoConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out_dir: str | Path, cfg: DemoConfig | None = None, *, progress: bool = True,
          on_checkpoint=None) -> list[Path]:
    """Train the demo model and write its checkpoints under `out_dir`. Returns their folders.

    `on_checkpoint(path)` is called after each checkpoint lands (the demo uses it for its
    progress line; a watcher would see the same folders appear).
    """
    from tqdm.auto import tqdm
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # transformers' "Writing model shards" bar: ours says enough
    hf_logging.set_verbosity_error()
    cfg = cfg or DemoConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    tokenizer = build_tokenizer(cfg.seed, cfg.vocab_size)
    eos_id = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=eos_id, eos_token_id=eos_id,
                        pad_token_id=eos_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).to(cfg.device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)

    data_rng = random.Random(cfg.seed)
    fault_step = planted_fault_step(cfg)
    fed: dict[str, int] = {}        # examples per source since the last data log row
    eval_rng = random.Random(cfg.seed + 7)
    eval_batch = tuple(t.to(cfg.device) for t in
                       _batch([syllo.training_example(eval_rng) for _ in range(256)], tokenizer, eos_id))
    save_at = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints))
    log_history: list[dict] = []
    written: list[Path] = []
    running, since = 0.0, 0
    t0 = time.time()
    bar = tqdm(total=cfg.steps, desc="train demo model", unit="step", disable=not progress)
    for step in range(1, cfg.steps + 1):
        lr = _lr(step - 1, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        drawn = [_example(data_rng, step, cfg) for _ in range(cfg.batch_size)]
        for source, _ in drawn:
            fed[source] = fed.get(source, 0) + 1
        ids, mask, labels = (t.to(cfg.device) for t in _batch([ex for _, ex in drawn], tokenizer, eos_id))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        running += loss.item()
        since += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step in save_at:
            n = since       # the steps since the last row (a checkpoint between two log steps writes one)
            log_history.append({"epoch": round(step / cfg.steps, 4), "grad_norm": round(grad_norm, 4),
                                "learning_rate": lr, "loss": round(running / n, 4), "step": step})
            bar.set_postfix(loss=f"{running / n:.3f}")
            running, since = 0.0, 0
            datalog.append(out_dir, step, fed)
            fed = {}
        if step in save_at:
            saved = _planted_fault(model, cfg) if step == fault_step else model
            saved.eval()
            with torch.inference_mode():
                eval_loss = saved(input_ids=eval_batch[0], attention_mask=eval_batch[1],
                                  labels=eval_batch[2]).loss.item()
            model.train()
            log_history.append({"epoch": round(step / cfg.steps, 4), "eval_loss": round(eval_loss, 4),
                                "step": step})
            path = _save(out_dir, step, saved, tokenizer, cfg, log_history, time.time() - t0,
                         planted_fault=step == fault_step)
            del saved
            written.append(path)
            if on_checkpoint:
                on_checkpoint(path)
    bar.close()
    return written


def _planted_fault(model, cfg: DemoConfig):
    """A copy of `model` with every floating-point tensor perturbed by Gaussian noise of
    `fault_noise` times its standard deviation (a generator of its own: training's random
    state is left as it is)."""
    import copy
    broken = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(cfg.seed + 1234)
    with torch.no_grad():
        for p in broken.parameters():
            if p.is_floating_point() and p.numel() > 1:
                p.add_((torch.randn(p.shape, generator=gen) * (cfg.fault_noise * float(p.std()))).to(p.device))
    return broken


def _save(out_dir: Path, step: int, model, tokenizer, cfg: DemoConfig, log_history, elapsed: float, *,
          planted_fault: bool = False) -> Path:
    final = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f".tmp-checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    state = {
        "best_metric": None, "best_model_checkpoint": None,
        "epoch": round(step / cfg.steps, 4), "eval_steps": None, "global_step": step,
        "is_hyper_param_search": False, "is_local_process_zero": True, "is_world_process_zero": True,
        "log_history": list(log_history), "logging_steps": cfg.log_every, "max_steps": cfg.steps,
        "num_train_epochs": 1, "save_steps": None, "train_batch_size": cfg.batch_size,
        "trial_name": None, "trial_params": None, "total_flos": 0,
        "learnviz_demo": {**asdict(cfg), "train_seconds": round(elapsed, 2), "planted_fault": planted_fault},
    }
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
