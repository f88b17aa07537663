from __future__ import annotations

import numpy as np
import pytest

from learnviz.analysis.cartography import cartography


def _small():
    # per-token probabilities at 2 checkpoints; answer_logprob = len * log(p)
    p = np.array([[0.9, 0.1, 0.2, 0.5],
                  [0.9, 0.9, 0.3, 0.5]])
    length = np.array([2, 1, 3, 4])
    correct = np.array([[True, False, False, False],
                        [True, True, False, True]])
    return length * np.log(p), length, correct


def test_small_case_by_hand():
    c = cartography(*_small())
    assert c.confidence == pytest.approx([0.9, 0.5, 0.25, 0.5])
    assert c.variability == pytest.approx([0.0, 0.4, 0.05, 0.0])      # |a - b| / 2 for two values
    assert c.correctness.tolist() == [1.0, 0.5, 0.0, 0.5]
    # .9/0 easy ; var .4 ambiguous ; .25/.05 hard ; .5/0 easy (thresholds are inclusive)
    assert c.region.tolist() == ["easy-to-learn", "ambiguous", "hard-to-learn", "easy-to-learn"]
    assert c.counts == {"easy-to-learn": 2, "ambiguous": 1, "hard-to-learn": 1}
    assert (c.n_checkpoints, c.confidence_threshold, c.variability_threshold) == (2, 0.5, 0.2)


def test_three_checkpoints_population_std_and_thresholds():
    p = np.array([[0.2], [0.5], [0.8]])
    c = cartography(np.log(p), np.array([1]), np.zeros((3, 1), bool))
    assert c.variability[0] == pytest.approx(np.sqrt(0.06))           # ddof=0: sqrt((.09+0+.09)/3)
    assert c.region[0] == "ambiguous"
    c = cartography(np.log(p), np.array([1]), np.zeros((3, 1), bool), variability_threshold=0.25,
                    confidence_threshold=0.6)
    assert c.region[0] == "hard-to-learn"


def test_long_answers_are_not_penalised():
    # 50 tokens at 0.9 each: the product is 0.005, the per-token probability 0.9
    lp = np.full((2, 1), 50 * np.log(0.9))
    c = cartography(lp, np.array([50]), np.ones((2, 1), bool))
    assert c.confidence[0] == pytest.approx(0.9) and c.region[0] == "easy-to-learn"


def test_bad_input():
    lp, length, correct = _small()
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        cartography(lp[:1], length, correct[:1])
    with pytest.raises(ValueError, match="answer_len"):
        cartography(lp, np.array([2, 0, 3, 4]), correct)
    with pytest.raises(ValueError, match="answer_len must be"):
        cartography(lp, length[:3], correct)
    bad = lp.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cartography(bad, length, correct)
    with pytest.raises(ValueError, match="<= 0"):
        cartography(-lp, length, correct)
    with pytest.raises(ValueError, match="threshold"):
        cartography(lp, length, correct, confidence_threshold=1.5)


def test_demo_archive_easy_probes_become_easy_to_learn(demo):
    from helpers import demo_fault_step

    from learnviz.archive import list_archives

    # the planted bad checkpoint measures noise, not training: left out (the halves stay those of
    # the demo's checkpoints)
    every = list_archives(demo.archive_dir())
    half = every[len(every) // 2].step
    archives = [a for a in every if a.step != demo_fault_step(demo)]
    skill = archives[0].read("extract", ["probe_skill"])["probe_skill"]
    data = [a.read("extract", ["answer_logprob", "correct", "answer_ids"]) for a in archives]
    lp = np.stack([d["answer_logprob"] for d in data])
    correct = np.stack([d["correct"] for d in data])
    length = np.diff(data[0]["answer_ids"].offsets)
    easy = skill == "syllo_easy"
    # from random init every learned probe climbs from ~0 to ~1: ambiguous over the whole run
    full = cartography(lp, length, correct)
    assert full.counts["ambiguous"] > 0.8 * len(skill)
    # over the second half the easy skill has settled
    start = [a.step for a in archives].index(half)
    late = cartography(lp[start:], length, correct[start:])
    assert (late.region[easy] == "easy-to-learn").mean() > 0.9
    assert late.correctness[easy].mean() > late.correctness[skill == "syllo_hard"].mean() + 0.3
