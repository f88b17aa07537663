"""The CPU stages over archived checkpoints: turning extractions into understanding.

  analysis  per checkpoint (also reads the previous and the first checkpoint's weights):
            skills, calibration, entropy, error positions, weight drift -> archive group `analysis`
  geometry  per checkpoint, in step order (each layout starts from the previous one):
            similarity matrices, RSA drift and linear CKA against the previous and the first
            checkpoint, the aligned UMAP layout -> archive group `geometry`
  series    the whole run: logprob trajectories (tokens learned first and last), dataset
            cartography, the error-position trend, the hard-example board -> series.h5 and
            hard_example_board.json beside the archives
Each stage appends what it learns about a step to learning_history.jsonl.

Order and idempotence: a stage's key carries a hash of everything else it read (the neighbours'
fingerprints, the previous layout's key, the settings that shape it). A checkpoint that arrives
between two analysed ones gets its own rows; the next checkpoint's analysis (its "previous"
changed) and the geometry of every later checkpoint (its layout chain changed) are recomputed and
append new rows, which override the old ones when the history is read. A re-run with nothing new
changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import archive as arc
from . import history
from .checkpoints import weight_files
from .common import short_hash, write_json_atomic
from .readout import embeddings as read_embeddings
from .readout import read_analysis, read_geometry, stage_ok
from .results import (
    ANALYSIS,
    BOARD_FILE,
    EXTRACT,
    GEOMETRY,
    SERIES,
    AnalysisResult,
    CalibrationBins,
    EntropyProfile,
    ErrorPositions,
    GeometryResult,
    LayerGeometry,
    LayerWeights,
)
from .settings import Settings

MIN_LAYOUT_PROBES = 5   # UMAP needs a neighbourhood; smaller probe sets get drift and CKA only
_OWN_ATTRS = {"schema_version", "fingerprint", "probe_hash", "learnviz_version", "created", "updated"}
_hash = short_hash


def root_attrs_of(a: arc.Archive) -> dict:
    """The root attributes a stage writer passes on (those `write_stage` does not set itself)."""
    return {k: v for k, v in a.attrs.items() if k not in _OWN_ATTRS}


# ---------------------------------------------------------------- keys

def analysis_key(archives: list[arc.Archive], i: int, s: Settings) -> arc.StageKey:
    prev = archives[i - 1].key.fingerprint if i else ""
    inputs = _hash(ANALYSIS, prev, archives[0].key.fingerprint, s.calibration_bins, s.entropy_low,
                   s.entropy_high, s.weight_exploding, s.weight_vanishing, s.weight_dead)
    return archives[i].key.with_inputs(inputs)


def geometry_keys(archives: list[arc.Archive], s: Settings) -> list[arc.StageKey]:
    """Chained: checkpoint i's key includes checkpoint i-1's, because its layout starts there."""
    from .analysis import umap_layout as ul  # constants only; umap itself is imported lazily
    keys, prev = [], ""
    for a in archives:
        inputs = _hash(GEOMETRY, archives[0].key.fingerprint, prev, s.umap_method, s.umap_neighbors,
                       s.umap_min_dist, s.umap_seed, ul.REFINE_EPOCHS, ul.REFINE_LEARNING_RATE, ul.DEFAULT_METRIC,
                       ul.REFINE_OPTIMIZER)
        key = a.key.with_inputs(inputs)
        keys.append(key)
        prev = _hash(key)
    return keys


def series_key(archives: list[arc.Archive], s: Settings) -> arc.StageKey:
    """The series reads every extraction, every analysis (error positions) and geometry (the health
    flags' drift), and the run's data log: all in the key."""
    fps = [(a.step, a.key.fingerprint,
            a.stage(ANALYSIS).key.inputs if a.stage(ANALYSIS) and a.stage(ANALYSIS).ok else None)
           for a in archives]
    return arc.StageKey(_hash(fps), archives[-1].key.probe_hash,
                        inputs=_hash(SERIES, s.learned_threshold, health_inputs_key(archives, s)))


# ---------------------------------------------------------------- analysis (per checkpoint)

EXTRACT_KEYS = ["correct", "probe_skill", "probe_category", "probe_ids", "answer_confidence", "token_entropy",
                "answer_ids", "token_argmax", "first_divergence"]


def checkpoint_weights(a: arc.Archive) -> list[Path] | None:
    files = weight_files(Path(str(a.attrs.get("checkpoint", ""))))
    return files if files and all(f.exists() for f in files) else None


def run_analysis(archives: list[arc.Archive], i: int, s: Settings, key: arc.StageKey | None = None) -> dict:
    """The `analysis` stage of checkpoint i. Returns the history row it appended."""
    t0 = time.perf_counter()
    a = archives[i]
    key = key or analysis_key(archives, i, s)
    result = behaviour(archives, i, s)
    t1 = time.perf_counter()
    result = with_weights(result, archives, i, s)
    t2 = time.perf_counter()
    data, attrs = result.to_archive()
    arc.write_stage(a.path, ANALYSIS, key=key, root_attrs=root_attrs_of(a), data=data, attrs=attrs,
                    timings={"behaviour": t1 - t0, "weights": t2 - t1, "total": t2 - t0})
    row = analysis_row(a.step, key.probe_hash, result)
    history.append(a.path.parent, row)
    return row


def behaviour(archives: list[arc.Archive], i: int, s: Settings) -> AnalysisResult:
    """Skills against the base (the first checkpoint), calibration, entropy and error positions of
    checkpoint i, from its extraction."""
    from .analysis.calibration import calibration
    from .analysis.entropy import entropy_summary
    from .analysis.errors import localize_errors
    from .analysis.skills import compare_to_base, skill_scores

    extracted = archives[i].read(EXTRACT, EXTRACT_KEYS)
    skills, categories = list(extracted["probe_skill"]), list(extracted["probe_category"])
    correct = np.asarray(extracted["correct"], dtype=bool)
    scores = skill_scores(correct, skills, categories)
    base_correct = archives[0].read(EXTRACT, ["correct"])["correct"] if i else correct
    base = skill_scores(np.asarray(base_correct, dtype=bool), skills, categories)
    confidence = np.clip(extracted["answer_confidence"].astype(np.float64), 0, 1)
    cal = calibration(confidence, correct, n_bins=s.calibration_bins)
    ent = entropy_summary(extracted["token_entropy"], correct, categories, low=s.entropy_low, high=s.entropy_high)
    err = localize_errors(extracted["answer_ids"], extracted["token_argmax"], extracted["first_divergence"], correct)
    return AnalysisResult(
        skills=scores.skills, categories=scores.categories, delta_vs_base=compare_to_base(scores, base),
        calibration=CalibrationBins(cal.bin_edges, cal.bin_confidence, cal.bin_accuracy, cal.bin_count, cal.ece,
                                    cal.mce, cal.brier, cal.gap, cal.direction),
        entropy=EntropyProfile(ent.mean_by_position, ent.count_by_position, ent.probe_mean, ent.overconfident,
                               ent.uncertain, ent.mean_by_category),
        errors=ErrorPositions(err.teacher_forced, err.free, err.histogram))


def with_weights(result: AnalysisResult, archives: list[arc.Archive], i: int, s: Settings) -> AnalysisResult:
    """`result` with checkpoint i's weight drift against the previous and the first checkpoint (or
    a note, when its weight files are gone: the history outlives rotated checkpoints)."""
    from dataclasses import replace

    from .analysis.weight_drift import weight_drift

    current = checkpoint_weights(archives[i])
    if current is None:
        return replace(result, weights_note="unavailable: the checkpoint's weight files are gone")
    prev = checkpoint_weights(archives[i - 1]) if i else None
    first = checkpoint_weights(archives[0]) if i else None
    drift = weight_drift(current, prev, first, exploding=s.weight_exploding, vanishing=s.weight_vanishing,
                         dead=s.weight_dead)
    weights = LayerWeights(list(drift.layers), drift.norm, drift.change_prev, drift.change_first,
                           drift.norm_ratio_first, np.asarray(drift.parameters, dtype=np.int64))
    return replace(result, weights=weights, weight_flags=drift.flags)


def analysis_row(step: int, probe_hash: str, r: AnalysisResult) -> dict:
    """The history row of one checkpoint's analysis."""
    cal, ent = r.calibration, r.entropy
    row: dict = {"step": step, "probe_hash": probe_hash, "ece": cal.ece, "mce": cal.mce, "brier": cal.brier,
                 "calibration_gap": cal.gap, "calibration_direction": cal.direction,
                 "mean_entropy": float(np.nanmean(ent.probe_mean)) if len(ent.probe_mean) else None,
                 "overconfident": int(ent.overconfident.sum()), "uncertain": int(ent.uncertain.sum()),
                 "skill_delta_vs_base": r.delta_vs_base, "error_positions": r.errors.histogram.tolist()}
    if r.weights is not None:
        w = r.weights
        row.update({"layer_names": w.layers, "layer_drifts": w.change_prev.tolist(),
                    "layer_drifts_first": w.change_first.tolist(), "weight_norms": w.norm.tolist(),
                    "weight_flags": {k: v for k, v in r.weight_flags.items() if v}})
    return row


