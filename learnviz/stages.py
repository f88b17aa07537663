"""The stages as separately callable units, keyed by paths: what a Celery task (or any scheduler)
calls. Each is idempotent: it re-reads the checkpoint and the archive, does nothing when its result
is current, and records a failure in the archive instead of raising for bad input.

  collect_embeddings(settings, checkpoint)  GPU  extraction of one checkpoint        -> "extract"
  analyze(settings, checkpoint)             CPU  per-checkpoint analyses             -> "analysis"
  update_learning_history(settings)         CPU  geometry in step order + the series -> "geometry", series.h5
  pending(settings)                         what the periodic scan should enqueue

The embedded `learnviz run` does the same work in one process (learnviz.pipeline.run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import analyze as an
from . import archive as arc
from .checkpoints import inspect
from .pipeline import checkpoint_root, job_for, load_probes, plan, run_extract
from .settings import Settings


@dataclass
class StageResult:
    """What a stage did, as plain JSON-able values (a task returns this, never arrays)."""
    stage: str
    checkpoint: str
    step: int
    status: str          # ok | failed | current | incomplete | skipped
    reason: str = ""
    archive: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def collect_embeddings(settings: Settings, checkpoint: str | Path, *, loaded=None) -> StageResult:
    """The GPU stage for one checkpoint. `current` when its archive already holds this key."""
    probes = load_probes(settings)
    ck = inspect(checkpoint, settle_seconds=settings.settle_seconds)
    if ck.state == "incomplete":
        return StageResult("extract", str(checkpoint), ck.step, "incomplete", ck.reason)
    job = job_for(ck, settings, probes, checkpoint_root(settings))
    if not job.stages:
        return StageResult("extract", str(checkpoint), ck.step, "current", archive=str(job.archive_path))
    ok = run_extract(job, settings, probes, loaded=loaded)
    info = arc.Archive(job.archive_path).stage("extract")
    return StageResult("extract", str(checkpoint), ck.step, "ok" if ok else "failed",
                       "" if ok else (info.reason if info else ""), str(job.archive_path))


def _checkpoint_of(a: arc.Archive) -> Path:
    """The checkpoint folder an archive was made from, resolved (the root attribute `checkpoint`)."""
    return Path(str(a.attrs.get("checkpoint", ""))).resolve()


def _position(settings: Settings, checkpoint: str | Path) -> tuple[list[arc.Archive], int] | None:
    archives = an.series(settings.archive_dir())
    target = Path(checkpoint).resolve()
    for i, a in enumerate(archives):
        if _checkpoint_of(a) == target:
            return archives, i
    return None


def analyze(settings: Settings, checkpoint: str | Path) -> StageResult:
    """The per-checkpoint CPU analyses. `skipped` when the checkpoint has no successful extraction."""
    found = _position(settings, checkpoint)
    if found is None:
        return StageResult(an.ANALYSIS, str(checkpoint), -1, "skipped", "no successful extraction archived yet")
    archives, i = found
    a = archives[i]
    key = an.analysis_key(archives, i, settings)
    if a.is_current(an.ANALYSIS, key):
        return StageResult(an.ANALYSIS, str(checkpoint), a.step, "current", archive=str(a.path))
    report = an.CpuReport()
    ok = an._guard(report, a, an.ANALYSIS, lambda: an.run_analysis(archives, i, settings, key))
    return StageResult(an.ANALYSIS, str(checkpoint), a.step, "ok" if ok else "failed",
                       report.failed[0][2] if report.failed else "", str(a.path))


def update_learning_history(settings: Settings) -> dict:
    """Geometry for every checkpoint whose chain changed, then the series. JSON-able summary."""
    report = an.run_cpu_stages(settings, analysis=False)   # per-checkpoint analyses are `analyze` tasks
    return {"geometry": report.geometry, "series": report.series,
            "failed": [list(f) for f in report.failed], "seconds": report.seconds}


def pending(settings: Settings) -> list[dict]:
    """For the periodic scan: every complete checkpoint and the stages it lacks, oldest first.
    Cheap: no model is loaded and nothing heavy is imported."""
    probes = load_probes(settings)
    jobs = plan(settings, probes)
    out = [{"checkpoint": str(j.checkpoint.path), "step": j.checkpoint.step, "stages": ["extract", an.ANALYSIS]}
           for j in jobs]
    queued = {j.checkpoint.path.resolve() for j in jobs}
    archives = an.series(settings.archive_dir())
    for i, a in enumerate(archives):
        ck = _checkpoint_of(a)
        if ck not in queued and not a.is_current(an.ANALYSIS, an.analysis_key(archives, i, settings)):
            out.append({"checkpoint": str(ck), "step": a.step, "stages": [an.ANALYSIS]})
    out.sort(key=lambda d: d["step"])
    return out


def generate_visualizations(settings: Settings) -> dict:
    """The figures of the run (PNGs, GIFs) from the archives and the history: JSON-able summary.
    `skipped` until the plots module (learnviz.visualize) exists."""
    import importlib.util
    if importlib.util.find_spec(f"{__package__}.visualize") is None:
        return {"status": "skipped", "reason": "no plots module yet"}
    from . import visualize
    return visualize.generate(settings)
