"""data_log.jsonl: which training data fed which steps, written by the trainer, read by the data impact.

One JSON object per line, in the run's folder (the folder that holds the checkpoints):

    {"step": 120, "source": "hard_chains", "examples": 48}

"`examples` examples of `source` were trained on in the steps after the previous logged step, up
to and including `step`". Counts are not cumulative: two rows with the same step and source add
up. Any granularity works (a row per step, per logging step or per checkpoint): the data impact
sums the rows of each interval between two checkpoints (`interval_mix`).

`append(run_folder, step, counts)` is what a training loop (or LearnvizCallback) calls; a person can
write the file by hand. `read(path)` returns the good rows and one `Problem` per bad row (its file,
line and field): a bad row is reported and skipped, never fatal.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from . import archive as arc
from .common import append_lines

FILE_NAME = "data_log.jsonl"


@dataclass(frozen=True)
class Problem:
    """A bad row: where it is and what is wrong with it."""
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path} line {self.line}" + (f" field '{self.field}'" if self.field else "")
        return f"{where}: {self.message} (row skipped)"


@dataclass(frozen=True)
class DataLog:
    """The good rows of a data log, in file order, and the bad rows' problems."""
    path: str
    steps: np.ndarray                 # (r,) int64
    sources: list[str]                # (r,)
    examples: np.ndarray              # (r,) int64
    problems: list[Problem] = field(default_factory=list)
    codes: np.ndarray | None = None   # (r,) int64: each row's source as an index into `source_names`
    names: list[str] | None = None    # `source_names`, when known

    @property
    def source_names(self) -> list[str]:
        """Every source, in order of first appearance."""
        return list(self.names) if self.names is not None else list(dict.fromkeys(self.sources))

    def __len__(self) -> int:
        return len(self.sources)


def log_path(folder: str | Path) -> Path:
    return Path(folder) / FILE_NAME


