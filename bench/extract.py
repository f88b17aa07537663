"""Extraction speed: learnviz's one pass against a naive loop and against a bare forward.

Prints, for one checkpoint and the 500 SYLLO probes, in one run with the three methods
interleaved round by round (these machines are noisy; medians over rounds):
  naive / learnviz   goal >= 10: a per-probe loop, one forward with all hidden states for the
                     embeddings and another for the logprobs with a full log_softmax
  learnviz / bare    goal <= 1.3: the same length-sorted, left-padded batches through a plain
                     `model(input_ids, attention_mask, position_ids)` and nothing else
learnviz does strictly more than both (greedy answers, entropy, confidence, stop probability).

With --peer (needs `pip install lm-eval`, a bench-only dependency), the peer harness instead:
lm-eval-harness's `HFLM.loglikelihood` on the same (prompt, " " + answer) pairs and the same
loaded model, batch size and threads, interleaved round by round with learnviz's extraction. It
prints both medians (wall and this process's CPU time), `learnviz / lm-eval = R` (goal <= 1.0)
and the largest difference between the two answer loglikelihoods (goal <= 1e-4). lm-eval gets the
checkpoint as transformers builds it; learnviz's load fuses GPT-2's op-by-op GELU (learnviz.model).

    python bench/extract.py                       # the demo model (trained once, cached in .bench-cache/)
    python bench/extract.py --checkpoint DIR      # any checkpoint
    python bench/extract.py --model gpt2-small --device cuda --dtype bfloat16   # GPT-2-small from a config
    python bench/extract.py --peer                # against lm-eval-harness on the demo's last checkpoint
    python bench/extract.py --model gpt2-small-trained --device cuda --dtype bfloat16 --profile
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from learnviz import extract as ex  # noqa: E402
from learnviz.model import encode_probe, load, resolve_layers  # noqa: E402
from learnviz.probes import ProbeSet, read_probe_file  # noqa: E402
from learnviz.settings import SHIPPED_CONFIG_DIR  # noqa: E402

CACHE = ROOT / ".bench-cache"


def demo_checkpoint() -> Path:  # noqa: D401
    """The demo's last checkpoint, trained once and kept in .bench-cache/demo."""
    from learnviz.demo.train import DemoConfig, checkpoint_steps, train
    cfg = DemoConfig()
    last = CACHE / "demo" / f"checkpoint-{checkpoint_steps(cfg.steps, cfg.n_checkpoints)[-1]}"
    if not (last / "model.safetensors").exists():
        print("training the demo model once (about a minute) ...", file=sys.stderr)
        train(CACHE / "demo", cfg, progress=True)
    return last


def gpt2_small_checkpoint(tokenizer_from: Path) -> Path:
    """A GPT-2-small-sized model (12 layers, 768 wide, 50257 vocabulary), random init from a config."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
    path = CACHE / "gpt2-small"
    if not (path / "model.safetensors").exists():
        tok = AutoTokenizer.from_pretrained(tokenizer_from)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
    return path


def trained_gpt2_small(device: str, steps: int = 300) -> Path:
    """A GPT-2-small-sized model (12 layers, 768 wide; the demo's 512-token vocabulary) *trained*
    on the demo's task for `steps` steps on `device`, so that most greedy answers stop where the
    expected one does and decoding is realistic (a random model decodes every probe)."""
    from learnviz.demo.train import DemoConfig, train
    cfg = DemoConfig(steps=steps, n_checkpoints=1, n_layer=12, n_embd=768, n_head=12, lr=6e-4, warmup=30,
                     fault_at=0, device=device)
    root = CACHE / f"gpt2-small-trained-{steps}"
    last = root / f"checkpoint-{steps}"
    if not (last / "model.safetensors").exists():
        print(f"training a GPT-2-small-sized model for {steps} steps on {device} (once) ...", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        train(root, cfg, progress=False)
    return last


def profile_once(lm, probes: ProbeSet, opts, rows: int = 15) -> None:
    """One extraction under torch.profiler: the top `rows` operators by self time (device time on
    CUDA), what the issue asks the GPU run to report."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if lm.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        ex.extract(lm, probes, opts)
        sync(lm.device)
    key = "self_cuda_time_total" if lm.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def naive(lm, probes: ProbeSet, layers: list[int]) -> None:
    model, tok = lm.model, lm.tokenizer
    for p in probes:
        prompt, answer = encode_probe(tok, p.prompt, p.expected)
        ids = torch.tensor([prompt], device=lm.device)
        hidden = model(ids, output_hidden_states=True).hidden_states
        _ = [hidden[k + 1][0].float().mean(0).cpu() for k in layers]
        full = torch.tensor([prompt + answer], device=lm.device)
        logp = torch.log_softmax(model(full).logits.float(), dim=-1)                 # (1, seq, vocab)
        target = torch.tensor(answer, device=lm.device)
        _ = logp[0, len(prompt) - 1: len(prompt) + len(answer) - 1].gather(1, target[:, None]).cpu()


@torch.inference_mode()
def bare(lm, probes: ProbeSet, batch_size: int) -> None:
    enc = ex.encode_all(lm, probes, 512)
    pad = lm.tokenizer.pad_token_id
    for idx in ex.batches([len(p) + len(a) for p, a, _ in enc], batch_size):
        ids, mask, pos = ex._left_pad([enc[i][0] + enc[i][1] for i in idx], pad, lm.device)
        lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)


