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

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import archive as arc
from . import history
from .checkpoints import weight_files
from .settings import Settings

ANALYSIS, GEOMETRY, SERIES = "analysis", "geometry", "series"
BOARD_FILE = "hard_example_board.json"
MIN_LAYOUT_PROBES = 5   # UMAP needs a neighbourhood; smaller probe sets get drift and CKA only
_OWN_ATTRS = {"schema_version", "fingerprint", "probe_hash", "learnviz_version", "created", "updated"}


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _named(d: dict[str, float]) -> dict:
    """A str->float mapping as two arrays (names may hold '/', which HDF5 reads as a path)."""
    return {"names": np.asarray(list(d), dtype=object), "values": np.asarray(list(d.values()), dtype=np.float64)}


def unnamed(group: dict) -> dict[str, float]:
    return {str(k): float(v) for k, v in zip(group["names"], group["values"])}


def root_attrs_of(a: arc.Archive) -> dict:
    return {k: v for k, v in a.attrs.items() if k not in _OWN_ATTRS}


def series(archive_dir: str | Path, probe_hash: str | None = None) -> list[arc.Archive]:
    """Archives whose extraction succeeded, in step order, all of one probe set (the newest one's
    when `probe_hash` is None): archives of different probe sets are never compared."""
    done = [a for a in arc.list_archives(archive_dir) if a.stage("extract") and a.stage("extract").ok]
    if not done:
        return []
    wanted = probe_hash or done[-1].attrs.get("probe_hash")
    return [a for a in done if a.attrs.get("probe_hash") == wanted]


# ---------------------------------------------------------------- keys

def analysis_key(archives: list[arc.Archive], i: int, s: Settings) -> arc.StageKey:
    prev = archives[i - 1].key.fingerprint if i else ""
    inputs = _hash(ANALYSIS, prev, archives[0].key.fingerprint, s.calibration_bins, s.entropy_low,
                   s.entropy_high, s.weight_exploding, s.weight_vanishing, s.weight_dead)
    return archives[i].key.with_inputs(inputs)


def geometry_keys(archives: list[arc.Archive], s: Settings) -> list[arc.StageKey]:
    """Chained: checkpoint i's key includes checkpoint i-1's, because its layout starts there."""
    from .analysis import umap_layout as ul   # constants only; umap itself is imported lazily
    keys, prev = [], ""
    for a in archives:
        inputs = _hash(GEOMETRY, archives[0].key.fingerprint, prev, s.umap_method, s.umap_neighbors,
                       s.umap_min_dist, s.umap_seed, ul.REFINE_EPOCHS, ul.REFINE_LEARNING_RATE, ul.DEFAULT_METRIC)
        key = a.key.with_inputs(inputs)
        keys.append(key)
        prev = _hash(key)
    return keys


def series_key(archives: list[arc.Archive], s: Settings) -> arc.StageKey:
    """The series reads every extraction and every analysis (error positions): both in the key."""
    fps = [(a.step, a.key.fingerprint,
            a.stage(ANALYSIS).key.inputs if a.stage(ANALYSIS) and a.stage(ANALYSIS).ok else None)
           for a in archives]
    return arc.StageKey(_hash(fps), archives[-1].key.probe_hash,
                        inputs=_hash(SERIES, s.learned_threshold))


# ---------------------------------------------------------------- analysis (per checkpoint)

EXTRACT_KEYS = ["correct", "probe_skill", "probe_category", "probe_ids", "answer_confidence", "token_entropy",
                "answer_ids", "token_argmax", "first_divergence"]


def checkpoint_weights(a: arc.Archive) -> list[Path] | None:
    files = weight_files(Path(str(a.attrs.get("checkpoint", ""))))
    return files if files and all(f.exists() for f in files) else None


