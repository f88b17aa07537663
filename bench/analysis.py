"""CPU-stage speed and layout stability on the demo series (500 probes, 10 checkpoints).

Prints, in one run:
  - the CPU-stage time (analysis + geometry + series) of one checkpoint in a cold process: a
    fresh python that imports everything and runs `run_cpu_stages(steps={step}, force=True)`,
    as `learnviz run` from cron or a job script does. Four cases, `--repeat` rounds of each,
    interleaved (the medians are printed, and every run):
      newest checkpoint, numba cache filled   the usual case (goal <= 5 s): its layouts are
                                              refined from the previous checkpoint's in numpy
      newest checkpoint, empty numba cache    the very first run on a machine
      first checkpoint, numba cache filled    its layouts start from a cold UMAP fit (umap is
                                              imported, its kernels come from numba's cache)
      first checkpoint, empty numba cache     the very first run: numba compiles umap's kernels
    Each run gets its own XDG_CACHE_HOME, so learnviz caches umap's kernels in a folder of the
    bench's (learnviz/analysis/numba_cache.py; by default ~/.cache/learnviz/numba): a new empty
    one, or one filled by the first empty run; NUMBA_CACHE_DIR is unset, as for most users.
  - the CPU-stage time per checkpoint in a warm process (goal <= 2 s), the median over every
    checkpoint, after umap's warm-up (the filled cache),
  - the mean Procrustes disparity between consecutive UMAP frames of the aligned layout
    (learnviz's default) and of independent UMAP fits per checkpoint, and their ratio (goal <= 1/3),
    with the mean trustworthiness of each.

    python bench/analysis.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _demo import CACHE, ROOT, copy_settings, extracted_archive  # noqa: E402

PREPARE = """
import sys
from learnviz.settings import load_settings
from learnviz.pipeline import run_cpu_stages
s = load_settings(environ={}, overrides={"archive": sys.argv[1], "device": "cpu", "hard_examples": ""})
r = run_cpu_stages(s)
assert not r.failed, r.failed
"""

COLD = """
import sys, time
t0 = time.perf_counter()
from learnviz.settings import load_settings
from learnviz.pipeline import run_cpu_stages
s = load_settings(environ={}, overrides={"archive": sys.argv[1], "device": "cpu", "hard_examples": ""})
r = run_cpu_stages(s, steps={int(sys.argv[2])}, force=True)
assert not r.failed, r.failed
print(time.perf_counter() - t0, int("umap" in sys.modules))
"""


def cold_run(work: Path, step: int, cache_home: str) -> tuple[float, bool]:
    """Seconds of one fresh process's CPU stages of `step` with XDG_CACHE_HOME = `cache_home`,
    and whether it imported umap."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = cache_home
    out = subprocess.run([sys.executable, "-c", COLD, str(work), str(step)], cwd=ROOT, check=True, env=env,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1].split()
    return float(out[0]), out[1] == "1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the four cold cases (default 3)")
    args = ap.parse_args()

    source, settings = extracted_archive()
    work = CACHE / "analysis-work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    s = copy_settings(settings, work)
    from learnviz import archive as arc
    from learnviz.pipeline import run_cpu_stages
    from learnviz.readout import series
    steps = [a.step for a in series(work)]
    print(f"demo series: {len(steps)} checkpoints, {arc.list_archives(work)[0].attrs['probe_count']} probes")
    # every stage once, in order, in another process: this one must not import umap (numba)
    # before it chooses its numba cache folder
    subprocess.run([sys.executable, "-c", PREPARE, str(work)], cwd=ROOT, check=True)
    first, last = steps[0], steps[-1]

    # cold: fresh processes, interleaved rounds of the four cases
    tmp = Path(tempfile.mkdtemp(prefix="learnviz-bench-numba-"))
    filled = str(tmp / "filled")          # filled by round 0's first empty run
    cases = {("newest", "filled"): (last, lambda r: filled),
             ("newest", "empty"): (last, lambda r: str(tmp / f"empty-newest-{r}")),
             ("first", "empty"): (first, lambda r: filled if r == 0 else str(tmp / f"empty-first-{r}")),
             ("first", "filled"): (first, lambda r: filled)}
    order = [("first", "empty"), ("newest", "filled"), ("newest", "empty"), ("first", "filled")]
    runs: dict = {c: [] for c in cases}
    umap_in: dict = {c: set() for c in cases}
    try:
        for r in range(args.repeat):
            for case in order:
                step, folder = cases[case]
                secs, imported = cold_run(work, step, folder(r))
                runs[case].append(secs)
                umap_in[case].add(imported)
                print(f"  cold round {r + 1}: {case[0]} checkpoint, {case[1]} numba cache: {secs:.2f}s"
                      f"{'' if imported else ' (umap not imported)'}", file=sys.stderr, flush=True)

        def line(case) -> str:
            v = runs[case]
            return f"{statistics.median(v):.1f}s   (median of {len(v)}: {', '.join(f'{x:.1f}' for x in v)}"

        print(f"cold CPU stages of the newest checkpoint (fresh process, numba cache filled by an earlier run): "
              f"{line(('newest', 'filled'))}; goal <= 5 s)")
        print(f"cold CPU stages of the newest checkpoint, very first run (fresh process, empty numba cache): "
              f"{line(('newest', 'empty'))})")
        print(f"cold CPU stages of the first checkpoint (fresh process, cold UMAP fit, numba cache filled): "
              f"{line(('first', 'filled'))})")
        print(f"cold CPU stages of the first checkpoint, very first run (fresh process, cold UMAP fit, "
              f"empty numba cache): {line(('first', 'empty'))})")
        print(f"  umap imported by the cold process: newest checkpoint {sorted(umap_in[('newest', 'filled')])}, "
              f"first checkpoint {sorted(umap_in[('first', 'filled')])}")

        # warm: one process, pay umap's import and compilation once, then every checkpoint
        import torch
        torch.set_num_threads(2)
        os.environ.pop("NUMBA_CACHE_DIR", None)
        os.environ["XDG_CACHE_HOME"] = filled           # read when umap is first used
        from learnviz.analysis.umap_layout import disparity, layout, warm_up
        t = time.perf_counter()
        warm_up()
        print(f"umap warm-up (import + numba kernels from the filled cache, once per worker): "
              f"{time.perf_counter() - t:.1f}s")
        run_cpu_stages(s)
        per_ckpt = []
        for step in steps:   # as when that checkpoint arrives: its analysis, its geometry, the series
            t = time.perf_counter()
            r = run_cpu_stages(s, steps={step}, force=True)
            assert not r.failed, r.failed
            per_ckpt.append(time.perf_counter() - t)
        print(f"warm CPU stages per checkpoint (analysis + geometry + series): median "
              f"{statistics.median(per_ckpt):.2f}s, max {max(per_ckpt):.2f}s over {len(per_ckpt)} checkpoints"
              f"   (goal <= 2 s)")
        stability(work, s, layout, disparity)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stability(work: Path, s, layout, disparity) -> None:
    """Consecutive-frame disparity of the last layer, aligned chain vs independent fits."""
    from learnviz.readout import series
    embs = []
    for a in series(work):
        e = a.read("extract", ["embeddings"])["embeddings"]
        embs.append(e[f"layer_{max(int(k.split('_')[1]) for k in e)}"].astype(np.float32))
    results = {}
    for method in ("procrustes", "independent"):
        prev, frames, trust = None, [], []
        for e in embs:
            lay = layout(e, prev, method=method, n_neighbors=s.umap_neighbors, min_dist=s.umap_min_dist,
                         seed=s.umap_seed)
            frames.append(lay.coords)
            trust.append(lay.trustworthiness)
            prev = lay.coords
        d = [disparity(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
        results[method] = (float(np.mean(d)), float(np.mean(trust)))
        print(f"  {method:<12} mean consecutive disparity {results[method][0]:.4f}, mean trustworthiness "
              f"{results[method][1]:.3f}")
    ratio = results["procrustes"][0] / results["independent"][0]
    print(f"aligned / independent disparity = {ratio:.3f}   (goal <= 0.333)")


if __name__ == "__main__":
    main()
