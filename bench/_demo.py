"""The demo series for benchmarks: trained once and kept in .bench-cache/ (about a minute)."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".bench-cache"


def demo_checkpoints(n: int | None = None) -> Path:
    """The folder of the demo's checkpoints (all of them), trained if missing: the demo's own ten,
    or `n` checkpoints over the same 500 steps (.bench-cache/demo-<n>)."""
    from learnviz.demo.train import DemoConfig, checkpoint_steps, train
    cfg = DemoConfig() if n is None else DemoConfig(n_checkpoints=n)
    root = CACHE / ("demo" if n is None or n == DemoConfig().n_checkpoints else f"demo-{n}")
    wanted = [root / f"checkpoint-{s}" for s in checkpoint_steps(cfg.steps, cfg.n_checkpoints)]
    if not all((p / "model.safetensors").exists() for p in wanted):
        print(f"training the demo model once with {cfg.n_checkpoints} checkpoints (about a minute) ...",
              file=sys.stderr, flush=True)
        shutil.rmtree(root, ignore_errors=True)
        train(root, cfg, progress=sys.stderr.isatty())
    return root


def extracted_archive(name: str = "archive-500", *, hard_examples: bool = False,
                      checkpoints: int | None = None) -> tuple[Path, object]:
    """An archive folder of the demo series holding the extract stage only (500 SYLLO probes
    unless `hard_examples`; the demo's ten checkpoints unless `checkpoints`). Returns (folder,
    settings)."""
    from learnviz import pipeline
    from learnviz.results import EXTRACT
    from learnviz.settings import load_settings
    ck = demo_checkpoints(checkpoints)
    settings = load_settings(environ={}, overrides={
        "checkpoints": str(ck), "archive": str(CACHE / name), "settle_seconds": 0.0, "device": "cpu",
        "hard_examples": None if hard_examples else ""})
    pipeline.update(settings, stages=(EXTRACT,), require_checkpoints=True, progress=False)
    return Path(settings.archive), settings


def complete_archive(checkpoints: int | None = None) -> tuple[Path, object]:
    """The demo series with every stage (extract with the hard examples, analysis, geometry,
    series), cached in .bench-cache/archive-visualize[-N]."""
    from learnviz.pipeline import run_cpu_stages
    name = "archive-visualize" + (f"-{checkpoints}" if checkpoints else "")
    folder, settings = extracted_archive(name, hard_examples=True, checkpoints=checkpoints)
    report = run_cpu_stages(settings)
    assert not report.failed, report.failed
    return folder, settings


def copy_settings(settings, archive: Path):
    return dataclasses.replace(settings, archive=str(archive))
