"""learning_history.jsonl: the append-only time series, one row per checkpoint step.

Rows are only ever appended. A later row for the same step (and probe set) adds to or
overrides the earlier one's keys, so a stage that learns more about a step (drift, ECE) appends
a row with just those keys, and a recomputed neighbour appends its new values. `read` merges
rows per step in file order. A torn last line (a writer killed mid-append) is skipped, not
fatal; the next append starts on a fresh line.
A documented key whose value has another type (`KINDS`) is left out of its row the same way.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from . import archive as arc
from .common import append_lines, clean_json

FILE_NAME = "learning_history.jsonl"


def history_path(archive_dir: str | Path) -> Path:
    return Path(archive_dir) / FILE_NAME


def append(archive_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one row (it must have `step`). Safe against concurrent appenders and torn lines."""
    if "step" not in row:
        raise ValueError("a history row needs a 'step'")
    path = history_path(archive_dir)
    line = json.dumps(clean_json(row), sort_keys=False, allow_nan=False)
    append_lines(path, [line], path.parent / ".locks" / (FILE_NAME + ".lock"))


# Rows already parsed, per file: a reader that comes back reads only what was appended since.
# file -> ((dev, inode), offset parsed to, the bytes before it, the rows, the parse they belong to)
_parsed: dict[str, tuple[tuple[int, int], int, bytes, list[dict[str, Any]], object]] = {}
_parsed_lock = threading.Lock()
_CHECK = 64   # bytes before the parsed offset compared again, so a file rewritten in place is parsed anew


# The documented keys (docs/archive.md) and the kind of their values; None (NaN, or not known)
# passes. (Checked by sets of types, not a function per value: a new process parses every line of
# a long run's history, 1,500 lines at 500 checkpoints.)
NUMBER, TEXT, MAP_NUMBERS, MAP_TEXT, LIST_NUMBERS, LIST_TEXT, MAP_LIST_TEXT, MAP_MAP_NUMBERS = range(8)
KINDS: dict[str, int] = {
    **dict.fromkeys(("train_loss", "learning_rate", "grad_norm", "eval_loss", "epoch", "accuracy",
                     "mean_answer_logprob", "ece", "mce", "brier", "calibration_gap", "mean_entropy",
                     "overconfident", "uncertain", "geometry_drift", "geometry_drift_first", "cka_prev",
                     "cka_first", "umap_disparity", "umap_trustworthiness"), NUMBER),
    **dict.fromkeys(("timestamp", "checkpoint", "probe_hash", "calibration_direction", "source"), TEXT),
    **dict.fromkeys(("skill_scores", "skill_delta_vs_base"), MAP_NUMBERS),
    **dict.fromkeys(("error_positions", "layer_drifts", "layer_drifts_first", "weight_norms"), LIST_NUMBERS),
    "layer_names": LIST_TEXT,
    "weight_flags": MAP_LIST_TEXT,
    "health_flags": MAP_TEXT,
    "geometry": MAP_MAP_NUMBERS,
}
_NUMBERS = frozenset({int, float, type(None)})      # what json.loads gives (a bool is no number)
_TEXTS = frozenset({str, type(None)})


def _of_kind(kind: int, v: Any) -> bool:
    t = type(v)
    if kind == NUMBER:
        return t in _NUMBERS
    if kind == TEXT:
        return t in _TEXTS
    if kind == MAP_NUMBERS:
        return t is dict and _NUMBERS.issuperset(map(type, v.values()))
    if kind == MAP_TEXT:
        return t is dict and _TEXTS.issuperset(map(type, v.values()))
    if kind == LIST_NUMBERS:
        return t is list and _NUMBERS.issuperset(map(type, v))
    if kind == LIST_TEXT:
        return t is list and _TEXTS.issuperset(map(type, v))
    if kind == MAP_LIST_TEXT:
        return t is dict and all(type(x) is list and _TEXTS.issuperset(map(type, x)) for x in v.values())
    return t is dict and all(type(x) is dict and _NUMBERS.issuperset(map(type, x.values()))
                             for x in v.values())


# the keys whose values are one number or one text: checked without a call (most of a row's)
_PLAIN = {k: _NUMBERS if kind == NUMBER else _TEXTS for k, kind in KINDS.items() if kind in (NUMBER, TEXT)}


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """`row` without the documented keys whose value has another type (a row appended by hand or
    by another tool: "train_loss": "abc", "geometry": 5), as a torn line is skipped: every reader
    takes a documented key's value as its type, and one wrong value failed whole pages."""
    bad = None
    for k, v in row.items():
        plain = _PLAIN.get(k)
        if plain is not None:
            if type(v) in plain:
                continue
        else:
            kind = KINDS.get(k)
            if kind is None or _of_kind(kind, v):
                continue
        bad = [k] if bad is None else [*bad, k]
    return row if bad is None else {k: v for k, v in row.items() if k not in bad}


def _parse(data: bytes) -> list[dict[str, Any]]:
    rows = []
    for raw in data.split(b"\n"):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
            rows.append(_typed(row))
    return rows


