"""The `series` stage: results across every checkpoint of a run -> series.h5 and
hard_example_board.json beside the archives.

A new checkpoint must cost the same at checkpoint 500 as at checkpoint 10, so the stage does not
read every archive again. It keeps one compact row per checkpoint in an append-only log beside
the archives (`.learnviz-rows.bin`, learnviz.row_log): what the run-level results need from that
checkpoint's extraction and analysis, a few kilobytes (which answer tokens are above the learned
threshold, the category means of the token logprobs, the answers' logprobs and correctness, the
hard examples' answers and error types, the error-position histogram and the mean entropy per
answer position; the hard examples' token logprobs, which the figures read from there:
learnviz.plots.sources). Each row is keyed by the checkpoint's stamp: its archive's file name,
step and the key, status and times of its `extract` and `analysis` stages. A run of the stage
reads only the archives whose stamp has no row (the new checkpoint, one inserted out of order,
one rewritten) and appends their rows, leaves out rows whose checkpoint left the series, and
computes every result from the stacked rows with the same functions a full recompute uses
(`series_data(...)` without a log, which reads every archive); a test holds the two equal.

Extending it: a per-checkpoint value is one more entry of ROW_FIELDS (a function of the
checkpoint's `Row` returning a fixed-shape array); a series-level result is one more entry of
RESULTS (a function of the stacked `Rows` returning archive elements). Bump ROW_VERSION when a
row's content changes: stored rows of another version are computed again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import archive as arc
from . import insight, row_log
from .analysis.hard_examples import forget_row_text
from .common import short_hash, write_atomic
from .readout import board_written, read_analysis, row_stamp, stage_ok
from .results import ANALYSIS, BOARD_FILE, EXTRACT, SERIES
from .settings import Settings

ROW_VERSION = 2
REWRITE_AFTER = 32      # the row log is rewritten when it holds more dead records than this and than live ones
log_ = logging.getLogger(__name__)
EXTRACT_ELEMENTS = ["token_logprob", "answer_logprob", "answer_ids", "correct", "greedy_answer"]
META_ELEMENTS = ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"]
ERROR_CODES = (None, "empty", "wrong_polarity", "wrong_token", "malformed")   # hard_error: index into this


stamp = row_stamp     # what identifies a checkpoint's row: its archive and the keys of its stages


@dataclass
class Context:
    """What every row of one series shares: the probe set (from the newest archive) and settings."""
    meta: dict[str, np.ndarray]
    offsets: np.ndarray             # (n + 1,) answer token offsets
    threshold: float
    names: list[str] = field(init=False)          # categories, sorted
    token_cat: np.ndarray = field(init=False)     # (total,) category index of each answer token
    rows: np.ndarray = field(init=False)          # (total,) probe of each answer token
    pos: np.ndarray = field(init=False)           # (total,) position of each answer token
    max_len: int = field(init=False)
    hard: list[int] = field(init=False)           # probe indices of the hard examples
    hard_tokens: np.ndarray = field(init=False)   # (total_hard,) answer-token indices of the hard examples

    def __post_init__(self):
        from .probes import HARD_EXAMPLES_SKILL
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        lengths = np.diff(self.offsets)
        n = len(lengths)
        cats = np.asarray(self.meta["probe_category"], dtype=object).astype(str)
        self.names = sorted(set(cats))
        self.rows = np.repeat(np.arange(n), lengths)
        self.pos = np.arange(int(self.offsets[-1])) - np.repeat(self.offsets[:-1], lengths)
        self.token_cat = (np.searchsorted(np.asarray(self.names, dtype=object), cats[self.rows]) if n
                          else np.zeros(0, np.int64))
        self.max_len = int(lengths.max()) if n else 0
        self.hard = [i for i, sk in enumerate(self.meta["probe_skill"]) if sk == HARD_EXAMPLES_SKILL]
        self.hard_tokens = (np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in self.hard])
                            if self.hard else np.zeros(0, np.int64)).astype(np.int64)

    @property
    def signature(self) -> str:
        """Rows made under another signature are computed again."""
        return short_hash(ROW_VERSION, self.threshold, self.offsets.tobytes().hex(), self.names, self.hard,
                          [str(x) for x in self.meta["probe_ids"]], [str(x) for x in self.meta["expected"]])


@dataclass
class Row:
    """One checkpoint's inputs, read from its archive."""
    archive: arc.Archive
    extracted: dict[str, Any]
    errors: np.ndarray | None       # the analysis's error-position histogram; None without a successful analysis
    entropy: np.ndarray | None      # the analysis's mean entropy by answer position; None without one


