from __future__ import annotations

import numpy as np
import pytest

from learnviz.analysis.errors import error_position_trend, localize_errors
from learnviz.archive import Ragged


def _small():
    ids = [[5, 6, 7], [5, 6], [8, 9, 10, 11], [4], [1, 2, 3, 4], [2]]
    arg = [[5, 9, 0], [5, 6], [8, 9, 10, 11], [3], [1, 2, 3, 4], [2]]
    div = np.array([1, 2, 4, 0, 4, -1], dtype=np.int32)
    correct = np.array([False, False, True, False, False, False])
    return Ragged.from_rows(ids, np.int32), Ragged.from_rows(arg, np.int32), div, correct


def test_small_case_by_hand():
    e = localize_errors(*_small())
    # probe 0 misses at 1 and 2 -> first is 1; probes 1, 2, 4, 5 follow the argmax path
    assert e.teacher_forced.tolist() == [1, -1, -1, 0, -1, -1]
    # probe 2 is right (a harmless run-on): -1; probe 5 is wrong without a departure
    assert e.free.tolist() == [1, 2, -1, 0, 4, -1]
    assert e.max_len == 4
    # positions 0, 1, 2 once; probe 4 (right answer, no stop, departs at 4 = max_len) in the last bin
    assert e.histogram.tolist() == [1, 1, 1, 0, 1]
    assert e.failed == 5 and e.unlocated == 1
    assert e.histogram.sum() == e.failed - e.unlocated


def test_all_right():
    ids, arg, _, _ = _small()
    e = localize_errors(ids, arg, np.full(6, -1), np.ones(6, bool))
    assert e.failed == 0 and e.histogram.tolist() == [0] * 5 and (e.free == -1).all()


def test_bad_input():
    ids, arg, div, correct = _small()
    shifted = Ragged.from_rows([[5, 6], [5, 6, 7], [8, 9, 10, 11], [3], [1, 2, 3, 4], [2]], np.int32)
    with pytest.raises(ValueError, match="same rows"):
        localize_errors(ids, shifted, div, correct)
    with pytest.raises(ValueError, match="6 probes"):
        localize_errors(ids, arg, div[:5], correct)
    with pytest.raises(ValueError, match="-1"):
        localize_errors(ids, arg, div - 3, correct)
    with pytest.raises(ValueError, match="at least one"):
        localize_errors(Ragged.from_rows([], np.int32), Ragged.from_rows([], np.int32), [], [])


def test_trend_sorts_steps_and_ranks_drops():
    t = error_position_trend([30, 10, 20], [[0, 1, 2], [5, 1, 3], [4, 2, 0]])
    assert t.steps.tolist() == [10, 20, 30]
    assert t.histograms.tolist() == [[5, 1, 3], [4, 2, 0], [0, 1, 2]]
    assert t.first.tolist() == [5, 1, 3] and t.last.tolist() == [0, 1, 2]
    assert t.change.tolist() == [-5, 0, -1]
    assert t.improving.tolist() == [0, 2] and t.drop.tolist() == [5, 1]
    # equal drops: lower position first; a rise is not improving
    t = error_position_trend([1, 2], [[3, 3, 0, 1], [1, 1, 0, 4]])
    assert t.improving.tolist() == [0, 1] and t.drop.tolist() == [2, 2] and t.change[3] == 3


def test_trend_single_checkpoint_and_bad_input():
    t = error_position_trend([7], [[2, 1]])
    assert t.change.tolist() == [0, 0] and len(t.improving) == 0
    with pytest.raises(ValueError, match="equal length"):
        error_position_trend([1, 2], [[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="distinct"):
        error_position_trend([1, 1], [[1], [2]])
    with pytest.raises(ValueError, match="at least one"):
        error_position_trend([], [])


def test_demo_archive_errors_fall_and_move(demo):
    from learnviz.archive import list_archives

    archives = list_archives(demo.archive_dir())
    keys = ["answer_ids", "token_argmax", "first_divergence", "correct"]
    results = [localize_errors(*(a.read("extract", keys)[k] for k in keys)) for a in archives]
    first, last = results[0], results[-1]
    assert first.failed == 525 and last.failed < 150
    for e in results:
        wrong = e.free >= 0
        # greedy decoding follows the argmax path, so where the argmax path departs, greedy does too
        tf = wrong & (e.teacher_forced >= 0)
        assert np.array_equal(e.free[tf], e.teacher_forced[tf])
    trend = error_position_trend([a.step for a in archives], [e.histogram for e in results])
    assert trend.change.sum() == last.histogram.sum() - first.histogram.sum() < 0
    assert len(trend.improving) > 0 and trend.improving[0] == 0   # most errors vanish at the first token
