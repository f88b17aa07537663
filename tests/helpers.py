"""Test helpers that build real (tiny) Hugging Face checkpoints."""

from __future__ import annotations

import functools
import json
import signal
from pathlib import Path

import torch

from learnviz.demo.train import build_tokenizer
from learnviz.scan_cache import NAME as SCAN_CACHE


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    return build_tokenizer(seed=0, vocab_size=400, corpus_size=3000)


def make_checkpoint(path: Path, tokenizer, *, step: int, seed: int = 0, n_layer: int = 2,
                    n_embd: int = 32, loss: float = 2.0) -> Path:
    """A random-init GPT-2 checkpoint with tokenizer files and a trainer_state.json."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=n_embd, n_layer=n_layer,
                        n_head=2, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model = GPT2LMHeadModel(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    state = {"global_step": step, "log_history": [
        {"step": step - 5, "loss": loss + 0.5, "learning_rate": 1e-3},
        {"step": step, "loss": loss, "learning_rate": 5e-4, "grad_norm": 1.0},
        {"step": step, "eval_loss": loss + 0.1}]}
    (path / "trainer_state.json").write_text(json.dumps(state))
    return path


def snapshot(folder: Path, *, scan_cache: bool = False) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under a folder: equal snapshots mean nothing was written.
    The scan cache (.learnviz-scan.json) is left out unless asked for: it learns checkpoints once
    their files are a few seconds old, whenever a scan comes then (test_rerun_writes_nothing holds
    it to a steady state)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and (scan_cache or p.name != SCAN_CACHE)}


def learnviz_run(settings, *, cpu_stages: bool = True, **kw):
    """What `learnviz run` does: `pipeline.update` over every checkpoint (a checkpoint folder is
    required); `cpu_stages=False` stops after the extractions."""
    from learnviz import pipeline
    from learnviz.results import EXTRACT
    stages = pipeline.STAGES if cpu_stages else (EXTRACT,)
    return pipeline.update(settings, require_checkpoints=True, stages=stages, **kw)


def run_settings(root: Path, probes: Path, **kw):
    """Settings for `learnviz run` over the checkpoint folder `root` with the probe file `probes`:
    no settle wait, no hard examples, on the CPU (`kw`: other settings)."""
    from learnviz.settings import load_settings
    return load_settings(overrides={"checkpoints": str(root), "settle_seconds": 0.0, "device": "cpu",
                                    "probes": str(probes), "hard_examples": "", **kw}, environ={})


def write_small_probes(path: Path, every: int = 12) -> Path:
    """A probe file of every `every`-th SYLLO probe (about 40, every skill): runs whose CPU stages
    must run but whose probe count does not matter stay fast."""
    from learnviz.settings import SHIPPED_CONFIG_DIR
    lines = (SHIPPED_CONFIG_DIR / "probes.jsonl").read_text().splitlines()
    path.write_text("\n".join(lines[::every]) + "\n")
    return path


def doc_blocks(doc: str, marker: str) -> list[str]:
    """The fenced code blocks of docs/<doc> that follow a `<!-- MARKER -->` line, e.g. "test: hf"
    or "file: training_status.json" (the docs' examples that tests run)."""
    import re
    text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text(encoding="utf-8")
    pattern = re.compile(r"<!-- " + re.escape(marker) + r" -->\n```\w*\n(.*?)```", re.S)
    return pattern.findall(text)


def demo_fault_step(demo) -> int | None:
    """The step of the demo's planted bad checkpoint (weights perturbed by noise, issue 15), which
    tests of what training does leave out."""
    from learnviz.demo.train import DemoConfig, planted_fault_step
    return planted_fault_step(DemoConfig(steps=demo.demo_steps, n_checkpoints=demo.demo_checkpoints,
                                         seed=demo.demo_seed))


def stop_process(proc) -> None:
    """End a server the test started: SIGTERM, then SIGKILL when it has not exited in 10 s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def default_sigint() -> None:
    """A subprocess' preexec_fn: a pytest started in the background (`pytest &`) ignores SIGINT,
    and so would its children (Python then never raises KeyboardInterrupt); the child gets the
    default back, so a test's Ctrl-C reaches it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
