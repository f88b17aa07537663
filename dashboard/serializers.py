"""Archive, history and board objects -> plain JSON-able dicts (as rq-dashboard's serializers).

The JSON API returns these dicts and the HTML pages render the same ones, so the two never
disagree. Numbers are Python floats or None (NaN and inf become None: JSON has neither); probe
texts are returned as stored; escaping them is the templates' job (Jinja autoescape). The panels'
answers (dashboard.panels), which plotly draws as HTML labels, escape every probe text.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from learnviz import archive as arc
from learnviz import readout
from learnviz.common import clean_json as clean
from learnviz.readout import ARCHIVE, BOARD_FILE, EXTRACT, UNREADABLE, StatusRow
from learnviz.results import AnalysisResult, CalibrationBins, LayerWeights, stage_order

from .data import RunData

# The figures of docs/visualizations.md: (file, title, caption). MAIN is the plan's six-panel
# dashboard, in its order (left to right, top to bottom); MORE follows when drawn.
MAIN = [
    ("loss_curve.png", "Loss & metrics",
     "Training loss, probe accuracy per skill and learning rate, per checkpoint."),
    ("skill_radar_latest.png", "Skill radar",
     "Accuracy per skill at the newest checkpoint over the base (dashed)."),
    ("layer_drift_heatmap.png", "Weight drift by layer",
     "Relative weight change since the previous checkpoint, layer x checkpoint."),
    ("umap_latest.png", "Representation space (UMAP)",
     "The probes' layout at the newest checkpoint, coloured by skill; hollow = wrong."),
    ("hard_example_board.png", "Hard-example board",
     "Each hard example right or wrong (coloured by error type) per checkpoint."),
    ("calibration_latest.png", "Calibration",
     "Reliability diagram of the newest checkpoint, and ECE over training."),
]
MORE = [
    ("logprob_canonical.png", "Canonical answer",
     "Log-probability of each expected token of one canonical answer, per checkpoint."),
    ("logprob_by_category.png", "Logprob by category", "The same per probe category, averaged over its probes."),
    ("error_positions.png", "Error positions", "Where wrong greedy answers first depart from the expected one."),
    ("entropy_by_position.png", "Entropy by position", "Mean next-token entropy per answer position, per checkpoint."),
    ("geometry_drift_cka.png", "Geometry drift & CKA",
     "RSA drift and linear CKA per layer, against the previous and the first checkpoint."),
    ("checkpoint_health.png", "Checkpoint health",
     "How unusual each checkpoint is against the run's recent healthy ones; flagged cells outlined."),
    ("data_impact.png", "Data impact", "Which training source moved which skill (needs data_log.jsonl)."),
    ("skill_radar_animated.gif", "Skill radar over training", "Every checkpoint's radar, in step order."),
    ("umap_animated.gif", "UMAP over training", "Every checkpoint's layout on fixed axes, in step order."),
]
ERROR_TYPES = {   # the board's error types (learnviz.analysis.hard_examples) -> short label
    "wrong_polarity": "polarity (yes/no, all/some/no…)",
    "wrong_token": "a content word",
    "malformed": "malformed or off-format",
    "empty": "empty answer",
}
HISTORY_FIELDS = ("train_loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "mean_answer_logprob",
                  "mean_entropy", "overconfident", "uncertain", "geometry_drift", "cka_prev", "umap_trustworthiness")

UrlFor = Callable[[str, int], str]   # (figure file, mtime ns) -> its URL


# ---------------------------------------------------------------- figures

def figure(run: RunData, name: str, title: str, caption: str, url: UrlFor) -> dict[str, Any]:
    mtime = run.figure_mtime(name)
    return {"file": name, "title": title, "caption": caption, "exists": mtime is not None,
            "url": url(name, mtime) if mtime is not None else None}


def figures(run: RunData, url: UrlFor) -> dict[str, list[dict[str, Any]]]:
    """The main panels (always, drawn or not) and the further figures that exist."""
    more = [figure(run, *f, url) for f in MORE]
    return {"main": [figure(run, *f, url) for f in MAIN], "more": [f for f in more if f["exists"]]}


# ---------------------------------------------------------------- status

def status_row(row: StatusRow) -> dict[str, Any]:
    return clean({"step": row.step, "name": row.name, "stages": dict(row.stages), "reason": row.reason,
                  "failed": [s for s, st in row.stages.items() if st != "ok"],
                  "accuracy": row.accuracy, "skills": dict(row.skills), "flags": dict(row.flags),
                  # only on an archive of another probe set than the series' (left out of the charts)
                  **({"other_probes": row.other_probes} if row.other_probes else {})})


BOARD = "board"    # the `stage` of a failure entry for an unreadable hard_example_board.json


def failures(archives: list[arc.Archive], unreadable: list[arc.Unreadable] = (),
             board_problem: str | None = None) -> list[dict[str, Any]]:
    """Every failed stage of every archive, with its reason; then every file that cannot be read
    (an archive: stage "archive"; the board: stage "board"), with `unreadable` and its `file`."""
    out = [{"step": a.step, "name": a.attrs.get("checkpoint_name", a.path.stem), "stage": name,
            "reason": a.stages[name].reason}
           for a in archives for name in stage_order(a.stages) if not a.stages[name].ok]
    out += [{"step": u.step, "name": u.name, "stage": ARCHIVE, "reason": u.reason, "unreadable": True,
             "file": u.path.name} for u in unreadable]
    if board_problem:
        out.append({"step": None, "name": BOARD_FILE, "stage": BOARD, "reason": board_problem, "unreadable": True,
                    "file": BOARD_FILE})
    return out


def summary(run: RunData) -> dict[str, Any]:
    """The run at a glance: counts, the newest analysed checkpoint's numbers, the failures."""
    latest = first = None
    if run.analysed:
        a, a0 = run.analysed[-1], run.analysed[0]
        hist = run.history_by_step.get(a.step, {})
        accuracy, skills = run.accuracy(a)
        latest = {"step": a.step, "name": a.attrs.get("checkpoint_name", a.path.stem),
                  "accuracy": accuracy, "skills": skills,
                  "ece": hist.get("ece"), "calibration_direction": hist.get("calibration_direction"),
                  "train_loss": hist.get("train_loss"), "eval_loss": hist.get("eval_loss"),
                  "weight_flags": hist.get("weight_flags") or {}}
        first = {"step": a0.step, "accuracy": run.accuracy(a0)[0]}
    return clean({"archive": str(run.dir), "version": run.version,
                  "checkpoints": len(run.archives) + len(run.unreadable),
                  "analysed": len(run.analysed), "probe_hash": run.probe_hash,
                  "steps": run.steps, "latest": latest, "first": first,
                  "failures": failures(run.archives, run.unreadable, run.board_problem),
                  # the plan's status files (--status-dir): deployed checkpoint and ranking
                  "training": readout.format_training_status(readout.training_status(run.dir)),
                  "health_flags": [{"step": step, "flags": flags}
                                   for step, flags in sorted(readout.health_flags(run.dir).items())]})