# ---------------------------------------------------------------- geometry (in step order)

@dataclass
class _Geo:
    """What the next checkpoint's geometry needs from this one, kept in memory during a run."""
    embeddings: dict[int, np.ndarray]
    similarity: dict[int, np.ndarray]
    coords: dict[int, np.ndarray] = field(default_factory=dict)


def _geo(a: arc.Archive, cache: dict) -> _Geo:
    from .analysis.rsa import similarity_matrix
    if a.path not in cache:
        emb = read_embeddings(a)
        geo = _Geo(emb, {k: similarity_matrix(v) for k, v in emb.items()})
        if stage_ok(a, GEOMETRY):
            stored = read_geometry(a, elements=("coords",))
            geo.coords = {k: g.coords for k, g in stored.layers.items() if g.coords is not None}
        cache[a.path] = geo
    return cache[a.path]


def run_geometry(archives: list[arc.Archive], i: int, s: Settings, key: arc.StageKey, cache: dict) -> dict:
    """The `geometry` stage of checkpoint i; checkpoint i-1's geometry must be current."""
    t0 = time.perf_counter()
    a = archives[i]
    cache.pop(a.path, None)            # recomputing: do not start from this checkpoint's old layout
    me = _geo(a, cache)
    prev = _geo(archives[i - 1], cache) if i else None
    first = _geo(archives[0], cache) if i else None
    layers: dict[int, LayerGeometry] = {}
    umap_seconds, umap_params = 0.0, {}
    for layer in me.embeddings:
        tu = time.perf_counter()
        layers[layer], params = layer_geometry(layer, me, prev, first, s)
        umap_seconds += time.perf_counter() - tu
        umap_params = params or umap_params
    result = GeometryResult(layers, s.umap_method, umap_params, archives[i - 1].step if i else None,
                            archives[0].step)
    data, attrs = result.to_archive()
    arc.write_stage(a.path, GEOMETRY, key=key, root_attrs=root_attrs_of(a), data=data, attrs=attrs,
                    timings={"umap": umap_seconds, "total": time.perf_counter() - t0})
    row = geometry_row(a.step, key.probe_hash, result)
    history.append(a.path.parent, row)
    return row


