"""What the figures read: one archived series, loaded lazily, turned into each figure
function's keyword arguments. The only module of `learnviz.plots` that reads archives; it never
loads a model.

Per-checkpoint figures read their own checkpoint's stage groups (`radar_data`, `umap_data`);
run-level figures read learning_history.jsonl (merged rows of the archived steps only), a few
small elements of every archive, series.h5 or hard_example_board.json (`*_data`). A loader raises
`Skip` when its inputs do not exist yet (e.g. no checkpoint analysed).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .. import archive as arc
from .. import readout as ro
from ..errors import LearnvizError
from ..probes import HARD_EXAMPLES_SKILL
from ..results import ANALYSIS, EXTRACT, SERIES


class Skip(Exception):
    """A figure that cannot be drawn from what is archived yet (the reason goes into the report)."""


class Run:
    """The archived series of one probe set, read lazily and at most once per `generate` call."""

    def __init__(self, archive_dir: Path):
        self.dir = archive_dir
        self.archives = ro.series(archive_dir)
        self.steps = [a.step for a in self.archives]
        probe_hash = self.archives[-1].attrs.get("probe_hash") if self.archives else None
        by_step = {r["step"]: r for r in ro.history_rows(archive_dir, probe_hash)}
        self.rows = [by_step.get(s, {"step": s}) for s in self.steps]   # rows of archived steps only
        self._probes: dict | None = None
        self._layouts: dict[int, tuple[dict, dict]] = {}

    @property
    def probes(self) -> dict:
        """The probe table of the newest archive: ids, skills, categories, prompts, expected answers."""
        if self._probes is None:
            self._probes = self.archives[-1].read(
                EXTRACT, ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"])
        return self._probes

    ok = staticmethod(ro.stage_ok)

    @staticmethod
    def stamp(a: arc.Archive | None, stage: str) -> list | None:
        """What identifies a stage's stored result: its key and when it was written."""
        info = a.stage(stage) if a is not None else None
        if info is None:
            return None
        return [a.step, stage, info.status, info.key.fingerprint, info.key.probe_hash, info.key.inputs,
                str(info.attrs.get("finished", ""))]

    @staticmethod
    def skills(a: arc.Archive) -> tuple[dict[str, float], dict[str, float]]:
        """`skills_of(a)`, read once per version of the archive (a radar also outlines earlier ones)."""
        return a.memo("skills", lambda: skills_of(a))

    layers = staticmethod(ro.extract_layers)

    def layouts(self, a: arc.Archive) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """(panel title -> (n, 2) UMAP coords, panel title -> quality note) of one checkpoint."""
        if a.step not in self._layouts:
            layers, n_layers = self.layers(a)
            geo = ro.read_geometry(a, layers, elements=("coords", "trustworthiness"))
            coords, notes = {}, {}
            for k in layers:
                name = f"decoder block {k}" + (f" (0-based, of {n_layers})" if n_layers else "")
                coords[name] = geo.layers[k].coords
                t = geo.layers[k].metrics.get("trustworthiness")
                notes[name] = ("" if t is None else "trustworthiness undefined: every probe at one distance"
                               if t != t else f"trustworthiness {t:.3f} (1 = 2-D neighbours were neighbours)")
            self._layouts[a.step] = (coords, notes)
        return self._layouts[a.step]


# ---------------------------------------------------------------- per-checkpoint figures

def skills_of(a: arc.Archive) -> tuple[dict[str, float], dict[str, float]]:
    """(skill -> accuracy, "skill/category" -> accuracy) from a checkpoint's analysis."""
    r = ro.read_analysis(a, ["skills"])
    return r.skills, r.categories


def radar_trail(run: Run, i: int) -> list[int]:
    """Indices of the earlier checkpoints checkpoint i's radar outlines: those after the base
    with a successful analysis, the last `skill_radar.TRAIL` of them, oldest first."""
    from .skill_radar import TRAIL
    trail = []
    for j in range(i - 1, 0, -1):        # backwards: a run of 500 checkpoints looks at TRAIL of them
        if run.ok(run.archives[j], ANALYSIS):
            trail.append(j)
            if len(trail) == TRAIL:
                break
    return trail[::-1]


def radar_data(run: Run, i: int) -> dict:
    """`skill_radar` arguments of checkpoint i against the base (the run's first checkpoint), with
    its trail of earlier checkpoints. With fewer than three skills (no polygon) the axes are the
    skill/category pairs instead."""
    a, base = run.archives[i], run.archives[0]
    skills, cats = run.skills(a)
    base_ok = run.ok(base, ANALYSIS)
    base_skills, base_cats = run.skills(base) if base_ok else ({}, {})
    by_category = len(skills) < 3 <= len(cats)
    earlier = [(run.archives[j].step, run.skills(run.archives[j])[1 if by_category else 0])
               for j in radar_trail(run, i)]
    if by_category:
        current, base_scores = cats, base_cats
        counts = Counter(f"{s}/{c}" for s, c in zip(run.probes["probe_skill"], run.probes["probe_category"]))
    else:
        current, base_scores = skills, base_skills
        counts = Counter(str(s) for s in run.probes["probe_skill"])
    return {"current": current, "base": base_scores if base_ok else None, "step": a.step,
            "base_step": base.step, "counts": dict(counts), "earlier": earlier}


