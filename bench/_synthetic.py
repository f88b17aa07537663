"""A synthetic long run for the scale benches: N checkpoints' archives without training a model.

`write_checkpoint(run, i, n)` writes checkpoint i of an n-checkpoint run:
  - a checkpoint folder `<run>/ckpts/checkpoint-<step>/` with a small model.safetensors (an
    embedding and 2 decoder blocks of width 256, drifting less as training goes on), so that the
    real analysis stage measures weight drift;
  - the `extract` group of its archive, through learnviz's own writer (`archive.write_stage`) with
    the typed `ExtractResult`: the demo's probe set (config/probes.jsonl and config/hard_examples.yaml,
    as `learnviz.probes.load_probe_set` reads them), the expected answers split into word tokens
    (3-8 per answer), 2 pooled layers of hidden size 256 that cluster by category as training
    goes on, and a learning curve: every answer token has a difficulty and its probability rises
    past it with noise, so that easy skills are learned first, hard examples late, some regress;
    a wrong greedy answer flips a quantifier or a word, or is empty;
  - the row the GPU stage appends to learning_history.jsonl (loss, learning rate, accuracy).

`build_run(run, n)` writes n of them, then every checkpoint's `geometry` group with a cheap
stand-in content under the key the real stage would give it (`write_geometry`: the real stage
takes seconds per checkpoint here, an hour for 500), then runs the real analysis and series
stages (`pipeline.run_cpu_stages`) and the run-level figures (`visualize.generate`; of the
per-checkpoint images only the last checkpoint's). A bench then adds checkpoint n + 1 with
`write_checkpoint` and runs every stage of it for real, the UMAP layout included.

`write_run(folder, n)` is the notebook bench's older, smaller generator (bench/api.py).
"""

from __future__ import annotations

import json
import re
import shutil
import time
import zlib
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

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

HIDDEN, LAYERS, N_LAYERS = 256, (0, 1), 2
STEP = 100                      # training steps between checkpoints
GENERATOR = 2                   # bump when the synthetic run changes: cached runs are rebuilt
_TOKEN = re.compile(r" ?[\w']+|[^\w\s]")
SKILL_EASE = {"syllo_easy": 0.0, "syllo_medium": 0.15, "syllo_hard": 0.3, "edge_cases": 0.25, "mix": 0.1,
              "hard_examples": 0.45}


def settings_for(run: Path):
    from learnviz.settings import Settings
    return Settings(checkpoints=str(run / "ckpts"), archive=str(run / "archive"),
                    probes=str(ROOT / "config/probes.jsonl"), hard_examples=str(ROOT / "config/hard_examples.yaml"))


@lru_cache(maxsize=1)
def probe_set():
    from learnviz.probes import load_probe_set
    return load_probe_set(ROOT / "config/probes.jsonl", ROOT / "config/hard_examples.yaml")


@lru_cache(maxsize=1)
def _fixed():
    """What every checkpoint shares: tokens, difficulties, category centres (seeded)."""
    probes = probe_set()
    rng = np.random.default_rng(0)
    tokens = [_TOKEN.findall(p.expected) or [p.expected] for p in probes]
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in tokens], out=offsets[1:])
    flat = [t for row in tokens for t in row]
    ids = np.asarray([5 + zlib.crc32(t.encode()) % 50_000 for t in flat], dtype=np.int32)
    ease = np.repeat([SKILL_EASE.get(p.skill, 0.2) for p in probes], np.diff(offsets))
    # a token's difficulty: when (as a share of the run) its probability passes one half
    difficulty = np.clip(0.05 + ease + rng.uniform(0, 0.45, size=len(flat)), 0, 0.97)
    cats = sorted({p.category for p in probes})
    centres = {c: rng.normal(size=HIDDEN) * 2 for c in cats}
    base = rng.normal(size=(len(probes), HIDDEN))
    return SimpleNamespace(probes=probes, tokens=tokens, flat=np.asarray(flat, dtype=object), offsets=offsets,
                           ids=ids, difficulty=difficulty, centres=centres, base=base, rng_seed=0)


