"""What one new checkpoint costs at the end of a run of N = 10, 100 and 500 checkpoints.

For each N, a synthetic run (bench/_synthetic.py: the demo's probe set, 2 layers of width 256,
every stage current; built once and cached under .bench-cache/scale-N/) gets checkpoint N + 1's
extraction (synthetic, not timed: the GPU stage), then, in a fresh process with nothing memoised
(as `learnviz run` starts; UMAP's JIT compiled and the modules imported beforehand, as in a
worker), the bench times:

  scan       which checkpoint folders lack a current extraction (`collect.plan`: what `learnviz run`,
             each `--watch` pass and the beat's scan do first; the scan cache and, in a worker, its
             watches say which checkpoints changed)
  planning   run_cpu_stages' own work: listing the archives, the stage keys, what is current
  analysis   the analysis stage of the new checkpoint (real: skills, calibration, weight drift)
  geometry   its geometry stage (real: similarity, RSA drift, CKA, the aligned UMAP layout)
  series     the series stage over the whole run (series.h5, hard_example_board.json)
  history    the new checkpoint's rows appended to learning_history.jsonl (by the stages above; their
             time is counted here, not in theirs). Readers of the whole history are timed with
             what reads it: the figures, status
  figures    the incremental figure draw: `visualize.generate` for the new checkpoint (its radar
             and UMAP frame) and every run-level figure whose inputs changed
  status     `learnviz status` in-process (memo cleared first; without the interpreter's start)

and reports the process's peak RSS over those steps and the new archive's size. Afterwards the
run is put back as it was (the new archive, history lines, series.h5, the board and the
figures), so every round measures the same step. Rounds are interleaved across N and each is a
subprocess; the table shows the best of the rounds (`--stat median`: their medians), then each
stage's time at the largest N over the smallest.

Each round runs twice: as a long-lived worker (the run's headers memoised from its earlier tasks)
and as a new process (nothing memoised, the folder index read), and the table has a block for each.
A third block times the whole `learnviz status` command as a user runs it (a new interpreter, its
imports and settings included): what the milliseconds of the new-process block amount to. The
`stat floor` row times one `os.stat` of each checkpoint's weight file and of each archive: the
least a new process (no watches, no memo) spends to notice a checkpoint rewritten in place, and so
the least ratio its scan could reach on this machine.

    python bench/scale.py                      # N = 10, 100, 500; 3 rounds
    python bench/scale.py --sizes 10,100 --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load_synthetic():
    """bench/_synthetic.py, loaded by path: bench/ on sys.path would shadow the `dashboard` package
    with bench/dashboard.py (the CLI loads its commands from there)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_synthetic", ROOT / "bench" / "_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_synthetic"] = module
    spec.loader.exec_module(module)
    return module


syn = _load_synthetic()

CACHE = ROOT / ".bench-cache"
STAGES = ("scan", "planning", "analysis", "geometry", "series", "history", "figures", "status")


def _peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")     # Linux: reset the peak RSS (VmHWM)
    except OSError:
        pass


def _peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


KEPT = ("series.h5", "hard_example_board.json", ".learnviz-rows.bin")    # what the series stage writes


class Snapshot:
    """The run-level files one new checkpoint changes, kept to put the run back afterwards."""

    def __init__(self, run: Path):
        self.run = run
        self.archive = syn.settings_for(run).archive_dir()
        self.keep = run / ".bench-snapshot"
        shutil.rmtree(self.keep, ignore_errors=True)
        self.keep.mkdir()
        self.history = (self.archive / "learning_history.jsonl").stat().st_size
        for name in KEPT:
            if (self.archive / name).exists():
                shutil.copy2(self.archive / name, self.keep / name)
        shutil.copytree(self.archive / "visualizations", self.keep / "visualizations")
        self.versions = {p.name: p.stat().st_mtime_ns for p in self.archive.glob("*.h5")}

    def restore(self, step: int) -> None:
        (self.archive / f"checkpoint-{step}.h5").unlink(missing_ok=True)
        shutil.rmtree(self.run / "ckpts" / f"checkpoint-{step}", ignore_errors=True)
        with open(self.archive / "learning_history.jsonl", "r+b") as fh:
            fh.truncate(self.history)
        for name in KEPT:
            if (self.keep / name).exists():
                shutil.copy2(self.keep / name, self.archive / name)
        shutil.rmtree(self.archive / "visualizations")
        shutil.copytree(self.keep / "visualizations", self.archive / "visualizations")
        shutil.rmtree(self.keep)
        changed = [n for n, v in self.versions.items()
                   if n != "series.h5" and (self.archive / n).stat().st_mtime_ns != v]
        if changed:
            raise RuntimeError(f"adding one checkpoint rewrote other archives: {changed[:5]}")


