"""The read side: everything a reader needs from an archive folder, in one place.

`learnviz status`, the figures (learnviz/plots/sources.py), the dashboard and the workers read
through this module; none of them imports an orchestrator (pipeline, analyze, collect). It never
writes an archive, never locks and never loads a model; it does keep headers and accuracies in
the folder's index file (`archive.FolderIndex`, a cache), so that the next process opens no
unchanged archive.

  series(dir)            archives with a successful extraction, in step order, of one probe set
  scan_archives(dir)     the readable archives and the unreadable ones (archive.Unreadable), with why
  status_rows(dir)       one StatusRow per archive file, unreadable ones included; format_status(rows)
  health_flags(dir)      step -> the checkpoint's health flags (from the learning history)
  read_data_impact(dir)  the data impact group of series.h5 (None without a data log)
  archive_accuracy(a)    overall and per-skill accuracy of one archive (memoised per file version)
  read_analysis(a)       the typed `analysis` group (results.AnalysisResult)
  read_geometry(a)       the typed `geometry` group (results.GeometryResult)
  read_board(dir)        hard_example_board.json
  training_status(dir)   the latest checkpoint ranking and deployed checkpoint from the status files
  run_archives(dir)      the runs of an archive folder: (name, folder) each (several runs under one root)
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import archive as arc
from . import history, row_log, status_files
from .archive import SERIES_NAME, Archive, ArchiveError, Listing, Unreadable, scan_archives
from .checkpoints import file_identity
from .common import write_atomic
from .errors import LearnvizError
from .results import (
    ANALYSIS,
    BOARD_FILE,
    CHECKPOINT_STAGES,
    EXTRACT,
    GEOMETRY,
    SERIES,
    AnalysisResult,
    GeometryResult,
    stage_order,
)

__all__ = ["ANALYSIS", "ARCHIVE", "BOARD_FILE", "CHECKPOINT_STAGES", "EXTRACT", "GEOMETRY", "SERIES", "SERIES_NAME",
           "HEALTH_FLAGS", "HISTORY_FILE", "STATUS_LAST", "UNREADABLE", "Listing", "StatusRow", "Unreadable",
           "archive_accuracy", "board_problem", "board_written", "checkpoint_of", "chosen_steps", "extracted",
           "filter_flags", "format_status", "health_flags", "history_rows", "keep_index", "left_out",
           "newest_and_notable", "read_analysis", "read_board", "read_data_impact", "read_geometry", "row_stamp",
           "run_archives", "scan_archives", "series", "series_rows", "series_of", "skill_accuracy", "stage_ok",
           "status_rows", "training_status", "unreadable_row"]

HISTORY_FILE = history.FILE_NAME
# An unreadable archive file's status row has this one pseudo-stage, in this state (no stage of it can be read).
ARCHIVE = "archive"
UNREADABLE = "unreadable"


def holds_run(folder: Path) -> bool:
    """True when `folder` is one run's archive folder: it holds archives or a learning history."""
    return folder.is_dir() and (any(folder.glob("*" + arc.SUFFIX)) or (folder / HISTORY_FILE).exists())


def run_archives(archive_dir: str | Path) -> list[tuple[str, Path]]:
    """The runs of an archive folder as (name, folder): the folder itself ("") when it holds a run's
    archives, and each sub-folder that does (`<archive>/<run name>/`, written when several runs lie
    under one checkpoint root). A folder with none of them is one (empty) run, itself. Every
    command that takes --archive accepts either kind of folder."""
    archive_dir = Path(archive_dir)
    out = [("", archive_dir)] if holds_run(archive_dir) else []
    try:        # the folder's file types from the listing itself: no stat of its 500 archives
        with os.scandir(archive_dir) as entries:
            subs = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError:
        subs = []
    out += [(name, archive_dir / name) for name in subs if holds_run(archive_dir / name)]
    return out or [("", archive_dir)]


def training_status(archive_dir: str | Path) -> dict[str, Any]:
    """The latest checkpoint ranking (model_comparisons.json) and deployed checkpoint
    (deployment_status.json) the history holds (learnviz.status_files.summary); {} when none."""
    return status_files.summary(history.read_rows_having(archive_dir, status_files.HISTORY_KEYS))