def umap_data(run: Run, i: int, limits: dict) -> dict:
    """`umap_scatter` arguments of checkpoint i, with the run's shared axes `limits`."""
    a = run.archives[i]
    coords, notes = run.layouts(a)
    correct = a.read(EXTRACT, ["correct"])["correct"]
    return {"step": a.step, "layouts": coords, "skills": list(run.probes["probe_skill"]), "correct": correct,
            "limits": limits, "notes": notes}


# ---------------------------------------------------------------- run-level figures

def _series_of(run: Run, key: str) -> list:
    return [r.get(key) for r in run.rows]


def loss_data(run: Run) -> dict:
    losses = {k: _series_of(run, k) for k in ("train_loss", "eval_loss") if any(r.get(k) is not None for r in run.rows)}
    skills = list(dict.fromkeys(s for r in run.rows for s in (r.get("skill_scores") or {})))
    skill_acc = {s: [(r.get("skill_scores") or {}).get(s) for r in run.rows] for s in skills}
    return {"steps": run.steps, "losses": losses, "accuracy": _series_of(run, "accuracy"),
            "skill_accuracy": skill_acc, "learning_rate": _series_of(run, "learning_rate")}


def drift_data(run: Run) -> dict:
    layers = list(dict.fromkeys(n for r in run.rows for n in (r.get("layer_names") or [])))
    change = np.full((len(layers), len(run.steps)), np.nan)
    for j, r in enumerate(run.rows):
        for name, v in zip(r.get("layer_names") or [], r.get("layer_drifts") or []):
            change[layers.index(name), j] = np.nan if v is None else v
    return {"steps": run.steps, "layers": layers, "change": change}


def calibration_data(run: Run) -> dict:
    done = [a for a in run.archives if run.ok(a, ANALYSIS)]
    if not done:
        raise Skip("no checkpoint analysed yet")
    a = done[-1]
    c = ro.read_analysis(a, ["calibration"]).calibration
    return {"step": a.step, "bin_edges": c.bin_edges, "bin_confidence": c.bin_confidence,
            "bin_accuracy": c.bin_accuracy, "bin_count": c.bin_count, "ece": c.ece,
            "mce": c.mce, "brier": c.brier, "steps": run.steps, "eces": _series_of(run, "ece")}


def board_data(run: Run) -> dict:
    try:
        board = ro.read_board(run.dir, strict=True)
    except LearnvizError as exc:     # a bad file fails this figure (ValueError); the others go on
        raise ValueError(str(exc)) from None
    return {"board": board if board is not None else {"steps": [], "examples": []}}


def canonical_probe(run: Run, probe_id: str | None) -> int:
    """The probe of the canonical-answer heatmap: `probe_id`, else the hard example with the
    longest expected answer in tokens (the first of equals), else the longest answer overall."""
    ids = [str(x) for x in run.probes["probe_ids"]]
    if probe_id is not None:
        if probe_id not in ids:
            raise LearnvizError(f"no probe with id {probe_id!r} in the archived probe set", field="probe",
                                hint=f"for example: {', '.join(ids[:5])}")
        return ids.index(probe_id)
    lengths = np.diff(run.archives[-1].read(EXTRACT, ["answer_ids"])["answer_ids"].offsets)
    hard = [i for i, s in enumerate(run.probes["probe_skill"]) if s == HARD_EXAMPLES_SKILL]
    pool = hard or list(range(len(ids)))
    return max(pool, key=lambda i: (lengths[i], -i))


def _hard_rows(run: Run, i: int) -> np.ndarray | None:
    """Probe i's token logprobs at every checkpoint, (k, answer length), from the rows series.h5
    keeps (one read instead of one per archive); None when i is no hard example or the rows are
    behind the archives."""
    skills = run.probes["probe_skill"]
    if skills[i] != HARD_EXAMPLES_SKILL:
        return None
    rows = ro.series_rows(run.dir, run.archives, ["hard_token_logprob"])
    if rows is None:
        return None
    lengths = np.diff(run.archives[-1].read(EXTRACT, ["answer_ids"])["answer_ids"].offsets)
    hard = [j for j, sk in enumerate(skills) if sk == HARD_EXAMPLES_SKILL]
    start = int(sum(lengths[j] for j in hard if j < i))
    values = rows["hard_token_logprob"]
    if values.shape[1] != sum(int(lengths[j]) for j in hard):
        return None
    return values[:, start:start + int(lengths[i])]


