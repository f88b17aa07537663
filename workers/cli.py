"""`learnviz worker`, `learnviz beat`, `learnviz submit`: the distributed mode's commands.

`worker` and `beat` are thin wrappers: they check the settings, connect to the broker once (a
wrong password, host or port is a one-line error and exit status 2, not a Celery that retries for
ever), pass the flags on as LEARNVIZ_* variables and replace themselves with
`python -m celery -A workers ...`, so signals (Ctrl-C, docker stop) reach Celery directly.
Registered through the `learnviz.commands` entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from learnviz.errors import LearnvizError
from learnviz.flags import EPILOG, FORMATTER, add_extract_flags, add_paths, examples, settings_from
from learnviz.results import ANALYSIS, EXTRACT

ENV_FLAGS = ("checkpoints", "archive", "probes", "hard_examples", "tokenizer", "base_model", "device", "dtype",
             "batch_size", "layers", "settle_seconds", "retry_failed", "trust_remote_code", "broker_url",
             "cpu_concurrency")

DISTRIBUTED_EPILOG = EPILOG + """
The broker is Redis: --broker redis://[:PASSWORD@]HOST:PORT/DB, or LEARNVIZ_BROKER_URL, with the
password in LEARNVIZ_REDIS_PASSWORD to keep it out of the process list. Every worker, the beat and
`learnviz submit` must see the checkpoints and the archive at the same paths. See docs/distributed.md.
"""


def _broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", dest="broker_url", metavar="URL",
                   help="Redis URL of the broker (default: redis://localhost:6379/0)")


def register(sub) -> None:
    fmt = FORMATTER

    p = sub.add_parser("worker", help="run a Celery worker for the gpu or the cpu queue",
                       description="Run a Celery worker (`celery -A workers worker`). `--queue gpu` extracts "
                                   "checkpoints (collect_embeddings): one process, one model in memory at a time, "
                                   "CUDA initialised only in that process. `--queue cpu` runs the analyses, the "
                                   "history update, the visualizations and the beat's scans, one process per core "
                                   "unless --concurrency says otherwise; each process warms UMAP up once.",
                       epilog=examples("learnviz worker --queue gpu --checkpoints /data/runs/gpt2 --broker redis://gpu-box:6379/0",
                                       "learnviz worker --queue cpu --concurrency 4 --checkpoints /data/runs/gpt2",
                                       epilog=DISTRIBUTED_EPILOG), formatter_class=fmt)
    p.add_argument("--queue", choices=["gpu", "cpu"], required=True,
                   help="which queue to consume (named by the settings queue_gpu / queue_cpu)")
    p.add_argument("--concurrency", dest="cpu_concurrency", type=int, metavar="N",
                   help="processes of a cpu worker (default: the CPU cores); a gpu worker always runs 1")
    p.add_argument("--name", metavar="NAME", help="node name, recorded in the archives (default: QUEUE@HOSTNAME)")
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default: info)")
    add_paths(p)
    _broker(p)
    add_extract_flags(p, status_dir=False)   # nothing in the distributed mode reads status files
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("beat", help="scan for new checkpoints every scan_interval seconds",
                       description="Run the Celery beat (`celery -A workers beat`): every scan_interval seconds "
                                   "(setting, default 30) it sends one scan, which a cpu worker runs: every "
                                   "complete checkpoint under --checkpoints whose archive lacks a stage is "
                                   "enqueued once. Run one; a second one is harmless (its scans are skipped).",
                       epilog=examples("learnviz beat --checkpoints /data/runs/gpt2 --broker redis://gpu-box:6379/0",
                                       epilog=DISTRIBUTED_EPILOG), formatter_class=fmt)
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default: info)")
    add_paths(p)
    _broker(p)
    p.set_defaults(handler=cmd_beat)

    p = sub.add_parser("submit", help="enqueue one checkpoint by hand",
                       description="Send one checkpoint to the workers: its extraction (then its analysis, the "
                                   "history update and the visualizations follow), or only its analysis with "
                                   "--stage analysis. Nothing is sent while the same checkpoint and stage is "
                                   "queued or running, unless --force. Stages that are current do nothing.",
                       epilog=examples("learnviz submit /data/runs/gpt2/checkpoint-2000 --checkpoints /data/runs/gpt2",
                                       "learnviz submit /data/runs/gpt2/checkpoint-2000 --stage analysis --force",
                                       epilog=DISTRIBUTED_EPILOG), formatter_class=fmt)
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR",
                   help="the checkpoint folder, at the path the workers see it")
    p.add_argument("--stage", choices=[EXTRACT, ANALYSIS], default=EXTRACT,
                   help="what to send (default: extract)")
    p.add_argument("--force", action="store_true", help="send even if it is queued or running already")
    add_paths(p)
    _broker(p)
    p.set_defaults(handler=cmd_submit)




def _env_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)   # JSON is YAML: lists, bools, numbers


def celery_env(args, settings) -> dict[str, str]:
    """This process's environment plus the command-line settings as LEARNVIZ_* variables."""
    env = dict(os.environ)
    if args.config:
        env["LEARNVIZ_CONFIG"] = str(Path(args.config).resolve())
    for key in ENV_FLAGS:
        if settings.sources.get(key) == "command line":
            env[f"LEARNVIZ_{key.upper()}"] = _env_value(getattr(settings, key))
    return env