def format_training_status(summary: dict[str, Any]) -> list[str]:
    """`learnviz status`'s lines for `training_status`: the deployed checkpoint and the ranking."""
    lines = []
    if "deployed" in summary:
        lines.append(f"deployed: {summary['deployed']} (as of step {summary['deployed_step']})")
    if "ranking" in summary:
        metric = f" by {summary['ranking_metric']}" if summary.get("ranking_metric") else ""
        ranked = ", ".join(f"{i}. {e['checkpoint']}" + ("" if e["score"] is None else f" ({e['score']:g})")
                           for i, e in enumerate(summary["ranking"], 1))
        lines.append(f"ranking{metric} (as of step {summary['ranking_step']}): {ranked}")
    return lines


def history_rows(archive_dir: str | Path, probe_hash: str | None = None) -> list[dict[str, Any]]:
    """learning_history.jsonl merged to one row per step (of one probe set, when given)."""
    return history.read(archive_dir, probe_hash=probe_hash)


def stage_ok(a: Archive, stage: str) -> bool:
    info = a.stage(stage)
    return info is not None and info.ok


def extracted(a: Archive) -> bool:
    return stage_ok(a, EXTRACT)


def series_of(archives: list[Archive], probe_hash: str | None = None) -> list[Archive]:
    """Of `archives` (in step order), those whose extraction succeeded, all of one probe set: the
    newest one's when `probe_hash` is None. Archives of different probe sets are never compared."""
    done = [a for a in archives if extracted(a)]
    if not done:
        return []
    wanted = probe_hash or done[-1].attrs.get("probe_hash")
    out = [a for a in done if a.attrs.get("probe_hash") == wanted]
    if len({a.step for a in out}) < len(out):   # two archives of one step (two folders, archived by an
        seen: set[int] = set()                   # earlier version; the scan now refuses the second):
        out = [a for a in out if not (a.step in seen or seen.add(a.step))]    # the first by name
    return out


def series(archive_dir: str | Path, probe_hash: str | None = None) -> list[Archive]:
    """The archived series of a folder (see `series_of`)."""
    return series_of(arc.list_archives(archive_dir), probe_hash)


def checkpoint_of(a: Archive, root: str | Path | None = None) -> Path:
    """The checkpoint folder an archive was made from, resolved. The archive records the folder's
    absolute path when it was extracted (the root attribute `checkpoint`), which a run folder moved
    or copied elsewhere (`mv`, `rsync -a` to another machine) no longer names, or names the
    original's (a copy beside it): with `root`, the run's checkpoint folder as the settings give it
    now, the folder of the archive's name under it (`archive.archive_name`, or the checkpoint's
    name) is taken when it is there; else the recorded path."""
    recorded = str(a.attrs.get("checkpoint", ""))
    if root:
        top = Path(root)
        name = str(a.attrs.get("checkpoint_name", "")) or Path(recorded).name
        for where in (top / a.path.stem.replace("__", "/"), top / name):
            if name and where.is_dir():
                return where.resolve()
        if name and top.name == name and (top / "config.json").exists():    # the root is the checkpoint
            return top.resolve()
    return Path(recorded).resolve()


def left_out(archives: list[Archive], series: list[Archive]) -> dict[int, str]:
    """The steps of `archives` that are not in `series` (`series_of` of them), each with why: a
    step asked for by number is then answered with the reason rather than "no archived checkpoint"."""
    kept = {a.step for a in series}
    out: dict[int, str] = {}
    for a in archives:
        if a.step in kept or a.step in out or a.step < 0:
            continue
        info = a.stage(EXTRACT)
        if info is None:
            out[a.step] = f"{a.path.name} has no extraction yet"
        elif not info.ok:
            out[a.step] = f"the extraction of {a.path.name} {info.status}" + (f": {info.reason}" if info.reason else "")
        else:
            out[a.step] = f"{a.path.name} was extracted with another probe set ({a.attrs.get('probe_hash')})"
    return out


def chosen_steps(archived: list[int], which: str, why: dict[int, str] | None = None) -> list[int]:
    """`--checkpoint latest|STEP|all` against the archived steps (ascending). `why`: the steps
    archived but not usable (`left_out`), named in the error when one of them is asked for."""
    if which not in ("latest", "all") and not str(which).isdigit():
        raise LearnvizError(f"--checkpoint must be latest, all or a step number, got {which!r}", field="--checkpoint")
    if not archived or which == "all":
        return list(archived)
    if which == "latest":
        return [archived[-1]]
    if int(which) in archived:
        return [int(which)]
    if why and int(which) in why:
        raise LearnvizError(f"checkpoint at step {which} is archived but has no usable extraction: {why[int(which)]}",
                            field="--checkpoint", hint=f"usable steps: {', '.join(map(str, archived)) or 'none'}; "
                            "`learnviz status` shows each checkpoint's stages")
    raise LearnvizError(f"no archived checkpoint at step {which!r}", field="--checkpoint",
                        hint=f"archived steps: {', '.join(map(str, archived))}")


