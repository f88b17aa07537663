"""Skill scores: accuracy per skill and per skill/category of one checkpoint, and the change
against the base (first) checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class SkillScores:
    """Accuracy (fraction of probes answered right, in [0, 1]) per skill and per skill/category.

    Dicts keep the first-seen order of the probes. `categories` keys are "skill/category".
    """
    skills: dict[str, float]
    categories: dict[str, float]
    counts: dict[str, int]                                      # skill -> number of probes
    category_counts: dict[str, int] = field(default_factory=dict)  # "skill/category" -> number of probes
    overall: float = math.nan                                   # accuracy over every probe; NaN when none
    method: str = "accuracy"


def _strings(values, name: str, n: int) -> list[str]:
    out = [str(v) for v in (values.tolist() if isinstance(values, np.ndarray) else list(values))]
    if len(out) != n:
        raise ValueError(f"skill_scores: {name} has {len(out)} entries, correct has {n}")
    return out


def _bools(correct) -> np.ndarray:
    arr = np.asarray(correct)
    if arr.ndim != 1:
        raise ValueError(f"skill_scores: correct must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.size and (arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all()):
        raise ValueError("skill_scores: correct must hold booleans (or 0/1); got other values "
                         "(NaN or a score?)")
    return arr.astype(bool)


def skill_scores(correct: np.ndarray | Sequence[bool], skills: Sequence[str] | np.ndarray,
                 categories: Sequence[str] | np.ndarray) -> SkillScores:
    """Accuracy per skill and per skill/category.

    `correct`: (n,) bool, one per probe; `skills`, `categories`: (n,) str. Empty input gives
    empty dicts and a NaN overall accuracy. Raises ValueError on length mismatches or a
    non-boolean `correct`.
    """
    ok = _bools(correct)
    n = len(ok)
    sk = _strings(skills, "skills", n)
    cat = _strings(categories, "categories", n)
    by_skill: dict[str, list[int]] = {}
    by_cat: dict[str, list[int]] = {}
    for i, (s, c) in enumerate(zip(sk, cat)):
        by_skill.setdefault(s, []).append(i)
        by_cat.setdefault(f"{s}/{c}", []).append(i)
    return SkillScores(
        skills={k: float(ok[idx].mean()) for k, idx in by_skill.items()},
        categories={k: float(ok[idx].mean()) for k, idx in by_cat.items()},
        counts={k: len(idx) for k, idx in by_skill.items()},
        category_counts={k: len(idx) for k, idx in by_cat.items()},
        overall=float(ok.mean()) if n else math.nan,
    )


def compare_to_base(current: SkillScores | Mapping[str, float],
                    base: SkillScores | Mapping[str, float]) -> dict[str, float]:
    """Accuracy change per skill: current - base (the base is the run's first checkpoint).

    Skills in `current` order; a skill the base lacks gets NaN (no reference); a skill only in
    the base is left out (it was not measured now). Accepts SkillScores or skill -> accuracy dicts.
    """
    cur = current.skills if isinstance(current, SkillScores) else dict(current)
    ref = base.skills if isinstance(base, SkillScores) else dict(base)
    return {k: (float(v) - float(ref[k]) if k in ref else math.nan) for k, v in cur.items()}
