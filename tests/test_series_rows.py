"""The series stage keeps one row per checkpoint and reads only the archives whose row is missing:
its content must equal a full recompute (every archive read again, the results computed by the
analysis functions directly, as the stage did before it kept rows), after a checkpoint arrives
out of order, after an archive is rewritten, and after one leaves the run."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from learnviz import analyze as an
from learnviz import archive as arc
from learnviz import pipeline, readout, row_log, series_stage
from learnviz.analysis.cartography import cartography
from learnviz.analysis.errors import error_position_trend
from learnviz.analysis.hard_examples import hard_example_board
from learnviz.analysis.trajectories import logprob_trajectories
from learnviz.readout import read_analysis, series, stage_ok
from learnviz.results import ANALYSIS, BOARD_FILE, EXTRACT, GEOMETRY, SERIES
from learnviz.settings import Settings

SKILLS = ["syllo_easy"] * 5 + ["edge_cases"] * 3 + ["hard_examples"] * 4
CATS = ["barbara", "celarent", "darii", "barbara", "negation", "darii", "chain", "barbara",
        "celarent", "chain", "negation", "barbara"]
EXPECTED = ["All A are C.", "No A are C.", "Some A are C.", "Yes", "No", "Nothing follows.", "All B are D.",
            "Some A are not C.", "No owls are fish.", "All rats are cats.", "Yes", "Some cats are dogs."]
N = len(SKILLS)
LENGTHS = np.asarray([len(e.split()) + 1 for e in EXPECTED])
OFFSETS = np.concatenate([[0], np.cumsum(LENGTHS)]).astype(np.int64)


def write_extract(folder, step: int, seed: int, *, broken: bool = False):
    """A checkpoint's extract group through learnviz's writer; logprobs rise with the step.
    `broken`: a diverged checkpoint, every logprob, confidence and embedding NaN."""
    rng = np.random.default_rng(seed)
    total = int(OFFSETS[-1])
    logit = (step / 100 - 2.5) + rng.normal(0, 1.5, size=total)
    logprob = np.log(1 / (1 + np.exp(-logit))).astype(np.float32)
    logprob[rng.integers(0, total)] = np.nan if seed % 2 else logprob[0]     # a NaN now and then
    above = np.nan_to_num(logprob, nan=-9) > np.log(0.5)
    correct = np.logical_and.reduceat(above, OFFSETS[:-1])
    ids = (np.arange(total) % 97 + 5).astype(np.int32)
    argmax = np.where(above, ids, ids + 1).astype(np.int32)
    first_div = np.asarray([-1 if correct[j] else int(np.argmin(above[OFFSETS[j]:OFFSETS[j + 1]]))
                            for j in range(N)], dtype=np.int32)
    wrong = ["", "All owls are fish.", "No rats are cats.", "Cats cats"]
    greedy = [EXPECTED[j] if correct[j] else wrong[(j + seed) % 4] for j in range(N)]
    r = lambda v: arc.Ragged(v, OFFSETS)  # noqa: E731
    data = {"probe_ids": np.asarray([f"p{j:02d}" for j in range(N)], dtype=object),
            "probe_skill": np.asarray(SKILLS, dtype=object), "probe_category": np.asarray(CATS, dtype=object),
            "prompt": np.asarray([f"prompt {j}?" for j in range(N)], dtype=object),
            "expected": np.asarray(EXPECTED, dtype=object),
            "embeddings": {"layer_0": rng.normal(size=(N, 8)).astype(np.float16)},
            "answer_ids": r(ids), "token_text": r(np.asarray([f" t{i}" for i in ids], dtype=object)),
            "token_logprob": r(logprob), "token_entropy": r(rng.uniform(0, 2, total).astype(np.float32)),
            "token_top1_prob": r(rng.uniform(size=total).astype(np.float32)), "token_argmax": r(argmax),
            "answer_logprob": np.nan_to_num(np.add.reduceat(np.nan_to_num(logprob, nan=-5.0), OFFSETS[:-1]),
                                            neginf=-50.0).astype(np.float32),
            "answer_confidence": rng.uniform(size=N).astype(np.float32),
            "stop_prob": rng.uniform(size=N).astype(np.float32), "first_divergence": first_div,
            "greedy_answer": np.asarray(greedy, dtype=object), "correct": correct,
            "prompt_tokens": np.full(N, 9, dtype=np.int32), "truncated": np.zeros(N, dtype=bool)}
    if broken:
        for k in ("token_logprob", "token_entropy", "token_top1_prob"):
            data[k] = r(np.full(total, np.nan, dtype=np.float32))
        for k in ("answer_logprob", "answer_confidence", "stop_prob"):
            data[k] = np.full(N, np.nan, dtype=np.float32)
        data["embeddings"] = {"layer_0": np.full((N, 8), np.nan, dtype=np.float16)}
    name = f"checkpoint-{step}"
    arc.write_stage(folder / f"{name}.h5", EXTRACT, key=arc.StageKey(f"fp-{step}-{seed}", "probes1"),
                    root_attrs={"step": step, "checkpoint": str(folder / "gone" / name), "checkpoint_name": name},
                    data=data, attrs={"layers": [0], "n_layers": 1})


def analyse(settings: Settings) -> None:
    """The real analysis stage of every checkpoint whose analysis is not current."""
    archives = series(settings.archive_dir())
    for i, a in enumerate(archives):
        key = an.analysis_key(archives, i, settings)
        if not a.is_current("analysis", key):
            an.run_analysis(archives, i, settings, key)


def full_recompute(archives, s: Settings) -> tuple[dict, dict | None]:
    """The series read from every archive and computed by the analysis functions directly; a
    checkpoint whose answer logprobs hold NaN (which cartography refuses) left out."""
    reads = [a.read(EXTRACT, ["token_logprob", "answer_logprob", "answer_ids", "correct", "greedy_answer"])
             for a in archives]
    broken = [j for j, r in enumerate(reads) if np.isnan(r["answer_logprob"]).any()]
    left_out = {"steps": np.asarray([archives[j].step for j in broken]),
                "reasons": np.asarray([f"answer_logprob is NaN for {int(np.isnan(reads[j]['answer_logprob']).sum())} "
                                       f"of {N} probes (NaN weights or an overflow: a broken checkpoint); left out "
                                       "of the series" for j in broken], dtype=object)}
    archives = [a for j, a in enumerate(archives) if j not in broken]
    reads = [r for j, r in enumerate(reads) if j not in broken]
    steps = np.asarray([a.step for a in archives])
    meta = archives[-1].read(EXTRACT, ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"])
    cats = list(meta["probe_category"])
    traj = logprob_trajectories(steps, [r["token_logprob"] for r in reads], cats, threshold=s.learned_threshold)
    width = max(v.shape[1] for v in traj.category_mean.values())
    values = np.full((len(traj.category_mean), len(steps), width), np.nan)
    for c, v in enumerate(traj.category_mean.values()):
        values[c, :, : v.shape[1]] = v
    data = {"steps": steps, "trajectories": {
        "learned_at": arc.Ragged.from_rows([np.asarray(x, dtype=np.int64) for x in traj.learned_at], np.int64),
        "order": np.asarray(traj.order, dtype=np.int64).reshape(-1, 3),
        "category_mean": {"names": np.asarray(list(traj.category_mean), dtype=object), "values": values}}}
    correct = np.stack([np.asarray(r["correct"], dtype=bool) for r in reads])
    if len(archives) >= 2:
        lengths = np.diff(reads[-1]["answer_ids"].offsets)
        logprobs = np.stack([r["answer_logprob"] for r in reads])
        late = len(archives) // 2 if len(archives) >= 4 else 0
        for name, start in (("cartography", 0), ("cartography_late", late)):
            cart = cartography(logprobs[start:], lengths, correct[start:])
            data[name] = {"confidence": cart.confidence, "variability": cart.variability,
                          "correctness": cart.correctness, "region": np.asarray(cart.region, dtype=object),
                          "first_step": np.int64(steps[start])}
    hists = [read_analysis(a, ["errors"]).errors.histogram if stage_ok(a, "analysis") else None for a in archives]
    if all(h is not None for h in hists):
        trend = error_position_trend(steps, hists)
        data["error_trend"] = {"first": trend.first, "last": trend.last, "change": trend.change,
                               "improving": np.asarray(trend.improving, dtype=np.int64)}
    hard = [i for i, sk in enumerate(meta["probe_skill"]) if sk == "hard_examples"]
    answers = np.asarray([[r["greedy_answer"][i] for i in hard] for r in reads], dtype=object)
    board = hard_example_board(steps, [meta["probe_ids"][i] for i in hard], [meta["prompt"][i] for i in hard],
                               [meta["expected"][i] for i in hard], [cats[i] for i in hard], correct[:, hard], answers)
    data["hard_examples"] = {"ids": np.asarray(board.ids, dtype=object), "correct": np.asarray(board.correct),
                             "first_right": np.asarray([-1 if x is None else x for x in board.first_right]),
                             "regressed": np.asarray(board.regressed, dtype=bool)}
    # health flags and data impact (issue 15) from the same full reads
    from learnviz import insight
    insight._health_memo.clear()          # a full recompute: nothing resumed from an earlier result
    health = insight.series_health(archives, s, correct)
    data["health"] = insight.health_to_archive(health, steps)
    impact = insight.series_data_impact(archives, reads, meta, health)
    if impact is not None:
        data["data_impact"] = impact
    if broken:
        data["left_out"] = left_out
    return data, board.to_json()


def assert_same(got, want, where="series"):
    if isinstance(want, dict):
        assert set(got) == set(want), f"{where}: {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, arc.Ragged):
        assert_same(got.values, want.values, f"{where}/values")
        assert_same(got.offsets, want.offsets, f"{where}/offsets")
    else:
        g, w = np.asarray(got), np.asarray(want)
        assert g.shape == w.shape, f"{where}: shape {g.shape} != {w.shape}"
        if w.dtype.kind in "OUS" or g.dtype.kind in "OUS":
            assert [str(x) for x in g.ravel()] == [str(x) for x in w.ravel()], where
        else:
            assert np.array_equal(g, w, equal_nan=True), f"{where}: {g} != {w}"


def check(settings: Settings) -> int:
    """Run the series stage with its kept rows; assert it equals a full recompute. Returns how
    many rows it read from archives."""
    archives = series(settings.archive_dir())
    an.run_series(archives, settings)
    path = settings.archive_dir() / arc.SERIES_NAME
    stored = arc.Archive(path).read(SERIES)
    want, board = full_recompute(archives, settings)
    assert_same(stored, want)
    assert json.loads((settings.archive_dir() / BOARD_FILE).read_text()) == board
    # the logged rows are those read afresh from every archive, in this process and in a new one
    ctx = series_stage.context(archives, settings)
    afresh = series_stage.collect_rows(archives, ctx, None)
    for new_process in (False, True):
        if new_process:
            arc.clear_memo()
        logged = series_stage.collect_rows(archives, ctx, row_log.load(row_log.log_path(settings.archive_dir())))
        assert logged.read == 0 and logged.stamps == afresh.stamps
        assert_same(logged.values, afresh.values)
    with h5py.File(path, "r") as f:
        return int(f[SERIES].attrs["rows_read"])


def test_kept_rows_equal_a_full_recompute(tmp_path):
    s = Settings(archive=str(tmp_path))
    for step in (100, 200, 400, 500):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    assert check(s) == 4                        # no rows yet: every archive read

    write_extract(tmp_path, 600, seed=600)      # a new checkpoint at the end
    analyse(s)
    assert check(s) == 1

    write_extract(tmp_path, 300, seed=300)      # one out of order: its row, and 400's (re-analysed:
    analyse(s)                                  # its previous checkpoint changed)
    assert check(s) == 2

    write_extract(tmp_path, 200, seed=7)        # an archive rewritten (new weights): its row, 300's
    analyse(s)                                  # (previous changed) and every later one's (base...)
    read = check(s)
    assert 2 <= read <= 6

    (tmp_path / "checkpoint-100.h5").unlink()   # the base leaves the run: every analysis is redone
    analyse(s)
    check(s)
    assert check(s) == 0                         # nothing new: nothing read


def test_a_broken_checkpoint_is_left_out_of_the_series_flagged_and_the_later_ones_go_on(tmp_path):
    """A diverged checkpoint in the middle of a run (every logprob, confidence and embedding NaN):
    the series is written from the other checkpoints (equal to a full recompute without it), the
    broken one is reported and flagged by its step and the field, its analysis still runs (so its
    weight flags could be read), only its geometry fails, and every later checkpoint is complete."""
    s = Settings(archive=str(tmp_path))
    for step in (100, 200, 300, 400):
        write_extract(tmp_path, step, seed=step, broken=step == 200)
    report = pipeline.run_cpu_stages(s)
    assert report.analysed == [100, 200, 300, 400]
    assert report.geometry == [100, 200, 300, 400]          # the chain goes on after 200's failure
    assert [(step, stage) for step, stage, _ in report.failed] == [(200, GEOMETRY)], report.failed
    assert "NaN" in report.failed[0][2]
    assert report.series
    why = "answer_logprob is NaN for 12 of 12 probes"
    assert [step for step, _ in report.left_out] == [200] and why in report.left_out[0][1], report.left_out
    archives = series(tmp_path)
    assert all(stage_ok(a, ANALYSIS) for a in archives)
    assert [a.step for a in archives if stage_ok(a, GEOMETRY)] == [100, 300, 400]
    stored = arc.Archive(tmp_path / arc.SERIES_NAME).read(SERIES)
    assert stored["steps"].tolist() == [100, 300, 400]
    assert stored["left_out"]["steps"].tolist() == [200] and why in str(stored["left_out"]["reasons"][0])
    flags = readout.health_flags(tmp_path)
    assert why in flags[200]["non_finite"] and "non_finite" not in flags.get(300, {})
    row = {r.step: r for r in readout.status_rows(tmp_path)}[200]
    assert "non_finite" in row.flags and row.stages[GEOMETRY] == "failed"
    check(s)                                                  # equal to a full recompute without it
    assert not pipeline.run_cpu_stages(s).changed            # and a re-run has nothing to do

    write_extract(tmp_path, 500, seed=500)                    # a new checkpoint: its row only
    report = pipeline.run_cpu_stages(s)
    assert report.series and not report.failed and [step for step, _ in report.left_out] == [200]
    assert check(s) == 0


def test_a_long_lived_process_adds_each_new_row_to_its_stack(tmp_path):
    """A worker keeps the rows it stacked and adds a new checkpoint's row to them (their buffers
    grow past their first size): every step equals a full recompute, and the arrays handed out
    are read-only views that later rows do not change."""
    s = Settings(archive=str(tmp_path))
    for step in (100, 200, 300):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    check(s)
    earlier = None
    for step in range(400, 2400, 100):
        write_extract(tmp_path, step, seed=step)
        analyse(s)
        an.run_series(series(tmp_path), s)      # (not check: its new-process half clears the memo)
        with h5py.File(tmp_path / arc.SERIES_NAME, "r") as f:
            assert int(f[SERIES].attrs["rows_read"]) == 1
        archives = series(tmp_path)
        ctx = series_stage.context(archives, s)
        rows = series_stage.collect_rows(archives, ctx, row_log.load(row_log.log_path(tmp_path)))
        assert rows.read == 0 and not rows.values["answer_logprob"].flags.writeable
        if earlier is not None:
            before, copy = earlier
            assert_same(before, copy)            # a view handed out before is as it was
            assert_same(rows.values["answer_logprob"][: len(before)], copy)
        earlier = (rows.values["answer_logprob"], rows.values["answer_logprob"].copy())
    assert len(series_stage._stacks[str(tmp_path)].buffers["correct"]) > len(archives)    # grown, with room
    assert check(s) == 0                       # the series from the stack equals a full recompute


def test_a_new_checkpoint_appends_its_row_and_nothing_else(tmp_path):
    """The row log is appended to: a new checkpoint adds one record, the bytes before it are
    untouched, and rows of checkpoints that left the run are dropped once they outnumber the live
    ones (a rewrite), so the log stays within about twice its live size."""
    s = Settings(archive=str(tmp_path))
    log = row_log.log_path(tmp_path)
    for step in (100, 200, 300):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    check(s)
    before = log.read_bytes()
    write_extract(tmp_path, 400, seed=400)
    analyse(s)
    assert check(s) == 1
    after = log.read_bytes()
    assert after[:len(before)] == before and len(after) > len(before)
    arc.clear_memo()
    assert row_log.load(log).records == 4
    for seed in range(40):                  # checkpoint 400's archive rewritten again and again
        write_extract(tmp_path, 400, seed=1000 + seed)
        analyse(s)
        an.run_series(series(tmp_path), s)
        arc.clear_memo()
        assert row_log.load(log).records <= 4 + series_stage.REWRITE_AFTER + 1
    check(s)


@pytest.mark.parametrize("stacked", [False, True], ids=["rows-not-stacked", "rows-stacked"])
@pytest.mark.parametrize("fault", ["torn", "damaged", "misshapen", "replaced"])
def test_a_torn_or_damaged_row_log_is_read_up_to_the_fault_and_rewritten(tmp_path, fault, stacked):
    """A writer stopped mid-append leaves a torn record; a flipped byte fails its checksum; a record
    of another shape (checksum and all) cannot be stacked; another process may replace the log.
    Each reads as far as it can, the rows it lacks are read from their archives (or, in a process
    that stacked them before, `stacked`, taken from its stack), the log is mended, and the series
    equals a full recompute."""
    s = Settings(archive=str(tmp_path))
    log = row_log.log_path(tmp_path)
    for step in (100, 200, 300, 400):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    check(s)
    row_log.load(log)                        # this process has parsed it: what changes must be noticed
    data = log.read_bytes()
    if fault == "torn":
        log.write_bytes(data[: len(data) - 7])
    elif fault == "damaged":
        at = len(data) // 2
        log.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    elif fault == "misshapen":                # the newest row again, one value short, checksum valid
        rec = row_log.load(log).rows[series_stage.stamp(series(tmp_path)[-1])]
        values = dict(rec.values)
        values["answer_logprob"] = values["answer_logprob"][:-1]
        with open(log, "ab") as fh:
            fh.write(row_log.encode(rec.signature, rec.stamp, rec.step, values))
    else:                                     # another process rewrote it: the same size, other bytes
        records = list(row_log.load(log).rows.values())
        log.unlink()
        row_log.rewrite(log, [(r.signature, r.stamp, r.step, r.values) for r in reversed(records)])
        arc.clear_memo()
        row_log.load(log)
        other = row_log.encode("other", "stamp", 1, {})
        log.write_bytes(other + b"\0" * (len(data) - len(other)))     # in place: the same size
    got = row_log.load(log)
    if fault == "replaced":
        assert set(got.rows) == {"stamp"}
    else:
        assert len(got.rows) == (4 if fault == "misshapen" else 3 if fault == "torn" else len(got.rows))
        assert fault == "misshapen" or not got.clean
    if not stacked:
        series_stage._stacks.clear()         # this process kept the log's parse, not the rows it stacked
    archives = series(tmp_path)
    read = check(s)
    if stacked and fault != "replaced":      # (replacing it above began with a memo cleared: no stack)
        assert read == 0
    else:
        assert read == {"torn": 1, "misshapen": 1, "replaced": 4}.get(fault, read) and read >= 1
    clean = row_log.load(log)
    assert clean.clean and clean.records == (4 if fault != "misshapen" else 6)    # + the bad one, its fix
    arc.clear_memo()
    again = row_log.load(log)
    assert again.clean and sorted(again.rows) == sorted(series_stage.stamp(a) for a in archives)
    assert check(s) == 0


def test_status_does_not_read_back_the_board_the_series_wrote(tmp_path, monkeypatch):
    """The board is megabytes at 500 checkpoints: the series stage records that the version it wrote
    is readable, so `learnviz status` checks only a board written since (by someone else)."""
    from learnviz import readout
    s = Settings(archive=str(tmp_path))
    for step in (100, 200):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    check(s)
    reads = []
    real = readout.read_board
    monkeypatch.setattr(readout, "read_board", lambda *a, **kw: reads.append(a) or real(*a, **kw))
    assert readout.board_problem(tmp_path) is None and reads == []
    arc.clear_memo()                      # a new process: the mark file says it is the board written
    assert readout.board_problem(tmp_path) is None and reads == []
    mark = tmp_path / readout.BOARD_MARK
    good = mark.read_text()
    mark.write_text("{damaged")           # a damaged mark: the board is read (and is fine)
    arc.clear_memo()
    assert readout.board_problem(tmp_path) is None and len(reads) == 1
    mark.write_text(good)
    board = tmp_path / BOARD_FILE
    st = board.stat()                     # rewritten in place, same size, mtime set back
    text = board.read_text()
    board.write_text("[" + " " * (len(text) - 2) + "]")     # valid JSON, not an object
    os.utime(board, ns=(st.st_atime_ns, st.st_mtime_ns))
    arc.clear_memo()
    assert readout.board_problem(tmp_path) == f"unreadable: {board}: is not a JSON object " \
        "(`learnviz analyze --force` rewrites it)" and len(reads) == 2
    board.write_text('{"steps": [10,')
    assert readout.board_problem(tmp_path).startswith("unreadable: ") and len(reads) == 3


def test_changed_threshold_reads_every_row_again(tmp_path):
    s = Settings(archive=str(tmp_path))
    for step in (100, 200, 300):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    check(s)
    assert check(Settings(archive=str(tmp_path), learned_threshold=0.3)) == 3


def test_differing_answer_tokens_fail_with_the_file_named(tmp_path):
    s = Settings(archive=str(tmp_path))
    for step in (100, 200):
        write_extract(tmp_path, step, seed=step)
    data = arc.Archive(tmp_path / "checkpoint-100.h5").read(EXTRACT)
    for k in ("answer_ids", "token_text", "token_logprob", "token_entropy", "token_top1_prob", "token_argmax"):
        r = data[k]     # the first answer one token shorter (another tokenizer)
        data[k] = arc.Ragged(r.values[1:], np.concatenate([[0], r.offsets[1:] - 1]).astype(np.int64))
    arc.write_stage(tmp_path / "checkpoint-100.h5", EXTRACT, key=arc.StageKey("fp-short", "probes1"),
                    root_attrs={"step": 100, "checkpoint": "/gone", "checkpoint_name": "checkpoint-100"}, data=data,
                    attrs={"layers": [0], "n_layers": 1})
    with pytest.raises(ValueError, match="checkpoint-100.h5: its answer tokens differ"):
        an.run_series(series(tmp_path), s)


def test_figures_read_the_kept_rows_as_they_would_the_archives(tmp_path):
    """The canonical heatmap and the entropy figure take the series' rows instead of reading every
    archive: the same data either way; rows behind the archives are not used."""
    from learnviz.plots import sources

    s = Settings(archive=str(tmp_path))
    for step in (100, 200, 300):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    an.run_series(series(tmp_path), s)
    run = sources.Run(tmp_path)
    probe = sources.canonical_probe(run, None)
    assert run.probes["probe_skill"][probe] == "hard_examples"
    assert sources._hard_rows(run, probe) is not None           # served from series.h5
    kept = sources.canonical_data(run, None), sources.entropy_data(run)

    write_extract(tmp_path, 400, seed=400)                      # series.h5 now behind: not used
    analyse(s)
    run = sources.Run(tmp_path)
    assert sources._hard_rows(run, probe) is None
    assert sources.canonical_data(run, None)["logprobs"].shape[0] == 4
    (tmp_path / "checkpoint-400.h5").unlink()
    (tmp_path / arc.SERIES_NAME).unlink()
    run = sources.Run(tmp_path)
    read = sources.canonical_data(run, None), sources.entropy_data(run)
    for got, want in zip(kept, read):
        assert_same(got, want)


def test_a_new_process_lists_unchanged_archives_from_the_folder_index(tmp_path, monkeypatch):
    """`learnviz status` and the CPU stages of a fresh process read headers and accuracies from the
    folder's index file, not from the archives; a rewritten archive's entry is not used."""
    from learnviz import readout

    for step in (100, 200, 300):
        write_extract(tmp_path, step, seed=step)
    first = readout.status_rows(tmp_path)
    assert not (tmp_path / arc.INDEX_NAME).exists()   # reading writes nothing (the dashboard) ...
    readout.keep_index(tmp_path)                      # ... `learnviz status` and the pipeline keep it
    assert (tmp_path / arc.INDEX_NAME).exists()
    arc.clear_memo()                                  # as a new process
    opened = []
    real = h5py.File
    monkeypatch.setattr(arc.h5py, "File", lambda path, *a, **kw: opened.append(str(path)) or real(path, *a, **kw))
    again = readout.status_rows(tmp_path)
    assert opened == []
    assert [(r.step, r.stages, r.accuracy, r.skills) for r in again] == \
        [(r.step, r.stages, r.accuracy, r.skills) for r in first]
    write_extract(tmp_path, 200, seed=9)              # rewritten: its entry is stale
    arc.clear_memo()
    opened.clear()
    rows = readout.status_rows(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in opened] == ["checkpoint-200.h5", "checkpoint-200.h5"]  # header, accuracy
    assert arc.Archive(tmp_path / "checkpoint-200.h5").key.fingerprint == "fp-200-9"
    assert rows[1].accuracy == pytest.approx(float(np.mean(
        arc.Archive(tmp_path / "checkpoint-200.h5").read(EXTRACT, ["correct"])["correct"])))
    # past max(8, 1/20 of the entries) changes (at most half) the index is written again, with
    # removed archives dropped; fewer are left to the next process to open (not O(N) bytes each time)
    for step in range(400, 1400, 100):
        write_extract(tmp_path, step, seed=step)
    (tmp_path / "checkpoint-300.h5").unlink()
    arc.clear_memo()
    readout.status_rows(tmp_path)
    readout.keep_index(tmp_path)
    entries = json.loads((tmp_path / arc.INDEX_NAME).read_text())["archives"]
    assert "checkpoint-300.h5" not in entries and len(entries) == 12
    assert entries["checkpoint-200.h5"]["attrs"]["fingerprint"] == "fp-200-9"


def test_status_of_a_long_run_shows_the_newest_and_every_failed_or_flagged_one(tmp_path, capsys):
    """`learnviz status` on 30 checkpoints: the newest --last, plus the failed and the flagged ones,
    and a line that says how many it left out; --all and --json give every one."""
    from learnviz import cli, history

    for step in range(100, 3100, 100):
        write_extract(tmp_path, step, seed=step)
    arc.write_stage(tmp_path / "checkpoint-500.h5", ANALYSIS, key=arc.StageKey("fp-500-500", "probes1"),
                    root_attrs={"step": 500}, status="failed", reason="boom")
    history.append(tmp_path, {"step": 800, "probe_hash": "probes1", "health_flags": {"loss_spike": "why"}})

    def status(*extra):
        assert cli.main(["status", "--archive", str(tmp_path), *extra]) == 0
        return capsys.readouterr().out

    def steps(out):
        return [int(w[0]) for w in map(str.split, out.splitlines()) if len(w) > 1 and w[1].startswith("checkpoint-")]

    out = status("--last", "5")
    assert steps(out) == [500, 800, 2600, 2700, 2800, 2900, 3000]
    assert out.splitlines()[0].startswith("30 checkpoints; showing the newest and every failed or flagged one, 23 more")
    assert "step 500 (checkpoint-500) failed: boom" in out and "step 800 (checkpoint-800) flagged loss_spike" in out
    assert steps(status()) == [500, 800] + list(range(1100, 3100, 100))       # default: the newest 20
    assert steps(status("--all")) == list(range(100, 3100, 100))
    assert "more all ok" not in status("--all")
    flagged = status("--flags", "loss_spike").splitlines()     # the rows left out are not "all ok"
    assert flagged[0] == "1 of 30 checkpoints flagged loss_spike" and steps("\n".join(flagged)) == [800]
    cli.main(["status", "--archive", str(tmp_path), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in rows] == list(range(100, 3100, 100))
    assert all(r["accuracy"] is not None for r in rows)


def test_keys_kept_over_the_same_views_equal_keys_computed_afresh(tmp_path):
    """A worker keeps each checkpoint's analysis, geometry and series key inputs by archive view
    (learnviz.analyze._kept): as the run grows, a checkpoint is rewritten in the middle, or the
    settings change, the keys must equal those a new process computes."""
    def keys(s):
        archives = series(s.archive_dir())
        return (an.analysis_keys(archives, list(range(len(archives))), s), an.geometry_keys(archives, s),
                an.series_key(archives, s))

    def afresh(s):
        arc.clear_memo()
        return keys(s)

    s = Settings(archive=str(tmp_path))
    for step in (100, 200, 300):
        write_extract(tmp_path, step, seed=step)
    analyse(s)
    first = keys(s)
    assert keys(s) == first == afresh(s)
    keys(s)                                               # kept by this process from here on
    write_extract(tmp_path, 400, seed=400)                # the run one checkpoint longer
    longer = keys(s)
    assert longer == afresh(s) and longer[1][:3] == first[1] and longer[2] != first[2]
    keys(s)
    write_extract(tmp_path, 200, seed=7)                  # a checkpoint rewritten in the middle
    changed = keys(s)
    assert changed == afresh(s)
    assert changed[1][0] == longer[1][0] and [k.inputs for k in changed[1][2:]] != [k.inputs for k in longer[1][2:]]
    assert changed[0][2] != longer[0][2] and changed[0][3] == longer[0][3]   # the next one's key reads its weights
    keys(s)
    other = Settings(archive=str(tmp_path), umap_seed=s.umap_seed + 1)       # other settings
    assert keys(other) == afresh(other) and keys(other)[1][0] != changed[1][0]