# ---------------------------------------------------------------- accuracy and status

def skill_accuracy(correct: np.ndarray, skills: list[str]) -> dict[str, float]:
    """Accuracy per skill, in first-seen order of the skills."""
    out: dict[str, list] = {}
    for ok, skill in zip(correct, skills):
        out.setdefault(skill, []).append(bool(ok))
    return {k: float(np.mean(v)) for k, v in out.items()}


def archive_accuracy(a: Archive) -> tuple[float | None, dict[str, float]]:
    """Share of probes answered right, overall and per skill, of one archive ((None, {}) without a
    successful extraction). Read once per version of the archive file (`Archive.memo`)."""
    def compute() -> tuple[float | None, dict[str, float]]:
        if not extracted(a):
            return None, {}
        data = a.read(EXTRACT, ["correct", "probe_skill"])
        if not len(data["correct"]):
            return None, {}
        return float(np.mean(data["correct"])), skill_accuracy(data["correct"], list(data["probe_skill"]))
    acc, skills = a.memo("accuracy", compute, persist=True)
    return acc, skills


@dataclass
class StatusRow:
    step: int | None                  # None: an unreadable archive whose file name gives no step
    name: str
    stages: dict[str, str]            # stage -> ok | failed, in pipeline order; {"archive": "unreadable"}
    reason: str                       # first failure reason, if any
    accuracy: float | None
    skills: dict[str, float]
    flags: dict[str, str] = field(default_factory=dict)   # health flag -> why (learnviz.analysis.health)
    notes: str = ""       # what its ok stages say (the probes that failed alone: an answer too long)
    # set when it was extracted with another probe set than the series' (the newest extraction's):
    # why it is left out of the series, the figures and the dashboard's charts
    other_probes: str = ""

    @property
    def unreadable(self) -> bool:
        """The archive file itself cannot be read (the reason says why); its stages are unknown."""
        return self.stages.get(ARCHIVE) == UNREADABLE


def status_row(a: Archive, *, accuracy: bool = True) -> StatusRow:
    kept = a.__dict__.get("_status")     # made of the view's own header: kept for as long as the view
    if kept is None:                     # (`learnviz status` of a run of 500 in a long-lived process)
        stages = {name: a.stages[name].status for name in stage_order(a.stages)}
        reason = next((info.reason for info in a.stages.values() if not info.ok), "")
        notes = "; ".join(info.reason for info in a.stages.values() if info.ok and info.reason)
        kept = a.__dict__["_status"] = (a.attrs.get("checkpoint_name", a.path.stem), stages, reason, notes)
    acc, skills = archive_accuracy(a) if accuracy else (None, {})
    return StatusRow(a.step, kept[0], dict(kept[1]), kept[2], acc, skills, notes=kept[3])


def unreadable_row(u: Unreadable) -> StatusRow:
    """The status row of an archive file that cannot be read: failed, with the reason."""
    return StatusRow(u.step, u.name, {ARCHIVE: UNREADABLE}, u.reason, None, {})


def status_rows(archive_dir: str | Path, archives: list[Archive] | None = None,
                unreadable: list[Unreadable] | None = None, *, accuracy: bool = True,
                select: Callable[[list[StatusRow]], list[StatusRow]] | None = None) -> list[StatusRow]:
    """One row per archive file, in step order: stage states, health flags and per-skill accuracy,
    or for an unreadable file why it cannot be read (`archives`, `unreadable`: the folder's listing
    when the caller has it already; `accuracy=False` reads no archive beyond its header).
    `select`: which of the rows to return (and read the accuracy of)."""
    if archives is None:
        listing = scan_archives(archive_dir)
        archives, unreadable = listing.archives, listing.unreadable
    rows = [status_row(a, accuracy=False) for a in archives]
    of = {id(r): a for r, a in zip(rows, archives)}
    kept = series_of(sorted(archives, key=lambda a: a.step))     # the one rule of which probe set is the series'
    wanted = kept[-1].attrs.get("probe_hash") if kept else None
    for r, a in zip(rows, archives):
        have = a.attrs.get("probe_hash")
        if have != wanted and extracted(a):
            r.other_probes = (f"extracted with another probe set ({have}; the newest is {wanted}): left out of "
                              f"the series, the figures and the dashboard's charts")
    rows += [unreadable_row(u) for u in unreadable or []]
    flags = health_flags(archive_dir)
    for r in rows:
        if r.step in flags and not r.unreadable:
            r.flags = flags[r.step]
    rows = sorted(rows, key=lambda r: (r.step is None, r.step if r.step is not None else 0))
    if select is not None:
        rows = select(rows)
    if accuracy:
        for r in rows:
            if id(r) in of:
                r.accuracy, r.skills = archive_accuracy(of[id(r)])
    return rows