def _above(r: Row, ctx: Context) -> np.ndarray:
    from .analysis.trajectories import above_threshold
    return np.packbits(above_threshold(r.extracted["token_logprob"].values, ctx.threshold))


def _category_mean(r: Row, ctx: Context) -> np.ndarray:
    from .analysis.trajectories import category_means
    M = np.asarray(r.extracted["token_logprob"].values, dtype=np.float64)[None]
    return category_means(M, ctx.token_cat, ctx.pos, len(ctx.names), ctx.max_len)[0]


def _hard_error(r: Row, ctx: Context) -> np.ndarray:
    from .analysis.hard_examples import cell_error
    correct, answers = r.extracted["correct"], r.extracted["greedy_answer"]
    return np.asarray([ERROR_CODES.index(cell_error(bool(correct[i]), answers[i], str(ctx.meta["expected"][i])))
                       for i in ctx.hard], dtype=np.int8)


def _error_hist(r: Row, ctx: Context) -> np.ndarray:
    out = np.full(ctx.max_len + 2, -1, dtype=np.int64)     # [length, counts...], length -1: no histogram
    if r.errors is not None and len(r.errors) <= ctx.max_len + 1:
        out[0] = len(r.errors)
        out[1:1 + len(r.errors)] = r.errors
    elif r.errors is not None:
        raise ValueError(f"{r.archive.path.name}: its error-position histogram has {len(r.errors)} bins, "
                         f"answers of this probe set at most {ctx.max_len + 1}")
    return out


def _entropy(r: Row, ctx: Context) -> np.ndarray:
    out = np.full(ctx.max_len + 1, np.nan)      # [length, means...], length NaN: no analysis
    if r.entropy is not None:
        e = np.asarray(r.entropy, dtype=np.float64)[: ctx.max_len]
        out[0] = len(e)
        out[1:1 + len(e)] = e
    return out


# name -> one checkpoint's value (a fixed shape per series); stacked to (k, ...) in `Rows`
ROW_FIELDS: dict[str, Callable[[Row, Context], np.ndarray]] = {
    "above": _above,
    "category_mean": _category_mean,
    "answer_logprob": lambda r, ctx: np.asarray(r.extracted["answer_logprob"], dtype=np.float64),
    "correct": lambda r, ctx: np.asarray(r.extracted["correct"], dtype=bool),
    "hard_answer": lambda r, ctx: np.asarray([str(r.extracted["greedy_answer"][i]) for i in ctx.hard], dtype=object),
    "hard_error": _hard_error,
    "hard_token_logprob": lambda r, ctx: np.asarray(r.extracted["token_logprob"].values,
                                                    dtype=np.float64)[ctx.hard_tokens],
    "error_hist": _error_hist,
    "entropy_by_position": _entropy,      # read by the entropy figure (learnviz.plots.sources)
}


def read_row(a: arc.Archive, ctx: Context) -> dict[str, np.ndarray]:
    """One checkpoint's row (every ROW_FIELDS value), read from its archive."""
    extracted = a.read(EXTRACT, EXTRACT_ELEMENTS)
    offsets = np.asarray(extracted["answer_ids"].offsets)
    if not np.array_equal(offsets, ctx.offsets) or not np.array_equal(extracted["token_logprob"].offsets, offsets):
        raise ValueError(f"{a.path.name}: its answer tokens differ from the newest checkpoint's (a changed "
                         "tokenizer or probe set); all checkpoints need the same probes and answer tokens")
    analysed = read_analysis(a, ["errors", "entropy"]) if stage_ok(a, ANALYSIS) else None
    row = Row(a, extracted, analysed.errors.histogram if analysed else None,
              analysed.entropy.mean_by_position if analysed else None)
    return {name: fn(row, ctx) for name, fn in ROW_FIELDS.items()}