def run_analysis(archives: list[arc.Archive], i: int, s: Settings, key: arc.StageKey | None = None) -> dict:
    """The `analysis` stage of checkpoint i. Returns the history row it appended."""
    from .analysis.calibration import calibration
    from .analysis.entropy import entropy_summary
    from .analysis.errors import localize_errors
    from .analysis.skills import compare_to_base, skill_scores
    from .analysis.weight_drift import weight_drift

    t0 = time.perf_counter()
    a = archives[i]
    key = key or analysis_key(archives, i, s)
    d = a.read("extract", EXTRACT_KEYS)
    skills_, cats = list(d["probe_skill"]), list(d["probe_category"])
    correct = np.asarray(d["correct"], dtype=bool)
    sk = skill_scores(correct, skills_, cats)
    base_d = archives[0].read("extract", ["correct"]) if i else d
    base = skill_scores(np.asarray(base_d["correct"], dtype=bool), skills_, cats)
    delta = compare_to_base(sk, base)
    cal = calibration(np.clip(d["answer_confidence"].astype(np.float64), 0, 1), correct, n_bins=s.calibration_bins)
    ent = entropy_summary(d["token_entropy"], correct, cats, low=s.entropy_low, high=s.entropy_high)
    err = localize_errors(d["answer_ids"], d["token_argmax"], d["first_divergence"], correct)
    t1 = time.perf_counter()

    attrs: dict = {"calibration_direction": cal.direction}
    data: dict = {
        "skills": {"skill": _named(sk.skills), "category": _named(sk.categories), "delta_vs_base": _named(delta)},
        "calibration": {"bin_edges": cal.bin_edges, "bin_confidence": cal.bin_confidence,
                        "bin_accuracy": cal.bin_accuracy, "bin_count": cal.bin_count,
                        "ece": np.float64(cal.ece), "mce": np.float64(cal.mce), "brier": np.float64(cal.brier),
                        "gap": np.float64(cal.gap)},
        "entropy": {"mean_by_position": ent.mean_by_position, "count_by_position": ent.count_by_position,
                    "probe_mean": ent.probe_mean, "overconfident": ent.overconfident, "uncertain": ent.uncertain,
                    "by_category": _named(ent.mean_by_category)},
        "errors": {"teacher_forced": err.teacher_forced, "free": err.free, "histogram": err.histogram},
    }
    row: dict = {"step": a.step, "probe_hash": key.probe_hash, "ece": cal.ece, "mce": cal.mce, "brier": cal.brier,
                 "calibration_gap": cal.gap, "calibration_direction": cal.direction,
                 "mean_entropy": float(np.nanmean(ent.probe_mean)) if len(ent.probe_mean) else None,
                 "overconfident": int(ent.overconfident.sum()), "uncertain": int(ent.uncertain.sum()),
                 "skill_delta_vs_base": delta, "error_positions": err.histogram.tolist()}

    current = checkpoint_weights(a)
    if current is None:
        attrs["weights"] = "unavailable: the checkpoint's weight files are gone"
    else:
        prev = checkpoint_weights(archives[i - 1]) if i else None
        first = checkpoint_weights(archives[0]) if i else None
        wd = weight_drift(current, prev, first, exploding=s.weight_exploding, vanishing=s.weight_vanishing,
                          dead=s.weight_dead)
        data["weights"] = {"layers": np.asarray(wd.layers, dtype=object), "norm": wd.norm,
                           "change_prev": wd.change_prev, "change_first": wd.change_first,
                           "norm_ratio_first": wd.norm_ratio_first,
                           "parameters": np.asarray(wd.parameters, dtype=np.int64)}
        attrs["weight_flags"] = wd.flags
        row.update({"layer_names": wd.layers, "layer_drifts": wd.change_prev.tolist(),
                    "layer_drifts_first": wd.change_first.tolist(), "weight_norms": wd.norm.tolist(),
                    "weight_flags": {k: v for k, v in wd.flags.items() if v}})
    t2 = time.perf_counter()
    arc.write_stage(a.path, ANALYSIS, key=key, root_attrs=root_attrs_of(a), data=data, attrs=attrs,
                    timings={"behaviour": t1 - t0, "weights": t2 - t1, "total": t2 - t0})
    history.append(a.path.parent, row)
    return row


# ---------------------------------------------------------------- geometry (in step order)

@dataclass
class _Geo:
    """What the next checkpoint's geometry needs from this one, kept in memory during a run."""
    embeddings: dict[int, np.ndarray]
    similarity: dict[int, np.ndarray]
    coords: dict[int, np.ndarray] = field(default_factory=dict)