STATUS_LAST = 20      # the newest checkpoints `learnviz status` shows of a long run


def newest_and_notable(rows: list[StatusRow], last: int = STATUS_LAST) -> list[StatusRow]:
    """The rows a table of a long run shows: the newest `last` and every failed, unreadable or
    flagged one (in step order)."""
    cut = max(len(rows) - max(last, 0), 0)
    return [r for i, r in enumerate(rows) if i >= cut or r.reason or r.notes or r.unreadable or r.flags
            or r.other_probes or any(v != "ok" for v in r.stages.values())]


BOARD_CHECK = "board-problem"     # board_problem's memo of each version of the board
BOARD_MARK = ".learnviz-board.json"   # the identity of the board file the series stage wrote last


def board_problem(archive_dir: str | Path) -> str | None:
    """Why hard_example_board.json cannot be read ("unreadable: ..."), or None (also when absent).
    Checked once per version of the file (a long run's board is megabytes), and not at all when
    it is the file the series stage wrote (`board_written`): any change to it, even one that sets
    its mtime back, changes its ctime."""
    path = Path(archive_dir) / BOARD_FILE

    def check() -> str | None:
        try:
            if json.loads((Path(archive_dir) / BOARD_MARK).read_text(encoding="utf-8")) == {
                    "board": list(file_identity(path) or ())}:
                return None
        except (OSError, ValueError):
            pass              # no mark, or a damaged one: the board is read
        try:
            read_board(archive_dir, strict=True)
            return None
        except LearnvizError as exc:
            return f"unreadable: {exc}"
    return arc.file_memo(path, BOARD_CHECK, check, persist=True) if path.exists() else None


def board_written(archive_dir: str | Path) -> None:
    """The series stage has just written hard_example_board.json (a JSON object, by construction):
    `board_problem` of that version is None without reading it back, in this process and (by the
    mark file, BOARD_MARK) in any later one."""
    path = Path(archive_dir) / BOARD_FILE
    arc.file_memo(path, BOARD_CHECK, lambda: None, persist=True)
    try:
        write_atomic(Path(archive_dir) / BOARD_MARK, json.dumps({"board": list(file_identity(path) or ())}))
    except OSError:
        pass                  # a read-only folder: later processes read the board to check it


def keep_index(archive_dir: str | Path) -> None:
    """Write the folder's index file (`.learnviz-index.json`: each archive's header and accuracy by
    file version, a cache) when this process added enough to it, so that the next process lists
    the folder without opening every archive. The one write of the read side, and only for the
    CLI: the dashboard never calls it (its requests write nothing); the pipeline does after a run."""
    arc.flush_index(archive_dir)


def health_flags(archive_dir: str | Path) -> dict[int, dict[str, str]]:
    """step -> {flag: why} of every checkpoint with a health flag, from the learning history
    (the series stage appends them; learnviz.analysis.health says what each flag means)."""
    flags: dict[int, Any] = {}
    for r in history.read_rows_having(archive_dir, ("health_flags",)):   # a later row of a step wins
        flags[r["step"]] = r["health_flags"]
    return {step: dict(f) for step, f in sorted(flags.items()) if isinstance(f, dict) and f}


# Every health flag a checkpoint can carry: the series' signals (learnviz.analysis.health.SIGNALS),
# the analysis's weight flags, and non_finite for a checkpoint the series left out.
HEALTH_FLAGS = ("accuracy_drop", "regression_burst", "loss_spike", "geometry_drift_spike", "calibration_jump",
                "weights_exploding", "weights_vanishing", "weights_dead", "non_finite")


