"""The embedded pipeline: the stages, called in one process in order, no Redis.

`plan` decides what each checkpoint still needs (cheap: no torch import, no model load);
`run_extract` is the GPU stage for one checkpoint; `run` ties them together for `learnviz run`.
The Celery tasks in workers/ call the same stage functions one checkpoint at a time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import archive as arc
from . import history
from .checkpoints import Checkpoint, discover, fingerprint, training_metrics
from .errors import LearnvizError
from .probes import ProbeSet, load_probe_set
from .settings import Settings

STAGES = ("extract",)   # the GPU stage; the CPU stages (learnviz.analyze) follow it in `run`


@dataclass
class Job:
    """One checkpoint and the stages it still needs."""
    checkpoint: Checkpoint
    archive_path: Path
    key: arc.StageKey
    stages: list[str]


@dataclass
class RunReport:
    done: list[Path] = field(default_factory=list)        # archives written with every stage ok
    failed: list[tuple[Path, str]] = field(default_factory=list)
    incomplete: list[tuple[Path, str]] = field(default_factory=list)
    current: list[Path] = field(default_factory=list)     # already archived, nothing to do
    cpu: object = None                                    # analyze.CpuReport of the CPU stages
    visualizations: dict | None = None                    # visualize.generate's summary
    seconds: float = 0.0


def load_probes(settings: Settings) -> ProbeSet:
    return load_probe_set(settings.probes_path(), settings.hard_examples_path())


def checkpoint_root(settings: Settings) -> Path:
    if not settings.checkpoints:
        raise LearnvizError("no checkpoint folder given", field="checkpoints",
                            hint="pass --checkpoints DIR or set LEARNVIZ_CHECKPOINTS")
    return Path(settings.checkpoints)


def plan(settings: Settings, probes: ProbeSet, report: RunReport | None = None) -> list[Job]:
    """Every complete or broken checkpoint with the stages its archive lacks, oldest first."""
    root = checkpoint_root(settings)
    archive_dir = settings.archive_dir()
    jobs = []
    for ck in discover(root, settle_seconds=settings.settle_seconds, exclude=[archive_dir]):
        if ck.state == "incomplete":
            if report is not None:
                report.incomplete.append((ck.path, ck.reason))
            continue
        job = job_for(ck, settings, probes, root)
        if job.stages:
            jobs.append(job)
        elif report is not None:
            report.current.append(job.archive_path)
    return jobs


def job_for(ck: Checkpoint, settings: Settings, probes: ProbeSet, root: Path) -> Job:
    """A complete or broken checkpoint's archive path, key, and the stages it lacks (maybe none)."""
    key = arc.StageKey(fingerprint(ck), probes.hash, inputs=extract_inputs(settings))
    path = settings.archive_dir() / arc.archive_name(ck.path, root)
    needed = list(STAGES)
    if path.exists():
        try:
            existing = arc.Archive(path)
            needed = [s for s in STAGES if not existing.is_current(s, key, retry_failed=settings.retry_failed)]
        except arc.ArchiveError:
            pass  # unreadable or older schema: rebuild
    return Job(ck, path, key, needed)


def extract_inputs(s: Settings) -> str:
    """The settings that change what extraction records (not device, dtype or batch size, whose
    effect is rounding): changing one re-extracts every checkpoint."""
    import hashlib
    parts = [s.layers, s.max_length, s.max_new_tokens, s.stop_strings, s.answer_match]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def root_attrs(ck: Checkpoint, probes: ProbeSet) -> dict:
    model_class = ""
    try:
        config = json.loads((ck.path / "config.json").read_text())
        model_class = (config.get("architectures") or [config.get("model_type", "")])[0] or ""
    except (OSError, ValueError):
        pass
    return {"step": ck.step, "checkpoint": str(ck.path.resolve()), "checkpoint_name": ck.name,
            "model_class": model_class, "probe_count": len(probes),
            "probe_sources": list(probes.sources)}


def probe_table(probes: ProbeSet) -> dict:
    """The probe set itself, stored in every archive so it reads without the config files."""
    return {"probe_skill": np.asarray([p.skill for p in probes], dtype=object),
            "probe_category": np.asarray([p.category for p in probes], dtype=object),
            "prompt": np.asarray([p.prompt for p in probes], dtype=object),
            "expected": np.asarray([p.expected for p in probes], dtype=object)}