def measure(n: int, warm: bool = False) -> dict:
    """One round at N = n (run in its own process). `warm`: as a long-lived worker, whose memo
    holds the run's headers from its earlier tasks; else as a new process (nothing memoised)."""
    from learnviz import analyze as an
    from learnviz import archive as arc
    from learnviz import cli, collect, history, pipeline, visualize
    from learnviz import readout as ro

    run = syn.cached_run(CACHE, n)
    settings = syn.settings_for(run)
    for _ in range(2):      # a worker's earlier scans (its fingerprints kept; from the second on, its watches)
        collect.plan(settings, collect.load_probes(settings))
    pipeline.run_cpu_stages(settings)                      # settle: every stage current (no-op when so)
    an.run_series(ro.series(settings.archive_dir()), settings)   # the series' rows stored (once: a steady state)
    visualize.generate(settings, steps=[syn.STEP * n])
    # what a long-lived worker has done before its first task: numba's JIT of UMAP, the imports
    from learnviz.analysis.umap_layout import warm_up
    from learnviz.common import settle_heap
    warm_up()
    settle_heap()        # as workers.signals.ensure_warm ends (and the CLI once it has parsed its arguments)
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["status", "--archive", str(settings.archive_dir())])
    snap = Snapshot(run)
    step = syn.STEP * (n + 1)
    try:
        new = syn.write_checkpoint(run, n, n)              # the GPU stage's output, not timed
        if not warm:
            arc.clear_memo()
        probes = collect.load_probes(settings)
        gc.collect()
        t = time.perf_counter()
        left = collect.plan(settings, probes)
        scan = time.perf_counter() - t
        if left:
            raise RuntimeError(f"the scan found checkpoints to extract: {[j.checkpoint.path.name for j in left][:5]}")
        gc.collect()        # before each timed step: a collection of the previous step's garbage is not its cost
        _peak_reset()
        spent = dict.fromkeys(STAGES, 0.0)
        real = {name: getattr(an, name) for name in ("run_analysis", "run_geometry", "run_series")}
        real_append = history.append
        inside = {"history": 0.0}

        def timed(stage, fn):
            def wrapper(*a, **kw):
                t, before = time.perf_counter(), inside["history"]
                try:
                    return fn(*a, **kw)
                finally:        # the history rows a stage appends count as history, not as the stage
                    spent[stage] += time.perf_counter() - t - (inside["history"] - before)
            return wrapper

        def append(*a, **kw):
            t = time.perf_counter()
            try:
                return real_append(*a, **kw)
            finally:
                inside["history"] += time.perf_counter() - t

        an.run_analysis = timed("analysis", real["run_analysis"])
        an.run_geometry = timed("geometry", real["run_geometry"])
        an.run_series = timed("series", real["run_series"])
        history.append = append
        try:
            t = time.perf_counter()
            report = pipeline.run_cpu_stages(settings)
            total = time.perf_counter() - t
        finally:
            for name, fn in real.items():
                setattr(an, name, fn)
            history.append = real_append
        if report.failed or report.analysed != [step] or report.geometry != [step] or not report.series:
            raise RuntimeError(f"unexpected CPU work for one new checkpoint: analysed {report.analysed}, "
                               f"geometry {report.geometry}, series {report.series}, failed {report.failed}")
        spent["history"] = inside["history"]
        spent["scan"] = scan
        spent["planning"] = total - spent["analysis"] - spent["geometry"] - spent["series"] - spent["history"]
        rows = ro.history_rows(settings.archive_dir())
        assert rows[-1]["step"] == step and "geometry" in rows[-1] and "ece" in rows[-1]
        gc.collect()
        t = time.perf_counter()
        vis = visualize.generate(settings, steps=[step])
        spent["figures"] = time.perf_counter() - t
        if vis["failed"]:
            raise RuntimeError(f"figures failed: {vis['failed']}")
        if not warm:
            arc.clear_memo()
        gc.collect()
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            cli.main(["status", "--archive", str(settings.archive_dir())])
        spent["status"] = time.perf_counter() - t
        assert f"checkpoint-{step}" in out.getvalue()
        peak = _peak_mib()
        size = new.stat().st_size
        drawn = {k: round(v, 3) for k, v in vis["timings"].items()}
    finally:
        snap.restore(step)
    return {"n": n, "warm": warm, "seconds": spent, "peak_mib": peak, "archive_bytes": size, "drawn": drawn}