def layer_geometry(layer: int, me: _Geo, prev: _Geo | None, first: _Geo | None, s: Settings
                   ) -> tuple[LayerGeometry, dict]:
    """One layer's drift (RSA), CKA against the previous and first checkpoint, and its layout
    aligned to the previous one. Returns it and the layout's parameters."""
    from .analysis.cka import linear_cka
    from .analysis.rsa import geometry_drift
    from .analysis.umap_layout import layout

    x = me.embeddings[layer].astype(np.float32)         # (n_probes, hidden)
    metrics: dict = {}
    if prev is not None and first is not None:
        metrics["drift_prev"] = geometry_drift(me.similarity[layer], prev.similarity[layer]).drift
        metrics["drift_first"] = geometry_drift(me.similarity[layer], first.similarity[layer]).drift
        metrics["cka_prev"] = linear_cka(x, prev.embeddings[layer].astype(np.float32))
        metrics["cka_first"] = linear_cka(x, first.embeddings[layer].astype(np.float32))
    if len(x) < MIN_LAYOUT_PROBES:
        params = {"skipped": f"a layout needs at least {MIN_LAYOUT_PROBES} probes, got {len(x)}"}
        return LayerGeometry(me.similarity[layer], None, metrics), params
    lay = layout(x, prev.coords.get(layer) if prev is not None else None, method=s.umap_method,
                 n_neighbors=s.umap_neighbors, min_dist=s.umap_min_dist, seed=s.umap_seed)
    me.coords[layer] = lay.coords
    metrics["trustworthiness"] = lay.trustworthiness
    metrics["umap_disparity"] = lay.disparity
    return LayerGeometry(me.similarity[layer], lay.coords, metrics), lay.params