def _embeddings(a: arc.Archive) -> dict[int, np.ndarray]:
    emb = a.read("extract", ["embeddings"])["embeddings"]
    return {int(k.split("_")[1]): v for k, v in emb.items()}


def _geo(a: arc.Archive, cache: dict) -> _Geo:
    from .analysis.rsa import similarity_matrix
    if a.path not in cache:
        emb = _embeddings(a)
        geo = _Geo(emb, {k: similarity_matrix(v) for k, v in emb.items()})
        info = a.stage(GEOMETRY)
        if info is not None and info.ok:
            stored = a.read(GEOMETRY)
            geo.coords = {int(k.split("_")[1]): g["coords"] for k, g in stored.items()
                          if k.startswith("layer_") and "coords" in g}
        cache[a.path] = geo
    return cache[a.path]


def run_geometry(archives: list[arc.Archive], i: int, s: Settings, key: arc.StageKey, cache: dict) -> dict:
    """The `geometry` stage of checkpoint i; checkpoint i-1's geometry must be current."""
    from .analysis.cka import linear_cka
    from .analysis.rsa import geometry_drift
    from .analysis.umap_layout import layout

    t0 = time.perf_counter()
    a = archives[i]
    cache.pop(a.path, None)            # recomputing: do not start from this checkpoint's old layout
    me = _geo(a, cache)
    prev = _geo(archives[i - 1], cache) if i else None
    first = _geo(archives[0], cache) if i else None
    data, by_layer = {}, {}
    umap_seconds, umap_params = 0.0, {}
    for layer, emb in me.embeddings.items():
        x = emb.astype(np.float32)
        m: dict = {}
        if prev is not None:
            m["drift_prev"] = geometry_drift(me.similarity[layer], prev.similarity[layer]).drift
            m["drift_first"] = geometry_drift(me.similarity[layer], first.similarity[layer]).drift
            m["cka_prev"] = linear_cka(x, prev.embeddings[layer].astype(np.float32))
            m["cka_first"] = linear_cka(x, first.embeddings[layer].astype(np.float32))
        # float16: a 525x525 matrix per layer and checkpoint; cosines need no more digits
        group = {"similarity": me.similarity[layer].astype(np.float16)}
        if len(x) >= MIN_LAYOUT_PROBES:
            tu = time.perf_counter()
            lay = layout(x, prev.coords.get(layer) if prev is not None else None, method=s.umap_method,
                         n_neighbors=s.umap_neighbors, min_dist=s.umap_min_dist, seed=s.umap_seed)
            umap_seconds += time.perf_counter() - tu
            me.coords[layer] = lay.coords
            umap_params = lay.params
            m["trustworthiness"] = lay.trustworthiness
            m["umap_disparity"] = lay.disparity
            group["coords"] = lay.coords.astype(np.float32)
        else:
            umap_params = {"skipped": f"a layout needs at least {MIN_LAYOUT_PROBES} probes, got {len(x)}"}
        by_layer[str(layer)] = m
        data[f"layer_{layer}"] = {**group, **{k: np.float64(np.nan if v is None else v) for k, v in m.items()}}
    last = str(max(me.embeddings))
    row = {"step": a.step, "probe_hash": key.probe_hash, "geometry": by_layer,
           "geometry_drift": by_layer[last].get("drift_prev"), "geometry_drift_first": by_layer[last].get("drift_first"),
           "cka_prev": by_layer[last].get("cka_prev"), "cka_first": by_layer[last].get("cka_first"),
           "umap_disparity": by_layer[last].get("umap_disparity"),
           "umap_trustworthiness": by_layer[last].get("trustworthiness")}
    arc.write_stage(a.path, GEOMETRY, key=key, root_attrs=root_attrs_of(a), data=data,
                    attrs={"umap_method": s.umap_method, "umap_params": umap_params,
                           "previous_step": archives[i - 1].step if i else None,
                           "first_step": archives[0].step},
                    timings={"umap": umap_seconds, "total": time.perf_counter() - t0})
    history.append(a.path.parent, row)
    return row


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
    reads = [a.read("extract", ["token_logprob", "answer_logprob", "answer_ids", "correct", "greedy_answer"])
             for a in archives]
    meta = archives[-1].read("extract", ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"])
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
    hists = []
    for a in archives:
        info = a.stage(ANALYSIS)
        hists.append(a.read(ANALYSIS, ["errors"])["errors"]["histogram"] if info is not None and info.ok else None)
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
    path = archives[0].path.parent / arc.SERIES_NAME
    arc.write_stage(path, SERIES, key=key, root_attrs={"kind": "series", "steps": steps.tolist(),
                                                      "step": int(steps[-1])},
                    data=data, attrs={"learned_threshold": s.learned_threshold},
                    timings={"total": time.perf_counter() - t0})
    if board_json is not None:
        _write_json_atomic(archives[0].path.parent / BOARD_FILE, board_json)
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


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(history._clean(obj), indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------- driver

@dataclass
class CpuReport:
    analysed: list[int] = field(default_factory=list)
    geometry: list[int] = field(default_factory=list)
    series: bool = False
    failed: list[tuple[int, str, str]] = field(default_factory=list)   # (step, stage, reason)
    seconds: float = 0.0


def run_cpu_stages(settings: Settings, *, steps: set[int] | None = None, analysis: bool = True,
                   force: bool = False, progress: bool = False) -> CpuReport:
    """Every CPU stage that is not current, in step order.

    `steps` limits the work to those checkpoints (`learnviz analyze --checkpoint`): their analysis,
    and the geometry chain up to the last of them. `analysis=False` leaves the per-checkpoint
    analyses out (the distributed mode runs them as tasks of their own). `force` recomputes the
    chosen checkpoints even when current. A stage that raises is recorded as failed and the
    others go on.
    """
    t0 = time.perf_counter()
    report = CpuReport()
    archive_dir = settings.archive_dir()
    archives = series(archive_dir)
    if not archives:
        return report
    chosen = [i for i, a in enumerate(archives) if steps is None or a.step in steps]
    todo_a = [i for i in chosen if analysis and (force or not archives[i].is_current(
        ANALYSIS, analysis_key(archives, i, settings)))]
    gkeys = geometry_keys(archives, settings)
    last_needed = max(chosen) if chosen else -1
    todo_g = [i for i in range(last_needed + 1)
              if (force and i in chosen) or not archives[i].is_current(GEOMETRY, gkeys[i])]
    if todo_g:  # a recomputed layout moves every later one: follow the chain to the end
        todo_g = list(range(todo_g[0], len(archives))) if steps is None else list(range(todo_g[0], last_needed + 1))
    bar = _bar(len(todo_a) + len(todo_g), "analyse", progress)
    for i in todo_a:
        _guard(report, archives[i], ANALYSIS, lambda: run_analysis(archives, i, settings),
               analysis_key(archives, i, settings))
        report.analysed.append(archives[i].step)
        bar.update(1)
    cache: dict = {}
    for i in todo_g:
        ok = _guard(report, archives[i], GEOMETRY, lambda: run_geometry(archives, i, settings, gkeys[i], cache),
                    gkeys[i])
        report.geometry.append(archives[i].step)
        bar.update(1)
        if not ok:
            break  # later layouts start from this one
    bar.close()
    archives = series(archive_dir)   # re-read: stage statuses changed
    skey = series_key(archives, settings)
    spath = archive_dir / arc.SERIES_NAME
    current = False
    if spath.exists() and not force:
        try:
            current = arc.Archive(spath).is_current(SERIES, skey) and not report.analysed
        except arc.ArchiveError:
            current = False
    if not current:
        _guard(report, archives[-1], SERIES, lambda: run_series(archives, settings, skey))
        report.series = True
    report.seconds = time.perf_counter() - t0
    return report


def _guard(report: CpuReport, a: arc.Archive, stage: str, fn, key: arc.StageKey | None = None) -> bool:
    try:
        fn()
        return True
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - record and go on, as the GPU stage does
        reason = f"{type(exc).__name__}: {exc}"
        report.failed.append((a.step, stage, reason))
        if stage != SERIES:
            # under the stage's own key, so the failure counts as done until its inputs change
            arc.write_stage(a.path, stage, key=key or a.key, root_attrs=root_attrs_of(a), status="failed",
                            reason=reason)
        return False


def _bar(total: int, desc: str, enabled: bool):
    from .pipeline import _bar as bar
    return bar(total, desc, enabled and total > 1, unit="stage")
