"""A small archived series built in seconds, without a model: per checkpoint, tiny safetensors
weights and an `extract` group written with the archive API (30 probes in four skills, answers of
2-5 tokens that the "model" learns as the step grows), then the real CPU stages
(`run_cpu_stages`: analysis, geometry, series), with only UMAP replaced by a PCA projection
(UMAP's numba compilation alone takes longer than these tests should)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from safetensors.numpy import save_file

from learnviz import archive as arc
from learnviz import history
from learnviz.analysis import umap_layout
from learnviz.pipeline import run_cpu_stages
from learnviz.settings import load_settings

STEPS = (10, 20, 40, 80)
LAST_STEP = 160
SKILLS = ["syllo_easy"] * 8 + ["syllo_hard"] * 8 + ["edge_cases"] * 8 + ["hard_examples"] * 6
N = len(SKILLS)
CATEGORIES = [("barbara", "negation", "chain")[i % 3] for i in range(N)]
LAYERS = (1, 2)
PROBE_HASH = "testprobes000001"


def _fake_layout(emb, previous=None, **_kw):
    """PCA to 2-D, scaled like UMAP's output; deterministic."""
    x = np.asarray(emb, dtype=np.float64)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    coords = (u[:, :2] * s[:2]) / max(float(s[0]), 1e-9) * 10
    return umap_layout.Layout(coords=coords.astype(np.float32), method="procrustes", params={"fake": "pca"},
                              trustworthiness=0.9, disparity=None if previous is None else 0.05)


@contextmanager
def fake_umap():
    with mock.patch.object(umap_layout, "layout", _fake_layout):
        yield


def _progress(step: int) -> float:
    return min(1.0, np.log(step / 5) / np.log(LAST_STEP / 5))


def write_checkpoint(root: Path, archive_dir: Path, step: int) -> None:
    """Weights (a random walk from step to step) and an `extract` group for one step."""
    p = _progress(step)
    ck = root / f"checkpoint-{step}"
    ck.mkdir(parents=True, exist_ok=True)
    w = np.random.default_rng(0)
    drift = np.random.default_rng(step)
    tensors = {name: (w.normal(size=shape) + p * drift.normal(size=shape)).astype(np.float32)
               for name, shape in (("transformer.wte.weight", (16, 8)), ("transformer.h.0.mlp.weight", (8, 8)),
                                   ("transformer.h.1.mlp.weight", (8, 8)), ("lm_head.bias", (16,)))}
    save_file(tensors, str(ck / "model.safetensors"))

    fixed = np.random.default_rng(1)                       # the same per probe at every step
    lengths = 2 + np.arange(N) % 4
    answer_ids = arc.Ragged.from_rows([fixed.integers(1, 50, size=k) for k in lengths], np.int32)
    hardness = fixed.uniform(size=answer_ids.values.shape) * (1 + 0.5 * (np.repeat(np.arange(N), lengths) >= 8))
    logprob = -6.0 * hardness * (1 - p) ** 2 - 0.01          # (total,) nats, rising with the step
    learned = logprob > -0.69
    argmax = np.where(learned, answer_ids.values, answer_ids.values + 1).astype(np.int32)
    off = answer_ids.offsets
    first_wrong = [int(np.argmin(learned[off[i]:off[i + 1]])) if not learned[off[i]:off[i + 1]].all() else -1
                   for i in range(N)]
    correct = np.asarray([f == -1 for f in first_wrong])
    expected = [f"All cats are pets{i}." if s != "hard_examples" else f"Nothing follows {i}."
                for i, s in enumerate(SKILLS)]
    greedy = [e if ok else "Some cats are dogs." for e, ok in zip(expected, correct)]
    emb_rng = np.random.default_rng(100 + step)
    centres = {s: np.eye(8)[k] * 4 for k, s in enumerate(dict.fromkeys(SKILLS))}
    embeddings = {f"layer_{k}": np.stack([centres[s] * (0.5 + p) + emb_rng.normal(scale=1.0, size=8) for s in SKILLS])
                  .astype(np.float16) for k in LAYERS}
    data = {
        "probe_ids": np.asarray([f"probe_{i:02d}" if s != "hard_examples" else f"trap_{i:02d}"
                                 for i, s in enumerate(SKILLS)], dtype=object),
        "probe_skill": np.asarray(SKILLS, dtype=object), "probe_category": np.asarray(CATEGORIES, dtype=object),
        "prompt": np.asarray([f"All cats are animals. Some animals are pets. What follows about cats and pets {i}? "
                              "A long prompt that would overflow any label if it were not shortened."
                              for i in range(N)],
                             dtype=object),
        "expected": np.asarray(expected, dtype=object),
        "embeddings": embeddings, "answer_ids": answer_ids,
        "token_text": arc.Ragged.from_rows([[f" tok{j}" for j in range(k)] for k in lengths], object),
        "token_logprob": arc.Ragged(logprob.astype(np.float32), off),
        "token_entropy": arc.Ragged((3.0 * hardness * (1 - p) + 0.005).astype(np.float32), off),
        "token_top1_prob": arc.Ragged(np.exp(np.maximum(logprob, -0.69)).astype(np.float32), off),
        "token_argmax": arc.Ragged(argmax, off),
        "answer_logprob": np.add.reduceat(logprob, off[:-1]).astype(np.float32),
        "answer_confidence": np.clip(0.35 + 0.6 * p + fixed.normal(scale=0.05, size=N), 0, 1).astype(np.float32),
        "first_divergence": np.asarray(first_wrong, dtype=np.int32),
        "greedy_answer": np.asarray(greedy, dtype=object), "correct": correct,
    }
    key = arc.StageKey(f"fingerprint{step:06d}", PROBE_HASH)
    arc.write_stage(archive_dir / f"checkpoint-{step}.h5", "extract", key=key,
                    root_attrs={"step": step, "checkpoint": str(ck.resolve()), "checkpoint_name": ck.name,
                                "probe_count": N},
                    data=data, attrs={"layers": list(LAYERS), "n_layers": 3})
    history.append(archive_dir, {"step": step, "probe_hash": PROBE_HASH, "train_loss": 4.0 * (1 - p) + 0.1,
                                 "eval_loss": 4.2 * (1 - p) + 0.15, "learning_rate": 1e-3 * (1 - 0.5 * p),
                                 "accuracy": float(correct.mean()),
                                 "skill_scores": {s: float(correct[np.asarray(SKILLS) == s].mean())
                                                  for s in dict.fromkeys(SKILLS)}})


def analyse(settings) -> None:
    with fake_umap():
        report = run_cpu_stages(settings)
    assert not report.failed, report.failed


def make_series(folder: Path, steps=STEPS):
    """Checkpoints, archives (every stage) and the settings that read them."""
    settings = load_settings(environ={}, overrides={"checkpoints": str(folder / "run"),
                                                    "archive": str(folder / "archive"), "settle_seconds": 0.0})
    for step in steps:
        write_checkpoint(folder / "run", folder / "archive", step)
    analyse(settings)
    return settings


@pytest.fixture
def series_settings(tmp_path):
    """A fresh small series (4 checkpoints) per test: tests that add checkpoints change it."""
    return make_series(tmp_path)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The small series with every figure drawn once (GIFs included), shared by read-only tests."""
    from learnviz.visualize import generate
    settings = make_series(tmp_path_factory.mktemp("drawn"))
    result = generate(settings, gifs=True)
    return settings, result


def manifest(settings) -> dict:
    return json.loads((Path(settings.archive) / "visualizations" / "manifest.json").read_text())
