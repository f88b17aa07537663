"""The orchestrator: the one place that decides which stages run on which checkpoints.

`update(settings, which=..., stages=...)` brings a run up to date: extraction of the checkpoints
that lack it (learnviz.collect), the CPU stages in step order (learnviz.analyze), then the figures
(learnviz.visualize). `learnviz run`, `analyze`, `radar`, `embed`, `hard-examples`, `visualize`
and `demo` all call it with their choice of checkpoints and stages.

The distributed mode runs the same stages one checkpoint at a time; its Celery tasks call the
per-stage entry points below (`collect_embeddings`, `analyze_checkpoint`,
`update_learning_history`, `generate_visualizations`) and the beat calls `pending` and
`history_stale`. Every entry point is idempotent: it re-reads the checkpoint and the archive, does
nothing when the result is current, and records a failure in the archive instead of raising.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from . import analyze as an
from . import archive as arc
from . import collect, status_files
from .checkpoints import MAX_STEP, STEP_NAMES, candidate_paths, deeper_roots, find_runs, inspect
from .common import progress_bar
from .errors import LearnvizError, WriteError
from .probes import ProbeSet
from .readout import checkpoint_of, chosen_steps, left_out, run_archives, series, series_of
from .results import ANALYSIS, EXTRACT, GEOMETRY, SERIES
from .settings import Settings

FIGURES = "figures"
STAGES = (EXTRACT, ANALYSIS, GEOMETRY, SERIES, FIGURES)
CPU_STAGES = (ANALYSIS, GEOMETRY, SERIES)
RUN_LOCK = "run.lock"


@dataclass
class Figures:
    """What `update` draws at the end (learnviz.visualize.generate's options)."""
    only: list[str] | None = None     # figure groups (visualize.GROUPS); None: all
    gifs: bool = False                # also the animated GIFs (made on demand)
    force: bool = False               # redraw even when current
    probe: str | None = None          # probe id of the canonical-answer heatmap
    chosen_only: bool = False         # per-checkpoint images only for the chosen checkpoints


@dataclass
class CpuReport:
    analysed: list[int] = field(default_factory=list)
    geometry: list[int] = field(default_factory=list)
    series: bool = False
    failed: list[tuple[int, str, str]] = field(default_factory=list)   # (step, stage, reason)
    seconds: float = 0.0
    unreadable: list[arc.Unreadable] = field(default_factory=list)      # the folder's unreadable archives
    waiting: dict[str, list[int]] = field(default_factory=dict)         # stage -> steps held back by them
    series_waiting: bool = False                                        # the series, held back by them
    left_out: list[tuple[int, str]] = field(default_factory=list)       # (step, why): broken checkpoints the
                                                                        # series left out (learnviz.series_stage)

    @property
    def changed(self) -> bool:
        return bool(self.analysed or self.geometry or self.series or self.failed or self.unreadable
                    or self.left_out)


@dataclass
class RunReport:
    steps: list[int] = field(default_factory=list)          # the archived steps chosen
    done: list[Path] = field(default_factory=list)          # archives whose extraction succeeded now
    failed: list[tuple[Path, str]] = field(default_factory=list)
    incomplete: list[tuple[Path, str]] = field(default_factory=list)
    current: list[Path] = field(default_factory=list)       # already archived, nothing to do
    cpu: CpuReport | None = None                            # the CPU stages, when they ran
    visualizations: dict | None = None                      # visualize.generate's summary, when drawn
    seconds: float = 0.0
    checkpoint_root: Path | None = None                     # where extraction looked, when it ran
    found: int | None = None                                # checkpoints found there (any state), when it ran
    set_aside: list[tuple[Path, Path, str]] = field(default_factory=list)   # (damaged archive, moved to, why)
    # (archive, its old probe set's hash, this run's): archives of another probe set, rebuilt now
    replaced_probes: list[tuple[Path, str, str]] = field(default_factory=list)
    unreadable: list[arc.Unreadable] = field(default_factory=list)          # in the folder after this run
    failed_total: int = 0       # archives in the folder with a failed stage or unreadable, after this run
    gone: list[Path] = field(default_factory=list)          # checkpoints deleted while they were processed
    status: status_files.Ingested | None = None             # the status files ingested, with --status-dir
    run: str = ""                                           # the run's name ("" : the root is the run)
    archive_dir: Path | None = None                         # the run's archive folder
    runs: list["RunReport"] = field(default_factory=list)   # one report per run, when the root holds several
    notes: list[tuple[Path, str]] = field(default_factory=list)   # (checkpoint, what its ok extraction says:
                                                                   # the probes that failed alone)
    beside: list[tuple[Path, str]] = field(default_factory=list)  # (folder, why): models saved beside the
                                                                   # checkpoints, not archived (collect.plan)

    @property
    def ok(self) -> bool:
        """Nothing failed in this run, and no archive of the folder is unreadable (an unreadable one
        holds back the CPU stages of every later checkpoint)."""
        if self.runs:
            return all(r.ok for r in self.runs)
        vis_failed = bool(self.visualizations and self.visualizations.get("failed"))
        return (not self.failed and not (self.cpu is not None and self.cpu.failed) and not vis_failed
                and not self.unreadable)

    @classmethod
    def of_runs(cls, reports: list["RunReport"]) -> "RunReport":
        """The report of several runs: each run's report in `runs`, the lists joined."""
        out = cls(runs=reports, seconds=sum(r.seconds for r in reports))
        for name in ("steps", "done", "failed", "incomplete", "current", "set_aside", "unreadable", "gone", "beside"):
            setattr(out, name, [x for r in reports for x in getattr(r, name)])
        out.failed_total = sum(r.failed_total for r in reports)
        out.found = sum(r.found or 0 for r in reports) if any(r.found is not None for r in reports) else None
        out.checkpoint_root = reports[0].checkpoint_root if reports else None
        return out


def runs(settings: Settings, *, archived: bool = False) -> list[tuple[str, Settings]]:
    """The runs the settings name, each as (name, its own settings): the runs under the checkpoint
    folder (checkpoints.find_runs) when one is set, else those of the archive folder
    (readout.run_archives). `archived` (a reader: `learnviz status`): a root with no checkpoint
    under it (only the archives copied here, every checkpoint deleted) has the runs its archive
    folder holds. A root that is itself the run is the one run "", with the settings as
    they are (today's layout: archives straight in the archive folder); each run of a root that
    holds several gets `<archive>/<run name>/` as its archive folder and its folder as its
    checkpoint folder. Nothing is merged across runs."""
    top = settings.archive_dir()
    if settings.checkpoints and Path(settings.checkpoints).is_dir():
        root = Path(settings.checkpoints)
        found = [(r.name, r.path) for r in find_runs(root, exclude=[top])]
        if archived and found == [("", root)] and not candidate_paths(root, exclude=[top], nested=False):
            # no checkpoint under the root (only the archives were copied here, or every checkpoint
            # was deleted after the training): the runs are those its archive folder holds, each
            # with its checkpoint folder where that is still there
            held = run_archives(top)
            if any(name for name, _ in held):
                found = [(name, root / name if (root / name).is_dir() else None) for name, _ in held]
    else:
        found = [(name, None) for name, _ in run_archives(top)]
    out = []
    for name, path in found:
        if not name:
            out.append((name, settings))
            continue
        changes = {"archive": str(top / name)}
        if path is not None:
            changes["checkpoints"] = str(path)
        out.append((name, dataclasses.replace(settings, **changes)))
    return out


def run_of_checkpoint(settings: Settings, checkpoint: str | Path) -> Settings:
    """The settings of the run a checkpoint folder belongs to (see `runs`): those of its parent
    folder's run when that is a run of several under the checkpoint root, else `settings`."""
    if not settings.checkpoints:
        return settings
    parent = Path(checkpoint).resolve().parent
    for name, rs in runs(settings):
        if name and Path(rs.checkpoints).resolve() == parent:
            return rs
    return settings


def load_probes(settings: Settings) -> ProbeSet:
    return collect.load_probes(settings)


def update(settings: Settings, *, which: str = "all", stages: tuple[str, ...] = STAGES, force: bool = False,
           figures: Figures | None = None, require_checkpoints: bool = False, progress: bool = True,
           probes: ProbeSet | None = None) -> RunReport:
    """Bring a run up to date (see `_update`), holding the run's lock: a second `learnviz run` (or
    analyze, radar, ...) on the same archive folder waits for the first, then finds its work done,
    instead of doing every stage twice."""
    # Bad input is an error before anything is written (the lock makes the archive folder,
    # whose default place is inside the checkpoint folder).
    chosen_steps([], which)
    if EXTRACT in stages and (settings.checkpoints or require_checkpoints):
        require_checkpoint_folder(settings)
        probes = probes or load_probes(settings)
    reports, errors = [], []
    every = runs(settings)
    for name, rs in every:
        try:
            with run_lock(rs.archive_dir()):
                report = _update(rs, which=which, stages=stages, force=force, figures=figures,
                                 require_checkpoints=require_checkpoints, progress=progress, probes=probes)
                if report.done or report.failed or report.set_aside or (report.cpu is not None and report.cpu.changed):
                    arc.flush_index(rs.archive_dir())   # headers and accuracies, for the next process;
                    # a run that found everything current writes nothing
        except LearnvizError as exc:   # `--checkpoint 2000` that one run of several lacks
            if len(every) == 1 or isinstance(exc, WriteError):
                raise
            errors.append(exc)
            continue
        report.run, report.archive_dir = name, rs.archive_dir()
        reports.append(report)
    if not reports:
        raise errors[0]
    return reports[0] if len(every) == 1 else RunReport.of_runs(reports)


def watch(settings: Settings, *, interval: float, stop: Callable[[float], bool],
          on_report: Callable[[RunReport], None] | None = None, figures: Figures | None = None,
          progress: bool = False) -> int:
    """`learnviz run --watch`: `update` every checkpoint of every run (all stages, the figures
    redrawn where their inputs changed), again and again, until `stop(seconds)` (which waits up to
    `seconds` between two passes) says so. No Redis: it is the embedded pipeline in a loop. A
    checkpoint shows up once it has settled; one deleted while it is processed is `gone`, not
    failed; the archives of deleted checkpoints stay in the series. Interrupted (KeyboardInterrupt,
    which the CLI also makes of SIGTERM), it leaves no partial archive: every archive write is a
    temporary file put in place at once, and removed when interrupted. Returns the passes made."""
    require_checkpoint_folder(settings)
    probes = load_probes(settings)
    passes = 0
    while True:
        report = update(settings, require_checkpoints=True, figures=figures, progress=progress, probes=probes)
        passes += 1
        if on_report is not None:
            on_report(report)
        if stop(interval):
            return passes


@contextmanager
def run_lock(archive_dir: Path, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """The lock of one archive folder's writers (a lock file under <archive>/.locks/). Another
    holder makes this wait, after saying who holds it (`on_wait`, default: a line on stderr)."""
    lock_dir = Path(archive_dir) / arc.LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock, holder = FileLock(str(lock_dir / RUN_LOCK)), lock_dir / (RUN_LOCK + ".holder")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = holder.read_text(encoding="utf-8").strip()
        except OSError:
            who = "another process"
        (on_wait or _say)(f"learnviz: waiting for {who} to finish updating {archive_dir}{_stopped(who)}")
        lock.acquire()
    try:
        holder.write_text(f"{arc.worker_id()} (since {arc.now_iso()})", encoding="utf-8")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _stopped(who: str) -> str:
    """What to do when the lock's holder (`worker_id` "host:pid (since ...)") is a process of this
    machine that is stopped (Ctrl-Z, SIGSTOP): it keeps the lock and this would wait forever."""
    host, _, rest = who.partition(" ")[0].rpartition(":")
    if not rest.isdigit() or host not in (socket.gethostname(), os.environ.get("LEARNVIZ_WORKER_NAME")):
        return ""
    try:      # /proc/PID/stat: "pid (comm) state ...", comm may hold spaces and parentheses
        state = Path(f"/proc/{rest}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""
    if state not in ("T", "t"):
        return ""
    return (f"; process {rest} is stopped (Ctrl-Z?) and holds the lock until it goes on: "
            f"`fg` in its shell or `kill -CONT {rest}` resumes it, `kill {rest}` ends it")


def written_here() -> dict[str, list[str]]:
    """The archive files this process wrote (name -> stages), each put in place whole: what the
    CLI says is kept when an interrupt stops a command."""
    return arc.written_here()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _update(settings: Settings, *, which: str = "all", stages: tuple[str, ...] = STAGES, force: bool = False,
            figures: Figures | None = None, require_checkpoints: bool = False, progress: bool = True,
            probes: ProbeSet | None = None) -> RunReport:
    """Bring a run up to date for a choice of checkpoints and stages.

    `which`: "all", "latest" or a step number. "latest" is the newest checkpoint on disk unless an
    archived one is newer. `stages`: any of STAGES. Extraction runs when a checkpoint folder is set
    (`require_checkpoints`: it must be); the CPU stages run for the chosen checkpoints (and the
    layout chain up to them); the figures are drawn with `figures` (default: Figures()).
    `force` recomputes the chosen checkpoints' stages even when current (their extraction too,
    when it runs).
    A checkpoint or stage that fails is recorded and the others go on. LearnvizError when
    `which` names no archived checkpoint.
    """
    t0 = time.perf_counter()
    report = RunReport()
    if EXTRACT in stages and (settings.checkpoints or require_checkpoints):
        _extract(settings, which, report, progress=progress, probes=probes, force=force)
        collect.restore_history(settings)
        if settings.status_dir:   # before the figures, which read the history
            report.status = status_files.ingest(settings.status_dir, settings.archive_dir())
    every = arc.list_archives(settings.archive_dir())
    kept = series_of(every)
    archived = [a.step for a in kept]
    if which != "all" and not archived:
        raise LearnvizError("no archived checkpoints" if not every else "no archived checkpoint has a usable "
                            "extraction", path=settings.archive_dir(),
                            hint="pass --checkpoints DIR, or run `learnviz run --checkpoints DIR` first" if not every
                            else f"`learnviz status --archive {settings.archive_dir()}` shows what failed")
    report.steps = chosen_steps(archived, which, left_out(every, kept) if str(which).isdigit() else None)
    if any(s in stages for s in CPU_STAGES):
        report.cpu = run_cpu_stages(settings, steps=None if which == "all" else set(report.steps),
                                    analysis=ANALYSIS in stages, force=force, progress=progress)
    if FIGURES in stages:
        from .visualize import generate
        f = figures or Figures()
        report.visualizations = generate(settings, gifs=f.gifs, only=f.only, force=f.force, probe=f.probe,
                                         steps=report.steps if f.chosen_only else None)
    # what stands in the folder now, earlier runs' failures included: a summary that counted only
    # this run's would say "0 failed" over a run with failed checkpoints
    listing = arc.scan_archives(settings.archive_dir())
    report.unreadable = listing.unreadable
    report.failed_total = len(listing.unreadable) + sum(
        1 for a in listing.archives if any(not info.ok for info in a.stages.values()))
    report.seconds = time.perf_counter() - t0
    return report


def _extract(settings: Settings, which: str, report: RunReport, *, progress: bool, probes: ProbeSet | None,
             force: bool = False) -> None:
    """The GPU stage for the chosen checkpoints that lack a current extraction.

    A checkpoint whose archive another learnviz wrote (another schema_version or an unknown
    encoding) is recorded as failed with the archive's reason and its file is left as it is. A
    damaged archive is moved aside to `<name>.corrupt` first (`report.set_aside`), then rebuilt.
    """
    probes = probes or load_probes(settings)
    refused: list[tuple] = []
    damaged: list[tuple[Path, str]] = []
    report.checkpoint_root = collect.checkpoint_root(settings)
    jobs = collect.plan(settings, probes, incomplete=report.incomplete, current=report.current,
                        refused=refused, damaged=damaged, beside=report.beside, force=force)
    report.found = len(jobs) + len(report.current) + len(report.incomplete) + len(refused)
    if which == "latest":   # the newest checkpoint on disk, unless an archived one is newer
        newest_archived = max((a.step for a in series(settings.archive_dir())), default=-1)
        newest = max([j.checkpoint.step for j in jobs] + [ck.step for ck, _ in refused if ck.step <= MAX_STEP],
                     default=-1)     # (a step beyond MAX_STEP is no training step: never the latest)
        if newest < newest_archived:
            newest = None
        jobs = [j for j in jobs if j.checkpoint.step == newest][:1]
        refused = [(ck, why) for ck, why in refused if ck.step == newest][:1] if not jobs else []
    elif which != "all":
        jobs = [j for j in jobs if j.checkpoint.step == int(which)]
        refused = [(ck, why) for ck, why in refused if ck.step == int(which)]
    for ck, why in refused:
        report.failed.append((ck.path, why))
    damaged_now = dict(damaged)
    bar = progress_bar(len(jobs), "checkpoints", progress and len(jobs) > 1, unit="ckpt")
    for job in jobs:
        try:
            if job.archive_path in damaged_now:
                moved = arc.set_aside(job.archive_path)
                if moved is not None:
                    report.set_aside.append((job.archive_path, moved, damaged_now[job.archive_path]))
            ok = collect.run_extract(job, settings, probes, progress=progress)
            if job.old_probe_hash:
                report.replaced_probes.append((job.archive_path, job.old_probe_hash, probes.hash))
        except collect.CheckpointGone:
            report.gone.append(job.checkpoint.path)
            bar.update(1)
            continue
        except arc.ArchiveError as exc:   # turned foreign or unreadable since the plan: left as it is
            report.failed.append((job.checkpoint.path, str(exc)))
            bar.update(1)
            continue
        try:
            info = arc.Archive(job.archive_path).stage(EXTRACT)
        except arc.ArchiveError:
            info = None
        if ok:
            report.done.append(job.archive_path)
            if info is not None and info.reason:      # probes that failed alone
                report.notes.append((job.checkpoint.path, info.reason))
        else:
            report.failed.append((job.checkpoint.path, info.reason if info else "unknown"))
        bar.update(1)
    bar.close()


# ---------------------------------------------------------------- the CPU stages

def run_cpu_stages(settings: Settings, *, steps: set[int] | None = None, analysis: bool = True,
                   force: bool = False, progress: bool = False) -> CpuReport:
    """Every CPU stage that is not current, in step order.

    `steps` limits the work to those checkpoints (`learnviz analyze --checkpoint`): their analysis,
    and the geometry chain up to the last of them. `analysis=False` leaves the per-checkpoint
    analyses out (the distributed mode runs them as tasks of their own). `force` recomputes the
    chosen checkpoints even when current. A stage that raises is recorded as failed and the
    others go on. While an archive of the folder is unreadable, the stages it would change wait
    (`Holdback`; `report.waiting`), `force` or not.
    """
    t0 = time.perf_counter()
    report = CpuReport()
    archive_dir = settings.archive_dir()
    listing = arc.scan_archives(archive_dir)
    hold = Holdback(listing.unreadable)
    report.unreadable = listing.unreadable
    archives = series_of(listing.archives)
    if not archives:
        report.seconds = time.perf_counter() - t0
        return report
    chosen = [i for i, a in enumerate(archives) if steps is None or a.step in steps]
    akeys = an.analysis_keys(archives, chosen, settings) if analysis else {}
    todo_a = [i for i in chosen if analysis and (force or not archives[i].is_current(ANALYSIS, akeys[i]))]
    gkeys = an.geometry_keys(archives, settings)
    last_needed = max(chosen) if chosen else -1
    todo_g = [i for i in range(last_needed + 1)
              if (force and i in chosen) or not archives[i].is_current(GEOMETRY, gkeys[i])]
    if todo_g:  # a recomputed layout moves every later one: follow the chain to the end
        todo_g = list(range(todo_g[0], len(archives) if steps is None else last_needed + 1))
    for stage, todo in ((ANALYSIS, todo_a), (GEOMETRY, todo_g)):
        held = [archives[i].step for i in todo if hold.waits(archives[i].step)]
        if held:   # in step order, so the held ones end the list (and the layout chain)
            report.waiting[stage] = held
            del todo[len(todo) - len(held):]
    bar = progress_bar(len(todo_a) + len(todo_g), "analyse", progress and len(todo_a) + len(todo_g) > 1,
                       unit="stage")
    for i in todo_a:
        guarded(report, archives[i], ANALYSIS, partial(an.run_analysis, archives, i, settings, akeys[i]), akeys[i])
        report.analysed.append(archives[i].step)
        bar.update(1)
    cache: dict = {}
    ran = set(todo_a)
    for i in todo_g:
        ok = guarded(report, archives[i], GEOMETRY, partial(an.run_geometry, archives, i, settings, gkeys[i], cache),
                     gkeys[i])
        report.geometry.append(archives[i].step)
        ran.add(i)
        bar.update(1)
        if not ok:
            # A failure counts as done until its inputs change (`guarded`), so the next run would
            # go on with the later checkpoints from the failed one, which has no layout: go on now,
            # as that run would (what this run kept of it, a layer laid out before the failure, is
            # not in its archive).
            cache.pop(archives[i].path, None)
    bar.close()
    archives = _reread(archives, ran, archive_dir)   # their stage statuses changed
    skey = an.series_key(archives, settings)
    if force or report.analysed or not _series_current(archive_dir, skey):
        if hold.unreadable:    # it covers every checkpoint: it would be rebuilt without one
            report.series_waiting = True
        else:
            report.series = guarded(report, archives[-1], SERIES,
                                    lambda: an.run_series(archives, settings, skey, rows=not force,
                                                          left_out=report.left_out))
    report.seconds = time.perf_counter() - t0
    return report


def _reread(archives: list[arc.Archive], ran: set[int], archive_dir: Path) -> list[arc.Archive]:
    """`archives` with those at the indices `ran` (whose stages were just written) read again; the
    others are as listed (the run lock keeps other learnviz writers out). The folder is listed
    again when one of them cannot be read now."""
    out = list(archives)
    try:
        for i in ran:
            out[i] = arc.Archive(archives[i].path)
    except arc.ArchiveError:
        return series(archive_dir)
    return out


@dataclass
class Holdback:
    """The rule for unreadable archives (docs/archive.md, "Unreadable archives").

    While an archive of the folder cannot be read, the CPU stages of every checkpoint after it (of
    every checkpoint, when its step is unknown) and the series wait: computing them now would
    compare a checkpoint with another previous checkpoint than the run's, and rebuild the series
    without one of its checkpoints, and say nothing of it. Their stored results stay as they are.
    Checkpoints before it go on. `learnviz run` rebuilds a damaged archive whose checkpoint folder
    still exists before the CPU stages run, which ends the wait; otherwise the file is to be
    restored, or moved out of the folder to go on without that checkpoint.
    """
    unreadable: list[arc.Unreadable]

    def waits(self, step: int) -> bool:
        if not self.unreadable:
            return False
        known = [u.step for u in self.unreadable if u.step is not None]
        return len(known) < len(self.unreadable) or step > min(known)

    def why(self) -> str:
        files = ", ".join(u.path.name + ("" if u.step is None else f" (step {u.step})") for u in self.unreadable)
        return (f"held back while {files} cannot be read, so that no checkpoint is compared with another "
                f"previous checkpoint than the run's (`learnviz run` rebuilds a damaged archive while its "
                f"checkpoint folder exists; else restore the file, or move it out of the archive folder to go "
                f"on without that checkpoint)")


def _series_current(archive_dir: Path, key: arc.StageKey) -> bool:
    path = archive_dir / arc.SERIES_NAME
    try:
        return path.exists() and arc.Archive(path).is_current(SERIES, key)
    except arc.ArchiveError:
        return False


def guarded(report: CpuReport, a: arc.Archive, stage: str, fn: Callable[[], object],
            key: arc.StageKey | None = None) -> bool:
    """Run one CPU stage; on an exception record it as failed (in the report, and in the archive
    under the stage's own key, so the failure counts as done until its inputs change)."""
    try:
        fn()
        return True
    except (KeyboardInterrupt, SystemExit, WriteError):
        raise               # (a full disk is not the stage's failure: nothing is recorded)
    except Exception as exc:  # record and go on, as the GPU stage does
        reason = f"{type(exc).__name__}: {exc}"
        report.failed.append((a.step, stage, reason))
        if stage != SERIES:
            try:
                arc.write_stage(a.path, stage, key=key or a.key, root_attrs=an.root_attrs_of(a), status="failed",
                                reason=reason)
            except arc.ForeignArchiveError:
                pass   # another learnviz's archive is never written over; the report holds the failure
        return False


# ---------------------------------------------------------------- one stage at a time (the Celery tasks)

@dataclass
class StageResult:
    """What a stage did, as plain JSON-able values (a task returns this, never arrays)."""
    stage: str
    checkpoint: str
    step: int
    status: str          # ok | failed | current | incomplete | gone | skipped
    reason: str = ""
    archive: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def collect_embeddings(settings: Settings, checkpoint: str | Path, *, loaded=None,
                       source: str | Path | None = None) -> StageResult:
    """The GPU stage for one checkpoint. `current` when its archive already holds this key;
    `failed`, the file untouched, when another learnviz wrote it. A damaged archive is moved aside
    to `<name>.corrupt` and rebuilt (the reason of an `ok` result says so). `source`: a whole copy
    of the checkpoint's files to read instead (one the caller vouches for, so no settle wait), the
    archive being that of `checkpoint` all the same (learnviz.integrations.hf keeps such a copy of
    each checkpoint the Trainer saves, since its rotation may delete it before it is archived)."""
    settings = run_of_checkpoint(settings, checkpoint)
    probes = load_probes(settings)
    if source is not None:
        ck = inspect(source, settle_seconds=0)
        ck.path, ck.source = Path(checkpoint), Path(source)
    else:
        ck = inspect(checkpoint, settle_seconds=settings.settle_seconds)
    if ck.state in ("incomplete", "gone"):
        return StageResult(EXTRACT, str(checkpoint), ck.step, ck.state, ck.reason)
    damaged: list[tuple[Path, str]] = []
    try:
        job = collect.job_for(ck, settings, probes, collect.checkpoint_root(settings), damaged=damaged)
    except (arc.ForeignArchiveError, collect.Unarchivable) as exc:
        return StageResult(EXTRACT, str(checkpoint), ck.step, "failed", str(exc))
    if not job.stages:
        return StageResult(EXTRACT, str(checkpoint), ck.step, "current", archive=str(job.archive_path))
    note = ""
    try:
        moved = arc.set_aside(job.archive_path) if damaged else None
        if moved is not None:
            note = f"{job.archive_path.name} moved aside to {moved.name} and rebuilt: {damaged[0][1]}"
        ok = collect.run_extract(job, settings, probes, loaded=loaded)
        info = arc.Archive(job.archive_path).stage(EXTRACT)
    except collect.CheckpointGone as exc:
        return StageResult(EXTRACT, str(checkpoint), ck.step, "gone", str(exc))
    except arc.ArchiveError as exc:   # turned foreign or unreadable meanwhile: left as it is
        return StageResult(EXTRACT, str(checkpoint), ck.step, "failed", str(exc), str(job.archive_path))
    return StageResult(EXTRACT, str(checkpoint), ck.step, "ok" if ok else "failed",
                       note if ok else (info.reason if info else ""), str(job.archive_path))


def archive_checkpoint(settings: Settings, checkpoint: str | Path, *, source: str | Path | None = None,
                       figures: Figures | None = None) -> tuple[StageResult, RunReport]:
    """One new checkpoint through every stage, holding its run's lock: its extraction (from `source`,
    see `collect_embeddings`), then the CPU stages and the figures of its run. What the embedded
    process of learnviz.integrations.hf does with each checkpoint the Trainer saves."""
    settings = run_of_checkpoint(settings, checkpoint)
    with run_lock(settings.archive_dir()):
        result = collect_embeddings(settings, checkpoint, source=source)
        report = _update(settings, stages=CPU_STAGES + (FIGURES,), figures=figures, progress=False)
    return result, report


def analyze_checkpoint(settings: Settings, checkpoint: str | Path) -> StageResult:
    """The per-checkpoint CPU analyses. `skipped` when the checkpoint has no successful extraction,
    or while an earlier archive cannot be read (`Holdback`)."""
    settings = run_of_checkpoint(settings, checkpoint)
    listing = arc.scan_archives(settings.archive_dir())
    archives = series_of(listing.archives)
    target = Path(checkpoint).resolve()
    i = next((i for i, a in enumerate(archives) if checkpoint_of(a, settings.checkpoints) == target), None)
    if i is None:
        return StageResult(ANALYSIS, str(checkpoint), -1, "skipped",
                           f"no successful extraction of {target.name} archived yet in {settings.archive_dir()}")
    a = archives[i]
    key = an.analysis_key(archives, i, settings)
    if a.is_current(ANALYSIS, key):
        return StageResult(ANALYSIS, str(checkpoint), a.step, "current", archive=str(a.path))
    hold = Holdback(listing.unreadable)
    if hold.waits(a.step):
        return StageResult(ANALYSIS, str(checkpoint), a.step, "skipped", hold.why(), str(a.path))
    report = CpuReport()
    ok = guarded(report, a, ANALYSIS, lambda: an.run_analysis(archives, i, settings, key), key)
    return StageResult(ANALYSIS, str(checkpoint), a.step, "ok" if ok else "failed",
                       report.failed[0][2] if report.failed else "", str(a.path))


def update_learning_history(settings: Settings) -> dict:
    """Geometry for every checkpoint whose chain changed, then the series, of every run. JSON-able
    summary (of each run under `runs`, by name, when the root holds several)."""
    out = {}
    for name, rs in runs(settings):
        report = run_cpu_stages(rs, analysis=False)   # per-checkpoint analyses are `analyze` tasks
        out[name] = {"geometry": report.geometry, "series": report.series,
                     "left_out": [list(x) for x in report.left_out],
                     "failed": [list(f) for f in report.failed], "seconds": report.seconds,
                     "unreadable": [u.reason for u in report.unreadable],
                     "waiting": {**report.waiting, **({SERIES: []} if report.series_waiting else {})}}
    return out[""] if list(out) == [""] else {"runs": out}


def generate_visualizations(settings: Settings) -> dict:
    """The figures of the run (PNGs; GIFs are made on demand) from the archives: JSON-able summary
    (of each run under `runs`, by name, when the root holds several)."""
    report = update(settings, stages=(FIGURES,), progress=False)
    if report.runs:
        return {"runs": {r.run: r.visualizations or {} for r in report.runs}}
    return report.visualizations or {}


def pending(settings: Settings) -> list[dict]:
    """For the periodic scan: every complete checkpoint and the stages it lacks, oldest first (of
    every run). Cheap: no model is loaded and nothing heavy is imported."""
    out = [item for _, rs in runs(settings) for item in _pending(rs)]
    out.sort(key=lambda d: d["step"])
    return out


def _pending(settings: Settings) -> list[dict]:
    jobs = collect.plan(settings, load_probes(settings))
    out = [{"checkpoint": str(j.checkpoint.path), "step": j.checkpoint.step, "stages": [EXTRACT, ANALYSIS]}
           for j in jobs]
    queued = {j.checkpoint.path.resolve() for j in jobs}
    listing = arc.scan_archives(settings.archive_dir())
    archives, hold = series_of(listing.archives), Holdback(listing.unreadable)
    for i, a in enumerate(archives):
        ck = checkpoint_of(a, settings.checkpoints)
        if hold.waits(a.step):
            continue   # it would be analysed against another previous checkpoint than the run's
        if ck not in queued and not a.is_current(ANALYSIS, an.analysis_key(archives, i, settings)):
            out.append({"checkpoint": str(ck), "step": a.step, "stages": [ANALYSIS]})
    out.sort(key=lambda d: d["step"])
    return out


def history_stale(settings: Settings) -> bool:
    """True when a checkpoint's geometry or the series of a run is not current: update_learning_history
    has work (its message may have been lost after the analyses that asked for it). What waits for an
    unreadable archive (`Holdback`) is not work."""
    return any(_history_stale(rs) for _, rs in runs(settings))


def _history_stale(settings: Settings) -> bool:
    listing = arc.scan_archives(settings.archive_dir())
    archives, hold = series_of(listing.archives), Holdback(listing.unreadable)
    if not archives:
        return False
    for a, key in zip(archives, an.geometry_keys(archives, settings)):
        if not hold.waits(a.step) and not a.is_current(GEOMETRY, key):
            return True
    return not hold.unreadable and not _series_current(settings.archive_dir(), an.series_key(archives, settings))


def checkpoint_root(settings: Settings) -> Path:
    return collect.checkpoint_root(settings)


# What `discover` recognises as a checkpoint (learnviz.checkpoints), for the messages that say
# where learnviz looked and found nothing.
CHECKPOINT_NAMES = (f"{STEP_NAMES} folders, or any folder with a config.json and weights (model.safetensors), in "
                    f"the folder itself or one level down (runs/NAME/checkpoint-N)")


def nothing_found(root: Path, beside: list | None = None) -> list[str]:
    """What to say of a checkpoint folder in which nothing was found: where learnviz looked, and the
    folders below it that hold runs when the runs lie one level deeper (a sweep grouped once more,
    sweep/<group>/<run>/checkpoint-N), each a folder to pass instead. `beside`: the model folders
    found without a step (RunReport.beside), each reported on its own line: with them, it was no
    model that was not found but a step."""
    if beside:
        return [f"no checkpoint with a step in {root}: {len(beside)} model folder{'s' if len(beside) > 1 else ''} "
                f"found, but no step in {'their names' if len(beside) > 1 else 'its name'} nor a trainer_state.json "
                f"global_step (see below); learnviz reads the step from folders named {STEP_NAMES}"]
    lines = [f"no checkpoints found in {root}: learnviz looks for {CHECKPOINT_NAMES}"]
    deeper = deeper_roots(root) if root is not None else []
    if deeper:
        lines.append("  runs lie one level deeper, in " + ", ".join(map(str, deeper))
                     + f": pass --checkpoints {deeper[0]}" + (" (and each of the others)" if len(deeper) > 1 else ""))
    return lines


def require_checkpoint_folder(settings: Settings) -> Path:
    """The checkpoint folder, which must exist: LearnvizError naming it otherwise. Checked before
    anything is written there (the default archive folder lies inside it), so that a mistyped path
    is an error, not an empty run."""
    root = collect.checkpoint_root(settings)
    if not root.is_dir():
        raise LearnvizError("checkpoint folder not found" if not root.exists() else "is not a folder",
                            path=root, field="checkpoints",
                            hint=f"pass the folder that holds the training run's {CHECKPOINT_NAMES}")
    return root
