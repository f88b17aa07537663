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
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import archive as arc
from . import history, insight
from .checkpoints import weight_files
from .common import short_hash
from .readout import checkpoint_of, read_geometry, stage_ok
from .readout import embeddings as read_embeddings
from .results import (
    ANALYSIS,
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

def _analysis_settings(s: Settings) -> tuple:
    return (s.calibration_bins, s.entropy_low, s.entropy_high, s.weight_exploding, s.weight_vanishing, s.weight_dead)


def _geometry_settings(s: Settings) -> tuple:
    from .analysis import umap_layout as ul  # constants only; umap itself is imported lazily
    return (s.umap_method, s.umap_neighbors, s.umap_min_dist, s.umap_seed, ul.REFINE_EPOCHS, ul.REFINE_LEARNING_RATE,
            ul.DEFAULT_METRIC, ul.REFINE_OPTIMIZER)


_SEP = "\x1f"


@lru_cache(maxsize=64)
def _text(values: tuple) -> str:
    return _SEP.join(map(str, values))


class _Unkept:
    """`FolderIndex.hashed` for archives that are not files of a folder (views built in memory)."""

    @staticmethod
    def hashed(text: str, compute):
        return compute()


def _index_of(archives: list[arc.Archive]):
    path = getattr(archives[0], "path", None)
    return arc.folder_index(Path(path).parent) if path is not None else _Unkept


# (what, run folder) -> (the folder index and settings they were computed with, the archive views,
# one value per view): the last per-checkpoint values of a run's keys. A view stands for one
# version of its file, so over a prefix of the same view objects the values hold again: a worker
# planning a run one checkpoint longer computes only the new checkpoint's.
_by_views: dict[tuple[str, str], tuple[tuple, list, list]] = {}
arc.on_clear(_by_views.clear)


def _kept(what: str, archives: list[arc.Archive], index, text: str) -> list:
    """The values kept for the longest prefix of `archives` that is the same views as last time
    (computed with the same folder index and settings)."""
    if index is _Unkept:
        return []
    hit = _by_views.get((what, str(index.path)))
    if hit is None or hit[0][0] is not index or hit[0][1] != text:
        return []
    n = 0
    for a, b in zip(archives, hit[1]):
        if a is not b:
            break
        n += 1
    return hit[2][:n]


def _keep(what: str, archives: list[arc.Archive], index, text: str, values: list) -> None:
    if index is not _Unkept:
        if len(_by_views) >= 64:
            _by_views.clear()
        _by_views[(what, str(index.path))] = ((index, text), list(archives), list(values))


def analysis_keys(archives: list[arc.Archive], indices: list[int], s: Settings) -> dict[int, arc.StageKey]:
    """`analysis_key` of each of `indices`. Each hash is remembered in the folder index
    (`FolderIndex.hashed`): a long run is planned again without hashing every checkpoint's key."""
    if not indices:
        return {}
    index = _index_of(archives)
    fixed = _analysis_settings(s)
    tail, first = _text(fixed), archives[0].key.fingerprint
    kept = _kept(ANALYSIS, archives, index, tail)
    every = kept + [None] * (len(archives) - len(kept))
    out = {}
    for i in indices:
        if every[i] is None:
            prev = archives[i - 1].key.fingerprint if i else ""
            inputs = index.hashed(_SEP.join((ANALYSIS, prev, first, tail)),
                                  lambda prev=prev: _hash(ANALYSIS, prev, first, *fixed))
            every[i] = archives[i].key.with_inputs(inputs)
        out[i] = every[i]
    done = next((i for i, k in enumerate(every) if k is None), len(every))
    _keep(ANALYSIS, archives[:done], index, tail, every[:done])
    return out


def analysis_key(archives: list[arc.Archive], i: int, s: Settings) -> arc.StageKey:
    return analysis_keys(archives, [i], s)[i]


def geometry_keys(archives: list[arc.Archive], s: Settings) -> list[arc.StageKey]:
    """Chained: checkpoint i's key includes checkpoint i-1's, because its layout starts there.
    (Hashes remembered as in `analysis_keys`.)"""
    if not archives:
        return []
    index = _index_of(archives)
    fixed = _geometry_settings(s)
    tail, first = _text(fixed), archives[0].key.fingerprint
    chain = _kept(GEOMETRY, archives, index, tail)       # (key, its hash: the next one's `prev`)
    prev = chain[-1][1] if chain else ""
    for a in archives[len(chain):]:
        inputs = index.hashed(_SEP.join((GEOMETRY, first, prev, tail)),
                              lambda prev=prev: _hash(GEOMETRY, first, prev, *fixed))
        key = a.key.with_inputs(inputs)
        prev = index.hashed(_SEP.join(("key", key.fingerprint, key.probe_hash, str(key.schema_version), inputs)),
                            lambda key=key: _hash(key))
        chain.append((key, prev))
    _keep(GEOMETRY, archives, index, tail, chain)
    return [key for key, _ in chain]


_series_keys: dict[tuple, arc.StageKey] = {}     # the last series keys computed, by what they hash


def series_key(archives: list[arc.Archive], s: Settings) -> arc.StageKey:
    """The series reads every extraction, every analysis (error positions) and geometry (the health
    flags' drift), and the run's data log: all in the key."""
    index = _index_of(archives)
    kept = _kept(SERIES, archives, index, "")        # (its fps entry, its geometry entry) per view
    per = kept + [((a.step, a.key.fingerprint,
                    a.stage(ANALYSIS).key.inputs if a.stage(ANALYSIS) and a.stage(ANALYSIS).ok else None),
                   insight.geometry_key_inputs(a)) for a in archives[len(kept):]]
    _keep(SERIES, archives, index, "", per)
    fps = [f for f, _ in per]
    health = insight.health_inputs_key(archives, s, geo=[g for _, g in per])
    memo = (str(archives[0].path.parent), tuple(fps), archives[-1].key.probe_hash, s.learned_threshold, health)
    key = _series_keys.get(memo)
    if key is None:
        if len(_series_keys) >= 16:
            _series_keys.clear()
        key = _series_keys[memo] = arc.StageKey(_hash(fps), archives[-1].key.probe_hash,
                                                inputs=_hash(SERIES, s.learned_threshold, health))
    return key


# ---------------------------------------------------------------- analysis (per checkpoint)

EXTRACT_KEYS = ["correct", "probe_skill", "probe_category", "probe_ids", "answer_confidence", "token_entropy",
                "answer_ids", "token_argmax", "first_divergence"]


def checkpoint_weights(a: arc.Archive, root: str | None = None) -> list[Path] | None:
    """The weight files of the checkpoint archived in `a`, where it is now under the run's checkpoint
    folder `root` (readout.checkpoint_of: the run may have moved since); None when they are gone."""
    files = weight_files(checkpoint_of(a, root))
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
    # NaN confidences (a broken checkpoint: NaN weights, an overflow) are missing values, as the
    # entropy's NaNs are: calibration is over the others, so the weight drift still names the
    # layers that blew up (weights_exploding) instead of the stage failing on the NaN
    finite = np.isfinite(confidence)
    cal = (calibration(confidence[finite], correct[finite], n_bins=s.calibration_bins) if finite.any()
           else _no_calibration(s.calibration_bins))
    ent = entropy_summary(extracted["token_entropy"], correct, categories, low=s.entropy_low, high=s.entropy_high)
    err = localize_errors(extracted["answer_ids"], extracted["token_argmax"], extracted["first_divergence"], correct)
    return AnalysisResult(
        skills=scores.skills, categories=scores.categories, delta_vs_base=compare_to_base(scores, base),
        calibration=CalibrationBins(cal.bin_edges, cal.bin_confidence, cal.bin_accuracy, cal.bin_count, cal.ece,
                                    cal.mce, cal.brier, cal.gap, cal.direction),
        entropy=EntropyProfile(ent.mean_by_position, ent.count_by_position, ent.probe_mean, ent.overconfident,
                               ent.uncertain, ent.mean_by_category),
        errors=ErrorPositions(err.teacher_forced, err.free, err.histogram))


def _no_calibration(n_bins: int):
    """The calibration of a checkpoint without one finite confidence: empty bins, NaN scores."""
    from .analysis.calibration import Calibration, bin_edges
    nan = np.full(n_bins, np.nan)
    return Calibration(n_bins=n_bins, tolerance=0.0, n=0, bin_edges=bin_edges(n_bins), bin_confidence=nan,
                       bin_accuracy=nan.copy(), bin_count=np.zeros(n_bins, np.int64), n_at_one=0,
                       accuracy_at_one=np.nan, ece=np.nan, mce=np.nan, brier=np.nan, gap=np.nan,
                       direction="unknown", accuracy=np.nan, mean_confidence=np.nan)


def with_weights(result: AnalysisResult, archives: list[arc.Archive], i: int, s: Settings) -> AnalysisResult:
    """`result` with checkpoint i's weight drift against the previous and the first checkpoint (or
    a note, when its weight files are gone: the history outlives rotated checkpoints)."""
    from dataclasses import replace

    from .analysis.weight_drift import weight_drift

    current = checkpoint_weights(archives[i], s.checkpoints)
    if current is None:
        return replace(result, weights_note="unavailable: the checkpoint's weight files are gone")
    prev = checkpoint_weights(archives[i - 1], s.checkpoints) if i else None
    first = checkpoint_weights(archives[0], s.checkpoints) if i else None
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
                 "mean_entropy": (float(np.nanmean(ent.probe_mean)) if np.isfinite(ent.probe_mean).any()
                                  else None),
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
        return LayerGeometry(None, None, metrics), params
    lay = layout(x, prev.coords.get(layer) if prev is not None else None, method=s.umap_method,
                 n_neighbors=s.umap_neighbors, min_dist=s.umap_min_dist, seed=s.umap_seed)
    me.coords[layer] = lay.coords
    metrics["trustworthiness"] = lay.trustworthiness
    metrics["umap_disparity"] = lay.disparity
    # The similarity matrix is not stored: (n, n) per layer and checkpoint outgrows everything else
    # of an archive past a few thousand probes, and it is the embeddings' (insight recomputes it)
    return LayerGeometry(None, lay.coords, metrics), lay.params


def geometry_row(step: int, probe_hash: str, r: GeometryResult) -> dict:
    """The history row of one checkpoint's geometry: every layer's metrics, the last layer's on top."""
    by_layer = {str(k): dict(g.metrics) for k, g in r.layers.items()}
    last = by_layer[str(max(r.layers))]
    return {"step": step, "probe_hash": probe_hash, "geometry": by_layer,
            "geometry_drift": last.get("drift_prev"), "geometry_drift_first": last.get("drift_first"),
            "cka_prev": last.get("cka_prev"), "cka_first": last.get("cka_first"),
            "umap_disparity": last.get("umap_disparity"), "umap_trustworthiness": last.get("trustworthiness")}


# ---------------------------------------------------------------- series (the whole run)

def run_series(archives: list[arc.Archive], s: Settings, key: arc.StageKey | None = None, *,
               rows: bool = True, left_out: list[tuple[int, str]] | None = None) -> Path:
    """Results across every checkpoint -> series.h5 (+ hard_example_board.json), from one compact
    row per checkpoint kept in series.h5: only checkpoints without a current row are read
    (learnviz.series_stage). `rows=False` reads every archive again. A broken checkpoint (NaN
    answer logprobs) is left out of the results and flagged; `left_out` gets its (step, why)."""
    from .series_stage import run_series as run
    return run(archives, s, key or series_key(archives, s), rows=rows, left_out=left_out)
