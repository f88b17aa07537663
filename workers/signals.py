"""Worker signals: name the worker in the archives, and load heavy libraries once per process.

Pool (see docs/distributed.md): prefork. The parent process never imports torch, so no CUDA
context exists before it forks; each child imports torch (and initialises CUDA on its first
extraction) itself. The GPU worker runs one child (concurrency 1): one model in memory at a time,
freed after each checkpoint; a hard time limit or a crash kills only the child, which the parent
replaces, and the message goes back to the queue. The solo pool would lose the hard time limit
and die with its task.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from celery.signals import beat_init, celeryd_after_setup, celeryd_init, worker_process_init

from learnviz.common import settle_heap

log = logging.getLogger(__name__)

_QUEUES: set[str] = set()     # what this worker consumes; set in the parent, inherited by children
_WARM = {"pid": None}


def _settings():
    from celery import current_app

    from learnviz.settings import load_settings
    return getattr(current_app, "learnviz_settings", None) or load_settings()


@celeryd_init.connect
def _name_worker(sender=None, instance=None, **_):
    """The archive records `worker` = LEARNVIZ_WORKER_NAME:pid. Make it this worker's node name
    (`gpu@host`) unless the settings name it; set before the pool forks, so children inherit it."""
    settings = getattr(instance.app, "learnviz_settings", None) if instance is not None else None
    name = (settings.worker_name if settings else None) or sender
    if name:
        os.environ["LEARNVIZ_WORKER_NAME"] = str(name)


@celeryd_after_setup.connect
def _remember_queues(sender=None, instance=None, **_):
    _QUEUES.update(instance.app.amqp.queues.consume_from or {})
    for problem in unknown_queues(_QUEUES, _settings()):
        log.error("learnviz: %s", problem)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        log.error("learnviz: CUDA was initialised in the worker's parent process before the pool forked; "
                  "children cannot use it. Do not import code that touches the GPU at module level.")


def unknown_queues(queues, settings) -> list[str]:
    """A line for each queue a worker consumes to which learnviz sends nothing (`-Q gpuu`, or
    queue_gpu set differently on this host): such a worker waits for ever, saying nothing."""
    known = (settings.queue_gpu, settings.queue_cpu)
    return [f"this worker consumes the queue {q!r}, to which learnviz sends no task: the settings name "
            f"{known[0]!r} (queue_gpu) and {known[1]!r} (queue_cpu). Start it with -Q {known[0]} or -Q {known[1]} "
            "(`learnviz worker --queue gpu|cpu` names them), and give queue_gpu and queue_cpu the same values "
            "on every host and on the beat's"
            for q in sorted(queues) if q not in known]


@worker_process_init.connect
def _warm_child(**_):
    ensure_warm()


def ensure_warm() -> None:
    """Import (and for UMAP, compile) what this worker's queues need, once per process. Called when
    a prefork child starts and, for the solo and thread pools, before the first task. UMAP's
    kernels come from numba's on-disk cache after the first process on the machine
    (learnviz/analysis/numba_cache.py), and a layout refined from the previous checkpoint's
    needs neither umap nor numba: the warm-up serves first frames and method "independent"."""
    if _WARM["pid"] == os.getpid():
        return
    _WARM["pid"] = os.getpid()
    s = _settings()
    t0 = time.perf_counter()
    done = []
    queues = _QUEUES or {s.queue_gpu, s.queue_cpu}
    try:
        if s.queue_gpu in queues:
            import torch  # noqa: F401  (no CUDA call here: the first extraction initialises it)
            import transformers  # noqa: F401

            import learnviz.extract  # noqa: F401
            import learnviz.model  # noqa: F401
            done.append("torch")
        if s.queue_cpu in queues:
            import learnviz.analyze  # noqa: F401
            try:
                from learnviz.analysis import umap_layout
            except ImportError as exc:
                log.warning("learnviz: no UMAP warm-up (%s)", exc)
            else:
                umap_layout.warm_up()
                done.append("umap")
    except Exception as exc:  # noqa: BLE001 - a failed warm-up costs time later, not correctness
        log.warning("learnviz: warm-up failed: %s: %s", type(exc).__name__, exc)
    settle_heap()      # what the warm-up imported stays: later full collections skip it
    log.info("learnviz: process %d ready for queues %s (warm-up: %s, %.1fs)", os.getpid(),
                ",".join(sorted(queues)), "+".join(done) or "none", time.perf_counter() - t0)


@beat_init.connect
def _scan_at_start(sender=None, **_):
    """The first scan when the beat starts, not one interval later."""
    try:
        sender.app.send_task("scan_checkpoints", expires=sender.app.learnviz_settings.scan_interval)
    except Exception as exc:  # noqa: BLE001 - the schedule sends the next one
        log.warning("learnviz: first scan not sent: %s", exc)