def _wrong(expected: str, kind: int) -> str:
    words = expected.split()
    if kind == 0 or len(words) < 2:
        return ""
    if kind == 1:     # polarity
        swap = {"All": "No", "No": "All", "Some": "No", "Yes": "No", "Yes.": "No.", "No.": "Yes."}
        return " ".join([swap.get(words[0], "No")] + words[1:])
    return " ".join(words[:-1] + ["cats."])     # a content word


def extract_result(i: int, n: int):
    """The `ExtractResult` of checkpoint i of an n-checkpoint run."""
    from learnviz.extract import ExtractResult

    fx = _fixed()
    p = (i + 1) / n
    rng = np.random.default_rng(1000 + i)
    logit = 14.0 * (p - fx.difficulty) + rng.normal(0, 0.8, size=len(fx.difficulty))
    prob = 1 / (1 + np.exp(-logit))
    logprob = np.log(np.clip(prob, 1e-9, 1)).astype(np.float32)
    learned = prob > 0.5
    starts = fx.offsets[:-1]
    correct = np.logical_and.reduceat(learned, starts)
    top1 = np.maximum(prob, 1 - prob).astype(np.float32)
    entropy = (-(prob * np.log(np.clip(prob, 1e-9, 1)) - (1 - prob) * np.log(np.clip(1 - prob, 1e-9, 1)))
               * 3).astype(np.float32)
    argmax = np.where(learned, fx.ids, fx.ids + 1).astype(np.int32)
    first_div = np.asarray([-1 if correct[j] else int(np.argmin(learned[fx.offsets[j]:fx.offsets[j + 1]]))
                            for j in range(len(fx.probes))], dtype=np.int32)
    greedy = [pr.expected if correct[j] else _wrong(pr.expected, (j + i) % 3) for j, pr in enumerate(fx.probes)]
    cats = [pr.category for pr in fx.probes]
    emb = {}
    for k in LAYERS:
        mix = p * (0.5 + 0.5 * k)
        v = ((1 - mix) * fx.base + mix * np.stack([fx.centres[c] for c in cats])
             + 0.3 * rng.normal(size=fx.base.shape))
        emb[k] = v.astype(np.float16)
    ragged = lambda values: arc.Ragged(values, fx.offsets)  # noqa: E731
    return ExtractResult(
        probe_ids=[pr.id for pr in fx.probes], layers=list(LAYERS), embeddings=emb,
        answer_ids=ragged(fx.ids), token_text=ragged(fx.flat), token_logprob=ragged(logprob),
        token_entropy=ragged(entropy), token_top1_prob=ragged(top1), token_argmax=ragged(argmax),
        answer_logprob=np.add.reduceat(logprob, starts).astype(np.float32),
        answer_confidence=np.multiply.reduceat(top1, starts).astype(np.float32),
        stop_prob=rng.uniform(size=len(fx.probes)).astype(np.float32), first_divergence=first_div,
        greedy_answer=greedy, correct=correct, prompt_tokens=np.full(len(fx.probes), 24, dtype=np.int32),
        truncated=np.zeros(len(fx.probes), dtype=bool), failed=np.zeros(len(fx.probes), dtype=bool))


def _weights(path: Path, i: int, n: int) -> None:
    from safetensors.numpy import save_file
    rng = np.random.default_rng(5)
    tensors = {"transformer.wte.weight": rng.normal(size=(64, 64)),       # small: read at every analysis
               **{f"transformer.h.{b}.mlp.c_fc.weight": rng.normal(size=(64, 64)) for b in range(N_LAYERS)},
               "transformer.ln_f.weight": np.ones(64)}
    step_rng = np.random.default_rng(2000 + i)
    scale = 0.3 * (1 - (i + 1) / n) + 0.02          # the weights move less as training settles
    out = {k: (v * (1 + 0.1 * (i + 1) / n) + scale * step_rng.normal(size=v.shape)).astype(np.float16)
           for k, v in tensors.items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                                                  "n_layer": N_LAYERS, "n_embd": HIDDEN}))