def append(run_folder: str | Path, step: int, counts: Mapping[str, int]) -> None:
    """Append one row per source of `counts` (source -> examples trained on since the previous
    call, up to and including `step`) to `<run_folder>/data_log.jsonl`. Sources with 0 examples
    are left out. Safe against concurrent writers; ValueError on a bad step, source or count."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"data log: step must be an integer >= 0, got {step!r}")
    lines = []
    for source, k in counts.items():
        if not isinstance(source, str) or not source:
            raise ValueError(f"data log: a source must be a non-empty string, got {source!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"data log: examples of {source!r} must be an integer >= 0, got {k!r}")
        if k:
            lines.append(json.dumps({"step": int(step), "source": source, "examples": int(k)}))
    if not lines:
        return
    path = log_path(run_folder)
    append_lines(path, lines, path.parent / f".{FILE_NAME}.lock")


def _check(row: object) -> tuple[str, str] | None:
    """(field, message) of the first thing wrong with a parsed row, or None."""
    if not isinstance(row, dict):
        return "", f"a row must be a JSON object, got {type(row).__name__}"
    for name in ("step", "source", "examples"):
        if name not in row:
            return name, "missing"
    step, source, k = row["step"], row["source"], row["examples"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return "step", f"must be an integer >= 0, got {step!r}"
    if not isinstance(source, str) or not source.strip():
        return "source", f"must be a non-empty string, got {source!r}"
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        return "examples", f"must be an integer >= 0, got {k!r}"
    return None


@dataclass
class _Parsed:
    """What `read` parsed of one file so far: its complete lines up to `offset`."""
    ident: tuple[int, int]
    offset: int
    check: bytes                      # the bytes before `offset`: a file rewritten in place is parsed anew
    lines: int
    steps: np.ndarray
    sources: list[str]
    examples: np.ndarray
    codes: np.ndarray
    names: dict[str, int]
    problems: list[Problem]


_parsed: dict[str, _Parsed] = {}
_parsed_lock = threading.Lock()
arc.on_clear(_parsed.clear)          # what a new process starts from
_CHECK = 64


def _parse_lines(path: str, data: bytes, first_line: int, names: dict[str, int]) -> tuple:
    steps, sources, examples, codes, problems = [], [], [], [], []
    n = first_line - 1
    for raw in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        n += 1
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.append(Problem(path, n, "", f"not JSON ({exc.msg})"))
            continue
        bad = _check(row)
        if bad is not None:
            problems.append(Problem(path, n, *bad))
            continue
        source = row["source"].strip()
        steps.append(row["step"])
        sources.append(source)
        examples.append(row["examples"])
        codes.append(names.setdefault(source, len(names)))
    return steps, sources, examples, codes, problems, n


def read(path: str | Path) -> DataLog:
    """The rows of a data log file. Bad rows (not JSON, not an object, a missing or ill-typed
    field) are skipped and listed in `problems`; a missing file raises FileNotFoundError.

    The file only grows while a run trains (a row per logging step, tens of thousands in a long
    run), and the planning of every checkpoint reads it: a process that read it before parses
    only the lines appended since (a file replaced or rewritten is parsed whole again)."""
    key = os.fspath(path)
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        ident = (st.st_dev, st.st_ino)
        with _parsed_lock:
            hit = _parsed.get(key)
        if hit is not None and hit.ident == ident and hit.offset <= st.st_size:
            fh.seek(hit.offset - len(hit.check))
            if fh.read(len(hit.check)) != hit.check:
                hit = None
        else:
            hit = None
        offset = hit.offset if hit is not None else 0
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1                 # complete lines are kept; a line being written is not
    names = dict(hit.names) if hit is not None else {}
    steps, sources, examples, codes, problems, lines = _parse_lines(key, data[:end], (hit.lines if hit else 0) + 1,
                                                                    names)
    done = _Parsed(ident, offset + end, ((hit.check if hit else b"") + data[:end])[-_CHECK:], lines,
                   np.concatenate([hit.steps if hit else np.zeros(0, np.int64), np.asarray(steps, dtype=np.int64)]),
                   (hit.sources if hit else []) + sources,
                   np.concatenate([hit.examples if hit else np.zeros(0, np.int64),
                                   np.asarray(examples, dtype=np.int64)]),
                   np.concatenate([hit.codes if hit else np.zeros(0, np.int64), np.asarray(codes, dtype=np.int64)]),
                   names, (hit.problems if hit else []) + problems)
    with _parsed_lock:
        if len(_parsed) >= 16 and key not in _parsed:
            _parsed.clear()
        _parsed[key] = done
    if end < len(data):       # the last line, not ended yet: read now, kept for next time only once ended
        names = dict(names)
        t_steps, t_sources, t_examples, t_codes, t_problems, _ = _parse_lines(key, data[end:], lines + 1, names)
        return DataLog(key, np.concatenate([done.steps, np.asarray(t_steps, dtype=np.int64)]),
                       done.sources + t_sources,
                       np.concatenate([done.examples, np.asarray(t_examples, dtype=np.int64)]),
                       done.problems + t_problems,
                       np.concatenate([done.codes, np.asarray(t_codes, dtype=np.int64)]), list(names))
    return DataLog(key, done.steps, list(done.sources), done.examples, list(done.problems), done.codes, list(names))


def find(folders: Sequence[str | Path | None]) -> Path | None:
    """The first `data_log.jsonl` in `folders` (None entries are passed over), or None."""
    for folder in folders:
        if folder is not None and log_path(folder).is_file():
            return log_path(folder)
    return None


def interval_mix(log: DataLog, steps: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """(sources, (len(steps) - 1, n_sources) int64): examples of each source trained on in each
    interval (steps[i], steps[i + 1]] between consecutive checkpoints. Rows at or before the
    first checkpoint, or after the last, fall in no interval."""
    names = log.source_names
    edges = np.asarray(steps, dtype=np.int64)
    out = np.zeros((max(len(edges) - 1, 0), len(names)), dtype=np.int64)
    if len(edges) < 2 or not len(log):
        return names, out
    codes = log.codes
    if codes is None or len(codes) != len(log.sources):
        col = {s: j for j, s in enumerate(names)}
        codes = np.asarray([col[s] for s in log.sources], dtype=np.int64)
    where = np.searchsorted(edges, log.steps, side="left") - 1   # steps[i] < step <= steps[i + 1] -> i
    inside = (where >= 0) & (where < len(out))
    np.add.at(out, (where[inside], codes[inside]), log.examples[inside])
    return names, out