def worker_argv(args, settings) -> list[str]:
    queue = settings.queue_gpu if args.queue == "gpu" else settings.queue_cpu
    if args.queue == "gpu":
        if args.cpu_concurrency not in (None, 1):
            raise LearnvizError("a gpu worker runs one process (one model in memory at a time)",
                                field="--concurrency", hint="start one gpu worker per GPU instead")
        concurrency = 1
    else:
        concurrency = settings.cpu_concurrency or os.cpu_count() or 1
    return [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue,
            "-n", args.name or f"{args.queue}@%h",
            "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", args.loglevel,
            "--without-mingle"]   # workers share nothing but queues: no second of start-up asking neighbours


def beat_argv(args) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", args.loglevel]


_SOURCES = {"command line": "--broker", "environment": "LEARNVIZ_BROKER_URL"}
_FIXES = {
    "auth": "give the right password in LEARNVIZ_REDIS_PASSWORD or in the URL of --broker / LEARNVIZ_BROKER_URL",
    "refused": "is Redis running there? start it, or point --broker / LEARNVIZ_BROKER_URL at the right host:port",
    "unknown-host": "check the host name in --broker / LEARNVIZ_BROKER_URL",
    "timeout": "is the host up and the port open to this machine? check --broker / LEARNVIZ_BROKER_URL",
}


def broker_error(settings, problem, *, field: str = "broker_url") -> LearnvizError:
    """The one-line error of a broker that cannot be used: the URL (password redacted), what went
    wrong, where the URL came from and what to do."""
    source = settings.sources.get(field)
    hint = _FIXES.get(problem.kind, "check --broker / LEARNVIZ_BROKER_URL and LEARNVIZ_REDIS_PASSWORD")
    if field == "broker_url":
        source = _SOURCES.get(source, source)
    else:                              # a result backend of its own: no flag, its own variable
        hint = hint.replace("--broker / LEARNVIZ_BROKER_URL", "LEARNVIZ_RESULT_BACKEND")
        source = "LEARNVIZ_RESULT_BACKEND" if source == "environment" else source
    return LearnvizError(problem.message, field=field, hint=f"{hint}; the URL came from {source or 'the default'}")


def check_broker(settings) -> None:
    """Connect to the broker (and a result backend of its own) once, before Celery starts: a wrong
    password, an unknown host or a Redis that is not running is a LearnvizError (exit status 2)."""
    from .dispatch import broker_problem, broker_url, result_url
    checks = [("broker_url", broker_url(settings))]
    if result_url(settings) != checks[0][1]:
        checks.append(("result_backend", result_url(settings)))
    for field, url in checks:
        problem = broker_problem(url, role="broker" if field == "broker_url" else "result backend")
        if problem is not None:
            raise broker_error(settings, problem, field=field)


def _exec(argv: list[str], env: dict[str, str]) -> int:
    print("learnviz: exec " + " ".join(argv[1:]), file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, env)
    return 0  # not reached


def cmd_worker(args) -> int:
    settings = settings_from(args)
    from .celery import celery_config
    celery_config(settings)            # bad settings fail here, with the field named, not in Celery
    argv = worker_argv(args, settings)
    check_broker(settings)             # and a broker it cannot use, before Celery retries it for ever
    return _exec(argv, celery_env(args, settings))


def cmd_beat(args) -> int:
    settings = settings_from(args)
    from .celery import celery_config
    celery_config(settings)
    settings.archive_dir()             # the scan needs to know where the archives are
    check_broker(settings)
    return _exec(beat_argv(args), celery_env(args, settings))


def cmd_submit(args) -> int:
    import redis.exceptions

    from .celery import make_app
    from .dispatch import Dispatcher, broker_url, checkpoint_id, describe_broker_error

    settings = settings_from(args)
    path = Path(args.checkpoint_dir)
    if not path.is_dir():
        raise LearnvizError("not a folder", path=path, hint="give the checkpoint folder (checkpoint-N/)")
    dispatch = Dispatcher(make_app(settings), settings, patient=False)
    try:
        task_id = dispatch.send_stage(args.stage, path, force=args.force)
        existing = None if task_id else dispatch.queued(args.stage, path)
    except (redis.exceptions.RedisError, OSError) as exc:
        raise broker_error(settings, describe_broker_error(exc, broker_url(settings))) from None
    if task_id:
        print(f"sent {args.stage} of {checkpoint_id(path)}: task {task_id}")
    else:
        print(f"{args.stage} of {checkpoint_id(path)} is queued or running already (task {existing}); "
              "--force sends it again")
    return 0
