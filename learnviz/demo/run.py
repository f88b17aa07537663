"""`learnviz demo`: train the tiny model, archive its checkpoints, show what it learnt."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from .. import datalog, pipeline, readout
from ..errors import LearnvizError
from ..plugins import serve_hook
from ..settings import Settings
from .train import DemoConfig, checkpoint_steps, planted_fault_step, train


def demo_paths(settings: Settings) -> tuple[Path, Path]:
    out = Path(settings.demo_out)
    return out / "checkpoints", out / "archive"


def run_demo(settings: Settings, *, retrain: bool = False, serve: bool = True, progress: bool = True) -> Settings:
    """Train (unless the same checkpoints are already there), run the pipeline, print the status.

    Returns the settings the pipeline ran with (checkpoints and archive inside the demo folder).
    """
    ckdir, archive = demo_paths(settings)
    if settings.demo_checkpoints > settings.demo_steps:
        raise LearnvizError(f"{settings.demo_checkpoints} checkpoints of a run of {settings.demo_steps} training "
                            "steps: at most one checkpoint a step", field="--checkpoints-count",
                            hint="pass fewer checkpoints or more --steps")
    cfg = DemoConfig(steps=settings.demo_steps, n_checkpoints=settings.demo_checkpoints, seed=settings.demo_seed)
    wanted = [ckdir / f"checkpoint-{s}" for s in checkpoint_steps(cfg.steps, cfg.n_checkpoints)]
    if (retrain or not all((p / "model.safetensors").exists() for p in wanted)
            or not datalog.log_path(ckdir).exists()):
        other = not_the_demos(ckdir)
        if other is not None:       # a real run's checkpoints: never deleted to make room for the demo's
            raise LearnvizError(f"holds {other}, which the demo did not write: the demo trains into this folder "
                                "and deletes what it holds, so it left it as it is", path=ckdir, field="--out",
                                hint="pass --out a new or empty folder, or the folder of an earlier demo")
        shutil.rmtree(ckdir, ignore_errors=True)
        print(f"training the demo model: {cfg.steps} steps, {cfg.n_checkpoints} checkpoints -> {ckdir}")
        train(ckdir, cfg, progress=progress)
    else:
        print(f"using the demo checkpoints in {ckdir} (--retrain to train again)")
    # The demo wrote every checkpoint itself (atomically), so there is nothing to wait for.
    run_settings = dataclasses.replace(settings, checkpoints=str(ckdir), archive=str(archive), settle_seconds=0.0)
    report = pipeline.update(run_settings, figures=pipeline.Figures(gifs=True), progress=progress)
    print(f"archived {len(report.done)} checkpoints ({len(report.current)} already current) in {report.seconds:.1f}s")
    vis = report.visualizations or {}
    print(f"figures: {vis.get('dir', '')} ({len(vis.get('drawn', []))} drawn, {vis.get('current', 0)} current)")
    print(readout.format_status(readout.status_rows(archive)))
    fault = planted_fault_step(cfg)
    if fault is not None:
        print(f"planted fault: checkpoint-{fault} was saved with its weights perturbed by noise ({cfg.fault_noise} x "
              f"each tensor's standard deviation), on purpose; its health flags above should say so")
    if serve:
        _serve(run_settings)
    return run_settings


def not_the_demos(ckdir: Path) -> str | None:
    """The first entry of the demo's checkpoint folder that an earlier demo did not write (its
    checkpoint-N folders, whose trainer_state.json says `learnviz_demo`, their temporary folders,
    the data log, learnviz's own hidden files); None when there is none, or no folder."""
    try:
        names = sorted(p.name for p in ckdir.iterdir())
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return "a file in its place"
    for name in names:
        if name == datalog.FILE_NAME or name.startswith((".tmp-checkpoint-", ".learnviz")):
            continue
        try:
            state = json.loads((ckdir / name / "trainer_state.json").read_text())
        except (OSError, ValueError):
            state = None
        if not (name.startswith("checkpoint-") and isinstance(state, dict) and "learnviz_demo" in state):
            return name
    return None


def _serve(settings: Settings) -> None:
    serve = serve_hook()
    if serve is None:
        print(f"archives are in {settings.archive_dir()}; `learnviz status --archive {settings.archive_dir()}` "
              "shows them again (no dashboard is installed)")
        return
    serve(settings)