def _status_command(n: int, env: dict) -> float:
    """Seconds of `learnviz status` on the run of N = n, as a user types it: a new interpreter,
    its imports, the settings, the listing and the table (stdout discarded)."""
    archive = syn.settings_for(syn.cached_run(CACHE, n)).archive_dir()
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "learnviz.cli", "status", "--archive", str(archive)],
                          capture_output=True, text=True, env=env)
    spent = time.perf_counter() - t
    if proc.returncode or f"checkpoint-{syn.STEP * n}" not in proc.stdout:
        sys.exit(f"learnviz status at N={n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return spent


def _stat_floor(n: int, rounds: int = 5) -> float:
    """Seconds for one `os.stat` of each checkpoint's weight file and of each archive of the run of
    N = n (best of `rounds`): the least that a new process, which has no watches and no memo, spends
    to notice a checkpoint rewritten in place (the Trainer rewrites model.safetensors on resume; no
    folder's time changes) or an archive replaced."""
    run = syn.cached_run(CACHE, n)
    files = [str(p / "model.safetensors") for p in sorted((run / "ckpts").iterdir())]
    files += [str(p) for p in sorted(syn.settings_for(run).archive_dir().glob("*.h5"))]
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for f in files:
            os.stat(f)
        best = min(best, time.perf_counter() - t)
    return best


MODES = {"worker": "in a worker (its memo warm: a Celery CPU worker, `learnviz run --watch`, the Trainer callback)",
         "new process": "in a new process (nothing memoised: `learnviz run` from cron, `learnviz status`)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,500", help="run lengths N, comma-separated (default 10,100,500)")
    ap.add_argument("--repeat", type=int, default=3, metavar="K", help="interleaved rounds (default 3)")
    ap.add_argument("--stat", choices=("min", "median"), default="min",
                    help="each cell: the best of the K rounds (default: as timeit, since load on a shared machine "
                         "only ever adds time) or their median")
    ap.add_argument("--one", type=int, metavar="N", help=argparse.SUPPRESS)     # one round, as JSON (internal)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)      # with --one: as a worker
    args = ap.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(measure(args.one, warm=args.warm)))
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    for n in sizes:                                       # build before timing anything
        syn.cached_run(CACHE, n)
    results: dict[tuple[str, int], list[dict]] = {(m, n): [] for m in MODES for n in sizes}
    commands: dict[int, list[float]] = {n: [] for n in sizes}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for r in range(args.repeat):
        for n in sizes:
            for mode in MODES:
                cmd = [sys.executable, __file__, "--one", str(n)] + (["--warm"] if mode == "worker" else [])
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if proc.returncode or line is None:
                    sys.exit(f"round {r + 1} at N={n} ({mode}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
                results[mode, n].append(json.loads(line[len("RESULT "):]))
                print(f"  round {r + 1}/{args.repeat} N={n} {mode}: "
                      + " ".join(f"{k} {v:.3f}" for k, v in results[mode, n][-1]["seconds"].items()), flush=True)
            commands[n].append(_status_command(n, env))
    lo, hi = sizes[0], sizes[-1]
    pick = min if args.stat == "min" else statistics.median
    print(f"\none new checkpoint at the end of a run of N checkpoints (seconds, {args.stat} of {args.repeat}; "
          f"{len(syn.probe_set())} probes, {len(syn.LAYERS)} layers of {syn.HIDDEN})")
    print(f"{'stage':10s}" + "".join(f"{'N=' + str(n):>10s}" for n in sizes) + f"{f'{hi}/{lo}':>10s}")
    ratios = {}
    for mode, what in MODES.items():
        print(what)
        med = {n: {s: pick(x["seconds"][s] for x in results[mode, n]) for s in STAGES} for n in sizes}
        for s in STAGES:
            ratio = med[hi][s] / med[lo][s] if med[lo][s] > 0 else float("inf")
            ratios[f"{s}, {mode}"] = ratio
            print(f"{s:10s}" + "".join(f"{med[n][s]:10.3f}" for n in sizes) + f"{ratio:9.2f}x")
    print("as a user runs it: the whole `learnviz status` command (interpreter start and imports included)")
    cmd = {n: pick(commands[n]) for n in sizes}
    ratios["status command"] = cmd[hi] / cmd[lo]
    print(f"{'status':10s}" + "".join(f"{cmd[n]:10.3f}" for n in sizes) + f"{ratios['status command']:9.2f}x")
    floor = {n: _stat_floor(n) for n in sizes}
    scan = {n: pick(x["seconds"]["scan"] for x in results["new process", n]) for n in sizes}
    least = (scan[lo] + floor[hi] - floor[lo]) / scan[lo]
    print(f"{'stat floor':10s}" + "".join(f"{floor[n]:10.4f}" for n in sizes)
          + f"   (one stat per weight file and per archive: a new process's scan at {hi} can be no less "
          f"than {least:.2f}x its time at {lo})")
    every = [x for rs in results.values() for x in rs]
    print(f"{'peak RSS':10s}" + "".join(f"{max(x['peak_mib'] for x in every if x['n'] == n):8.0f}MB" for n in sizes))
    print(f"{'archive':10s}" + "".join(f"{results['worker', n][0]['archive_bytes'] / 2**20:8.2f}MB" for n in sizes)
          + "   (the new checkpoint's archive)")
    other = statistics.median if args.stat == "min" else min
    alt = {f"{s}, {mode}": other(x["seconds"][s] for x in results[mode, hi])
           / max(other(x["seconds"][s] for x in results[mode, lo]), 1e-9) for mode in MODES for s in STAGES}
    alt["status command"] = other(commands[hi]) / other(commands[lo])
    top = max(alt, key=alt.get)
    print(f"({'median' if args.stat == 'min' else 'min'} of the rounds instead: "
          f"worst {alt[top]:.2f}x ({top}))")
    worst = max(ratios, key=ratios.get)
    print(f"worst stage at {hi} / at {lo}: {ratios[worst]:.2f}x ({worst})")


if __name__ == "__main__":
    main()