def write_checkpoint(run: Path, i: int, n: int) -> Path:
    """Checkpoint i (0-based; step 100 (i + 1)) of an n-checkpoint run: weights, archive (extract
    stage) and its learning-history row. Returns the archive's path. `n` sets the learning curve
    (i may be n: the checkpoint a bench adds after the run)."""
    from learnviz import collect
    from learnviz.checkpoints import fingerprint, inspect
    from learnviz.readout import skill_accuracy

    s = settings_for(run)
    step = STEP * (i + 1)
    ck_path = run / "ckpts" / f"checkpoint-{step}"
    _weights(ck_path, i, n)
    ck = inspect(ck_path, settle_seconds=0)
    probes = probe_set()
    result = extract_result(i, n)
    key = arc.StageKey(fingerprint(ck), probes.hash, inputs=collect.extract_inputs(s))
    path = s.archive_dir() / arc.archive_name(ck_path, run / "ckpts")
    arc.write_stage(path, EXTRACT, key=key, root_attrs=collect.root_attrs(ck, probes),
                    data={**result.to_archive(), **collect.probe_table(probes)},
                    attrs={"layers": list(LAYERS), "n_layers": N_LAYERS, "device": "cpu", "dtype": "float32",
                           "answer_match": s.answer_match})
    p = (i + 1) / n
    history.append(s.archive_dir(), {
        "step": step, "timestamp": arc.now_iso(), "checkpoint": ck.name, "probe_hash": probes.hash,
        "train_loss": float(0.4 + 3.6 * np.exp(-4 * p) + 0.05 * np.sin(i)), "learning_rate": 3e-4 * (1 - p * 0.9),
        "accuracy": float(np.mean(result.correct)), "mean_answer_logprob": float(np.mean(result.answer_logprob)),
        "skill_scores": skill_accuracy(result.correct, [pr.skill for pr in probes])})
    return path


def write_geometry(run: Path) -> None:
    """Every checkpoint's `geometry` group under the key the real stage would give it, with a
    cheap stand-in for its content (a fixed projection of the embeddings as the layout, drift and
    CKA from the learning curve, no similarity matrices), and its history row."""
    from learnviz import analyze as an
    from learnviz.readout import embeddings, series

    s = settings_for(run)
    archives = series(s.archive_dir())
    keys = an.geometry_keys(archives, s)
    project = np.random.default_rng(3).normal(size=(HIDDEN, 2)) / np.sqrt(HIDDEN)
    n = len(archives)
    for i, (a, key) in enumerate(zip(archives, keys)):
        p = (i + 1) / n
        layers = {}
        for k, emb in embeddings(a).items():
            metrics = {"trustworthiness": 0.85 + 0.1 * p}
            if i:
                metrics.update({"drift_prev": 0.2 * (1 - p) + 0.01, "drift_first": 0.6 * p,
                                "cka_prev": 0.8 + 0.19 * p, "cka_first": 1 - 0.5 * p, "umap_disparity": 0.05})
            layers[k] = LayerGeometry(None, (emb.astype(np.float32) @ project).astype(np.float32), metrics)
        result = GeometryResult(layers, s.umap_method, {"method": "projection (bench build)"},
                                archives[i - 1].step if i else None, archives[0].step)
        data, attrs = result.to_archive()
        arc.write_stage(a.path, GEOMETRY, key=key, root_attrs=an.root_attrs_of(a), data=data, attrs=attrs)
        history.append(s.archive_dir(), an.geometry_row(a.step, key.probe_hash, result))


def build_run(run: Path, n: int, *, figures: bool = True) -> Path:
    """A run of n synthetic checkpoints with every stage current (see the module docstring)."""
    from learnviz import pipeline

    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        write_checkpoint(run, i, n)
        if (i + 1) % 100 == 0:
            print(f"  {run.name}: wrote {i + 1}/{n} archives ({time.perf_counter() - t0:.0f}s)", flush=True)
    write_geometry(run)
    print(f"  {run.name}: geometry written ({time.perf_counter() - t0:.0f}s)", flush=True)
    report = pipeline.run_cpu_stages(settings_for(run))       # the real analyses, then the series
    if report.failed or report.geometry:
        raise RuntimeError(f"the build's CPU stages failed or redid geometry: {report.failed[:3]} {report.geometry}")
    print(f"  {run.name}: analyses and series done ({time.perf_counter() - t0:.0f}s)", flush=True)
    if figures:
        draw_figures(run, n)
        print(f"  {run.name}: figures done ({time.perf_counter() - t0:.0f}s)", flush=True)
    return run