@dataclass
class Rows:
    """Every checkpoint's row, stacked in step order: `values[name]` is (k, ...)."""
    steps: np.ndarray
    stamps: list[str]
    values: dict[str, np.ndarray]
    read: int = 0                   # rows read from archives this time (the others were kept)
    derived: dict = field(default_factory=dict)   # what several results share, built once (the board)
    fresh: list[int] = field(default_factory=list)   # the indices of the rows to add to the log (read this time)


arc.on_clear(forget_row_text)       # the board's text, kept by its writer


class _Stack:
    """A run's rows as the last `collect_rows` stacked them, in buffers with room to grow: a
    long-lived process adds a new checkpoint's row to them instead of stacking 500 rows again."""

    def __init__(self, sig: str, layout: tuple, stamps: list[str], values: dict[str, np.ndarray]):
        self.sig, self.layout, self.stamps = sig, layout, stamps
        self.buffers = {n: v.copy() for n, v in values.items()}

    def extend(self, rows: list[dict[str, np.ndarray]], stamps: list[str]) -> None:
        k, more = len(self.stamps), len(rows)
        for name, buf in self.buffers.items():
            if len(buf) < k + more:       # room doubles: an amortised constant cost per row
                grown = np.empty((max(2 * len(buf), k + more, 16),) + buf.shape[1:], dtype=buf.dtype)
                grown[:k] = buf[:k]
                self.buffers[name] = buf = grown
            for i, row in enumerate(rows):
                buf[k + i] = row[name]
        self.stamps = self.stamps + stamps

    def values(self) -> dict[str, np.ndarray]:
        """Read-only views of the first rows; rows are only ever added past them."""
        k, out = len(self.stamps), {}
        for name, buf in self.buffers.items():
            v = buf[:k]
            v.flags.writeable = False
            out[name] = v
        return out


_stacks: dict[str, _Stack] = {}      # archive folder -> its rows as last stacked (a long-lived process)
_stacks_lock = threading.Lock()
arc.on_clear(_stacks.clear)


def collect_rows(archives: list[arc.Archive], ctx: Context, log: row_log.Log | None) -> Rows:
    """The rows of `archives` (in step order): those the row log holds for their stamps (made
    under `ctx`'s signature, of the same layout), the others read from their archives
    (`Rows.fresh`: to be appended to the log). With a log, a process that stacked the same run's
    rows before and finds the same checkpoints first adds only the rows after them."""
    sig = ctx.signature
    stamps = [stamp(a) for a in archives]
    if log is not None and archives:
        extended = _extend(archives, ctx, log, stamps)
        if extended is not None:
            return extended
    kept: dict[int, row_log.Record] = {}
    if log is not None:
        for j, (a, s) in enumerate(zip(archives, stamps)):
            rec = log.rows.get(s)
            if rec is not None and rec.signature == sig and rec.step == a.step:
                kept[j] = rec
    fresh = {j: read_row(a, ctx) for j, a in enumerate(archives) if j not in kept}
    # every row has one layout: a row read now has the right one; without any, the most common
    # kept one. A kept row of another (a damaged log) is read again; when that row disagrees with
    # the most common layout, the log is not trusted at all.
    if fresh:
        layout = row_log.layout_of(next(iter(fresh.values())))
    else:
        layout = max(Counter(rec.layout for rec in kept.values()).items(), key=lambda kv: kv[1])[0]
    odd = [j for j, rec in kept.items() if not _same_layout(rec.layout, layout)]
    for j in odd:
        del kept[j]
        fresh[j] = read_row(archives[j], ctx)
    if any(row_log.layout_of(fresh[j]) != layout for j in odd):
        fresh.update((j, read_row(archives[j], ctx)) for j in kept)
        kept.clear()
        layout = row_log.layout_of(fresh[len(archives) - 1])
    for j, row in fresh.items():
        mine = row_log.layout_of(row)
        if mine != layout:
            got, want = next(((a, b) for a, b in zip(mine, layout) if a != b), (mine[-1], layout[-1]))
            raise ValueError(f"{archives[j].path.name}: its {got[0]} is {got[1]} of shape {got[2]}, the other "
                             f"checkpoints' {want[0]} {want[1]} of shape {want[2]}")
    values: dict[str, np.ndarray] = {}
    for name in ROW_FIELDS:
        parts = [kept[j].values[name] if j in kept else fresh[j][name] for j in range(len(archives))]
        values[name] = np.stack(parts)
    if log is not None and archives:
        with _stacks_lock:
            if len(_stacks) >= 16:
                _stacks.clear()
            _stacks[str(archives[0].path.parent)] = _Stack(sig, layout, stamps, values)
    return Rows(np.asarray([a.step for a in archives], dtype=np.int64), stamps, values, read=len(fresh),
                fresh=sorted(fresh))


