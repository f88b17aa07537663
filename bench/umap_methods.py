"""Layout stability: learnviz's UMAP methods on a real checkpoint series.

For one layer of every checkpoint of an archive series (default: the demo series of
bench/_demo.py, trained and extracted once into .bench-cache/, layer 3, 10 checkpoints x 500
probes) prints, per method:
  disparity   mean scipy.spatial.procrustes disparity between consecutive frames (0 = same
              picture up to rotation/reflection/scale/shift)
  ratio       disparity(method) / disparity(independent)   goal <= 1/3 for learnviz's default
  trust       mean (and min) sklearn trustworthiness, the same n_neighbors and metric
  s/frame     warm wall time per frame (numba compiled beforehand, not counted)
Methods: independent (a fresh UMAP per checkpoint, the baseline), procrustes (learnviz's
default: a gentle refinement from the previous frame, then orthogonal Procrustes),
procrustes-umap-defaults (the same chain with umap's own 500 epochs from learning rate 1.0,
to show what the refinement settings buy), procrustes-umap-sgd (the chain as learnviz ran it
before its refinement moved to numpy: umap's own kNN and numba SGD, the same settings),
aligned (umap.AlignedUMAP over the series).

    python bench/umap_methods.py                          # demo series, layer 3, seed 0
    python bench/umap_methods.py --seeds 0 1 2 --no-aligned  # what docs/performance.md quotes
    python bench/umap_methods.py --layer 2 --seeds 0 1 2  # more layers / seeds
    python bench/umap_methods.py --archive DIR --no-aligned
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from learnviz.analysis import umap_layout as ul  # noqa: E402
from learnviz.archive import list_archives  # noqa: E402


def load_series(archive: str, layer: int) -> tuple[list[int], list[np.ndarray]]:
    steps, embs = [], []
    for a in list_archives(archive):
        data = a.read("extract")
        key = f"layer_{layer}"
        if key not in data["embeddings"]:
            raise SystemExit(f"{a.path}: no embeddings for layer {layer} (have {sorted(data['embeddings'])})")
        steps.append(a.step)
        embs.append(data["embeddings"][key])
    if len(embs) < 2:
        raise SystemExit(f"{archive}: need at least 2 checkpoints, found {len(embs)}")
    return steps, embs


def chain(embs, seed: int, method: str, **kw) -> tuple[list, float]:
    """One frame per checkpoint, each from the previous frame's coordinates; seconds per frame."""
    frames, prev = [], None
    t0 = time.perf_counter()
    for e in embs:
        f = ul.layout(e, prev, method=method, seed=seed, **kw)
        frames.append(f)
        prev = f.coords
    return frames, (time.perf_counter() - t0) / len(embs)


def umap_sgd_chain(embs, seed: int) -> tuple[list, float]:
    """The procrustes chain with umap doing everything (its kNN, graph and numba SGD), as
    learnviz refined before analysis/umap_sgd.py; the same epochs, learning rate and alignment."""
    frames, prev = [], None
    t0 = time.perf_counter()
    for e in embs:
        x = ul._check_emb(e)
        k = ul._neighbors(15, len(x))
        start = prev if prev is not None else ul._fit(x, k, 0.1, seed, ul.DEFAULT_METRIC, "spectral")
        refined = ul._fit(x, k, 0.1, seed, ul.DEFAULT_METRIC, ul._scaled_init(start), n_epochs=ul.REFINE_EPOCHS,
                          learning_rate=ul.REFINE_LEARNING_RATE)
        coords = ul.align_to(refined, start)
        frames.append(ul.Layout(coords.astype(np.float32), "procrustes", {},
                                ul._trust(x, coords, min(k, math.ceil(len(x) / 2) - 1), ul.DEFAULT_METRIC),
                                None if prev is None else ul.disparity(prev, coords)))
        prev = frames[-1].coords
    return frames, (time.perf_counter() - t0) / len(embs)


def aligned(embs, seed: int) -> tuple[list, float]:
    t0 = time.perf_counter()
    frames = ul.aligned_series(embs, seed=seed)
    return frames, (time.perf_counter() - t0) / len(embs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", default=None, help="an archive folder (default: the demo series, bench/_demo.py)")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-aligned", action="store_true", help="skip AlignedUMAP (slowest: it refits the series)")
    args = ap.parse_args()
    if args.archive is None:
        sys.path.insert(0, str(ROOT / "bench"))
        from _demo import extracted_archive
        args.archive = str(extracted_archive()[0])

    steps, embs = load_series(args.archive, args.layer)
    print(f"series: {args.archive}, layer {args.layer}, steps {steps}, {embs[0].shape[0]} probes x {embs[0].shape[1]}")
    print(f"warm-up (umap import + numba compile): {ul.warm_up():.1f} s")
    runs = {
        "independent": lambda s: chain(embs, s, "independent"),
        "procrustes": lambda s: chain(embs, s, "procrustes"),
        "procrustes-umap-defaults": lambda s: chain(embs, s, "procrustes", refine_epochs=None,
                                                    refine_learning_rate=1.0),
        "procrustes-umap-sgd": lambda s: umap_sgd_chain(embs, s),
    }
    if not args.no_aligned:
        t0 = time.perf_counter()
        ul.aligned_series(embs[:2], seed=0)      # AlignedUMAP compiles its own kernels: not timed
        print(f"AlignedUMAP compile: {time.perf_counter() - t0:.1f} s")
        runs["aligned"] = lambda s: aligned(embs, s)

    rows: dict[str, dict] = {}
    for name, run in runs.items():
        disp, trust, secs, per_step = [], [], [], []
        for seed in args.seeds:
            frames, sec = run(seed)
            d = [f.disparity for f in frames[1:]]
            disp.append(np.mean(d))
            trust.extend(f.trustworthiness for f in frames)
            secs.append(sec)
            per_step.append(d)
        rows[name] = {"disparity": float(np.mean(disp)), "trust": float(np.mean(trust)),
                      "trust_min": float(np.min(trust)), "s_frame": float(np.median(secs)),
                      "per_step": np.mean(per_step, axis=0)}
        print(f"  {name}: done", file=sys.stderr)

    base = rows["independent"]["disparity"]
    print(f"\nseeds {args.seeds}; means over {len(embs) - 1} consecutive pairs and {len(embs)} frames per seed")
    print(f"{'method':26s} {'disparity':>9s} {'ratio':>6s} {'trust':>6s} {'min':>6s} {'s/frame':>8s}")
    for name, r in rows.items():
        print(f"{name:26s} {r['disparity']:9.4f} {r['disparity'] / base:6.3f} {r['trust']:6.4f} "
              f"{r['trust_min']:6.4f} {r['s_frame']:8.2f}")
    print("\ndisparity per step (from -> to):")
    pairs = [f"{a}->{b}" for a, b in zip(steps, steps[1:])]
    print(f"{'':26s} " + " ".join(f"{p:>8s}" for p in pairs))
    for name, r in rows.items():
        print(f"{name:26s} " + " ".join(f"{v:8.3f}" for v in r["per_step"]))
    ratio = rows["procrustes"]["disparity"] / base
    verdict = "meets" if ratio <= 1 / 3 else "MISSES"
    print(f"\nlearnviz default: procrustes, ratio {ratio:.3f} ({verdict} the goal <= 0.333)")


if __name__ == "__main__":
    main()
