"""The tasks: thin. Each unpacks a checkpoint path, calls one learnviz stage, sends what follows,
and returns the stage's JSON-able result (never arrays).

Per checkpoint:  collect_embeddings (gpu) -> analyze (cpu) -> update_learning_history (cpu, one
queued at a time) -> generate_visualizations (cpu, debounced: one draw `visualize_delay` seconds
after the first request; the requests in that window join it).

Faults: a broken checkpoint is recorded as failed in the archive by the stage and not retried. A
passing fault (Redis or connection error, a busy archive lock, CUDA out of memory) is retried with
exponential backoff and jitter, at most `task_max_retries` times; a lost worker process likewise
(task_retry_on_worker_lost). The (checkpoint, stage) mark is cleared when the task ends for good.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import socket

import filelock
import kombu.exceptions
import redis.exceptions
from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.utils.log import get_task_logger

from learnviz import pipeline
from learnviz.results import ANALYSIS
from learnviz.settings import Settings

from . import dispatch as dsp
from .signals import ensure_warm

log = get_task_logger(__name__)


class PassingFault(Exception):
    """A stage failed for a reason that a later try may not meet (e.g. CUDA out of memory)."""


TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
             filelock.Timeout, PassingFault)

# Reasons a stage records that are worth another try, not a broken checkpoint.
_PASSING_REASONS = ("OutOfMemoryError", "CUDA out of memory", "CUDA error: out of memory")


class MessageError(ValueError):
    """A message this learnviz cannot run: a field it needs is missing or not what it expects."""


_SAME_VERSION = "run the same learnviz on every worker, the beat and `learnviz submit`"


class StageTask(Task):
    """Base of the learnviz tasks: settings from the app, backoff from the settings, and the
    (checkpoint, stage) mark released when a per-checkpoint task ends for good."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*self.message_fields(args, kwargs))

    def message_fields(self, args: tuple, kwargs: dict) -> tuple:
        """The arguments of `run` from a message that another learnviz version may have sent: a
        field this one does not know is dropped with a warning; a missing or mistyped one is a
        MessageError naming it (not a TypeError deep in pathlib)."""
        params = list(inspect.signature(self.run).parameters.values())
        names = [p.name for p in params]
        extra = [f"#{i}" for i in range(len(names), len(args))] + sorted(set(kwargs) - set(names))
        if extra:
            log.warning("%s[%s]: ignored the fields %s of a message from another learnviz version (%s)",
                        self.name, self.request.id, ", ".join(extra), _SAME_VERSION)
        values = {**dict(zip(names, args)), **{k: v for k, v in kwargs.items() if k in names}}
        for p in params:
            if p.name not in values and p.default is inspect.Parameter.empty:
                raise MessageError(f"{self.name}[{self.request.id}]: the message lacks the field {p.name!r}: "
                                   f"it came from another learnviz version ({_SAME_VERSION})")
            if p.name == "checkpoint" and not isinstance(values[p.name], str):
                raise MessageError(f"{self.name}[{self.request.id}]: the message's field 'checkpoint' is "
                                   f"{type(values[p.name]).__name__} {values[p.name]!r:.200}, not a path: it came "
                                   f"from another learnviz version ({_SAME_VERSION})")
        return tuple(values[n] for n in names if n in values)

    @property
    def settings(self) -> Settings:
        return self.app.learnviz_settings

    @property
    def dispatch(self) -> dsp.Dispatcher:
        return dsp.for_app(self.app)

    def backoff(self) -> float:
        s = self.settings
        delay = min(s.retry_backoff_max, s.retry_backoff * 2 ** self.request.retries)
        return random.uniform(delay / 2, delay)   # jitter: retries of a burst do not arrive together

    def retry_later(self, exc: BaseException):
        log.warning("passing fault, retry %d/%d: %s: %s", self.request.retries + 1,
                    self.settings.task_max_retries, type(exc).__name__, exc)
        return self.retry(exc=exc, countdown=self.backoff(), max_retries=self.settings.task_max_retries)

    def run_stage(self, fn):
        ensure_warm()
        try:
            return fn()
        except TRANSIENT as exc:
            raise self.retry_later(exc) from exc

    def _release(self, task_id, args) -> None:
        stage = dsp.TASK_STAGES.get(self.name)
        if stage is None or not args or not isinstance(args[0], str):   # no mark: not a message of ours
            return
        try:
            self.dispatch.stage_done(stage, args[0], task_id)
        except redis.exceptions.RedisError as exc:  # the mark expires by itself
            log.warning("queued mark of %s not cleared (it expires by itself): %s", task_id, exc)

    def on_success(self, retval, task_id, args, kwargs):
        self._release(task_id, args)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Killed by the hard limit or lost max_retries times: the archive has no record of it, so
        # a scan would send it straight back. The mark stays, held, until it expires (enqueue_ttl).
        if not isinstance(exc, (TimeLimitExceeded, WorkerLostError)):
            self._release(task_id, args)
            return
        stage = dsp.TASK_STAGES.get(self.name)
        if stage is not None and args and isinstance(args[0], str):
            try:
                self.dispatch.stage_held(stage, args[0], task_id)
            except redis.exceptions.RedisError as exc:
                log.warning("queued mark of %s not held (a scan may send it again): %s", task_id, exc)


