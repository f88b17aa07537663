"""What each interactive panel draws, as compact JSON-able dicts (docs/api.md, "Panels").

Only what a panel draws: series over steps as lists, floats rounded (`DIGITS`), NaN and inf as
None; never an embedding. Every probe text (ids, prompts, expected and greedy answers, answer
tokens, skill and category names) is HTML-escaped here, because plotly.js renders hover labels,
trace names and axis labels as HTML; the page puts these strings only into plotly labels.
Per-archive values are read once per version of the archive file (`Archive.memo`), so after a
new checkpoint only its archive is read.
"""

from __future__ import annotations

import html
import math
import warnings
from typing import Any, Iterable

import numpy as np

from learnviz import archive as arc
from learnviz import readout
from learnviz.probes import HARD_EXAMPLES_SKILL
from learnviz.readout import ANALYSIS, BOARD_FILE, EXTRACT, GEOMETRY, SERIES

from . import runs
from .data import RunData

DIGITS = 4          # decimals kept of every float (accuracies, losses, coordinates, ...)
COORD_DIGITS = 3    # decimals of UMAP coordinates (the layouts span a few units)


class NotThere(LookupError):
    """A panel asked of something the run does not hold (an unknown step or layer): a 404."""


def esc(text: Any) -> str:
    """A probe text for a plotly label: `<script>` is shown as text, never run or parsed."""
    return html.escape(str(text), quote=True)


def rnd(value: Any, digits: int = DIGITS) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return round(v, digits) if math.isfinite(v) else None


def rnds(values: Iterable[Any], digits: int = DIGITS) -> list[float | None]:
    return [rnd(v, digits) for v in values]


def _steps(run: RunData) -> list[int]:
    return [a.step for a in run.analysed]


def _rows(run: RunData) -> list[dict[str, Any]]:
    by_step = run.history_by_step
    return [by_step.get(s, {"step": s}) for s in _steps(run)]


# ---------------------------------------------------------------- the run

def overview(run: RunData, run_id: str) -> dict[str, Any]:
    """/api/runs/<run>/overview.json: what the page needs before it asks for any panel."""
    steps = _steps(run)
    layers: list[int] = []
    if run.analysed:
        try:
            layers = readout.extract_layers(run.analysed[-1])[0]
        except (KeyError, ValueError, TypeError, AttributeError):
            layers = []
    accuracy, skills = run.accuracy(run.analysed[-1]) if run.analysed else (None, {})
    return {"run": run_id, "version": run.version, "probe_hash": run.probe_hash, "steps": steps,
            "layers": layers, "skills": [esc(s) for s in skills], "latest": steps[-1] if steps else None,
            "accuracy": rnd(accuracy), "checkpoints": len(run.archives) + len(run.unreadable)}


# ---------------------------------------------------------------- loss, accuracy, radar, ECE

def metrics(run: RunData) -> dict[str, Any]:
    """/api/runs/<run>/metrics.json: the loss & metrics panel, the radar (skill accuracy per
    step; the base is the first) and the ECE-over-steps half of calibration."""
    rows = _rows(run)
    steps = _steps(run)
    per_archive = [run.accuracy(a) for a in run.analysed]     # memoised per archive version
    skills = list(dict.fromkeys(s for _, sk in per_archive for s in sk))

    def series(key: str) -> list[float | None] | None:
        values = [r.get(key) for r in rows]
        return rnds(values) if any(v is not None for v in values) else None

    return {"steps": steps,
            "train_loss": series("train_loss"), "eval_loss": series("eval_loss"),
            "learning_rate": [rnd(r.get("learning_rate"), 10) for r in rows]
            if any(r.get("learning_rate") is not None for r in rows) else None,
            "accuracy": rnds(acc for acc, _ in per_archive),
            "skills": {esc(s): rnds(sk.get(s) for _, sk in per_archive) for s in skills},
            "ece": series("ece")}


# ---------------------------------------------------------------- weight drift