def status(run: RunData) -> dict[str, Any]:
    """/api/status.json: the summary and one row per archive file (unreadable ones: stages
    {"archive": "unreadable"} and the reason)."""
    return {**summary(run), "rows": [status_row(r) for r in run.rows]}


# ---------------------------------------------------------------- one checkpoint

def _stage(info: arc.StageInfo) -> dict[str, Any]:
    timings = info.attrs.get("timings") if isinstance(info.attrs.get("timings"), dict) else {}
    return {"name": info.name, "status": info.status, "reason": info.reason,
            "worker": info.attrs.get("worker", ""), "started": info.attrs.get("started", ""),
            "finished": info.attrs.get("finished", ""), "seconds": timings.get("total")}


def calibration(cal: CalibrationBins) -> dict[str, Any]:
    """The `analysis/calibration` group: scores and the reliability bins that hold probes."""
    edges = np.asarray(cal.bin_edges, dtype=float)
    bins = [{"low": edges[i], "high": edges[i + 1], "confidence": cal.bin_confidence[i],
             "accuracy": cal.bin_accuracy[i], "count": int(cal.bin_count[i])}
            for i in range(len(edges) - 1) if int(cal.bin_count[i]) > 0]
    return {"ece": cal.ece, "mce": cal.mce, "brier": cal.brier, "gap": cal.gap,
            "direction": cal.direction, "n_bins": len(edges) - 1, "bins": bins}


