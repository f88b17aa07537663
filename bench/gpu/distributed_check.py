"""Device check of the GPU worker (prefork, concurrency 1): CUDA only in the child, never in the
parent; extractions on the GPU; SIGKILL of the child mid-extraction -> the task runs again."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path.cwd()
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
DEVICE = sys.argv[1] if len(sys.argv) > 1 else "cuda"
OUT = Path(os.environ.get("OUT", ".gpu/distributed/out"))
OUT.mkdir(parents=True, exist_ok=True)
REDIS = os.environ.get("REDIS_SERVER", str(ROOT / ".gpu/distributed/redis/redis-server"))
PW = "pw"
res = {"device": DEVICE}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, t, what):
    end = time.time() + t
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise SystemExit(f"TIMEOUT {what}")


def maps(pid):
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {}
    return {"libcuda": "libcuda" in text, "libtorch": "libtorch" in text}


def kids(pid):
    out = []
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = st.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[1]) == pid:
            out.append(int(st.parent.name))
    return out


tmp = Path(tempfile.mkdtemp(prefix="lvgpu-"))
port = free_port()
env_r = {**os.environ, "LD_LIBRARY_PATH": str(Path(REDIS).parent)}
redis = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--requirepass", PW, "--dir", str(tmp)], env=env_r, stdout=open(tmp / "redis.log", "w"),
                         stderr=subprocess.STDOUT)
t0 = time.time()
from helpers import make_checkpoint, tiny_tokenizer  # noqa: E402

tok = tiny_tokenizer()
run = tmp / "run"
cks = [make_checkpoint(run / f"checkpoint-{s}", tok, step=s, seed=i, n_embd=256)
       for i, s in enumerate((10, 20, 30, 40))]
res["make_checkpoints_s"] = time.time() - t0
cfg = tmp / "learnviz.yaml"
cfg.write_text(json.dumps({"checkpoints": str(run), "archive": str(tmp / "archive"), "settle_seconds": 0.0,
                           "device": DEVICE, "broker_url": f"redis://127.0.0.1:{port}/0", "retry_backoff": 1.0}))
env = {**os.environ, "LEARNVIZ_CONFIG": str(cfg), "LEARNVIZ_REDIS_PASSWORD": PW, "PYTHONUNBUFFERED": "1",
       "HF_HUB_OFFLINE": "1"}
log = tmp / "gpu.log"
w = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "gpu", "-n", "gpu@%h",
                      "--pool", "prefork", "--concurrency", "1", "--loglevel", "info", "--without-mingle"],
                     env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
try:
    wait(lambda: "learnviz: process" in log.read_text(), 180, "worker ready")
    res["worker_ready_s"] = time.time() - t0
    res["parent_before"] = maps(w.pid)
    from learnviz.archive import Archive
    from learnviz.settings import load_settings
    from workers.celery import make_app
    from workers.dispatch import Dispatcher
    s = load_settings(cfg, environ={"LEARNVIZ_REDIS_PASSWORD": PW})
    d = Dispatcher(make_app(s), s)
    t1 = time.time()
    for ck in cks:
        d.send_stage("extract", ck)

    def ok(ck):
        p = tmp / "archive" / f"{ck.name}.h5"
        try:
            st = Archive(p).stage("extract")
        except Exception:
            return False
        return st is not None and st.status in ("ok", "failed")
    wait(lambda: all(ok(c) for c in cks), 240, "extractions")
    res["four_extractions_s"] = time.time() - t1
    (child,) = kids(w.pid)
    res["parent_after"] = maps(w.pid)
    res["child_after"] = maps(child)
    res["nvidia_smi_apps"] = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                             "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout if DEVICE != "cpu" else ""
    res["parent_pid"], res["child_pid"] = w.pid, child
    res["stages"] = []
    for c in cks:
        st = Archive(tmp / "archive" / f"{c.name}.h5").stage("extract")
        res["stages"].append({k: st.attrs.get(k) for k in ("device", "dtype", "worker")}
                             | {"status": st.status, "reason": st.reason, "timings": st.attrs.get("timings")})
    # SIGKILL of the child during a GPU extraction
    big = make_checkpoint(run / "checkpoint-50", tok, step=50, seed=3, n_embd=256)
    key = Dispatcher.queued_key("extract", str(big.resolve()))
    tid = d.send_stage("extract", big)
    wait(lambda: f"collect_embeddings[{tid}] received" in log.read_text(), 30, "big received")
    time.sleep(0.5)
    res["archive_before_kill"] = (tmp / "archive" / "checkpoint-50.h5").exists()
    (child,) = kids(w.pid)
    os.kill(child, signal.SIGKILL)
    wait(lambda: ok(big), 240, "big after kill")
    text = log.read_text()
    res["big_received_count"] = text.count(f"collect_embeddings[{tid}] received")
    st = Archive(tmp / "archive" / "checkpoint-50.h5").stage("extract")
    res["big_stage"] = {"status": st.status, "worker": st.attrs.get("worker"), "device": st.attrs.get("device")}
    res["new_child"] = kids(w.pid)
    res["parent_final"] = maps(w.pid)
    res["ok"] = (not res["parent_after"].get("libcuda") and not res["parent_after"].get("libtorch")
                 and all(x["status"] == "ok" for x in res["stages"]) and res["big_received_count"] == 2
                 and st.status == "ok" and bool(res["child_after"].get("libcuda")) == (DEVICE != "cpu"))
finally:
    w.send_signal(signal.SIGTERM)
    try:
        w.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(w.pid, signal.SIGKILL)
    redis.kill()
    (OUT / "gpu_worker.log").write_text(log.read_text()[-200000:])
    (OUT / "result.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str))
