"""Health flags and data impact of a run: the `health` and `data_impact` groups of series.h5
(docs/archive.md), built by the series stage (learnviz.series_stage) from its stacked rows, and
the history rows that carry the flags. The computations are learnviz.analysis.health and
learnviz.analysis.data_impact; this module gathers their inputs from the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import archive as arc
from . import history
from .common import short_hash
from .readout import row_stamp, stage_ok
from .results import GEOMETRY
from .settings import Settings


def data_log_of(archives: list[arc.Archive], root: str | Path | None = None) -> Path | None:
    """The run's data_log.jsonl: beside the checkpoints (the training run's folder: `root`, the
    run's checkpoint folder now, when the first checkpoint is found under it; a run folder moved or
    copied elsewhere must not read the old place's log, or lose it), else in the archive folder;
    None when there is none."""
    from . import datalog
    from .readout import checkpoint_of
    run_folder = checkpoint_of(archives[0], root).parent if archives[0].attrs.get("checkpoint") else None
    return datalog.find([run_folder, archives[0].path.parent])


def geometry_key_inputs(a: arc.Archive) -> str | None:
    """What `health_inputs_key` reads of one archive: its geometry stage's key inputs (None
    without a successful one)."""
    info = a.stage(GEOMETRY)
    return info.key.inputs if info is not None and info.ok else None


def health_inputs_key(archives: list[arc.Archive], s: Settings, *, geo: list[str | None] | None = None) -> str:
    """What the health and data impact groups read beyond the series' own inputs: every
    geometry stage, the data log (the examples per source in each interval) and the health settings.
    `geo`: `geometry_key_inputs` of each archive, when the caller has it."""
    geo = geo if geo is not None else [geometry_key_inputs(a) for a in archives]
    mix = None
    path = data_log_of(archives, s.checkpoints)
    if path is not None:   # what the log says about the archived checkpoints' intervals, not the file's
        from . import datalog  # mtime: a trainer appending rows after the last checkpoint changes nothing
        log = datalog.read(path)
        names, counts = datalog.interval_mix(log, [a.step for a in archives])
        mix = (str(path), names, counts.tolist(), len(log.problems))
    return short_hash(geo, mix, s.health_window, s.health_z, s.health_min_history, s.health_floor)


def _last_layer_similarity(a: arc.Archive) -> np.ndarray | None:
    """The cosine similarity (n, n) of the last pooled layer's embeddings, as the geometry stage
    compares them (None without a successful geometry stage). Computed from the extraction's
    embeddings: archives do not keep the matrix (one written before keeps a float16 copy, which
    could tie close values; it is not read)."""
    from .analysis.rsa import similarity_matrix
    from .readout import embeddings

    if not stage_ok(a, GEOMETRY):
        return None
    emb = embeddings(a)
    return similarity_matrix(emb[max(emb)]) if emb else None


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
            if type(v) is float or type(v) is int:     # (JSON's numbers; not a bool)
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
    # What each checkpoint's judging reads of its own: its row (extraction, analysis), its geometry
    # (drift against a reference further back), and its history values. The earlier result of this
    # run holds for the checkpoints up to the first whose inputs differ (learnviz.analysis.health).
    # (the history's values as read: equal values give equal inputs; a run of 500 checkpoints asks
    # this of every one for each new checkpoint, so it is kept to lookups)
    digests = [(row_stamp(a), _geometry_inputs(a), r.get("eval_loss"), r.get("train_loss"), r.get("ece"),
                r.get("geometry_drift"), r.get("weight_flags")) for a, r in zip(archives, mine)]
    folder = str(archives[0].path.parent)
    before_digests, before = _health_memo.get(folder, ([], None))
    same = 0
    for x, y in zip(digests, before_digests):
        if x != y and not _same_digest(x, y):
            break
        same += 1
    h = health(inputs, window=s.health_window, z_threshold=s.health_z, min_history=s.health_min_history,
               floor=s.health_floor, resume=before, same=same)
    if len(_health_memo) >= 16 and folder not in _health_memo:
        _health_memo.clear()
    _health_memo[folder] = (digests, h)
    return h


# The last health of each run folder, with what each checkpoint's judging read (series_health)
_health_memo: dict[str, tuple[list[tuple], object]] = {}


def _geometry_inputs(a: arc.Archive) -> tuple | None:
    """What a checkpoint's geometry stage was made from (kept on the view, made of its header)."""
    kept = a.__dict__.get("_geometry_inputs", False)
    if kept is False:
        info = a.stage(GEOMETRY)
        kept = a.__dict__["_geometry_inputs"] = None if info is None else (
            info.status, info.key.fingerprint, info.key.inputs, str(info.attrs.get("finished", "")))
    return kept


