"""CPU-stage speed and layout stability on the demo series (500 probes, 10 checkpoints).

Prints, in one run:
  - the CPU-stage time per checkpoint (analysis + geometry) in a warm process (goal <= 2 s), the
    median over every checkpoint, and in a cold one (a fresh process, umap imported and numba
    compiling on first use),
  - the mean Procrustes disparity between consecutive UMAP frames of the aligned layout
    (learnviz's default) and of independent UMAP fits per checkpoint, and their ratio (goal <= 1/3).

    python bench/analysis.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _demo import CACHE, ROOT, copy_settings, extracted_archive  # noqa: E402

COLD = """
import sys, time, dataclasses
t0 = time.perf_counter()
from learnviz.settings import load_settings
from learnviz.pipeline import run_cpu_stages
s = load_settings(environ={}, overrides={"archive": sys.argv[1], "device": "cpu", "hard_examples": ""})
r = run_cpu_stages(s, steps={int(sys.argv[2])}, force=True)
assert not r.failed, r.failed
print(time.perf_counter() - t0)
"""


def main() -> None:
    import torch
    torch.set_num_threads(2)
    from learnviz import archive as arc
    from learnviz.analysis.umap_layout import disparity, layout, warm_up
    from learnviz.pipeline import run_cpu_stages
    from learnviz.readout import series

    source, settings = extracted_archive()
    work = CACHE / "analysis-work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    s = copy_settings(settings, work)
    steps = [a.step for a in series(work)]
    print(f"demo series: {len(steps)} checkpoints, {arc.list_archives(work)[0].attrs['probe_count']} probes")

    # warm: one process, pay umap's import and compilation once, then every checkpoint
    t = time.perf_counter()
    warm_up()
    print(f"umap warm-up (import + numba compile, once per worker): {time.perf_counter() - t:.1f}s")
    run_cpu_stages(s)                                     # every stage once, in order
    per_ckpt = []
    for step in steps:   # as when that checkpoint arrives: its analysis, its geometry, the series
        t = time.perf_counter()
        r = run_cpu_stages(s, steps={step}, force=True)
        assert not r.failed, r.failed
        per_ckpt.append(time.perf_counter() - t)
    last = steps[-1]
    print(f"warm CPU stages per checkpoint (analysis + geometry + series): median {statistics.median(per_ckpt):.2f}s, "
          f"max {max(per_ckpt):.2f}s over {len(per_ckpt)} checkpoints   (goal <= 2 s)")
    cold = float(subprocess.run([sys.executable, "-c", COLD, str(work), str(last)], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(f"cold CPU stages of the newest checkpoint (fresh process: imports, umap compile): {cold:.1f}s")

    # layout stability: consecutive-frame disparity, aligned chain vs independent fits
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
