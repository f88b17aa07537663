"""The GPU worker's memory over a long backfill: one process archives N checkpoints in a row
through the GPU stage's own entry point (`pipeline.collect_embeddings`, what the gpu worker's
task calls), and the memory it holds after each is recorded.

Prints, per checkpoint, the device memory still allocated after it (torch.cuda.memory_allocated),
the peak of that checkpoint (max_memory_allocated, reset each time), the reserved pool and the
process's RSS; then the growth from the 5th checkpoint to the last (goal <= 5 %), for the
allocated memory and the RSS. On the CPU only the RSS lines mean something.

    python bench/gpu_memory.py --device cuda --checkpoints 30
    python bench/gpu_memory.py --checkpoints 12            # CPU: the RSS only
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo import CACHE, demo_checkpoints  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mb(v: float | None) -> str:
    return f"{v:9.1f}" if v is not None else f"{'-':>9}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=30, help="checkpoints archived in a row (default 30)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    import torch

    from learnviz import pipeline
    from learnviz.settings import load_settings

    ck_root = demo_checkpoints(args.checkpoints)
    archive = CACHE / f"gpu-memory-{args.checkpoints}"
    shutil.rmtree(archive, ignore_errors=True)
    settings = load_settings(environ={}, overrides={"checkpoints": str(ck_root), "archive": str(archive),
                                                    "settle_seconds": 0.0, "device": args.device,
                                                    "dtype": args.dtype})
    cuda = args.device.startswith("cuda")
    ckpts = sorted(ck_root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    rows = []
    print(f"{len(ckpts)} checkpoints of {ck_root}, device {args.device}")
    print(f"{'#':>3} {'step':>6} {'state':<8} {'s':>6} {'alloc MB':>9} {'peak MB':>9} {'reserved MB':>11} "
          f"{'RSS MB':>8}")
    for i, ck in enumerate(ckpts, 1):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        r = pipeline.collect_embeddings(settings, ck)
        dt = time.perf_counter() - t0
        row = {"i": i, "step": r.step, "state": r.status, "seconds": dt, "rss_mb": rss_mb(),
               "alloc_mb": torch.cuda.memory_allocated() / 2**20 if cuda else None,
               "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
               "reserved_mb": torch.cuda.memory_reserved() / 2**20 if cuda else None}
        rows.append(row)
        print(f"{i:>3} {r.step:>6} {r.status:<8} {dt:6.2f} {_mb(row['alloc_mb'])} {_mb(row['peak_mb'])} "
              f"{_mb(row['reserved_mb']):>11} {row['rss_mb']:8.1f}", flush=True)
    base = rows[min(4, len(rows) - 1)]
    last = rows[-1]
    out = {"checkpoints": len(rows), "device": args.device, "rows": rows}
    for key in ("rss_mb", "alloc_mb", "peak_mb"):
        if base[key]:
            growth = last[key] / base[key] - 1
            out[f"{key}_growth"] = growth
            print(f"{key[:-3]} growth, checkpoint {base['i']} -> {last['i']}: {growth * 100:+.1f} %   (goal <= 5 %)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