def geometry_row(step: int, probe_hash: str, r: GeometryResult) -> dict:
    """The history row of one checkpoint's geometry: every layer's metrics, the last layer's on top."""
    by_layer = {str(k): dict(g.metrics) for k, g in r.layers.items()}
    last = by_layer[str(max(r.layers))]
    return {"step": step, "probe_hash": probe_hash, "geometry": by_layer,
            "geometry_drift": last.get("drift_prev"), "geometry_drift_first": last.get("drift_first"),
            "cka_prev": last.get("cka_prev"), "cka_first": last.get("cka_first"),
            "umap_disparity": last.get("umap_disparity"), "umap_trustworthiness": last.get("trustworthiness")}


# ---------------------------------------------------------------- series (the whole run)

def run_series(archives: list[arc.Archive], s: Settings, key: arc.StageKey | None = None) -> Path:
    """Results across every checkpoint -> series.h5 (+ hard_example_board.json)."""
    from .analysis.cartography import cartography
    from .analysis.errors import error_position_trend
    from .analysis.hard_examples import hard_example_board
    from .analysis.trajectories import logprob_trajectories
    from .probes import HARD_EXAMPLES_SKILL

    t0 = time.perf_counter()
    key = key or series_key(archives, s)
    steps = np.asarray([a.step for a in archives])
    reads = [a.read(EXTRACT, ["token_logprob", "answer_logprob", "answer_ids", "correct", "greedy_answer"])
             for a in archives]
    meta = archives[-1].read(EXTRACT, ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"])
    cats = list(meta["probe_category"])
    data: dict = {"steps": steps}
    if len(archives) >= 1:
        traj = logprob_trajectories(steps, [r["token_logprob"] for r in reads], cats, threshold=s.learned_threshold)
        order = np.asarray(traj.order, dtype=np.int64).reshape(-1, 3)
        data["trajectories"] = {
            "learned_at": arc.Ragged.from_rows([np.asarray(x, dtype=np.int64) for x in traj.learned_at], np.int64),
            "order": order,
            "category_mean": {"names": np.asarray(list(traj.category_mean), dtype=object),
                              "values": _stack_ragged(list(traj.category_mean.values()))},
        }
    correct = np.stack([np.asarray(r["correct"], dtype=bool) for r in reads])          # (k, n)
    if len(archives) >= 2:
        # Two windows: over the whole run nearly every probe the model learns at all is
        # "ambiguous" (it climbs from chance); the later half shows which ones stay hard.
        lengths = np.diff(reads[-1]["answer_ids"].offsets)
        logprobs = np.stack([r["answer_logprob"] for r in reads])
        late = len(archives) // 2 if len(archives) >= 4 else 0
        for name, start in (("cartography", 0), ("cartography_late", late)):
            cart = cartography(logprobs[start:], lengths, correct[start:])
            data[name] = {"confidence": cart.confidence, "variability": cart.variability,
                          "correctness": cart.correctness, "region": np.asarray(cart.region, dtype=object),
                          "first_step": np.int64(steps[start])}
    hists = [read_analysis(a, ["errors"]).errors.histogram if stage_ok(a, ANALYSIS) else None for a in archives]
    if all(h is not None for h in hists) and hists:
        trend = error_position_trend(steps, hists)
        data["error_trend"] = {"first": trend.first, "last": trend.last, "change": trend.change,
                               "improving": np.asarray(trend.improving, dtype=np.int64)}
    hard = [i for i, sk in enumerate(meta["probe_skill"]) if sk == HARD_EXAMPLES_SKILL]
    board_json = None
    if hard:
        answers = np.asarray([[r["greedy_answer"][i] for i in hard] for r in reads], dtype=object)
        board = hard_example_board(steps, [meta["probe_ids"][i] for i in hard], [meta["prompt"][i] for i in hard],
                                   [meta["expected"][i] for i in hard], [cats[i] for i in hard],
                                   correct[:, hard], answers)
        board_json = board.to_json()
        data["hard_examples"] = {"ids": np.asarray(board.ids, dtype=object), "correct": np.asarray(board.correct),
                                 "first_right": np.asarray([-1 if x is None else x for x in board.first_right]),
                                 "regressed": np.asarray(board.regressed, dtype=bool)}
    health = series_health(archives, s, correct)               # issue 15: separate groups, see below
    data["health"] = health_to_archive(health, steps)
    impact = series_data_impact(archives, reads, meta, health)
    if impact is not None:
        data["data_impact"] = impact
    path = archives[0].path.parent / arc.SERIES_NAME
    arc.write_stage(path, SERIES, key=key, root_attrs={"kind": "series", "steps": steps.tolist(),
                                                      "step": int(steps[-1])},
                    data=data, attrs={"learned_threshold": s.learned_threshold},
                    timings={"total": time.perf_counter() - t0})
    if board_json is not None:
        write_json_atomic(archives[0].path.parent / BOARD_FILE, board_json)
    append_health_rows(archives, health)
    return path


def _stack_ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """(k, width_i) arrays -> one (c, k, max width) array padded with NaN."""
    if not arrays:
        return np.zeros((0, 0, 0))
    k = arrays[0].shape[0]
    width = max(a.shape[1] for a in arrays)
    out = np.full((len(arrays), k, width), np.nan)
    for i, a in enumerate(arrays):
        out[i, :, : a.shape[1]] = a
    return out


# ---------------------------------------------------------------- health flags and data impact (series.h5)
# Two groups of series.h5, `health` and `data_impact`, each built by its own function from what
# run_series has read; docs/archive.md describes them.

def data_log_of(archives: list[arc.Archive]) -> Path | None:
    """The run's data_log.jsonl: beside the checkpoints (the training run's folder), else in the
    archive folder; None when there is none."""
    from . import datalog
    from .readout import checkpoint_of
    run_folder = checkpoint_of(archives[0]).parent if archives[0].attrs.get("checkpoint") else None
    return datalog.find([run_folder, archives[0].path.parent])


def health_inputs_key(archives: list[arc.Archive], s: Settings) -> str:
    """What the health and data impact groups read beyond the series' own inputs: every
    geometry stage, the data log (the examples per source in each interval) and the health settings."""
    geo = [a.stage(GEOMETRY).key.inputs if a.stage(GEOMETRY) and a.stage(GEOMETRY).ok else None for a in archives]
    mix = None
    path = data_log_of(archives)
    if path is not None:   # what the log says about the archived checkpoints' intervals, not the file's
        from . import datalog  # mtime: a trainer appending rows after the last checkpoint changes nothing
        log = datalog.read(path)
        names, counts = datalog.interval_mix(log, [a.step for a in archives])
        mix = (str(path), names, counts.tolist(), len(log.problems))
    return _hash(geo, mix, s.health_window, s.health_z, s.health_min_history, s.health_floor)


def _last_layer_similarity(a: arc.Archive) -> np.ndarray | None:
    if not stage_ok(a, GEOMETRY):
        return None
    geo = read_geometry(a, elements=("similarity",))
    return geo.layers[max(geo.layers)].similarity if geo.layers else None


def series_health(archives: list[arc.Archive], s: Settings, correct: np.ndarray):
    """learnviz.analysis.health over the run: accuracy and regressions from the extractions,
    loss, ECE, geometry drift and weight flags from the learning history."""
    from .analysis.health import HealthInputs, health
    from .analysis.rsa import geometry_drift

    rows = {r["step"]: r for r in history.read(archives[0].path.parent, archives[-1].key.probe_hash)}
    mine = [rows.get(a.step, {}) for a in archives]

    def num(r: dict, *keys: str) -> float:
        for k in keys:
            v = r.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        return np.nan

    sims: dict[int, np.ndarray | None] = {}

    def drift(r: int, i: int) -> float:
        if r == i - 1:
            return num(mine[i], "geometry_drift")
        for j in (r, i):
            if j not in sims:
                sims[j] = _last_layer_similarity(archives[j])
        if sims[r] is None or sims[i] is None or sims[r].shape != sims[i].shape:
            return np.nan
        return geometry_drift(sims[r], sims[i]).drift

    inputs = HealthInputs(accuracy=correct.mean(axis=1) if correct.shape[1] else np.full(len(archives), np.nan),
                          correct=correct, loss=np.asarray([num(r, "eval_loss", "train_loss") for r in mine]),
                          ece=np.asarray([num(r, "ece") for r in mine]), drift=drift,
                          weight_flags=[r.get("weight_flags") or {} for r in mine])
    return health(inputs, window=s.health_window, z_threshold=s.health_z, min_history=s.health_min_history,
                  floor=s.health_floor)


def health_to_archive(h, steps: np.ndarray) -> dict:
    """The `health` group: per signal its values and z-scores (k,), the flags per checkpoint as
    JSON text, the reference checkpoint of each, and the settings they were judged with."""
    import json

    from .analysis.health import SIGNALS
    return {"signals": np.asarray(SIGNALS, dtype=object),
            "values": np.stack([h.values[k] for k in SIGNALS]) if len(steps) else np.zeros((len(SIGNALS), 0)),
            "z": np.stack([h.z[k] for k in SIGNALS]) if len(steps) else np.zeros((len(SIGNALS), 0)),
            "flags": np.asarray([json.dumps(f, sort_keys=True) for f in h.flags], dtype=object),
            "reference_step": np.asarray([int(steps[r]) if r >= 0 else -1 for r in h.reference], dtype=np.int64),
            "settings": {"window": np.int64(h.window), "z_threshold": np.float64(h.z_threshold),
                         "min_history": np.int64(h.min_history), "floor": np.float64(h.floor)}}


def append_health_rows(archives: list[arc.Archive], h) -> None:
    """A history row `{"step", "probe_hash", "health_flags"}` for each checkpoint whose flags
    differ from what the history says (so a re-run appends nothing)."""
    archive_dir = archives[0].path.parent
    probe_hash = archives[-1].key.probe_hash
    known = {r["step"]: r.get("health_flags") for r in history.read(archive_dir, probe_hash)}
    for a, flags in zip(archives, h.flags):
        if known.get(a.step) != flags:
            history.append(archive_dir, {"step": a.step, "probe_hash": probe_hash, "health_flags": flags})


def series_data_impact(archives: list[arc.Archive], reads: list[dict], meta: dict, h) -> dict | None:
    """The `data_impact` group, or None without a data log. Intervals run between consecutive
    checkpoints that no health signal flagged (a broken checkpoint measures no training)."""
    from . import datalog
    from .analysis.data_impact import data_impact
    from .analysis.health import SIGNALS

    path = data_log_of(archives)
    if path is None:
        return None
    log = datalog.read(path)
    keep = [i for i, f in enumerate(h.flags) if not any(k in SIGNALS for k in f)]
    steps = [archives[i].step for i in keep]
    sources, mix = datalog.interval_mix(log, steps)
    skills, cats = [str(x) for x in meta["probe_skill"]], [str(x) for x in meta["probe_category"]]
    skill_names = list(dict.fromkeys(skills))
    cat_names = list(dict.fromkeys(f"{a}/{b}" for a, b in zip(skills, cats)))
    sk_idx = {n: np.asarray([j for j, x in enumerate(skills) if x == n]) for n in skill_names}
    cat_idx = {n: np.asarray([j for j, (a, b) in enumerate(zip(skills, cats)) if f"{a}/{b}" == n]) for n in cat_names}
    acc = np.asarray([[np.mean(np.asarray(reads[i]["correct"], dtype=bool)[sk_idx[n]]) for n in skill_names]
                      for i in keep]).reshape(len(keep), len(skill_names))
    lp = np.asarray([[np.nanmean(np.asarray(reads[i]["answer_logprob"], dtype=np.float64)[cat_idx[n]])
                      for n in cat_names] for i in keep]).reshape(len(keep), len(cat_names))
    out: dict = {"sources": np.asarray(sources, dtype=object),
                 "intervals": np.asarray([steps[:-1], steps[1:]], dtype=np.int64).T.reshape(-1, 2),
                 "mix": mix, "excluded_steps": np.asarray([a.step for i, a in enumerate(archives) if i not in keep],
                                                          dtype=np.int64),
                 "problems": np.asarray([str(p) for p in log.problems[:100]], dtype=object),
                 "data_log": np.asarray(str(path), dtype=object)}
    for name, names, values in (("accuracy", skill_names, acc), ("logprob", cat_names, lp)):
        imp = data_impact(steps, mix, sources, np.diff(values, axis=0), names)
        out[name] = {"targets": np.asarray(names, dtype=object), "change": imp.change, "beta": imp.beta,
                     "stderr": imp.stderr, "p_value": imp.p_value, "progress": np.int64(imp.progress),
                     "n_permutations": np.int64(imp.n_permutations), "per": np.float64(imp.per),
                     "note": np.asarray(imp.note, dtype=object)}
    return out