def drift(run: RunData) -> dict[str, Any]:
    """/api/runs/<run>/drift.json: relative weight change since the previous checkpoint, layer x step."""
    rows = _rows(run)
    layers = list(dict.fromkeys(n for r in rows for n in (r.get("layer_names") or [])))
    index = {name: i for i, name in enumerate(layers)}
    z: list[list[float | None]] = [[None] * len(rows) for _ in layers]
    for j, r in enumerate(rows):
        for name, v in zip(r.get("layer_names") or [], r.get("layer_drifts") or []):
            z[index[name]][j] = rnd(v, 5)
    return {"steps": [r["step"] for r in rows], "layers": layers, "z": z}


# ---------------------------------------------------------------- UMAP

def _probe_table(run: RunData) -> dict[str, Any]:
    a = run.analysed[-1]
    return a.memo("panel_probes", lambda: a.read(
        EXTRACT, ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"]))


def _coords(a: arc.Archive, layers: list[int]) -> dict[int, np.ndarray]:
    """A checkpoint's aligned UMAP layouts per layer ((n, 2), rounded); {} without a geometry stage."""
    if not readout.stage_ok(a, GEOMETRY):
        return {}
    geo = readout.read_geometry(a, layers, elements=("coords",))
    return {k: np.round(np.asarray(lg.coords, dtype=np.float64), COORD_DIGITS)
            for k, lg in geo.layers.items() if lg.coords is not None and len(lg.coords)}


def _bounds(a: arc.Archive, layers: list[int]) -> dict[int, tuple[float, float, float, float]]:
    """(x min, y min, x max, y max) of each layer's layout, once per version of the archive file;
    of its finite points only (one NaN point would make the layer's axes NaN at every step)."""
    def compute():
        out = {}
        for k, c in _coords(a, layers).items():
            c = c[np.isfinite(c).all(axis=1)]
            if len(c):
                out[k] = (float(c[:, 0].min()), float(c[:, 1].min()), float(c[:, 0].max()), float(c[:, 1].max()))
        return out
    return a.memo(("panel_bounds", tuple(layers)), compute)


def _layers(run: RunData) -> list[int]:
    return readout.extract_layers(run.analysed[-1])[0] if run.analysed else []


def umap(run: RunData) -> dict[str, Any]:
    """/api/runs/<run>/umap.json: the probes (id, skill, escaped prompt and expected answer), the
    steps that have a layout, the layers, and fixed axes per layer over every step."""
    if not run.analysed:
        return {"steps": [], "layers": [], "probes": None, "ranges": {}}
    layers = _layers(run)
    p = _probe_table(run)
    steps, lo, hi = [], {}, {}
    for a in run.analysed:
        b = _bounds(a, layers)
        if not b:
            continue
        steps.append(a.step)
        for k, (x0, y0, x1, y1) in b.items():
            lo[k] = tuple(map(min, lo.get(k, (x0, y0)), (x0, y0)))
            hi[k] = tuple(map(max, hi.get(k, (x1, y1)), (x1, y1)))
    ranges = {}
    for k in lo:
        pad = [0.05 * (hi[k][d] - lo[k][d] or 1.0) for d in (0, 1)]
        ranges[str(k)] = {"x": [rnd(lo[k][0] - pad[0], 3), rnd(hi[k][0] + pad[0], 3)],
                          "y": [rnd(lo[k][1] - pad[1], 3), rnd(hi[k][1] + pad[1], 3)]}
    return {"steps": steps, "layers": [k for k in layers if str(k) in ranges], "ranges": ranges,
            "probes": {"id": [esc(x) for x in p["probe_ids"]], "skill": [esc(x) for x in p["probe_skill"]],
                       "prompt": [esc(x) for x in p["prompt"]], "expected": [esc(x) for x in p["expected"]]}}


def umap_frame(run: RunData, step: int, layer: int) -> dict[str, Any]:
    """/api/runs/<run>/umap/<step>.json?layer=K: one frame: x, y, right (1) or wrong (0), the
    escaped greedy answer where it differs from the expected one (None: it is the expected answer),
    in the probe order of umap.json."""
    a = next((x for x in run.analysed if x.step == step), None)
    if a is None:
        raise NotThere(f"no analysed checkpoint at step {step}")
    layers = _layers(run)

    def compute() -> dict[str, Any]:
        d = a.read(EXTRACT, ["correct", "greedy_answer", "expected"])
        right = np.asarray(d["correct"], dtype=bool)
        return {"coords": {k: c.astype(np.float32) for k, c in _coords(a, layers).items()}, "correct": right,
                "other": {i: esc(g) for i, (g, e) in enumerate(zip(d["greedy_answer"], d["expected"])) if g != e}}
    f = a.memo(("panel_frame", tuple(layers)), compute)     # small: 2 x n floats per layer, the other answers
    if layer not in f["coords"]:
        raise NotThere(f"no layout of layer {layer} at step {step} (layers: {layers})")
    c = np.round(f["coords"][layer].astype(np.float64), COORD_DIGITS)
    right = f["correct"]
    return {"step": step, "layer": layer, "x": c[:, 0].tolist(), "y": c[:, 1].tolist(),
            "correct": right.astype(int).tolist(), "answer": [f["other"].get(i) for i in range(len(right))]}


# ---------------------------------------------------------------- hard-example board

def board(run: RunData) -> dict[str, Any]:
    """/api/runs/<run>/board.json: examples x steps: 1 right, 0 wrong, None not there; each
    cell's answer as an index into `answers` (escaped, each distinct answer once). Built once
    per version of hard_example_board.json (a new archive alone does not change it)."""
    version = arc.file_version(run.dir / BOARD_FILE)
    if version is None:
        return _board(run)
    return runs.cached(("board file", version), lambda: _board(run))


def _board(run: RunData) -> dict[str, Any]:
    b = run.board
    if b is None:
        return {"available": False, "error": run.board_problem, "steps": [], "examples": [], "z": [], "answer": [],
                "answers": []}
    steps = [int(s) for s in b.get("steps", [])]
    answers: dict[str, int] = {}
    examples, z, which = [], [], []
    for ex in b.get("examples", []):
        by_step = {r.get("step"): r for r in ex.get("rows", [])}
        examples.append({"id": esc(ex.get("id")), "prompt": esc(ex.get("prompt")),
                         "expected": esc(ex.get("expected"))})
        zr, ar = [], []
        for s in steps:
            r = by_step.get(s)
            zr.append(None if r is None else (1 if r.get("correct") else 0))
            ar.append(None if r is None else answers.setdefault(esc(r.get("answer", "")), len(answers)))
        z.append(zr)
        which.append(ar)
    return {"available": True, "steps": steps, "examples": examples, "z": z, "answer": which,
            "answers": list(answers)}


# ---------------------------------------------------------------- calibration

def calibration(run: RunData, step: int) -> dict[str, Any]:
    """/api/runs/<run>/calibration/<step>.json: the reliability bins holding probes, and the scores."""
    a = next((x for x in run.analysed if x.step == step), None)
    if a is None or not readout.stage_ok(a, ANALYSIS):
        raise NotThere(f"no analysed checkpoint at step {step}")

    def compute() -> dict[str, Any]:
        c = readout.read_analysis(a, ["calibration"]).calibration
        if c is None:
            raise NotThere(f"no calibration at step {step}")
        keep = [i for i in range(len(c.bin_count)) if int(c.bin_count[i]) > 0]
        return {"step": step, "confidence": rnds(c.bin_confidence[i] for i in keep),
                "accuracy": rnds(c.bin_accuracy[i] for i in keep), "count": [int(c.bin_count[i]) for i in keep],
                "ece": rnd(c.ece), "mce": rnd(c.mce), "brier": rnd(c.brier), "direction": c.direction}
    return a.memo("panel_calibration", compute)


# ---------------------------------------------------------------- logprob, entropy, geometry

def _canonical(run: RunData) -> int | None:
    p = _probe_table(run)
    if not len(p["probe_ids"]):
        return None
    last = run.analysed[-1]
    lengths = last.memo("panel_answer_lengths",
                        lambda: np.diff(last.read(EXTRACT, ["answer_ids"])["answer_ids"].offsets).tolist())
    hard = [i for i, s in enumerate(p["probe_skill"]) if s == HARD_EXAMPLES_SKILL]
    pool = hard or list(range(len(lengths)))
    return max(pool, key=lambda i: (lengths[i], -i))


def logprob(run: RunData) -> dict[str, Any]:
    """/api/runs/<run>/logprob.json: the canonical answer's token log-probabilities per step (the
    hard example with the longest answer, as the figure), and the mean per category from series.h5."""
    out: dict[str, Any] = {"canonical": None, "categories": None}
    i = _canonical(run) if run.analysed else None
    if i is not None:
        p = _probe_table(run)
        rows, steps = [], []
        for a in run.analysed:
            row = a.memo(("panel_token_logprob", i),
                         lambda a=a: a.read(EXTRACT, ["token_logprob"])["token_logprob"].row(i).tolist())
            rows.append(row)
            steps.append(a.step)
        last = run.analysed[-1]
        tokens = last.memo(("panel_tokens", i), lambda: [str(t) for t in
                                                         last.read(EXTRACT, ["token_text"])["token_text"].row(i)])
        width = len(tokens)
        out["canonical"] = {"probe_id": esc(p["probe_ids"][i]), "prompt": esc(p["prompt"][i]),
                            "expected": esc(p["expected"][i]), "tokens": [esc(t) for t in tokens], "steps": steps,
                            "z": [rnds(r[:width], 3) + [None] * (width - len(r)) for r in rows]}
    s = readout.open_series_archive(run.dir)
    if s is not None:
        info = s.stage(SERIES)
        if info is not None and info.ok:
            def compute() -> dict[str, Any]:
                d = s.read(SERIES, ["steps", "trajectories"])
                cm = d["trajectories"]["category_mean"]
                values = np.asarray(cm["values"], dtype=float)   # category x step x answer position
                if values.ndim == 3:      # the mean over the answer's positions (log p 0 never goes below -30)
                    with np.errstate(invalid="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        values = np.nanmean(np.maximum(values, -30.0), axis=2)
                return {"steps": [int(x) for x in d["steps"]], "names": [esc(n) for n in cm["names"]],
                        "z": [rnds(r, 3) for r in values.tolist()]}
            out["categories"] = s.memo("panel_categories", compute)
    return out


def entropy(run: RunData) -> dict[str, Any]:
    """/api/runs/<run>/entropy.json: mean next-token entropy (nats) per answer position, step x position."""
    steps, means = [], []
    for a in run.analysed:
        if not readout.stage_ok(a, ANALYSIS):
            continue
        try:
            m = a.memo("panel_entropy", lambda a=a: rnds(readout.read_analysis(a, ["entropy"]).entropy
                                                          .mean_by_position, 3))
        except (AttributeError, KeyError, arc.ArchiveError):
            continue
        steps.append(a.step)
        means.append(m)
    width = max((len(m) for m in means), default=0)
    return {"steps": steps, "positions": list(range(width)), "z": [m + [None] * (width - len(m)) for m in means]}


GEOMETRY_METRICS = ("drift_prev", "drift_first", "cka_prev", "cka_first")


def geometry(run: RunData) -> dict[str, Any]:
    """/api/runs/<run>/geometry.json: RSA drift and linear CKA per pooled layer, against the
    previous and the first checkpoint, per step (learning_history.jsonl)."""
    rows = _rows(run)
    names = sorted({k for r in rows for k in (r.get("geometry") or {})}, key=lambda k: (len(k), k))
    layers = {k: {m: rnds(((r.get("geometry") or {}).get(k) or {}).get(m) for r in rows) for m in GEOMETRY_METRICS}
              for k in names}
    return {"steps": [r["step"] for r in rows], "layers": layers}
