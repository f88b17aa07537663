"""The plan's status files: what a training's own scripts write beside it, ingested into the history.

With `--status-dir DIR` (the `status_dir` setting), `learnviz run` (each pass of `--watch` too)
reads these files when present and appends a history row for each one whose content changed:

  training_status.json     {"step": 1200, "loss": 2.31, "learning_rate": 0.0003, ...}
  curriculum_eval.json     {"step": 1200, "skills": {"syllo_easy": 0.82, ...}, ...}
  model_comparisons.json   {"step": 1200, "metric": "accuracy",
                            "rankings": [{"checkpoint": "checkpoint-1200", "score": 0.81}, ...], ...}
  deployment_status.json   {"step": 1200, "deployed_checkpoint": "checkpoint-1000", ...}

docs/integrations.md documents each field. Unknown fields are kept (under `fields` in the row). A
malformed file is reported with its name and the problem and skipped; the others go on. A row
carries `source` (the file name) and `status_hash` (of the file's content), so an unchanged file is
not appended again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import history
from .archive import now_iso

TRAINING = "training_status.json"
CURRICULUM = "curriculum_eval.json"
COMPARISONS = "model_comparisons.json"
DEPLOYMENT = "deployment_status.json"
FILES = (TRAINING, CURRICULUM, COMPARISONS, DEPLOYMENT)


class Malformed(ValueError):
    """A status file's content is not what docs/integrations.md describes (the message says how)."""


def _number(data: dict, key: str, *, required: bool = False) -> float | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"field '{key}' must be a number, got {json.dumps(value)}")
    return float(value)


def _step(data: dict, *, default: int | None = None) -> int:
    step = data.get("step", default)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise Malformed(f"field 'step' must be a whole number >= 0, got {json.dumps(step)}")
    return step


def _training(data: dict, latest: int | None) -> dict:
    row = {"step": _step(data)}
    for key, name in (("loss", "train_loss"), ("learning_rate", "learning_rate")):
        value = _number(data, key)
        if value is not None:
            row[name] = value
    return row


def _curriculum(data: dict, latest: int | None) -> dict:
    skills = data.get("skills")
    if not isinstance(skills, dict) or not skills:
        raise Malformed("field 'skills' must be an object of skill name: accuracy (0..1)")
    out = {}
    for skill, acc in skills.items():
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
            raise Malformed(f"field 'skills.{skill}' must be an accuracy between 0 and 1, got {json.dumps(acc)}")
        out[str(skill)] = float(acc)
    return {"step": _step(data, default=latest), "curriculum_skills": out}


def _comparisons(data: dict, latest: int | None) -> dict:
    rankings = data.get("rankings")
    if not isinstance(rankings, list) or not rankings:
        raise Malformed("field 'rankings' must be a list of {checkpoint, score} objects")
    out = []
    for i, entry in enumerate(rankings):
        if not isinstance(entry, dict) or not isinstance(entry.get("checkpoint"), str):
            raise Malformed(f"field 'rankings[{i}]' must be an object with a 'checkpoint' name")
        score = _number(entry, "score")
        out.append({"checkpoint": entry["checkpoint"], "score": score})
    if all(e["score"] is not None for e in out):
        out.sort(key=lambda e: -e["score"])   # best first; without scores, the file's order is the ranking
    metric = data.get("metric")
    return {"step": _step(data, default=latest), "checkpoint_ranking": out,
            **({"ranking_metric": str(metric)} if metric is not None else {})}


def _deployment(data: dict, latest: int | None) -> dict:
    name = data.get("deployed_checkpoint")
    if not isinstance(name, str) or not name:
        raise Malformed("field 'deployed_checkpoint' must be the deployed checkpoint's name")
    return {"step": _step(data, default=latest), "deployed_checkpoint": name}


PARSERS: dict[str, Callable[[dict, int | None], dict]] = {
    TRAINING: _training, CURRICULUM: _curriculum, COMPARISONS: _comparisons, DEPLOYMENT: _deployment}


@dataclass
class Ingested:
    appended: list[str] = field(default_factory=list)                 # files whose new content became a row
    unchanged: list[str] = field(default_factory=list)
    malformed: list[tuple[Path, str]] = field(default_factory=list)   # (file, problem): skipped


def read_status_file(path: Path, latest_step: int | None = None) -> dict:
    """One status file as a history row (without timestamp); Malformed says what is wrong. Files
    whose `step` is optional take `latest_step` (the newest step in the history) without one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:   # UnicodeDecodeError is a ValueError
        raise Malformed(f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise Malformed(f"must be a JSON object, got a {type(data).__name__}")
    row = PARSERS[path.name](data, latest_step)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return {**row, "source": path.name, "status_hash": digest, "fields": data}


def ingest(status_dir: str | Path, archive_dir: str | Path) -> Ingested:
    """Append a history row for each status file in `status_dir` whose content is new."""
    status_dir, out = Path(status_dir), Ingested()
    rows = history.read_rows(archive_dir)
    seen = {(r.get("source"), r.get("status_hash")) for r in rows if r.get("status_hash")}
    latest = max((r["step"] for r in rows), default=None)
    for name in FILES:
        path = status_dir / name
        if not path.is_file():
            continue
        try:
            row = read_status_file(path, latest)
        except Malformed as exc:
            out.malformed.append((path, str(exc)))
            continue
        if (row["source"], row["status_hash"]) in seen:
            out.unchanged.append(name)
            continue
        history.append(archive_dir, {"step": row.pop("step"), "timestamp": now_iso(), **row})
        out.appended.append(name)
    return out


HISTORY_KEYS = ("checkpoint_ranking", "deployed_checkpoint")    # what `summary` reads of the history's rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest ranking and deployed checkpoint among history rows (`learnviz status`, dashboard):
    {"ranking": [...], "ranking_metric": str | None, "ranking_step": int, "deployed": str,
    "deployed_step": int}, the keys present only when a status file gave them."""
    out: dict[str, Any] = {}
    for row in history_order(rows):
        if "checkpoint_ranking" in row:
            out.update(ranking=row["checkpoint_ranking"], ranking_metric=row.get("ranking_metric"),
                       ranking_step=row["step"])
        if "deployed_checkpoint" in row:
            out.update(deployed=row["deployed_checkpoint"], deployed_step=row["step"])
    return out


def history_order(rows: list[dict]) -> list[dict]:
    """Rows in the order they were written (timestamps; the file order breaks ties)."""
    return [r for _, r in sorted(enumerate(rows), key=lambda ir: (str(ir[1].get("timestamp", "")), ir[0]))]