def _same_layout(a: tuple, b: tuple) -> bool:
    """Layouts are interned (row_log): compared by identity first, then by value."""
    return a is b or a == b


def _extend(archives: list[arc.Archive], ctx: Context, log: row_log.Log, stamps: list[str]) -> Rows | None:
    """`collect_rows` from the rows this process stacked last time, when `archives` begin with
    the same checkpoints (the same stamps, under the same signature) and every later row has the
    same layout: those rows are added to the stack. None: stack them all (`collect_rows`)."""
    folder = str(archives[0].path.parent)
    with _stacks_lock:
        st = _stacks.get(folder)
        if st is None or st.sig != ctx.signature or len(st.stamps) > len(stamps) \
                or stamps[:len(st.stamps)] != st.stamps:
            return None
        k, sig = len(st.stamps), ctx.signature
        # the stacked rows the log lacks (a torn, damaged or replaced log) are added from the stack
        missing = [j for j in range(k) if (rec := log.rows.get(stamps[j])) is None or rec.signature != sig
                   or not _same_layout(rec.layout, st.layout)]
        rows, read = [], []
        for j in range(k, len(archives)):
            rec = log.rows.get(stamps[j])
            if rec is not None and rec.signature == sig and rec.step == archives[j].step \
                    and _same_layout(rec.layout, st.layout):
                rows.append(rec.values)
                continue
            row = read_row(archives[j], ctx)
            if row_log.layout_of(row) != st.layout:
                return None
            rows.append(row)
            read.append(j)
        st.extend(rows, stamps[k:])
        values = st.values()
    return Rows(np.asarray([a.step for a in archives], dtype=np.int64), stamps, values, read=len(read),
                fresh=missing + read)


# ---------------------------------------------------------------- the results, from the rows

def _trajectories(rows: Rows, ctx: Context) -> dict:
    from .analysis.trajectories import learned_steps, learning_order
    total = int(ctx.offsets[-1])
    above = np.unpackbits(rows.values["above"], axis=1, count=total).astype(bool)
    learned = learned_steps(above, rows.steps).astype(np.int64)
    return {"trajectories": {
        "learned_at": arc.Ragged(learned, ctx.offsets.copy()),
        "order": learning_order(learned, ctx.rows, ctx.pos),
        "category_mean": {"names": np.asarray(ctx.names, dtype=object),
                          "values": (np.transpose(rows.values["category_mean"], (1, 0, 2)) if ctx.names
                                     else np.zeros((0, 0, 0)))}}}


def _cartography(rows: Rows, ctx: Context) -> dict:
    from .analysis.cartography import cartography
    k = len(rows.steps)
    if k < 2:
        return {}
    # Two windows: over the whole run nearly every probe the model learns at all is
    # "ambiguous" (it climbs from chance); the later half shows which ones stay hard.
    late = k // 2 if k >= 4 else 0
    out = {}
    lengths = np.diff(ctx.offsets)
    for name, start in (("cartography", 0), ("cartography_late", late)):
        cart = cartography(rows.values["answer_logprob"][start:], lengths, rows.values["correct"][start:])
        out[name] = {"confidence": cart.confidence, "variability": cart.variability,
                     "correctness": cart.correctness, "region": np.asarray(cart.region, dtype=object),
                     "first_step": np.int64(rows.steps[start])}
    return out


