"""The distributed pipeline: does CPU work overlap GPU work, and what does Celery cost per task?

Starts its own redis-server, one gpu-queue and one cpu-queue worker (`learnviz worker`), then
backfills N checkpoints of the demo model (trained once, cached in .bench-cache/demo-N) with one
scan, and prints:
  total / sum(GPU stage)   goal <= 1.2: wall time from the scan to the last history update,
                           over the sum of the collect_embeddings task times (the gpu worker's
                           log). 1.0 means every CPU stage ran while the GPU was busy; it
                           can only get there when the CPU side is the faster one, so it also
  total / max(GPU, CPU)    the same over the busier side's work: 1.0 when the slower side
                           never waited for the other (the pipeline overlaps perfectly).
  Celery overhead          goal < 5% of a checkpoint's work: a task's round trip through Redis
                           and a warm worker (send, run, result back) minus the same call made
                           directly, for a stage that finds its result current (so the call
                           itself is cheap and the difference is Celery's).

    python bench/pipeline.py                        # 20 checkpoints, on the CPU
    python bench/pipeline.py --device cuda          # the gpu worker on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from learnviz.settings import load_settings  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from _demo import demo_checkpoints  # noqa: E402

PASSWORD = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


class Processes:
    def __init__(self, tmp: Path, env: dict):
        self.tmp, self.env, self.procs = tmp, env, {}

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=20, help="checkpoints in the backfill (default: 20)")
    ap.add_argument("--device", default="cpu", help="device of the gpu worker (default: cpu)")
    ap.add_argument("--gpu-threads", type=int, default=1, help="torch threads of the gpu worker on CPU (default: 1)")
    ap.add_argument("--cpu-workers", type=int, default=1, help="processes of the cpu worker (default: 1)")
    ap.add_argument("--rounds", type=int, default=30, help="round trips for the overhead (default: 30)")
    ap.add_argument("--visualize-delay", type=float, default=20.0,
                    help="the debounce of the figures, in seconds (default: 20; the setting's default is 60)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, archives)")
    args = ap.parse_args()

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")
    run = demo_checkpoints(args.checkpoints)
    tmp = Path(tempfile.mkdtemp(prefix="learnviz-bench-"))
    port = free_port()
    config = tmp / "learnviz.yaml"
    config.write_text(json.dumps({
        "checkpoints": str(run), "archive": str(tmp / "archive"), "settle_seconds": 0.0, "device": args.device,
        "broker_url": f"redis://127.0.0.1:{port}/0", "scan_interval": 3600.0, "visualize_delay": args.visualize_delay,
        "cpu_concurrency": args.cpu_workers}))
    env = {**os.environ, "LEARNVIZ_CONFIG": str(config), "LEARNVIZ_REDIS_PASSWORD": PASSWORD, "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    gpu_env = {**env, "OMP_NUM_THREADS": str(args.gpu_threads)}
    cpu_env = {**env, "OMP_NUM_THREADS": "1"}
    procs = Processes(tmp, env)
    exe = str(Path(sys.executable).parent / "learnviz")
    try:
        procs.start("redis", [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--requirepass", PASSWORD, "--dir", str(tmp)])
        procs.env = gpu_env
        procs.start("gpu", [exe, "worker", "--queue", "gpu", "--name", "gpu@%h"])
        procs.env = cpu_env
        procs.start("cpu", [exe, "worker", "--queue", "cpu", "--name", "cpu@%h"])
        for name in ("gpu", "cpu"):
            wait_for(lambda name=name: "learnviz: process" in procs.log(name), 180, f"the {name} worker to warm up")
        figures = measure(args, load_settings(config, environ={"LEARNVIZ_REDIS_PASSWORD": PASSWORD}), procs)
    finally:
        procs.stop()
        if args.keep:
            print(f"logs and archives kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


def task_seconds(log: str, task: str, until: datetime | None = None) -> list[float]:
    """Run times of a task's successes in a worker's log (those logged up to `until`, if given)."""
    out = []
    for stamp, seconds in re.findall(rf"^\[([0-9-]+ [0-9:]+),\d+: [^]]*\] Task {task}\[[^\]]+\] "
                                     r"succeeded in ([0-9.]+)s",
                                     log, re.M):
        if until is None or datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S") <= until:
            out.append(float(seconds))
    return out


def measure(args, settings, procs: Processes) -> dict:
    from beat.scan import scan
    from learnviz import pipeline
    from learnviz import readout as an
    from workers.celery import make_app
    from workers.dispatch import PREFIX, Dispatcher

    app = make_app(settings)
    dispatch = Dispatcher(app, settings)

    def done() -> bool:
        if dispatch.redis.keys(f"{PREFIX}queued:*"):
            return False
        archives = an.series(settings.archive_dir())
        if len(archives) < args.checkpoints or any(a.stage(s) is None for a in archives
                                                   for s in (an.ANALYSIS, an.GEOMETRY)):
            return False
        # a failed geometry stays "stale" (see the report): do not wait for it forever
        return not pipeline.history_stale(settings) or any(not a.stage(an.GEOMETRY).ok for a in archives)

    t0 = time.perf_counter()
    sent = scan(settings, dispatch)
    assert len(sent["sent"]) == args.checkpoints, sent
    wait_for(done, 1800, "the backfill")
    total = time.perf_counter() - t0
    end = datetime.now()
    # The debounced draw comes visualize_delay s after the first history update: wait for it.
    wait_for(lambda: not dispatch.redis.exists(f"{PREFIX}queued:visualize")
             and "generate_visualizations" in procs.log("cpu").rsplit("update_learning_history", 1)[-1],
             args.visualize_delay + 600, "the last draw")
    time.sleep(1.0)
    gpu_log, cpu_log = procs.log("gpu"), procs.log("cpu")
    gpu = task_seconds(gpu_log, "collect_embeddings")
    cpu = {t: task_seconds(cpu_log, t) for t in ("analyze", "update_learning_history", "generate_visualizations")}
    failed = [a.step for a in an.series(settings.archive_dir())
              if not all(a.stage(s).ok for s in (an.EXTRACT, an.ANALYSIS, an.GEOMETRY))]

    # Overhead: the same current stage, directly and through Celery, interleaved.
    ck = str(an.series(settings.archive_dir())[-1].attrs["checkpoint"])
    pipeline.analyze_checkpoint(settings, ck)       # imports, caches
    direct, through = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        assert pipeline.analyze_checkpoint(settings, ck).status == "current"
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert app.send_task("analyze", args=[ck]).get(timeout=60)["status"] == "current"
        through.append(time.perf_counter() - t)
    per_task = statistics.median(through) - statistics.median(direct)
    work = (sum(gpu) + sum(sum(v) for v in cpu.values())) / args.checkpoints
    tasks = (len(gpu) + sum(len(v) for v in cpu.values())) / args.checkpoints
    # The CPU work done during the backfill (a debounced draw may fall inside it, or after it).
    cpu_backfill = sum(sum(task_seconds(cpu_log, t, end)) for t in cpu)

    figures = {
        "checkpoints": args.checkpoints, "device": settings.device, "total_s": total, "gpu_stage_sum_s": sum(gpu),
        "gpu_tasks": len(gpu), "cpu_stage_sum_s": {k: sum(v) for k, v in cpu.items()},
        "cpu_tasks": {k: len(v) for k, v in cpu.items()}, "failed_steps": failed,
        "ratio_total_over_gpu": total / sum(gpu), "cpu_backfill_s": cpu_backfill,
        "ratio_total_over_busiest": total / max(sum(gpu), cpu_backfill), "direct_ms": 1000 * statistics.median(direct),
        "celery_ms": 1000 * statistics.median(through), "overhead_per_task_ms": 1000 * per_task,
        "work_per_checkpoint_s": work, "tasks_per_checkpoint": tasks,
        "overhead_share_per_checkpoint": per_task * tasks / work,
    }
    print(f"backfill of {args.checkpoints} demo checkpoints ({settings.device}), one gpu worker, one cpu worker "
          f"({args.cpu_workers} process{'es' if args.cpu_workers > 1 else ''})")
    print(f"  total {total:.1f}s to the last history update; GPU stage {sum(gpu):.1f}s over {len(gpu)} tasks; CPU "
          + ", ".join(f"{k} {sum(v):.1f}s/{len(v)}" for k, v in cpu.items()))
    if failed:
        print(f"  stages failed at steps {failed}")
    print(f"total / sum(GPU stage) = {total / sum(gpu):.3f}   (goal <= 1.2)")
    print(f"total / max(GPU stage, CPU work during the backfill {cpu_backfill:.1f}s) = "
          f"{total / max(sum(gpu), cpu_backfill):.3f}   (1.0: the slower side never waited)")
    print(f"Celery round trip {1000 * statistics.median(through):.1f} ms vs direct call "
          f"{1000 * statistics.median(direct):.1f} ms: overhead {1000 * per_task:.1f} ms per task, "
          f"{tasks:.1f} tasks per checkpoint")
    print(f"overhead / checkpoint's work ({work:.2f}s) = {100 * per_task * tasks / work:.2f}%   (goal < 5%)")
    return figures


if __name__ == "__main__":
    main()
