"""The Celery app, built from learnviz's settings: the whole configuration is one dict.

`celery -A workers worker -Q gpu` finds `workers.celery.app` (Celery's own layout); the app is
built on first use from the settings of that process (settings file, LEARNVIZ_* variables), so
importing this module reads nothing. `make_app(settings)` builds one for given settings (tests,
`learnviz submit`, bench/pipeline.py).

Routing by task name, in one place (`ROUTES`). Priorities as the plan names them; Redis serves the
lower number first (0 = highest), and only once `priority_steps` lists every level.
"""

from __future__ import annotations

import enum
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from learnviz.errors import ConfigError
from learnviz.settings import Settings, load_settings

from .dispatch import PRIORITY_STEPS, broker_url, result_url

WARM_UP_SECONDS = 300.0     # how long a new pool process may take to warm up before it is taken for hung


class Priority(enum.IntEnum):
    """The plan's TaskPriority (its gpu_task_scheduler): lower runs first."""
    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
    IDLE = 4


# task name -> (queue setting, priority). The scan jumps the CPU queue: it only sends messages.
ROUTES: dict[str, tuple[str, Priority]] = {
    "collect_embeddings": ("queue_gpu", Priority.LOW),
    "analyze": ("queue_cpu", Priority.LOW),
    "update_learning_history": ("queue_cpu", Priority.IDLE),
    "generate_visualizations": ("queue_cpu", Priority.IDLE),
    "scan_checkpoints": ("queue_cpu", Priority.CRITICAL),
}


def scan_time_limit(s: Settings) -> float:
    """A scan only lists folders and archives and sends messages: minutes at most."""
    return max(300.0, 10 * s.scan_interval)


def visibility_timeout(s: Settings) -> int:
    """Seconds a delivered but unacknowledged message waits before Redis hands it out again. It must
    exceed the longest hard time limit (and the visualization countdown, whose message waits
    unacknowledged in the worker), or a task still running would be delivered a second time."""
    longest = max(s.gpu_time_limit, s.cpu_time_limit, scan_time_limit(s), s.visualize_delay)
    return int(longest + 600)


def _check(s: Settings) -> None:
    for soft, hard in (("gpu_soft_time_limit", "gpu_time_limit"), ("cpu_soft_time_limit", "cpu_time_limit")):
        if not 0 < getattr(s, soft) < getattr(s, hard):
            raise ConfigError(f"{soft} ({getattr(s, soft)}) must be positive and below {hard} ({getattr(s, hard)})",
                              field=soft, hint="the soft limit records a failure; the hard one kills the process")
    if s.queue_gpu == s.queue_cpu:
        raise ConfigError(f"queue_gpu and queue_cpu are both {s.queue_gpu!r}", field="queue_cpu",
                          hint="the GPU stage needs a queue of its own")
    if s.scan_interval <= 0:
        raise ConfigError(f"scan_interval must be positive, got {s.scan_interval}", field="scan_interval")
    if not s.broker_url.startswith(("redis://", "rediss://")):
        raise ConfigError(f"broker_url must be a redis:// or rediss:// URL, got {s.broker_url!r}",
                          field="broker_url", hint="e.g. redis://:PASSWORD@localhost:6379/0")


def celery_config(s: Settings) -> dict[str, Any]:
    """Every Celery setting learnviz uses, from its own settings."""
    _check(s)
    from beat.schedule import beat_schedule

    queues = {"queue_gpu": s.queue_gpu, "queue_cpu": s.queue_cpu}
    routes = {name: {"queue": queues[q], "priority": int(p)} for name, (q, p) in ROUTES.items()}
    limits = {name: ({"soft_time_limit": s.gpu_soft_time_limit, "time_limit": s.gpu_time_limit}
                     if q == "queue_gpu" else
                     {"soft_time_limit": s.cpu_soft_time_limit, "time_limit": s.cpu_time_limit})
              for name, (q, _) in ROUTES.items()}
    limits["scan_checkpoints"] = {"soft_time_limit": scan_time_limit(s) - 30, "time_limit": scan_time_limit(s)}
    # A task's own priority (task_default_priority unless annotated) overrides its route's once the
    # task is registered in the sending process (a worker, the beat): each task gets its route's.
    for name, (_, p) in ROUTES.items():
        limits[name]["priority"] = int(p)
    # Celery has no setting for these two: annotations set them on every task ('*').
    annotations = {"*": {"max_retries": s.task_max_retries, "default_retry_delay": s.retry_backoff}, **limits}
    return {
        "broker_url": broker_url(s),
        "result_backend": result_url(s),
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout(s),
            "priority_steps": list(PRIORITY_STEPS),       # one list per level: 3 and 4 stay apart
            "queue_order_strategy": "priority",
        },
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout(s)},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,       # a worker waits for Redis instead of exiting
        # A follow-up message sent while Redis restarts waits for it (~15 s) instead of being lost.
        "task_publish_retry_policy": {"max_retries": 10, "interval_start": 0, "interval_step": 0.5,
                                      "interval_max": 2},
        # A running task goes on when the broker drops: its result is in the archive, and a
        # redelivered copy finds the stage current and does nothing.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_consumer": "workers.consumer:Consumer",   # survives a Redis restart (see there)
        # JSON only: a pickled message could run code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # At-least-once delivery, made safe by idempotent stages.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_retry_on_worker_lost": True,           # counted against max_retries (annotations): a
                                                     # checkpoint that kills its process each time is given up
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # A prefork child warms up before it reports to its parent (workers.signals.ensure_warm:
        # torch and transformers imported, UMAP's kernels compiled, 10 s and more on a cold or
        # loaded machine); Celery's default 4 s killed it and the next, in a loop, and no task ran.
        "worker_proc_alive_timeout": WARM_UP_SECONDS,
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in (s.queue_gpu, s.queue_cpu)],
        "task_default_queue": s.queue_cpu,
        "task_routes": routes,
        "task_default_priority": int(Priority.NORMAL),
        "task_annotations": annotations,
        "task_soft_time_limit": s.cpu_soft_time_limit,
        "task_time_limit": s.cpu_time_limit,
        "task_track_started": True,
        "result_expires": 86400,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
        "worker_send_task_events": True,             # Flower
        "task_send_sent_event": True,
        "beat_schedule": beat_schedule(s),
        "beat_scheduler": "celery.beat:Scheduler",   # an interval needs no schedule file on disk
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app for `settings` (default: this process's settings file and LEARNVIZ_* variables)."""
    settings = settings if settings is not None else load_settings()
    app = Celery("learnviz", include=["workers.tasks", "workers.signals"], set_as_current=False)
    app.conf.update(celery_config(settings))
    app.learnviz_settings = settings
    return app


def __getattr__(name: str):
    # `celery -A workers` asks for `workers.celery.app`: build it then, not at import.
    if name == "app":
        app = make_app()
        app.set_current()
        globals()["app"] = app
        return app
    raise AttributeError(name)
