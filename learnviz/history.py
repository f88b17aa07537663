"""learning_history.jsonl: the append-only time series, one row per checkpoint step.

Rows are only ever appended. A later row for the same step (and probe set) adds to or
overrides the earlier one's keys, so a stage that learns more about a step (drift, ECE) appends
a row with just those keys, and a recomputed neighbour appends its new values. `read` merges
rows per step in file order. A torn last line (a writer killed mid-append) is skipped, not
fatal; the next append starts on a fresh line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

from .common import clean_json

FILE_NAME = "learning_history.jsonl"


def history_path(archive_dir: str | Path) -> Path:
    return Path(archive_dir) / FILE_NAME


def append(archive_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one row (it must have `step`). Safe against concurrent appenders and torn lines."""
    if "step" not in row:
        raise ValueError("a history row needs a 'step'")
    path = history_path(archive_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(clean_json(row), sort_keys=False, allow_nan=False)
    lock = path.parent / ".locks" / (FILE_NAME + ".lock")
    lock.parent.mkdir(exist_ok=True)
    with FileLock(str(lock)):
        with open(path, "ab+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")  # end a torn line so this row stands on its own
            fh.write(line.encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_rows(archive_dir: str | Path) -> list[dict[str, Any]]:
    """Every intact row in file order. Unparseable lines (a torn write) are skipped."""
    path = history_path(archive_dir)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


def read(archive_dir: str | Path, probe_hash: str | None = None) -> list[dict[str, Any]]:
    """One merged row per step, sorted by step. With `probe_hash`, only rows of that probe set."""
    merged: dict[int, dict[str, Any]] = {}
    for row in read_rows(archive_dir):
        if probe_hash is not None and row.get("probe_hash") not in (None, probe_hash):
            continue
        merged.setdefault(row["step"], {}).update(row)
    return [merged[s] for s in sorted(merged)]