def canonical_data(run: Run, probe_id: str | None) -> dict:
    i = canonical_probe(run, probe_id)
    kept = _hard_rows(run, i)
    if kept is not None:
        logprobs = np.asarray(kept, dtype=np.float64)
    else:
        rows = [a.read(EXTRACT, ["token_logprob"])["token_logprob"].row(i) for a in run.archives]
        if len({len(r) for r in rows}) != 1:
            raise Skip("the canonical answer's tokens differ between checkpoints (a changed tokenizer)")
        logprobs = np.stack(rows).astype(np.float64)
    tokens = run.archives[-1].read(EXTRACT, ["token_text"])["token_text"].row(i)
    return {"steps": run.steps, "logprobs": logprobs, "tokens": [str(t) for t in tokens],
            "probe_id": str(run.probes["probe_ids"][i]), "prompt": str(run.probes["prompt"][i]),
            "expected": str(run.probes["expected"][i])}


def category_data(run: Run) -> dict:
    s = ro.open_series_archive(run.dir)
    if s is None:
        raise Skip("no series.h5 yet (`learnviz analyze` writes it)")
    info = s.stage(SERIES)
    if info is None or not info.ok:
        raise Skip(f"the series stage failed: {info.reason}" if info is not None else "series.h5 has no series stage")
    d = s.read(SERIES, ["steps", "trajectories"])
    cm = d["trajectories"]["category_mean"]
    return {"steps": [int(x) for x in d["steps"]], "names": [str(n) for n in cm["names"]], "values": cm["values"]}


def errors_data(run: Run) -> dict:
    hists = [r.get("error_positions") for r in run.rows]
    width = max((len(h) for h in hists if h), default=0)
    grid = np.full((len(run.steps), width), np.nan)
    for j, h in enumerate(hists):
        if h:
            grid[j, : len(h)] = [np.nan if v is None else v for v in h]
    return {"steps": run.steps, "histograms": grid}


def entropy_data(run: Run) -> dict:
    done = [a for a in run.archives if run.ok(a, ANALYSIS)]
    if not done:
        raise Skip("no checkpoint analysed yet")
    rows = ro.series_rows(run.dir, run.archives, ["entropy_by_position"])
    if rows is not None:     # one read of series.h5 instead of one per archive
        packed = rows["entropy_by_position"]
        means = [p[1:1 + int(p[0])] for p in packed if np.isfinite(p[0])]
    else:
        means = [ro.read_analysis(a, ["entropy"]).entropy.mean_by_position for a in done]
    counts = ro.read_analysis(done[-1], ["entropy"]).entropy.count_by_position
    width = max(len(m) for m in means)
    grid = np.full((len(done), width), np.nan)
    for j, m in enumerate(means):
        grid[j, : len(m)] = m
    return {"steps": [a.step for a in done], "means": grid, "counts": [int(c) for c in counts]}


def geometry_data(run: Run) -> dict:
    names = sorted({k for r in run.rows for k in (r.get("geometry") or {})}, key=lambda k: (len(k), k))
    keys = ("drift_prev", "drift_first", "cka_prev", "cka_first")
    layers = {f"decoder block {k}": {m: [((r.get("geometry") or {}).get(k) or {}).get(m) for r in run.rows]
                                     for m in keys}
              for k in names}
    return {"steps": run.steps, "layers": layers}


# ---------------------------------------------------------------- health flags and data impact

def _series_group(run: Run, name: str) -> dict:
    s = ro.open_series_archive(run.dir)
    if s is None:
        raise Skip("no series.h5 yet (`learnviz analyze` writes it)")
    info = s.stage(SERIES)
    if info is None or not info.ok:
        raise Skip(f"the series stage failed: {info.reason}" if info is not None else "series.h5 has no series stage")
    if name not in s.read_keys(SERIES):
        raise Skip(f"series.h5 has no {name} group (written by an older learnviz: `learnviz analyze --force`)")
    return s.read(SERIES, ["steps", name])


def health_data(run: Run) -> dict:
    import json
    d = _series_group(run, "health")
    h = d["health"]
    return {"steps": [int(x) for x in d["steps"]], "signals": [str(x) for x in h["signals"]], "z": h["z"],
            "flags": [json.loads(str(f)) for f in h["flags"]], "z_threshold": float(h["settings"]["z_threshold"])}


def impact_data(run: Run) -> dict:
    """The data impact on each skill's accuracy. Skip (no panel, no error) without a data log."""
    d = ro.read_data_impact(run.dir)
    if d is None:
        raise Skip("no data log (data_log.jsonl beside the checkpoints): no data impact to draw")
    acc = d["accuracy"]
    return {"sources": [str(x) for x in d["sources"]], "skills": [str(x) for x in acc["targets"]],
            "beta": acc["beta"], "stderr": acc["stderr"], "p_value": acc["p_value"], "intervals": d["intervals"],
            "mix": d["mix"], "per": float(acc["per"]), "note": str(acc["note"]),
            "excluded_steps": [int(x) for x in d["excluded_steps"]], "n_permutations": int(acc["n_permutations"])}