def _same_digest(x: tuple, y: tuple) -> bool:
    """Equal, NaN equal to NaN (a loss not logged)."""
    return all(a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))
               for a, b in zip(x, y))


def health_to_archive(h, steps: np.ndarray) -> dict:
    """The `health` group: per signal its values and z-scores (k,), the flags per checkpoint as
    JSON text, the reference checkpoint of each, and the settings they were judged with."""

    from .analysis.health import SIGNALS
    return {"signals": np.asarray(SIGNALS, dtype=object),
            "values": np.stack([h.values[k] for k in SIGNALS]) if len(steps) else np.zeros((len(SIGNALS), 0)),
            "z": np.stack([h.z[k] for k in SIGNALS]) if len(steps) else np.zeros((len(SIGNALS), 0)),
            "flags": np.asarray([json.dumps(f, sort_keys=True) if f else "{}" for f in h.flags], dtype=object),
            "reference_step": np.asarray([int(steps[r]) if r >= 0 else -1 for r in h.reference], dtype=np.int64),
            "settings": {"window": np.int64(h.window), "z_threshold": np.float64(h.z_threshold),
                         "min_history": np.int64(h.min_history), "floor": np.float64(h.floor)}}


def append_health_rows(archives: list[arc.Archive], h, *, broken: dict[int, str] | None = None) -> None:
    """A history row `{"step", "probe_hash", "health_flags"}` for each checkpoint whose flags
    differ from what the history says (so a re-run appends nothing). `broken`: step -> why, of the
    checkpoints the series left out (not judged by `h`): each is flagged `non_finite` with the
    reason, and with its analysis's weight flags (`weights_exploding` for NaN weights)."""
    from .analysis.health import WEIGHT_FLAGS
    archive_dir = archives[0].path.parent
    probe_hash = archives[-1].key.probe_hash
    rows = {r["step"]: r for r in history.read(archive_dir, probe_hash)}
    todo = list(zip([a.step for a in archives], h.flags))
    for step, why in (broken or {}).items():
        wf = rows.get(step, {}).get("weight_flags") or {}
        flags = {"non_finite": why}
        flags.update((f"weights_{name}", ", ".join(wf[name])) for name in WEIGHT_FLAGS if wf.get(name))
        todo.append((step, flags))
    for step, flags in sorted(todo, key=lambda t: t[0]):
        if (rows.get(step, {}).get("health_flags") or {}) != flags:   # no row yet means no flags: nothing to say
            history.append(archive_dir, {"step": step, "probe_hash": probe_hash, "health_flags": flags})


def series_data_impact(archives: list[arc.Archive], reads: list[dict], meta: dict, h,
                       root: str | Path | None = None) -> dict | None:
    """The `data_impact` group, or None without a data log (`data_log_of(archives, root)`).
    Intervals run between consecutive checkpoints that no health signal flagged (a broken
    checkpoint measures no training)."""
    from . import datalog
    from .analysis.data_impact import data_impact
    from .analysis.health import SIGNALS

    path = data_log_of(archives, root)
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