def run_extract(job: Job, settings: Settings, probes: ProbeSet, *, progress: bool = False,
                loaded=None) -> bool:
    """The GPU stage for one checkpoint: load, one pass over the probes, archive. True when ok.

    A broken checkpoint or any error while loading or running is recorded as a failed stage
    with its reason; the caller goes on with the next checkpoint.
    """
    from .extract import ExtractOptions, extract
    from .model import load

    ck = job.checkpoint
    started = arc.now_iso()
    t0 = time.perf_counter()
    attrs = root_attrs(ck, probes)
    if ck.state == "broken":
        arc.write_stage(job.archive_path, "extract", key=job.key, root_attrs=attrs, status="failed",
                        reason=ck.reason, started=started)
        return False
    lm = None
    try:
        lm = loaded or load(ck.path, device=settings.device, dtype=settings.dtype,
                            trust_remote_code=settings.trust_remote_code)
        t_load = time.perf_counter() - t0
        bar = _bar(len(probes), f"extract {ck.name}", progress, unit="probe")
        try:
            result = extract(lm, probes, ExtractOptions.from_settings(settings), progress=bar.update)
        finally:
            bar.close()
        data = {**result.to_archive(), **probe_table(probes)}
        timings = {"load": t_load, **result.timings}
        arc.write_stage(job.archive_path, "extract", key=job.key, root_attrs=attrs, data=data,
                        attrs={"layers": result.layers, "n_layers": lm.n_layers, "device": str(lm.device),
                               "dtype": str(lm.dtype).replace("torch.", ""),
                               "answer_match": settings.answer_match},
                        timings=timings, started=started)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad checkpoint must not stop the others
        reason = str(exc) if isinstance(exc, LearnvizError) else f"{type(exc).__name__}: {exc}"
        arc.write_stage(job.archive_path, "extract", key=job.key, root_attrs=attrs, status="failed",
                        reason=reason, started=started, timings={"total": time.perf_counter() - t0})
        return False
    finally:
        if lm is not None and loaded is None:
            lm.free()
    update_history(job, settings, probes, result)
    return True


def skill_accuracy(correct: np.ndarray, skills: list[str]) -> dict[str, float]:
    """Accuracy per skill, in first-seen order of the skills."""
    out: dict[str, list] = {}
    for ok, skill in zip(correct, skills):
        out.setdefault(skill, []).append(bool(ok))
    return {k: float(np.mean(v)) for k, v in out.items()}


def update_history(job: Job, settings: Settings, probes: ProbeSet, result) -> None:
    """Append this checkpoint's row: training metrics from trainer_state.json and accuracy."""
    ck = job.checkpoint
    row = {"step": ck.step, "timestamp": arc.now_iso(), "checkpoint": ck.name,
           "probe_hash": probes.hash, **training_metrics(ck.path, ck.step),
           "accuracy": float(np.mean(result.correct)) if len(result.correct) else None,
           "mean_answer_logprob": float(np.mean(result.answer_logprob)) if len(result.correct) else None,
           "skill_scores": skill_accuracy(result.correct, [p.skill for p in probes])}
    history.append(settings.archive_dir(), row)


def run(settings: Settings, *, progress: bool = True, probes: ProbeSet | None = None,
        cpu_stages: bool = True, visualize: bool = True, gifs: bool = False) -> RunReport:
    """`learnviz run`: every stage for every complete checkpoint that lacks it: extraction, then
    the CPU stages (analysis, geometry, series) over the whole archived series, then the figures
    (incremental; GIFs only when `gifs`, as they are made on demand)."""
    t0 = time.perf_counter()
    probes = probes or load_probes(settings)
    report = RunReport()
    jobs = plan(settings, probes, report)
    if jobs:
        bar = _bar(len(jobs), "checkpoints", progress and len(jobs) > 1, unit="ckpt")
        for job in jobs:
            ok = True
            if "extract" in job.stages:
                ok = run_extract(job, settings, probes, progress=progress)
            if ok:
                report.done.append(job.archive_path)
            else:
                info = arc.Archive(job.archive_path).stage("extract")
                report.failed.append((job.checkpoint.path, info.reason if info else "unknown"))
            bar.update(1)
        bar.close()
    if cpu_stages:
        from .analyze import run_cpu_stages
        report.cpu = run_cpu_stages(settings, progress=progress)
        if visualize:
            from .visualize import generate
            report.visualizations = generate(settings, gifs=gifs)
    report.seconds = time.perf_counter() - t0
    return report


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool, unit: str = "it"):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False)


@dataclass
class StatusRow:
    step: int
    name: str
    stages: dict[str, str]            # stage -> ok | failed
    reason: str                       # first failure reason, if any
    accuracy: float | None
    skills: dict[str, float]


def archive_accuracy(a: arc.Archive) -> tuple[float | None, dict[str, float]]:
    """Share of probes answered right, overall and per skill, of one archive ((None, {}) without a
    successful extraction). Read once per version of the archive file (`Archive.memo`)."""
    def compute() -> tuple[float | None, dict[str, float]]:
        info = a.stage("extract")
        if info is None or not info.ok:
            return None, {}
        data = a.read("extract", ["correct", "probe_skill"])
        if not len(data["correct"]):
            return None, {}
        return float(np.mean(data["correct"])), skill_accuracy(data["correct"], list(data["probe_skill"]))
    return a.memo("accuracy", compute)


def status_rows(archive_dir: str | Path) -> list[StatusRow]:
    """One row per archived checkpoint: stage states and per-skill accuracy."""
    rows = []
    for a in arc.list_archives(archive_dir):
        order = {"extract": 0, "analysis": 1, "geometry": 2}
        stages = {name: a.stages[name].status for name in sorted(a.stages, key=lambda n: (order.get(n, 9), n))}
        reason = next((info.reason for info in a.stages.values() if not info.ok), "")
        accuracy, skills = archive_accuracy(a)
        rows.append(StatusRow(a.step, a.attrs.get("checkpoint_name", a.path.stem), stages, reason, accuracy, skills))
    return rows