def weights(w: LayerWeights | None, flags: dict[str, Any], note: str) -> dict[str, Any]:
    """The `analysis/weights` group and the flags: per layer norm and relative change."""
    if w is None:
        return {"available": False, "note": note or "no weight analysis", "flags": flags, "layers": []}
    layers = [{"name": name, "norm": w.norm[i], "change_prev": w.change_prev[i],
               "change_first": w.change_first[i], "norm_ratio_first": w.norm_ratio_first[i],
               "parameters": int(w.parameters[i])} for i, name in enumerate(w.layers)]
    return {"available": True, "note": "", "flags": flags, "layers": layers}


def _analysis(a: arc.Archive) -> dict[str, Any] | None:
    if not readout.stage_ok(a, readout.ANALYSIS):
        return None
    try:
        r: AnalysisResult = readout.read_analysis(a)   # small: per-probe vectors at most
    except (OSError, KeyError, arc.ArchiveError):
        return None   # replaced mid-read: shown as missing until the next refresh
    out: dict[str, Any] = {"weights": weights(r.weights, r.weight_flags, r.weights_note)}
    if r.calibration is not None:
        out["calibration"] = calibration(r.calibration)
    if r.skills is not None:
        out["skills"] = r.skills
        out["categories"] = r.categories
        out["skill_delta_vs_base"] = r.delta_vs_base
    return out


def hard_examples_at(board: dict[str, Any] | None, step: int) -> list[dict[str, Any]]:
    """Each hard example's answer at one step (empty without a board or when the step is not on it)."""
    out = []
    for ex in (board or {}).get("examples", []):
        cell = next((r for r in ex.get("rows", []) if r.get("step") == step), None)
        if cell is not None:
            out.append({"id": ex.get("id"), "prompt": ex.get("prompt"), "expected": ex.get("expected"),
                        "category": ex.get("category"), "answer": cell.get("answer"),
                        "correct": bool(cell.get("correct")), "error_type": cell.get("error_type")})
    return out


def _neighbours(run: RunData, step: int) -> tuple[int | None, int | None]:
    """The archived steps (readable or not) before and after `step`."""
    steps = sorted(set(run.steps))
    i = steps.index(step)
    return (steps[i - 1] if i > 0 else None), (steps[i + 1] if i + 1 < len(steps) else None)


def checkpoint(run: RunData, a: arc.Archive, url: UrlFor) -> dict[str, Any]:
    """/api/checkpoints/<step>.json: everything the archive and the history know of one step."""
    previous, following = _neighbours(run, a.step)
    accuracy, skills = run.accuracy(a)
    hist = run.history_by_step.get(a.step, {})
    analysis = _analysis(a)
    out = {
        "step": a.step, "name": a.attrs.get("checkpoint_name", a.path.stem),
        "checkpoint": a.attrs.get("checkpoint", ""), "archive": a.path.name,
        "model_class": a.attrs.get("model_class", ""), "probe_count": a.attrs.get("probe_count"),
        "probe_hash": a.attrs.get("probe_hash", ""), "created": a.attrs.get("created", ""),
        "updated": a.attrs.get("updated", ""),
        "stages": [_stage(a.stages[n]) for n in stage_order(a.stages)],
        "extracted": readout.stage_ok(a, EXTRACT),
        "accuracy": accuracy, "skills": skills,
        "history": {k: hist[k] for k in HISTORY_FIELDS if k in hist},
        "ece": hist.get("ece"),
        "analysis": analysis,
        "geometry": hist.get("geometry") or {},
        "hard_examples": hard_examples_at(run.board, a.step),
        "figures": {"radar": figure(run, f"radar_{a.step}.png", f"Skill radar at step {a.step}",
                                    "Accuracy per skill over the base checkpoint (dashed).", url),
                    "umap": figure(run, f"umap_{a.step}.png", f"UMAP at step {a.step}",
                                   "The probes' layout per layer, coloured by skill; hollow = wrong.", url)},
        "previous": previous,
        "next": following,
    }
    return clean(out)


