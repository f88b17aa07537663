from __future__ import annotations

import numpy as np
import pytest

from learnviz.analysis.entropy import entropy_summary
from learnviz.archive import Ragged


def _small():
    rows = [[0.1, 0.2, 0.3],      # mean 0.2  -> sure; wrong -> overconfident
            [0.1, 0.1],           # mean 0.1  -> sure; right -> not flagged
            [3.0, 2.0, 4.0, 3.0], # mean 3.0  -> uncertain
            [1.0]]                # mean 1.0  -> neither
    return Ragged.from_rows(rows, np.float32), np.array([False, True, False, True]), ["a", "a", "b", "b"]


def test_small_case_by_hand():
    ent, correct, cats = _small()
    s = entropy_summary(ent, correct, cats)
    assert s.probe_mean == pytest.approx([0.2, 0.1, 3.0, 1.0])
    assert s.count_by_position.tolist() == [4, 3, 2, 1]
    # position 0: (.1+.1+3+1)/4 ; 1: (.2+.1+2)/3 ; 2: (.3+4)/2 ; 3: 3
    assert s.mean_by_position == pytest.approx([4.2 / 4, 2.3 / 3, 4.3 / 2, 3.0])
    assert s.mean_by_category == pytest.approx({"a": 0.15, "b": 2.0})
    assert s.overconfident.tolist() == [True, False, False, False]
    assert s.uncertain.tolist() == [False, False, True, False]
    assert (s.n_overconfident, s.n_uncertain) == (1, 1)
    assert (s.low, s.high) == (0.3, 2.0)


def test_thresholds_are_parameters():
    ent, correct, cats = _small()
    s = entropy_summary(ent, correct, cats, low=1.5, high=2.5)
    # probe 3 (mean 1.0, right) is sure but right; probe 0 still overconfident
    assert s.overconfident.tolist() == [True, False, False, False]
    s = entropy_summary(ent, ~correct, cats, low=1.5, high=3.5)
    assert s.overconfident.tolist() == [False, True, False, True]
    assert not s.uncertain.any()


def test_empty_answer_and_nan_are_left_out():
    ent = Ragged.from_rows([[], [np.nan, 1.0], [np.nan]], np.float32)
    s = entropy_summary(ent, np.array([False, False, False]), ["x", "x", "y"], low=2.0)
    assert np.isnan(s.probe_mean[0]) and s.probe_mean[1] == 1.0 and np.isnan(s.probe_mean[2])
    assert s.count_by_position.tolist() == [2, 1]
    assert np.isnan(s.mean_by_position[0]) and s.mean_by_position[1] == 1.0
    assert s.mean_by_category["x"] == 1.0 and np.isnan(s.mean_by_category["y"])
    assert s.overconfident.tolist() == [False, True, False]     # NaN means raise no flag


def test_bad_input():
    ent, correct, cats = _small()
    with pytest.raises(ValueError, match="at least one"):
        entropy_summary(Ragged.from_rows([], np.float32), np.array([], bool), [])
    with pytest.raises(ValueError, match="4 probes"):
        entropy_summary(ent, correct[:3], cats)
    with pytest.raises(ValueError, match="low"):
        entropy_summary(ent, correct, cats, low=3.0, high=2.0)


def test_demo_archive_entropy_falls_as_the_model_learns(demo):
    from learnviz.archive import list_archives

    archives = list_archives(demo.archive_dir())
    skill = archives[0].read("extract", ["probe_skill"])["probe_skill"]
    out = []
    for a in (archives[0], archives[-1]):
        d = a.read("extract", ["token_entropy", "correct"])
        out.append(entropy_summary(d["token_entropy"], d["correct"], skill))
    first, last = out
    # untrained: every probe is uncertain (near ln V); trained: most are sure
    assert first.uncertain.mean() > 0.9 and last.uncertain.mean() < 0.05
    assert np.all(last.mean_by_position < first.mean_by_position)
    assert last.mean_by_category["syllo_easy"] < 0.5 < 2.0 < first.mean_by_category["syllo_easy"]
    # a model that learns is often sure and wrong on the hard skill, not on the easy one
    sure_wrong = {c: last.overconfident[skill == c].mean() for c in ("syllo_easy", "syllo_hard")}
    assert sure_wrong["syllo_hard"] > sure_wrong["syllo_easy"]
