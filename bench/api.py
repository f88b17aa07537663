"""The notebook API on a long run: `learnviz.open_run(dir).checkpoints` over 500 checkpoints.

Builds (once, cached under .bench-cache/api-<N>/) a run of N synthetic archives written with
learnviz's own archive writer (`learnviz.archive.write_stage`): per checkpoint an `extract` group
(500 probes, answers of 2-6 tokens, 2 pooled layers of width 64), an `analysis` group and a
`geometry` group built from the typed results (`AnalysisResult`, `GeometryResult`; the geometry
without its (n, n) similarity matrices, which `.checkpoints` never reads), and the three
learning_history rows the stages append. No model, no analysis is run.

Then times, as medians of --repeat rounds:
  cold  `archive.clear_memo()`, then `open_run(dir).checkpoints`: every archive opened and read
        (the files are in the OS page cache after the first round; "cold" is the process's memo)
  warm  a fresh `open_run(dir).checkpoints` in the same process, nothing cleared: the rows are
        kept per archive file version (`Archive.memo`), so no archive is opened
and prints both and their ratio (goal: warm under 1 s). Also `.history`, cold and warm.

    python bench/api.py                       # 500 checkpoints
    python bench/api.py --checkpoints 100 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learnviz import archive as arc  # noqa: E402

sys.path.append(str(ROOT / "bench"))   # after ROOT: bench/dashboard.py must not shadow the dashboard package
from _synthetic import API_HIDDEN as HIDDEN  # noqa: E402
from _synthetic import API_LAYERS as LAYERS  # noqa: E402
from _synthetic import API_PROBES as PROBES  # noqa: E402
from _synthetic import write_run  # noqa: E402

CACHE = ROOT / ".bench-cache"
GENERATOR = 1          # bump when the synthetic archives change: the cache is rebuilt


def built_run(n: int) -> Path:
    """The cached run of n checkpoints, written when missing or made by another generator version."""
    folder = CACHE / f"api-{n}"
    marker = folder / "bench-complete.json"
    want = {"checkpoints": n, "probes": PROBES, "hidden": HIDDEN, "layers": list(LAYERS), "generator": GENERATOR}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"writing {n} synthetic archives to {folder} (once)", flush=True)
    t0 = time.perf_counter()
    write_run(folder, n)
    marker.write_text(json.dumps(want))
    print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=500, metavar="N", help="checkpoints in the run (default 500)")
    ap.add_argument("--repeat", type=int, default=3, metavar="K", help="cold/warm rounds (default 3)")
    args = ap.parse_args()
    folder = built_run(args.checkpoints)

    import learnviz
    from learnviz.notebook import require_pandas
    require_pandas()               # imported before timing: the rounds measure reads, not imports

    def timed(fn):
        t = time.perf_counter()
        value = fn()
        return time.perf_counter() - t, value

    cold, warm, hist_cold, hist_warm = [], [], [], []
    reference = None
    for _ in range(args.repeat):
        arc.clear_memo()
        dt, df = timed(lambda: learnviz.open_run(folder).checkpoints)
        cold.append(dt)
        dt, again = timed(lambda: learnviz.open_run(folder).checkpoints)
        warm.append(dt)
        assert again.equals(df) and len(df) == args.checkpoints, "warm and cold tables differ"
        reference = df
        history_of = learnviz.open_run(folder)
        dt, _ = timed(lambda r=history_of: r.history)
        hist_cold.append(dt)
        dt, _ = timed(lambda r=history_of: r.history)
        hist_warm.append(dt)
    c, w = statistics.median(cold), statistics.median(warm)
    hc, hw = statistics.median(hist_cold), statistics.median(hist_warm)
    print(f"{args.checkpoints} checkpoints x {PROBES} probes, layers {list(LAYERS)}: "
          f".checkpoints is {reference.shape[0]} rows x {reference.shape[1]} columns; medians of {args.repeat}")
    print(f"{'':30s} {'cold':>9s} {'warm':>9s} {'warm/cold':>10s}")
    print(f"{'open_run(dir).checkpoints':30s} {c:8.3f}s {w:8.3f}s {w / c:10.4f}")
    print(f"{'run.history':30s} {hc:8.3f}s {hw:8.3f}s {hw / hc:10.4f}")
    print(f"goal (warm .checkpoints under 1 s): {'met' if w < 1.0 else 'NOT met'}")
    entries = 2 * args.checkpoints
    if entries > arc.MEMO_SIZE:
        print(f"note: {entries} memo entries (header + row per archive) exceed archive.MEMO_SIZE {arc.MEMO_SIZE}: "
              "the warm read evicts itself")


if __name__ == "__main__":
    main()
