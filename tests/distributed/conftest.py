"""The distributed mode against the real thing: our own redis-server (a free port, a password, no
persistence, so a restart loses everything as a crashed Redis would), real worker processes
started through `learnviz worker` / `celery -A workers`, real tiny checkpoints.

Workers are slow to start (torch import, UMAP warm-up), so one cluster serves a whole module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret pass/word"        # characters that must be quoted in a URL
REDIS_SERVER = shutil.which("redis-server")

needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class RedisServer:
    """One redis-server of our own; `restart()` loses every key, as a crash without persistence does."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--requirepass", PASSWORD, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 10, "redis-server to answer")

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=2)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:  # noqa: BLE001
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


def settings_file(path: Path, redis: RedisServer, run: Path, archive: Path, **extra) -> Path:
    """A settings file of its own: the tests read nothing from the repo's config/learnviz.yaml."""
    values = {"checkpoints": str(run), "archive": str(archive), "settle_seconds": 1.0, "device": "cpu",
              "broker_url": redis.url, "scan_interval": 1.0, "visualize_delay": 2.0, "retry_backoff": 1.0,
              "retry_backoff_max": 4.0, "cpu_concurrency": 1, "enqueue_ttl": 600.0, **extra}
    path.write_text(yaml.safe_dump(values))
    return path


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


class Cluster:
    """Processes of one distributed deployment, their logs and the folders they share."""

    def __init__(self, tmp: Path, redis: RedisServer):
        self.tmp = tmp
        self.redis = redis
        self.run = tmp / "run"
        self.archive = tmp / "archive"
        self.logs = tmp / "logs"
        self.run.mkdir()
        self.logs.mkdir()
        self.config = settings_file(tmp / "learnviz.yaml", redis, self.run, self.archive)
        self.env = {**os.environ, "LEARNVIZ_CONFIG": str(self.config), "LEARNVIZ_REDIS_PASSWORD": PASSWORD,
                    "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.env.pop("LEARNVIZ_WORKER_NAME", None)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def problems(self) -> str:
        """The ERROR and CRITICAL lines of every log, for a failing assertion's message."""
        lines = [f"{p.stem}: {line[:300]}" for p in sorted(self.logs.glob("*.log"))
                 for line in p.read_text(errors="replace").splitlines() if "ERROR/" in line or "CRITICAL/" in line]
        return "\n".join(lines[-30:]) + f"\n(logs in {self.logs})"

    def wait(self, predicate, timeout: float, what: str):
        try:
            return wait_for(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.problems()}") from None

    def wait_ready(self, name: str, timeout: float = 120) -> None:
        def ready():
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
            return "learnviz: process" in self.log(name) and " ready." in self.log(name)
        wait_for(ready, timeout, f"{name} to be ready")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to each main process), then whatever is left of their groups."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)

    # ------------------------------------------------------------------ the archives

    def archive_of(self, checkpoint: Path) -> Path:
        return self.archive / f"{checkpoint.name}.h5"

    def stages(self, checkpoint: Path) -> dict:
        """{stage: (status, worker)} of a checkpoint's archive; {} while it has none."""
        from learnviz.archive import Archive, ArchiveError
        path = self.archive_of(checkpoint)
        if not path.exists():
            return {}
        try:
            a = Archive(path)
        except ArchiveError:
            return {}
        return {name: (info.status, info.attrs.get("worker", "")) for name, info in a.stages.items()}

    def complete(self, checkpoints: list[Path]) -> bool:
        for ck in checkpoints:
            st = self.stages(ck)
            if any(st.get(s, ("",))[0] != "ok" for s in ("extract", "analysis", "geometry")):
                return False
        return (self.archive / "series.h5").exists()

    def history(self) -> list[dict]:
        path = self.archive / "learning_history.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
        return rows


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster_dir(request):
    """The cluster's folder, outside pytest's numbered temp folders (which other pytest sessions on
    the machine rotate away): kept when a test of the module failed (or KEEP_LEARNVIZ_CLUSTER is
    set), for its logs."""
    path = Path(tempfile.mkdtemp(prefix="learnviz-cluster-"))
    failed = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed and not os.environ.get("KEEP_LEARNVIZ_CLUSTER"):
        shutil.rmtree(path, ignore_errors=True)
    else:
        print(f"\ncluster logs kept in {path / 'logs'}")


@pytest.fixture(scope="module")
def cluster(cluster_dir, redis_server):
    """A gpu-queue worker (through `learnviz worker`), a cpu-queue worker (through `celery -A workers`,
    the documented direct way) and `learnviz beat`, over one watched folder."""
    c = Cluster(cluster_dir, redis_server)
    exe = Path(sys.executable).parent
    c.start("gpu", [str(exe / "learnviz"), "worker", "--queue", "gpu", "--name", "gpu-test@%h"])
    c.start("cpu", [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "cpu", "-n", "cpu-test@%h",
                    "--pool", "prefork", "--concurrency", "1", "--loglevel", "info"])
    try:
        c.wait_ready("gpu")
        c.wait_ready("cpu")
        c.start("beat", [str(exe / "learnviz"), "beat"])
        yield c
    finally:
        c.stop()


def drop_checkpoint(run: Path, tokenizer, step: int, *, seed: int = 0, **kw) -> Path:
    """Write a checkpoint into the watched folder the way a trainer does: in place, file by file."""
    from helpers import make_checkpoint  # tests/conftest.py puts tests/ on the path
    return make_checkpoint(run / f"checkpoint-{step}", tokenizer, step=step, seed=seed, **kw)