def _error_trend(rows: Rows, ctx: Context) -> dict:
    from .analysis.errors import error_position_trend
    packed = rows.values["error_hist"]
    if not len(packed) or (packed[:, 0] < 0).any():
        return {}
    trend = error_position_trend(rows.steps, [p[1:1 + p[0]] for p in packed])
    return {"error_trend": {"first": trend.first, "last": trend.last, "change": trend.change,
                            "improving": np.asarray(trend.improving, dtype=np.int64)}}


def board(rows: Rows, ctx: Context):
    """The hard-example board from the rows (None without hard examples); built once per `rows`
    (the `hard_examples` result and the board's JSON file both take it)."""
    if "board" not in rows.derived:
        rows.derived["board"] = _board(rows, ctx)
    return rows.derived["board"]


def _board(rows: Rows, ctx: Context):
    from .analysis.hard_examples import hard_example_board
    if not ctx.hard:
        return None
    m = ctx.meta
    types = np.asarray(ERROR_CODES, dtype=object)[np.asarray(rows.values["hard_error"], dtype=np.int64)]
    return hard_example_board(rows.steps, [m["probe_ids"][i] for i in ctx.hard], [m["prompt"][i] for i in ctx.hard],
                              [m["expected"][i] for i in ctx.hard], [m["probe_category"][i] for i in ctx.hard],
                              rows.values["correct"][:, ctx.hard], rows.values["hard_answer"], error_types=types)


def _hard_examples(rows: Rows, ctx: Context) -> dict:
    b = board(rows, ctx)
    if b is None:
        return {}
    return {"hard_examples": {"ids": np.asarray(b.ids, dtype=object), "correct": np.asarray(b.correct),
                              "first_right": np.asarray([-1 if x is None else x for x in b.first_right]),
                              "regressed": np.asarray(b.regressed, dtype=bool)}}


# name -> archive elements of a series-level result, from the stacked rows
RESULTS: dict[str, Callable[[Rows, Context], dict]] = {
    "trajectories": _trajectories,
    "cartography": _cartography,
    "error_trend": _error_trend,
    "hard_examples": _hard_examples,
}


# ---------------------------------------------------------------- the stage

def context(archives: list[arc.Archive], s: Settings) -> Context:
    newest = archives[-1]
    meta = newest.read(EXTRACT, META_ELEMENTS)
    offsets = newest.read(EXTRACT, ["answer_ids"])["answer_ids"].offsets
    return Context(meta, offsets, float(s.learned_threshold))


def series_data(archives: list[arc.Archive], s: Settings, *,
                log: row_log.Log | None = None) -> tuple[dict, Rows, Context]:
    """(series.h5's elements, the rows, their context). The rows that `log` (learnviz.row_log)
    holds for the archives' stamps are taken from it; without a log every archive is read."""
    ctx = context(archives, s)
    stacked = collect_rows(archives, ctx, log)
    used, left_out = usable(stacked)
    data: dict = {"steps": used.steps}
    for fn in RESULTS.values():
        data.update(fn(used, ctx))
    if left_out:
        data["left_out"] = {"steps": stacked.steps[list(left_out)],
                            "reasons": np.asarray(list(left_out.values()), dtype=object)}
    return data, stacked, ctx


def broken_rows(rows: Rows) -> dict[int, str]:
    """index -> why, of the rows whose answers' logprobs hold NaN: a broken checkpoint (NaN
    weights, a diverged run, an overflow). No result across checkpoints means anything with one
    (cartography refuses it), so the series leaves such a checkpoint out and says so."""
    lp = rows.values["answer_logprob"]
    if not lp.size:
        return {}
    bad = np.isnan(lp)
    counts = bad.sum(axis=1)
    return {int(j): f"answer_logprob is NaN for {int(counts[j])} of {lp.shape[1]} probes (NaN weights or an "
                    f"overflow: a broken checkpoint); left out of the series"
            for j in np.flatnonzero(counts)}