def draw_figures(run: Path, n: int) -> None:
    """The run-level figures, and the per-checkpoint images of the last checkpoint only. The UMAP
    frames' shared box is stored first (`visualize._umap_limits` over every layout), so that the
    first draw does not widen it and redraw every frame (500 UMAP frames: 20 minutes here)."""
    from learnviz import visualize
    from learnviz.plots.sources import Run

    s = settings_for(run)
    out = visualize.visualizations_dir(s)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"version": visualize.MANIFEST_VERSION, "files": {},
                "umap_limits": visualize._umap_limits(Run(s.archive_dir()), {}, [], force=False)}
    (out / visualize.MANIFEST_NAME).write_text(json.dumps(manifest))
    vis = visualize.generate(s, steps=[STEP * n])
    if vis["failed"]:
        raise RuntimeError(f"the build's figures failed: {vis['failed']}")


def cached_run(cache: Path, n: int, *, figures: bool = True) -> Path:
    """The cached run of n checkpoints under `cache`, built when missing or of another generator."""
    run = cache / f"scale-{n}"
    marker = run / "bench-complete.json"
    want = {"checkpoints": n, "generator": GENERATOR, "figures": figures, "probe_hash": probe_set().hash}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return run
    shutil.rmtree(run, ignore_errors=True)
    print(f"building a synthetic run of {n} checkpoints in {run} (once)", flush=True)
    t0 = time.perf_counter()
    build_run(run, n, figures=figures)
    marker.write_text(json.dumps(want))
    print(f"  built in {time.perf_counter() - t0:.0f}s", flush=True)
    return run


# ---------------------------------------------------------------- the notebook bench's generator

API_PROBES, API_HIDDEN, API_LAYERS, API_N_LAYERS = 500, 64, (6, 11), 12
SKILLS = ("syllo_easy", "syllo_hard", "edge_cases", "hard_examples")
CATEGORIES = ("barbara", "celarent", "darii", "ferio", "negation", "chain")
PROBE_HASH = "benchapi00000001"


def write_run(folder: Path, n: int) -> None:
    """N synthetic checkpoints' archives (extract, analysis, geometry groups built from the typed
    results, no model and no analysis run) and history rows, for bench/api.py."""
    PROBES, HIDDEN_, LAYERS_, N_LAYERS_ = API_PROBES, API_HIDDEN, API_LAYERS, API_N_LAYERS
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
    layer_names = ["embeddings"] + [f"block.{k}" for k in range(N_LAYERS_)] + ["head"]
    first_coords = {k: fixed.normal(size=(PROBES, 2)).astype(np.float32) for k in LAYERS_}
    for i in range(n):
        step = 100 * (i + 1)
        p = (i + 1) / n
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
                "embeddings": {f"layer_{k}": rng.normal(size=(PROBES, HIDDEN_)).astype(np.float16) for k in LAYERS_},
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
                        attrs={"layers": list(LAYERS_), "n_layers": N_LAYERS_, "device": "cpu", "dtype": "float32",
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
        geo = GeometryResult({k: LayerGeometry(None, first_coords[k] + 0.01 * i, dict(metrics)) for k in LAYERS_},
                             "procrustes", {"n_neighbors": 15}, None if i == 0 else step - 100, 100)
        data_g, attrs_g = geo.to_archive()
        arc.write_stage(path, GEOMETRY, key=key.with_inputs(f"bench{i}"), root_attrs=root, data=data_g, attrs=attrs_g)
        history.append(folder, {"step": step, "probe_hash": PROBE_HASH, "train_loss": 4 * (1 - p) + 0.1,
                                "accuracy": float(correct.mean()), "skill_scores": acc})
        history.append(folder, {"step": step, "probe_hash": PROBE_HASH, "ece": ece,
                                "skill_delta_vs_base": acc, "layer_names": layer_names,
                                "layer_drifts": (norms / 100).tolist()})
        history.append(folder, {"step": step, "probe_hash": PROBE_HASH, "geometry": {str(k): metrics for k in LAYERS_},
                                "cka_prev": metrics["cka_prev"]})
        if (i + 1) % 50 == 0:
            print(f"  wrote {i + 1}/{n} archives", flush=True)
