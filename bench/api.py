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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learnviz import archive as arc  # noqa: E402
from learnviz import history  # noqa: E402
from learnviz.results import (  # noqa: E402
    ANALYSIS,
    EXTRACT,
    GEOMETRY,
    AnalysisResult,
    CalibrationBins,
    EntropyProfile,
    ErrorPositions,
    GeometryResult,
    LayerGeometry,
    LayerWeights,
)

CACHE = ROOT / ".bench-cache"
PROBES, HIDDEN, LAYERS, N_LAYERS = 500, 64, (6, 11), 12
SKILLS = ("syllo_easy", "syllo_hard", "edge_cases", "hard_examples")
CATEGORIES = ("barbara", "celarent", "darii", "ferio", "negation", "chain")
PROBE_HASH = "benchapi00000001"
GENERATOR = 1          # bump when the synthetic archives change: the cache is rebuilt


def _progress(i: int, n: int) -> float:
    return (i + 1) / n


def write_run(folder: Path, n: int) -> None:
    """N synthetic checkpoints' archives and history rows (see the module's docstring)."""
    fixed = np.random.default_rng(0)
    skills = np.asarray([SKILLS[i % len(SKILLS)] for i in range(PROBES)], dtype=object)
    cats = np.asarray([CATEGORIES[i % len(CATEGORIES)] for i in range(PROBES)], dtype=object)
    lengths = 2 + np.arange(PROBES) % 5
    offsets = np.zeros(PROBES + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    answer_ids = fixed.integers(5, 50_000, size=total).astype(np.int32)
    hardness = fixed.uniform(size=total)
    token_text = arc.Ragged(np.asarray([f" t{t}" for t in answer_ids], dtype=object), offsets)
    probe_table = {"probe_ids": np.asarray([f"syllo_{i:04d}" for i in range(PROBES)], dtype=object),
                   "probe_skill": skills, "probe_category": cats,
                   "prompt": np.asarray([f"All A{i} are B. Some B are C. What follows about A{i} and C?"
                                         for i in range(PROBES)], dtype=object),
                   "expected": np.asarray([f"Some A{i} may be C." for i in range(PROBES)], dtype=object)}
    layer_names = ["embeddings"] + [f"block.{k}" for k in range(N_LAYERS)] + ["head"]
    first_coords = {k: fixed.normal(size=(PROBES, 2)).astype(np.float32) for k in LAYERS}
    for i in range(n):
        step = 100 * (i + 1)
        p = _progress(i, n)
        rng = np.random.default_rng(step)
        logprob = (-5.0 * hardness * (1 - p) ** 2 - 0.01).astype(np.float32)
        learned = logprob > -0.69
        argmax = np.where(learned, answer_ids, answer_ids + 1).astype(np.int32)
        correct = np.logical_and.reduceat(learned, offsets[:-1])
        first_div = np.asarray([-1 if correct[j] else int(np.argmin(learned[offsets[j]:offsets[j + 1]]))
                                for j in range(PROBES)], dtype=np.int32)
        entropy = (3.0 * hardness * (1 - p) + 0.005).astype(np.float32)
        top1 = np.exp(np.maximum(logprob, -0.69)).astype(np.float32)
        confidence = np.multiply.reduceat(top1, offsets[:-1]).astype(np.float32)
        data = {**probe_table,
                "embeddings": {f"layer_{k}": rng.normal(size=(PROBES, HIDDEN)).astype(np.float16) for k in LAYERS},
                "answer_ids": arc.Ragged(answer_ids, offsets), "token_text": token_text,
                "token_logprob": arc.Ragged(logprob, offsets), "token_entropy": arc.Ragged(entropy, offsets),
                "token_top1_prob": arc.Ragged(top1, offsets), "token_argmax": arc.Ragged(argmax, offsets),
                "answer_logprob": np.add.reduceat(logprob, offsets[:-1]).astype(np.float32),
                "answer_confidence": confidence, "stop_prob": rng.uniform(size=PROBES).astype(np.float32),
                "first_divergence": first_div,
                "greedy_answer": np.where(correct, probe_table["expected"], "Some A are not C."),
                "correct": correct, "prompt_tokens": np.full(PROBES, 18, dtype=np.int32),
                "truncated": np.zeros(PROBES, dtype=bool)}
        key = arc.StageKey(f"fp{step:014d}", PROBE_HASH)
        name = f"checkpoint-{step}"
        path = folder / f"{name}.h5"
        root = {"step": step, "checkpoint": f"/runs/bench/{name}", "checkpoint_name": name,
                "model_class": "GPT2LMHeadModel", "probe_count": PROBES, "probe_sources": ["bench"]}
        arc.write_stage(path, EXTRACT, key=key, root_attrs=root, data=data,
                        attrs={"layers": list(LAYERS), "n_layers": N_LAYERS, "device": "cpu", "dtype": "float32",
                               "answer_match": "exact"})
        acc = {s: float(correct[skills == s].mean()) for s in SKILLS}
        cat_acc = {f"{s}/{c}": float(correct[(skills == s) & (cats == c)].mean())
                   for s in SKILLS for c in CATEGORIES if ((skills == s) & (cats == c)).any()}
        edges = np.linspace(0, 1, 16)
        bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, 14)
        count = np.bincount(bins, minlength=15)
        with np.errstate(invalid="ignore"):
            bin_conf = np.bincount(bins, weights=confidence, minlength=15) / count
            bin_acc = np.bincount(bins, weights=correct, minlength=15) / count
        ece = float(np.nansum(np.abs(bin_conf - bin_acc) * count) / PROBES)
        probe_mean = np.add.reduceat(entropy.astype(np.float64), offsets[:-1]) / lengths
        norms = 10 + p + rng.uniform(size=len(layer_names))
        result = AnalysisResult(
            skills=acc, categories=cat_acc, delta_vs_base={s: acc[s] - 0.0 for s in SKILLS},
            calibration=CalibrationBins(edges, bin_conf, bin_acc, count, ece,
                                        float(np.nanmax(np.abs(bin_conf - bin_acc))),
                                        float(np.mean((confidence - correct) ** 2)),
                                        float(confidence.mean() - correct.mean()), "overconfident"),
            entropy=EntropyProfile(np.full(6, 1.0 - p), np.bincount(lengths, minlength=7)[1:7], probe_mean,
                                   (probe_mean < 0.3) & ~correct, probe_mean > 2.0, dict.fromkeys(CATEGORIES, 1 - p)),
            errors=ErrorPositions(first_div, first_div, np.bincount(first_div + 1, minlength=8)),
            weights=LayerWeights(layer_names, norms, rng.uniform(size=len(layer_names)) * 0.01,
                                 rng.uniform(size=len(layer_names)) * p, norms / 10,
                                 np.full(len(layer_names), 4096, dtype=np.int64)))
        data_a, attrs_a = result.to_archive()
        arc.write_stage(path, ANALYSIS, key=key.with_inputs("bench"), root_attrs=root, data=data_a, attrs=attrs_a)
        metrics = {"drift_prev": None if i == 0 else 0.1 * (1 - p), "drift_first": None if i == 0 else p,
                   "cka_prev": None if i == 0 else 0.9 + 0.1 * p, "cka_first": None if i == 0 else 1 - p / 2,
                   "trustworthiness": 0.9, "umap_disparity": None if i == 0 else 0.05}
        geo = GeometryResult({k: LayerGeometry(None, first_coords[k] + 0.01 * i, dict(metrics)) for k in LAYERS},
                             "procrustes", {"n_neighbors": 15}, None if i == 0 else step - 100, 100)
        data_g, attrs_g = geo.to_archive()
        arc.write_stage(path, GEOMETRY, key=key.with_inputs(f"bench{i}"), root_attrs=root, data=data_g, attrs=attrs_g)
        history.append(folder, {"step": step, "probe_hash": PROBE_HASH, "train_loss": 4 * (1 - p) + 0.1,
                                "accuracy": float(correct.mean()), "skill_scores": acc})
        history.append(folder, {"step": step, "probe_hash": PROBE_HASH, "ece": ece,
                                "skill_delta_vs_base": acc, "layer_names": layer_names,
                                "layer_drifts": (norms / 100).tolist()})
        history.append(folder, {"step": step, "probe_hash": PROBE_HASH, "geometry": {str(k): metrics for k in LAYERS},
                                "cka_prev": metrics["cka_prev"]})
        if (i + 1) % 50 == 0:
            print(f"  wrote {i + 1}/{n} archives", flush=True)


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