def usable(rows: Rows) -> tuple[Rows, dict[int, str]]:
    """(the rows the results are computed from, index -> why of the rows left out: `broken_rows`),
    built once per `rows`. ValueError when no row is left."""
    if "usable" not in rows.derived:
        left_out = broken_rows(rows)
        if not left_out:
            rows.derived["usable"] = (rows, left_out)
        else:
            keep = np.asarray([j for j in range(len(rows.steps)) if j not in left_out], dtype=np.int64)
            if not len(keep):
                raise ValueError(f"every checkpoint is broken: {next(iter(left_out.values()))}")
            used = Rows(rows.steps[keep], [rows.stamps[j] for j in keep],
                        {n: v[keep] for n, v in rows.values.items()}, read=rows.read)
            rows.derived["usable"] = (used, left_out)
    return rows.derived["usable"]


def store_rows(folder: Path, ctx: Context, rows: Rows, log: row_log.Log | None) -> None:
    """Append the rows read this time to the row log; rewrite it with only the live rows when
    it is not clean, `log` is None (every row was read again) or it would hold more records of
    rows no checkpoint has any more than live ones (amortised: a constant cost per checkpoint)."""
    path = row_log.log_path(folder)
    sig, live = ctx.signature, len(rows.stamps)

    def record(j: int) -> tuple:
        return sig, rows.stamps[j], int(rows.steps[j]), {n: rows.values[n][j] for n in ROW_FIELDS}

    dead = (log.records if log is not None else 0) + len(rows.fresh) - live
    try:
        if log is None or not log.clean or log.ident is None or dead > max(live, REWRITE_AFTER):
            row_log.rewrite(path, [record(j) for j in range(live)])
        else:
            row_log.append(path, [record(j) for j in rows.fresh])
    except OSError as exc:      # a read-only archive folder: the next run reads every row again
        log_.warning("%s: the series rows could not be kept (%s)", path, exc)


def run_series(archives: list[arc.Archive], s: Settings, key: arc.StageKey, *, rows: bool = True,
               left_out: list[tuple[int, str]] | None = None) -> Path:
    """Results across every checkpoint -> series.h5 (+ hard_example_board.json). `rows=False`
    reads every archive again instead of keeping the logged rows (`learnviz analyze --force`).
    A broken checkpoint (`broken_rows`) is left out of every result, kept in series.h5's
    `left_out` group and flagged `non_finite` in the history; `left_out` gets its (step, why)."""
    t0 = time.perf_counter()
    path = archives[0].path.parent / arc.SERIES_NAME
    log = row_log.load(row_log.log_path(path.parent)) if rows else None
    data, stacked, ctx = series_data(archives, s, log=log)
    store_rows(path.parent, ctx, stacked, log)       # every row, the broken ones too (they are live)
    used, broken = usable(stacked)
    if broken:
        archives = [a for j, a in enumerate(archives) if j not in broken]
    # health flags and data impact (learnviz.insight): from the same rows, apart from RESULTS
    # because they also read the history, the data log and a geometry or two
    health = insight.series_health(archives, s, used.values["correct"])
    data["health"] = insight.health_to_archive(health, used.steps)
    reads = [{"correct": c, "answer_logprob": lp}
             for c, lp in zip(used.values["correct"], used.values["answer_logprob"])]
    impact = insight.series_data_impact(archives, reads, ctx.meta, health, s.checkpoints)
    if impact is not None:
        data["data_impact"] = impact
    t1 = time.perf_counter()
    # The board and the health rows before series.h5, which is the stage's mark of done: a process
    # killed between them (the OOM killer, SIGKILL) leaves the series stale, so the next run writes
    # all three again (the health rows only where they differ); written after it, they were lost
    # for good, the series being current.
    b = board(used, ctx)
    if b is not None:
        write_atomic(archives[0].path.parent / BOARD_FILE, b.to_json_text())
        board_written(archives[0].path.parent)
    insight.append_health_rows(archives, health, broken={int(stacked.steps[j]): why for j, why in broken.items()})
    steps = used.steps
    arc.write_stage(path, SERIES, key=key, root_attrs={"kind": "series", "steps": steps.tolist(),
                                                      "step": int(steps[-1])},
                    data=data, attrs={"learned_threshold": s.learned_threshold, "rows_signature": ctx.signature,
                                      "rows_read": stacked.read},
                    timings={"rows_and_results": t1 - t0, "total": time.perf_counter() - t0})
    if left_out is not None:
        left_out.extend((int(stacked.steps[j]), why) for j, why in broken.items())
    return path