def filter_flags(rows: list[StatusRow], wanted: str) -> list[StatusRow]:
    """`learnviz status --flags [NAME,NAME]`: the rows with any health flag ("all"), or with one
    of the named flags. A name that is no health flag is a LearnvizError (a typo would otherwise
    read as "no checkpoint flagged")."""
    if wanted == "all":
        return [r for r in rows if r.flags]
    names = {w.strip() for w in wanted.split(",") if w.strip()}
    unknown = sorted(names - set(HEALTH_FLAGS))
    if unknown:
        raise LearnvizError(f"no health flag is called {', '.join(map(repr, unknown))}", field="--flags",
                            hint="the flags are " + ", ".join(HEALTH_FLAGS))
    return [r for r in rows if names & set(r.flags)]


def _cell(text: str) -> str:
    """A table cell's text on one line: control characters (a tab or a newline in a skill name)
    spelled as escapes, so that they cannot split or shift the table."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _width(text: str) -> int:
    """Columns a terminal gives `text`: two for a wide (CJK, emoji) character, none for a combining mark."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def format_status(rows: list[StatusRow], *, total: int = 0) -> str:
    """The `learnviz status` table: one line per checkpoint, then each failure with its reason.
    `total`: the rows there are, when `rows` shows some of them (a line says how many are left out)."""
    skills = list(dict.fromkeys(s for r in rows for s in r.skills))
    head = ["step", "checkpoint", "stages", "acc"] + [_cell(s) for s in skills] + ["health"]
    table = []
    for r in rows:
        stages = " ".join(f"{k}:{v}" for k, v in r.stages.items())
        cells = ["?" if r.step is None else str(r.step), _cell(r.name), stages,
                 "-" if r.accuracy is None else f"{r.accuracy:.2f}"]
        cells += [f"{r.skills[s]:.2f}" if s in r.skills else "-" for s in skills]
        cells.append(",".join(r.flags) if r.flags else ("-" if r.unreadable else "ok"))
        table.append(cells)
    widths = [max(_width(h), *(_width(c[i]) for c in table)) for i, h in enumerate(head)]
    lines = []
    if total > len(rows):
        lines.append(f"{total} checkpoints; showing the newest and every failed or flagged one, "
                     f"{total - len(rows)} more all ok (--all shows every one, --last N the newest N)")
    lines.append("  ".join(_pad(h, w) for h, w in zip(head, widths)))
    lines += ["  ".join(_pad(c, w) for c, w in zip(cells, widths)) for cells in table]
    for r in rows:
        if r.reason:
            where = f"{r.name}" if r.step is None else f"step {r.step} ({r.name})"
            lines.append(f"{where} {'unreadable' if r.unreadable else 'failed'}: {r.reason}")
    for r in rows:
        if r.notes:
            lines.append(f"step {r.step} ({r.name}) archived, with probes failed alone: {r.notes}")
    for r in rows:
        if r.other_probes:
            lines.append(f"step {r.step} ({r.name}) {r.other_probes}")
    for r in rows:
        for flag, why in r.flags.items():
            lines.append(f"step {r.step} ({r.name}) flagged {flag}: {why}")
    return "\n".join(lines)


# ---------------------------------------------------------------- stage results

def read_analysis(a: Archive, parts: list[str] | None = None) -> AnalysisResult:
    """The `analysis` group of `a` (every section, or just `parts` of AnalysisResult.SECTIONS).
    Raises ArchiveError when the archive has no such group."""
    info = a.stage(ANALYSIS)
    if info is None:
        raise ArchiveError(f"has no '{ANALYSIS}' stage", path=a.path, field=ANALYSIS)
    keys = None if parts is None else [p for p in parts if p != "weights" or "weights" not in info.attrs]
    return AnalysisResult.from_archive(a.read(ANALYSIS, keys), info.attrs)


def read_geometry(a: Archive, layers: list[int] | None = None, elements: tuple[str, ...] | None = None
                  ) -> GeometryResult:
    """The `geometry` group of `a`: every layer, or `layers`; every element, or `elements` of each
    (e.g. ("coords", "trustworthiness"): the similarity matrices are the large part)."""
    info = a.stage(GEOMETRY)
    if info is None:
        raise ArchiveError(f"has no '{GEOMETRY}' stage", path=a.path, field=GEOMETRY)
    if layers is None and elements is None:
        return GeometryResult.from_archive(a.read(GEOMETRY), info.attrs)
    if layers is None:
        layers = [int(k.split("_", 1)[1]) for k in a.read_keys(GEOMETRY) if k.startswith("layer_")]
    keys = [f"layer_{k}" if elements is None else f"layer_{k}/{x}" for k in layers for x in (elements or ("",))]
    flat = a.read(GEOMETRY, keys, missing_ok=True)
    data: dict[str, Any] = {}
    for k in layers:
        if elements is None:
            data[f"layer_{k}"] = flat[f"layer_{k}"]
        else:
            data[f"layer_{k}"] = {x: flat[f"layer_{k}/{x}"] for x in elements if f"layer_{k}/{x}" in flat}
    return GeometryResult.from_archive(data, info.attrs)