def unreadable_checkpoint(run: RunData, u: arc.Unreadable) -> dict[str, Any]:
    """/api/checkpoints/<step>.json of a step whose archive cannot be read: the keys of
    `checkpoint`, empty, with `unreadable` and the reason (naming the file) in `reason` and as
    the one stage, "archive"."""
    previous, following = (None, None) if u.step is None else _neighbours(run, u.step)
    return clean({
        "step": u.step, "name": u.name, "checkpoint": "", "archive": u.path.name, "model_class": "",
        "probe_count": None, "probe_hash": "", "created": "", "updated": "",
        "stages": [{"name": ARCHIVE, "status": UNREADABLE, "reason": u.reason, "worker": "", "started": "",
                    "finished": "", "seconds": None}],
        "extracted": False, "accuracy": None, "skills": {}, "history": {}, "ece": None, "analysis": None,
        "geometry": {}, "hard_examples": [], "figures": {}, "previous": previous, "next": following,
        "unreadable": True, "reason": u.reason, "field": u.field, "foreign": u.foreign})


# ---------------------------------------------------------------- the hard-example board

BOARD_COLUMNS = 40     # checkpoints the /hard-examples table shows by default (a screen's width of cells)


def thinned_board(board: dict[str, Any], most: int = BOARD_COLUMNS) -> dict[str, Any]:
    """`hard_examples(...)` cut to at most `most` checkpoint columns, evenly spaced, the first and
    the latest always in; `shown_of` is the number of checkpoints on the board (0: none left out).
    Each example's `first_right` and `regressed` still speak of every checkpoint."""
    n = len(board.get("steps", []))
    if n <= most:
        return {**board, "shown_of": 0}
    keep = sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})
    counts = board.get("error_type_counts") or []
    return {**board, "shown_of": n, "steps": [board["steps"][i] for i in keep],
            "error_type_counts": [counts[i] for i in keep] if len(counts) == n else [],
            "examples": [{**ex, "cells": [ex["cells"][i] for i in keep]} for ex in board["examples"]]}


def hard_examples(board: dict[str, Any] | None, problem: str | None = None) -> dict[str, Any]:
    """/api/hard_examples.json: examples x checkpoints from hard_example_board.json. Without a
    board, `available` is false; when the file is there but cannot be read, `error` says why."""
    if board is None:
        out = {"available": False, "steps": [], "examples": [], "error_type_counts": [], "method": "",
               "error_types": ERROR_TYPES}
        return {**out, "error": problem} if problem else out
    steps = [int(s) for s in board.get("steps", [])]
    examples = []
    for ex in board.get("examples", []):
        by_step = {r.get("step"): r for r in ex.get("rows", [])}
        cells = []
        for s in steps:
            r = by_step.get(s)
            cells.append(None if r is None else {"step": s, "correct": bool(r.get("correct")),
                                                 "answer": r.get("answer"), "error_type": r.get("error_type")})
        examples.append({"id": ex.get("id"), "prompt": ex.get("prompt"), "expected": ex.get("expected"),
                         "category": ex.get("category"), "first_right": ex.get("first_right"),
                         "regressed": bool(ex.get("regressed")), "cells": cells})
    return clean({"available": True, "steps": steps, "examples": examples,
                  "error_type_counts": board.get("error_type_counts", []), "method": board.get("method", ""),
                  "error_types": ERROR_TYPES})