def _read(archive_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], object]:
    """(the complete lines' rows, the rows of a last line without its newline, the parse the
    first belong to: the same object as long as the file is only appended to)."""
    path = history_path(archive_dir)
    key = os.fspath(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return [], [], None
    with fh:
        st = os.fstat(fh.fileno())
        ident = (st.st_dev, st.st_ino)
        with _parsed_lock:
            hit = _parsed.get(key)
        offset, rows, before, parse = 0, [], b"", object()
        if hit is not None and hit[0] == ident and hit[1] <= st.st_size:
            fh.seek(hit[1] - len(hit[2]))
            if fh.read(len(hit[2])) == hit[2]:
                offset, rows, before, parse = hit[1], hit[3], hit[2], hit[4]
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1                 # complete lines only are kept; a line being written is not
    added = _parse(data[:end])
    if added:
        rows = rows + added
    with _parsed_lock:
        if len(_parsed) >= 64 and key not in _parsed:
            _parsed.clear()
        _parsed[key] = (ident, offset + end, (before + data[:end])[-_CHECK:], rows, parse)
    return rows, _parse(data[end:]), parse


def read_rows(archive_dir: str | Path) -> list[dict[str, Any]]:
    """Every intact row in file order (treat them as read-only). Unparseable lines (a torn
    write) are skipped. The file is append-only, so a second read of the same file parses only
    the lines appended since (a file replaced or rewritten is parsed whole again)."""
    rows, tail, _ = _read(archive_dir)
    return rows + tail


def read_rows_having(archive_dir: str | Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The intact rows, in file order, that hold any of `keys` (a subset of `read_rows`): only the
    lines that spell one of the keys are parsed, so a reader of a few rows (the health flags, the
    status files' rows) does not parse a long run's whole history."""
    if not keys:
        return []
    path = history_path(archive_dir)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            ident = (st.st_dev, st.st_ino)
            kept = _having.get((str(path), keys))
            start = 0
            if kept is not None and kept[0] == ident and st.st_size >= kept[1] > 0:
                fh.seek(kept[1] - len(kept[3]))
                if fh.read(len(kept[3])) == kept[3]:      # appended to since: only the new lines are searched
                    start = kept[1]
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return []
    pattern = re.compile(b"|".join(re.escape(json.dumps(k).encode()) for k in keys))
    cut = data.rfind(b"\n") + 1           # whole lines are kept; a last line without its newline is
    lines = (list(kept[2]) if start else []) + _lines_matching(pattern, data[:cut])   # searched each time
    if len(_having) >= 64:
        _having.clear()
    tail = ((kept[3] if start else b"") + data[max(0, cut - 64):cut])[-64:]    # checked before reading on
    _having[(str(path), keys)] = (ident, start + cut, lines, tail)
    rest = _lines_matching(pattern, data[cut:])
    return [row for row in _parse(b"\n".join(lines + rest)) if any(k in row for k in keys)]


def _lines_matching(pattern: re.Pattern, data: bytes) -> list[bytes]:
    lines, seen = [], -1
    for hit in pattern.finditer(data):
        if hit.start() <= seen:
            continue                        # another key on a line already taken
        begin = data.rfind(b"\n", 0, hit.start()) + 1
        end = data.find(b"\n", hit.end())
        seen = len(data) if end < 0 else end
        lines.append(data[begin:seen])
    return lines


# (file, keys) -> (its identity, the bytes searched, the lines holding a key): `read_rows_having`
# searches only what was appended since its last call
_having: dict[tuple[str, tuple[str, ...]], tuple[tuple, int, list[bytes], bytes]] = {}


# (file, probe hash) -> (the parse, how many of its rows are merged, step -> merged row): `read`
# merges only the rows appended since its last call
_merged: dict[tuple[str, str | None], tuple[object, int, dict[int, dict[str, Any]]]] = {}
_merged_lock = threading.Lock()


def _merge(into: dict[int, dict[str, Any]], rows: list[dict[str, Any]], probe_hash: str | None) -> None:
    for row in rows:
        if probe_hash is not None and row.get("probe_hash") not in (None, probe_hash):
            continue
        into.setdefault(row["step"], {}).update(row)


def read(archive_dir: str | Path, probe_hash: str | None = None) -> list[dict[str, Any]]:
    """One merged row per step, sorted by step (the caller's own copies). With `probe_hash`,
    only rows of that probe set."""
    rows, tail, parse = _read(archive_dir)
    key = (os.fspath(history_path(archive_dir)), probe_hash)
    with _merged_lock:
        hit = _merged.get(key)
        if hit is None or hit[0] is not parse or hit[1] > len(rows):
            hit = (parse, 0, {})
        merged = hit[2]
        _merge(merged, rows[hit[1]:], probe_hash)
        if len(_merged) >= 64 and key not in _merged:
            _merged.clear()
        _merged[key] = (parse, len(rows), merged)
        out = {step: dict(row) for step, row in merged.items()}
    _merge(out, tail, probe_hash)
    return [out[s] for s in sorted(out)]


def forget() -> None:
    """Drop what this process parsed and merged (what a new process starts from)."""
    with _parsed_lock:
        _parsed.clear()
    with _merged_lock:
        _merged.clear()
    _having.clear()


arc.on_clear(forget)
