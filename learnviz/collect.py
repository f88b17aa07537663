"""The GPU stage, `extract`: one pass of the probe set through one checkpoint, into its archive.

`plan` decides what each checkpoint still needs (cheap: no torch import, no model load);
`run_extract` loads one checkpoint, runs the probes through it and writes the `extract` group and
its history row. The orchestrator (learnviz.pipeline) calls these; so does nothing else.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import archive as arc
from . import history, scan_cache
from .checkpoints import (
    MAX_STEP,
    NO_STEP,
    STEP_NAMES,
    Checkpoint,
    checkpoint_tokenizer,
    fingerprint,
    forget_fingerprints,
    inspect,
    scan_memo,
    shared_tokenizer_dir,
    step_from_name,
    training_metrics,
)
from .common import progress_bar, short_hash
from .errors import ConfigError, LearnvizError, WriteError
from .probes import ProbeSet, load_probe_set
from .readout import skill_accuracy
from .results import EXTRACT
from .settings import Settings

arc.on_clear(forget_fingerprints)     # what `archive.clear_memo` forgets: the fingerprints kept too,
arc.on_clear(scan_cache.forget)       # and the scan cache's content (its file stays, as the index does)

STAGES = (EXTRACT,)   # the GPU stage; the CPU stages (learnviz.analyze) follow it


class CheckpointGone(LearnvizError):
    """The checkpoint folder was deleted while it was processed (a Trainer's `save_total_limit`
    rotation): nothing is recorded for it, neither an archive nor a failure."""


class Unarchivable(LearnvizError):
    """A checkpoint learnviz cannot archive as it is named (a step beyond `MAX_STEP`, an archive
    name longer than a file system allows): refused at each run, with the reason, nothing written."""


@dataclass
class Job:
    """One checkpoint and the stages it still needs."""
    checkpoint: Checkpoint
    archive_path: Path
    key: arc.StageKey
    stages: list[str]
    archive_version: tuple | None = None   # the version of the archive read to decide `stages`
    old_probe_hash: str | None = None      # the archive there holds another probe set's results (replaced)


def load_probes(settings: Settings) -> ProbeSet:
    return load_probe_set(settings.probes_path(), settings.hard_examples_path())


def checkpoint_root(settings: Settings) -> Path:
    if not settings.checkpoints:
        raise LearnvizError("no checkpoint folder given", field="checkpoints",
                            hint="pass --checkpoints DIR or set LEARNVIZ_CHECKPOINTS")
    return Path(settings.checkpoints)


def plan(settings: Settings, probes: ProbeSet, *, incomplete: list | None = None,
         current: list | None = None, refused: list | None = None, damaged: list | None = None,
         beside: list | None = None, force: bool = False) -> list[Job]:
    """Every complete or broken checkpoint with the stages its archive lacks, oldest first. The
    incomplete checkpoints (path, reason) and the archives that are current go to the lists given;
    so do the checkpoints whose archive another learnviz wrote, which are never overwritten
    (`refused`: (checkpoint, reason)), and the damaged archives that must be moved aside before
    their checkpoint is archived again (`damaged`: (archive path, reason); their jobs are listed),
    and the models saved beside the checkpoints, which are not archived (`beside`: (folder, why)):
    a folder whose name gives no step, whose trainer_state.json gives the step of a checkpoint-N or
    no step at all. `force`: every complete or broken checkpoint is a job with every stage, its
    archive current or not (`learnviz run --force`: extract again after an upgrade or another
    --dtype, which the stage keys leave out)."""
    with scan_memo():
        return _plan(settings, probes, incomplete=incomplete, current=current, refused=refused, damaged=damaged,
                     beside=beside, force=force)


def _plan(settings: Settings, probes: ProbeSet, *, incomplete: list | None, current: list | None,
          refused: list | None, damaged: list | None, beside: list | None = None, force: bool = False) -> list[Job]:
    root = checkpoint_root(settings)
    archive_dir = settings.archive_dir()
    inputs = extract_inputs(settings)
    # a checkpoint looked at by an earlier scan, whose files and archive are as they were, is not
    # read again (learnviz.scan_cache)
    cache = scan_cache.ScanCache(archive_dir, short_hash(str(root.resolve()), str(settings.tokenizer),
                                                         str(settings.base_model), inputs),
                                 watch=settings.watch_folders)

    def currency(fp: str) -> tuple:     # what an archive being current depends on, besides its file
        return (fp, probes.hash, arc.SCHEMA_VERSION, inputs, settings.retry_failed)

    shared: dict[str, str | None] = {}

    def tok_folder_of(path: str) -> str:       # for a checkpoint without tokenizer files of its own
        parent = path.rpartition(os.sep)[0]    # the same for every checkpoint of a run folder
        if parent not in shared:
            found = shared_tokenizer_dir(Path(path), settings.tokenizer)
            shared[parent] = str(found) if found is not None else None
        return shared[parent] or path

    found = []       # (step, path, the checkpoint looked at or None, its scan_cache entry or None)
    known = []       # (step, path, entry): current by the watches alone (a long-lived process)
    tail = currency("")[1:]
    wheres = cache.candidates(root, [archive_dir])
    links = _links_to_others(wheres)
    for where in wheres:
        if where in links:
            continue
        e = None if force else cache.known_current(where, tail, tok_folder_of)
        if e is not None:
            known.append((e["step"], where, e))
            continue
        e = cache.lookup(where, tok_folder_of)
        if e is not None:
            found.append((e["step"], where, None, e))
            continue
        ck = inspect(Path(where), settle_seconds=settings.settle_seconds)
        if ck.state != "gone":   # deleted while it was looked at (a Trainer's save_total_limit rotation)
            found.append((ck.step, str(ck.path), ck, None))
    found.sort(key=lambda f: f[:2])
    # Two folders of one step (checkpoint-100 and step_100): a run's checkpoints are keyed by step
    # (the series, the history, the dashboard), so one is archived and the others are refused,
    # each run, with both named (an earlier version archived both: readout.series_of takes the
    # first of a step). A folder whose name gives the step goes first: one whose step came from its
    # trainer_state.json is a model the script saved beside the checkpoints (trainer.save_model()
    # and save_state() into the output folder itself, or final/), which sorted first by name and
    # took the step from checkpoint-N; then the first by name. Such a model is no failure (a run
    # would report one at every scan after the training ended): it goes to `beside`.
    first: dict[int, str] = {}
    pairs = [(f[0], f[1]) for f in found if f[0] >= 0 and not _incomplete(f)] + [k[:2] for k in known]
    taken = {step for step, _ in pairs}
    if len(taken) < len(pairs):        # (rare: sorted only then)
        for step, where in sorted(pairs, key=lambda p: (p[0], step_from_name(os.path.basename(p[1])) is None, p[1])):
            first.setdefault(step, where)
        clash = {(step, where) for step, where in [(f[0], f[1]) for f in found if not _incomplete(f)]
                 + [k[:2] for k in known] if step >= 0 and first.get(step, where) != where}
        if clash:
            for step, where in sorted(clash):
                if step_from_name(os.path.basename(where)) is None and step_from_name(
                        os.path.basename(first[step])) is not None:
                    if beside is not None:      # the final model, not a checkpoint of its own: no failure
                        beside.append((Path(where), f"saved beside the checkpoints with step {step} in its "
                                       f"trainer_state.json, {Path(first[step]).name}'s: not archived (a folder "
                                       f"named checkpoint-N is a step of its own)"))
                elif refused is not None:
                    refused.append((Checkpoint(path=Path(where), step=step, state="broken"),
                                    f"step {step} is also {Path(first[step]).name}'s (archived instead): a run's "
                                    f"checkpoints are told apart by step; move or rename one of the two folders"))
            found = [f for f in found if (f[0], f[1]) not in clash]
            known = [k for k in known if (k[0], k[1]) not in clash]
    jobs = []
    now_current = [(step, where, e["archive"]) for step, where, e in known]    # ... and their archives' names
    for step, where, ck, e in found:
        if e is not None:
            if not force and cache.current(e, currency(e["fingerprint"])):
                now_current.append((step, where, e["archive"]))
                continue
            path = Path(where)
            ck = Checkpoint(path=path, step=e["step"], state=e["state"], reason=e["reason"],
                            weight_files=[path / w for w in e["weights"]])
        if ck.state == "incomplete":
            # ... unless another folder of its step is archived: OLMo's sharded step1000/ beside
            # step1000-unsharded/ never gets a config.json, and would be reported at every run
            if incomplete is not None and (step < 0 or step not in taken):
                incomplete.append((ck.path, ck.reason))
            continue
        if ck.state == "broken" and ck.step < 0 and ck.reason.startswith(NO_STEP):
            if beside is not None:      # a model saved without a step (final/, the output folder): no checkpoint
                beside.append((ck.path, f"{ck.reason}: not archived (a folder named after its step, {STEP_NAMES}, or "
                                        f"a trainer_state.json with its global_step, makes it a step of the run)"))
            continue
        try:
            job = job_for(ck, settings, probes, root, damaged=damaged, fp=e["fingerprint"] if e else None,
                          force=force)
        except (arc.ForeignArchiveError, Unarchivable) as exc:   # one such archive must not stop the others
            if refused is not None:
                refused.append((ck, str(exc)))
            continue
        if e is None:
            tok = checkpoint_tokenizer(ck, settings.tokenizer, settings.base_model) or ck.files
            e = cache.keep(ck, job.key.fingerprint, str(tok), job.archive_path.name)
        if job.stages:
            jobs.append(job)
        else:
            cache.keep_current(e, currency(job.key.fingerprint), job.archive_version)
            now_current.append((step, where, job.archive_path.name))
    if current is not None:      # in step order, as the jobs
        current.extend(archive_dir / name for _, _, name in sorted(now_current))
    cache.save()
    return jobs


def _links_to_others(paths: list[str]) -> set[str]:
    """The candidate folders that are symbolic links, named without a step, to another candidate
    (`latest -> step1000`, `final -> checkpoint-900`): the same checkpoint, which is archived under
    its own name. Archived again they would be a second archive of its step, or, with a
    trainer_state.json, a clash with it at every run; so they are left out, unsaid. A link named
    with a step (`checkpoint-30 -> checkpoint-10`) is a step of its own (archive.archive_name)."""
    links = [p for p in paths if step_from_name(p[p.rfind(os.sep) + 1:]) is None and os.path.islink(p)]
    if not links:
        return set()
    real: dict[str, str] = {}          # the folders above each candidate, resolved once per folder

    def where(p: str) -> str:
        parent, _, name = p.rpartition(os.sep)
        if parent not in real:
            real[parent] = os.path.realpath(parent or os.sep)
        return os.path.join(real[parent], name)
    others = {where(p) for p in paths if p not in links}
    return {p for p in links if os.path.realpath(p) in others}


def _incomplete(f: tuple) -> bool:
    """A found entry (step, path, checkpoint, scan-cache entry) of a checkpoint still being written."""
    return (f[2].state if f[2] is not None else f[3]["state"]) == "incomplete"


def job_for(ck: Checkpoint, settings: Settings, probes: ProbeSet, root: Path, *,
            damaged: list | None = None, fp: str | None = None, force: bool = False) -> Job:
    """A complete or broken checkpoint's archive path, key, and the stages it lacks (maybe none).

    An archive this learnviz cannot read is never overwritten: one of another schema_version or an
    unknown encoding raises archive.ForeignArchiveError (it may hold all there is of that
    checkpoint); a damaged one needs every stage and goes to `damaged` as (path, reason), for the
    caller to move it aside (`archive.set_aside`) and say so before rebuilding it. A checkpoint
    whose step or archive name learnviz cannot keep raises Unarchivable, before anything is read."""
    if ck.step > MAX_STEP:
        where = "its folder name" if step_from_name(ck.path.name) is not None else "trainer_state.json's global_step"
        raise Unarchivable(f"step {ck.step} (from {where}) is beyond {MAX_STEP} (2**53 - 1), the largest step "
                           f"JSON readers and the dashboard's charts hold exactly; rename the folder to its "
                           f"training step (checkpoint-N)")
    path = settings.archive_dir() / arc.archive_name(ck.path, root)
    problem = arc.name_problem(path)
    if problem:
        raise Unarchivable(problem)
    key = arc.StageKey(fp or fingerprint(ck, settings.tokenizer, settings.base_model), probes.hash,
                       inputs=extract_inputs(settings))
    needed = list(STAGES)
    version = old_hash = None
    if path.exists():
        try:
            existing = arc.Archive(path)
            needed = [s for s in STAGES if not existing.is_current(s, key, retry_failed=settings.retry_failed)]
            version = existing.version
            have = existing.attrs.get("probe_hash")
            if have and have != probes.hash and existing.stage(EXTRACT) is not None:
                old_hash = str(have)
        except arc.ForeignArchiveError:
            raise
        except arc.ArchiveError as exc:
            if damaged is not None and path.exists():
                damaged.append((path, str(exc)))
    return Job(ck, path, key, list(STAGES) if force else needed, version, old_hash)


def extract_inputs(s: Settings) -> str:
    """The settings that change what extraction records (not device, dtype or batch size, whose
    effect is rounding): changing one re-extracts every checkpoint."""
    return short_hash(s.layers, s.max_length, s.max_new_tokens, s.stop_strings, s.answer_match)


def root_attrs(ck: Checkpoint, probes: ProbeSet) -> dict:
    model_class = ""
    try:
        config = json.loads((ck.files / "config.json").read_text())
        model_class = str((config.get("architectures") or [config.get("model_type", "")])[0] or "")
    except (OSError, ValueError, AttributeError, TypeError, IndexError, KeyError):
        pass                # (what the model's loader reports, with the file and field)
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
    with its reason; the caller goes on with the next checkpoint. A checkpoint deleted meanwhile
    raises CheckpointGone and leaves no trace.
    """
    from .extract import ExtractOptions, extract
    from .model import load

    ck = job.checkpoint
    started = arc.now_iso()
    t0 = time.perf_counter()
    attrs = root_attrs(ck, probes)
    if ck.state == "broken":
        arc.write_stage(job.archive_path, EXTRACT, key=job.key, root_attrs=attrs, status="failed",
                        reason=ck.reason, started=started)
        return False
    lm = None
    try:
        lm = loaded or load(ck.files, device=settings.device, dtype=settings.dtype,
                            trust_remote_code=settings.trust_remote_code, base_model=settings.base_model,
                            tokenizer=checkpoint_tokenizer(ck, settings.tokenizer, settings.base_model)
                            or settings.tokenizer)
        t_load = time.perf_counter() - t0
        bar = progress_bar(len(probes), f"extract {ck.name}", progress, unit="probe")
        try:
            result = extract(lm, probes, ExtractOptions.from_settings(settings), progress=bar.update)
        finally:
            bar.close()
        data = {**result.to_archive(), **probe_table(probes)}
        timings = {"load": t_load, **result.timings}
        # probes that failed alone (an answer longer than the model's context) are named in the
        # reason of a stage that is still ok: the other probes' results are archived
        arc.write_stage(job.archive_path, EXTRACT, key=job.key, root_attrs=attrs, data=data,
                        attrs={"layers": result.layers, "n_layers": lm.n_layers, "device": str(lm.device),
                               "dtype": str(lm.dtype).replace("torch.", ""),
                               "answer_match": settings.answer_match},
                        reason=result.reason, timings=timings, started=started)
    except (KeyboardInterrupt, SystemExit, ConfigError, WriteError):
        raise               # (a setting's or the disk's fault, not the checkpoint's: nothing is recorded against it)
    except Exception as exc:  # one bad checkpoint must not stop the others
        if not ck.files.exists():
            raise CheckpointGone("deleted while it was processed; nothing recorded", path=ck.path) from exc
        reason = str(exc) if isinstance(exc, LearnvizError) else f"{type(exc).__name__}: {exc}"
        arc.write_stage(job.archive_path, EXTRACT, key=job.key, root_attrs=attrs, status="failed",
                        reason=reason, started=started, timings={"total": time.perf_counter() - t0})
        return False
    finally:
        if lm is not None and loaded is None:
            lm.free()
    update_history(job, settings, probes, result)
    return True