def peer_requests(probes: ProbeSet) -> list:
    """lm-eval Instances of the (prompt, continuation) pairs learnviz scores: the continuation is
    the expected answer as it follows the prompt (learnviz.model.answer_text)."""
    from lm_eval.api.instance import Instance

    from learnviz.model import answer_text
    return [Instance(request_type="loglikelihood", doc={}, arguments=(p.prompt, answer_text(p.prompt, p.expected)),
                     idx=i) for i, p in enumerate(probes)]


def peer_model(lm, batch_size: int):
    """lm-eval's HFLM over the same checkpoint, dtype and device, loaded as transformers builds it
    (as `HFLM(pretrained=path)` would; learnviz's own load swaps in a fused GELU, learnviz.model)."""
    import logging

    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(lm.path, dtype=lm.dtype, local_files_only=True).to(lm.device).eval()
    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return HFLM(pretrained=model, tokenizer=lm.tokenizer, batch_size=batch_size, device=str(lm.device))


def run_peer(lm, probes: ProbeSet, opts, rounds: int) -> None:
    """learnviz's extraction against lm-eval's loglikelihood, interleaved (see the docstring)."""
    try:
        hf = peer_model(lm, opts.batch_size)
    except ImportError:
        sys.exit("--peer needs lm-eval-harness: pip install lm-eval")
    reqs = peer_requests(probes)

    def score() -> list[float]:
        return [r[0] for r in hf.loglikelihood(reqs, disable_tqdm=True)]

    times: dict[str, list[float]] = {"learnviz": [], "lm-eval": []}
    cpu: dict[str, list[float]] = {"learnviz": [], "lm-eval": []}
    timed(lambda: ex.extract(lm, probes, opts), lm.device)           # warm-ups
    timed(score, lm.device)
    ours = theirs = None
    for r in range(rounds):
        order = [("learnviz", lambda: ex.extract(lm, probes, opts)), ("lm-eval", score)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            holder = {}
            c0 = time.process_time()
            times[name].append(timed(lambda fn=fn, holder=holder: holder.setdefault("r", fn()), lm.device))
            cpu[name].append(time.process_time() - c0)
            if name == "learnviz":
                ours = holder["r"]
            else:
                theirs = holder["r"]
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    diff = np.abs(ours.answer_logprob.astype(np.float64) - np.asarray(theirs, dtype=np.float64))
    print("learnviz stage timings (last round): " + ", ".join(f"{k} {v:.3f}s" for k, v in ours.timings.items()))
    for k, v in med.items():
        print(f"  {k:<9} median {v:.3f}s over {rounds} rounds  ({len(probes) / v:.0f} probes/s)  all: "
              + " ".join(f"{t:.3f}" for t in times[k]) + f"   CPU time median {med_cpu[k]:.3f}s")
    print(f"largest |answer loglikelihood difference| = {diff.max():.2e}   (goal <= 1e-4; mean {diff.mean():.1e})")
    # CPU seconds of this process: with --threads 1 they hardly depend on what else the machine runs
    print(f"learnviz / lm-eval, CPU time = {med_cpu['learnviz'] / med_cpu['lm-eval']:.2f}")
    print(f"learnviz / lm-eval = {med['learnviz'] / med['lm-eval']:.2f}   (goal <= 1.0)")


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the demo's last)")
    ap.add_argument("--model", choices=["demo", "gpt2-small", "gpt2-small-trained"], default="demo",
                    help="demo: the demo's last checkpoint; gpt2-small: GPT-2-small from a config, random init; "
                         "gpt2-small-trained: the same size trained --train-steps steps on the demo task "
                         "(on --device; realistic decoding)")
    ap.add_argument("--train-steps", type=int, default=300, help="steps for gpt2-small-trained (default 300)")
    ap.add_argument("--profile", action="store_true",
                    help="also print the top operators of one extraction (torch.profiler)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--naive-rounds", type=int, default=2, help="the naive loop is slow: fewer rounds")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default 2, this machine's cores; 1 with --peer: both sides get the "
                         "same single thread, and the figure hardly moves with what else the machine runs)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--peer", action="store_true",
                    help="time lm-eval-harness's loglikelihood on the same pairs instead (pip install lm-eval)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or (1 if args.peer else 2))

    ckpt = args.checkpoint or demo_checkpoint()
    if args.model == "gpt2-small":
        ckpt = gpt2_small_checkpoint(ckpt)
    elif args.model == "gpt2-small-trained":
        ckpt = trained_gpt2_small(args.device, args.train_steps)
    probes = ProbeSet(tuple(read_probe_file(SHIPPED_CONFIG_DIR / "probes.jsonl")))
    lm = load(ckpt, device=args.device, dtype=args.dtype)
    opts = ex.ExtractOptions(batch_size=args.batch_size)
    layers = resolve_layers(opts.layers, lm.n_layers)
    print(f"checkpoint {ckpt} ({lm.model.config.model_type}, "
          f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.1f}M "
          f"params, {lm.n_layers} layers), {len(probes)} probes, device {lm.device}, dtype {lm.dtype}, "
          f"batch {args.batch_size}")
    if args.profile:
        ex.extract(lm, probes, opts)      # warm-up
        profile_once(lm, probes, opts)
    if args.peer:
        run_peer(lm, probes, opts, args.rounds)
        return

    times: dict[str, list[float]] = {"naive": [], "learnviz": [], "bare": []}
    last = None
    timed(lambda: ex.extract(lm, probes, opts), lm.device)      # warm-up: allocator, kernels, stop-token cache
    timed(lambda: bare(lm, probes, args.batch_size), lm.device)
    for r in range(args.rounds):
        if r < args.naive_rounds:
            times["naive"].append(timed(lambda: naive(lm, probes, layers), lm.device))
        times["bare"].append(timed(lambda: bare(lm, probes, args.batch_size), lm.device))
        holder = {}
        times["learnviz"].append(timed(lambda holder=holder: holder.setdefault("r", ex.extract(lm, probes, opts)),
                                       lm.device))
        last = holder["r"]
    med = {k: statistics.median(v) for k, v in times.items() if v}
    n = len(probes)
    print(f"accuracy of this checkpoint: {last.correct.mean():.2f}; probes whose greedy answer needed decoding "
          f"beyond the one pass: {(last.first_divergence >= 0).sum()}")
    print("learnviz stage timings (last round): " + ", ".join(f"{k} {v:.3f}s" for k, v in last.timings.items()))
    for k, v in med.items():
        print(f"  {k:<9} median {v:.3f}s over {len(times[k])} rounds  ({n / v:.0f} probes/s)  all: "
              + " ".join(f"{t:.3f}" for t in times[k]))
    ratio_naive = med["naive"] / med["learnviz"] if "naive" in med else None
    ratio_bare = med["learnviz"] / med["bare"]
    if ratio_naive is not None:
        print(f"naive / learnviz = {ratio_naive:.1f}   (goal >= 10)")
    print(f"learnviz / bare  = {ratio_bare:.2f}   (goal <= 1.3)")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(ckpt), "device": str(lm.device), "dtype": str(lm.dtype),
                                         "probes": n, "median_s": med, "naive_over_learnviz": ratio_naive,
                                         "learnviz_over_bare": ratio_bare,
                                         "probes_per_s": n / med["learnviz"]}, indent=2))


if __name__ == "__main__":
    main()