def embeddings(a: Archive) -> dict[int, np.ndarray]:
    """Pooled embeddings per layer, (n_probes, hidden) float16, of a successful extraction."""
    emb = a.read(EXTRACT, ["embeddings"])["embeddings"]
    return {int(k.split("_", 1)[1]): v for k, v in emb.items()}


def extract_layers(a: Archive) -> tuple[list[int], int]:
    """(the pooled layers, the model's number of layers) from the extract stage's attributes."""
    attrs = a.stage(EXTRACT).attrs
    layers = attrs.get("layers", "[]")
    layers = json.loads(layers) if isinstance(layers, str) else list(layers)
    return [int(k) for k in layers], int(attrs.get("n_layers", 0) or 0)


def read_board(archive_dir: str | Path, *, strict: bool = False) -> dict[str, Any] | None:
    """hard_example_board.json, or None when absent. Unreadable: None, or with `strict` a
    LearnvizError naming the file."""
    path = Path(archive_dir) / BOARD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if strict:
            raise LearnvizError(f"is not valid JSON ({exc})", path=path,
                                hint="`learnviz analyze --force` rewrites it") from None
        return None
    if not isinstance(data, dict):
        if strict:
            raise LearnvizError("is not a JSON object", path=path, hint="`learnviz analyze --force` rewrites it")
        return None
    return data


def row_stamp(a: Archive) -> str:
    """What identifies the inputs of one checkpoint's row of the series (learnviz.series_stage):
    the archive, its step, and the key, status and times of its extract and analysis stages.
    Made once per version of the archive file, and kept on the view (made of the view's own header,
    it holds for as long as the view: the series asks twice per checkpoint of every checkpoint)."""
    kept = a.__dict__.get("_row_stamp")
    if kept is None:
        kept = a.__dict__["_row_stamp"] = a.memo("row-stamp", lambda: _row_stamp(a))
    return kept


def _row_stamp(a: Archive) -> str:
    parts: list[Any] = [a.path.name, a.step]
    for name in (EXTRACT, ANALYSIS):
        info = a.stage(name)
        parts.append(None if info is None else
                     [info.status, info.key.fingerprint, info.key.probe_hash, info.key.schema_version,
                      info.key.inputs, str(info.attrs.get("started", "")), str(info.attrs.get("finished", ""))])
    return json.dumps(parts, separators=(",", ":"))


def series_rows(archive_dir: str | Path, archives: list[Archive], names: list[str]) -> dict[str, Any] | None:
    """The per-checkpoint rows `names` that the series stage keeps (learnviz.row_log; each
    (k, ...), checkpoints in step order), when the row log holds those of exactly `archives` as
    they are now, made under the signature of the current series.h5; None when series.h5 is
    absent, unreadable or failed, or a row is missing (a figure then reads the archives)."""
    try:
        s = open_series_archive(archive_dir)
        info = s.stage(SERIES) if s is not None else None
        if info is None or not info.ok or not archives:
            return None
        signature = info.attrs.get("rows_signature")
    except (ArchiveError, OSError, KeyError, ValueError):
        return None
    log = row_log.load(row_log.log_path(archive_dir))
    records = [log.rows.get(row_stamp(a)) for a in archives]
    if any(r is None or r.signature != signature or r.step != a.step for r, a in zip(records, archives)):
        return None
    try:
        return {n: np.stack([r.values[n] for r in records]) for n in names}
    except (KeyError, ValueError):      # rows of differing shapes: a damaged log
        return None


def open_series_archive(archive_dir: str | Path) -> Archive | None:
    """series.h5 of the folder, None when absent."""
    path = Path(archive_dir) / SERIES_NAME
    return Archive(path) if path.exists() else None


def read_data_impact(archive_dir: str | Path) -> dict[str, Any] | None:
    """series.h5's `data_impact` group (learnviz.analysis.data_impact; docs/archive.md), or None
    when the run has no data log or no current series."""
    s = open_series_archive(archive_dir)
    if s is None:
        return None
    info = s.stage(SERIES)
    if info is None or not info.ok or "data_impact" not in s.read_keys(SERIES):
        return None
    return s.read(SERIES, ["data_impact"])["data_impact"]