def restore_history(settings: Settings) -> list[int]:
    """Append the history row of each archived checkpoint whose extraction succeeded but whose row is
    missing: a writer stopped between the archive and its row (Ctrl-C in `learnviz run --watch`, a
    killed process) would otherwise leave the step out of the history for good, since the archive
    is current. Returns the steps restored."""
    from .readout import checkpoint_of, series

    have = {(r["step"], r.get("probe_hash")) for r in history.read_rows(settings.archive_dir()) if "accuracy" in r}
    restored = []
    for a in series(settings.archive_dir()):
        probe_hash = a.attrs.get("probe_hash")
        if (a.step, probe_hash) in have:
            continue
        data = a.read(EXTRACT, ["correct", "answer_logprob", "probe_skill"])
        correct = np.asarray(data["correct"])
        row = {"step": a.step, "timestamp": arc.now_iso(), "checkpoint": a.attrs.get("checkpoint_name", a.path.stem),
               "probe_hash": probe_hash, **training_metrics(checkpoint_of(a, settings.checkpoints), a.step),
               "accuracy": float(np.mean(correct)) if len(correct) else None,
               "mean_answer_logprob": float(np.mean(data["answer_logprob"])) if len(correct) else None,
               "skill_scores": skill_accuracy(correct, list(data["probe_skill"]))}
        history.append(settings.archive_dir(), row)
        restored.append(a.step)
    return restored


def update_history(job: Job, settings: Settings, probes: ProbeSet, result) -> None:
    """Append this checkpoint's row: training metrics from trainer_state.json and accuracy."""
    ck = job.checkpoint
    row = {"step": ck.step, "timestamp": arc.now_iso(), "checkpoint": ck.name,
           "probe_hash": probes.hash, **training_metrics(ck.files, ck.step),
           "accuracy": float(np.mean(result.correct)) if len(result.correct) else None,
           "mean_answer_logprob": float(np.mean(result.answer_logprob)) if len(result.correct) else None,
           "skill_scores": skill_accuracy(result.correct, [p.skill for p in probes])}
    history.append(settings.archive_dir(), row)