def _attempt_settings(task: StageTask) -> Settings:
    """A retry after a passing fault re-runs the stage that the first try recorded as failed."""
    s = task.settings
    return dataclasses.replace(s, retry_failed=True) if task.request.retries else s


def _passing(result: dict) -> bool:
    return result["status"] == "failed" and any(r in result["reason"] for r in _PASSING_REASONS)


@shared_task(bind=True, base=StageTask, name="collect_embeddings")
def collect_embeddings(self: StageTask, checkpoint: str) -> dict:
    """GPU: one pass of the probe set through one checkpoint -> archive [extract]."""
    settings = _attempt_settings(self)
    result = self.run_stage(lambda: pipeline.collect_embeddings(settings, checkpoint).to_dict())
    if _passing(result):
        raise self.retry_later(PassingFault(result["reason"]))
    if result["status"] in ("ok", "current"):
        self.run_stage(lambda: self.dispatch.send_stage(ANALYSIS, checkpoint))
    return result


@shared_task(bind=True, base=StageTask, name="analyze")
def analyze(self: StageTask, checkpoint: str) -> dict:
    """CPU: the per-checkpoint analyses -> archive [analysis]."""
    settings = _attempt_settings(self)
    result = self.run_stage(lambda: pipeline.analyze_checkpoint(settings, checkpoint).to_dict())
    if result["status"] in ("ok", "failed"):
        self.run_stage(self.dispatch.request_history)
    if result["status"] == "skipped" and not result["archive"]:
        # Sent after its extraction succeeded (or by a scan that read that archive): this host does
        # not see the archive the GPU worker wrote.
        result["reason"] += (f" on host {socket.gethostname()}: if a worker archived it, this host does not see "
                             "the archive folder at the path the workers share (mount it at the same path on "
                             "every host, or give every worker the same --archive; docs/distributed.md)")
        log.warning("analysis of %s skipped: %s", checkpoint, result["reason"])
    return result


def _exclusive(task: StageTask, name: str, fn):
    """Run `fn` under the Redis lock `name`; while another holds it, try again later (the holder may
    have started before the change that queued this task)."""
    s = task.settings
    with task.dispatch.lock(name, timeout=s.cpu_time_limit + 60) as got:
        if got:
            return fn()
    wait = max(1.0, s.retry_backoff)
    raise task.retry(countdown=wait, max_retries=int(s.cpu_time_limit / wait) + 1)


@shared_task(bind=True, base=StageTask, name="update_learning_history")
def update_learning_history(self: StageTask) -> dict:
    """CPU: geometry in step order, then the series over the run -> archives [geometry], series.h5."""
    self.run_stage(lambda: self.dispatch.started("history", self.request.id))
    summary = self.run_stage(lambda: _exclusive(self, "history",
                                                lambda: pipeline.update_learning_history(self.settings)))
    if summary["geometry"] or summary["series"]:
        self.run_stage(self.dispatch.request_visualizations)
    return summary


@shared_task(bind=True, base=StageTask, name="generate_visualizations")
def generate_visualizations(self: StageTask) -> dict:
    """CPU: the PNGs and GIFs of the run, debounced (see workers.dispatch)."""
    self.run_stage(lambda: self.dispatch.started("visualize", self.request.id))
    return self.run_stage(lambda: _exclusive(self, "visualize",
                                             lambda: pipeline.generate_visualizations(self.settings)))


@shared_task(bind=True, base=StageTask, name="scan_checkpoints")
def scan_checkpoints(self: StageTask) -> dict:
    """The beat's scan: send every stage the archives lack (beat.scan)."""
    from beat.scan import scan

    from .celery import scan_time_limit
    try:
        return scan(self.settings, self.dispatch, lock_timeout=scan_time_limit(self.settings))
    except TRANSIENT as exc:   # the next scan comes anyway: no retry
        log.warning("scan: %s", exc)
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
