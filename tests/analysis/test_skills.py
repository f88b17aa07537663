"""skill_scores and compare_to_base on hand-counted probe sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learnviz.analysis.skills import SkillScores, compare_to_base, skill_scores


def test_accuracy_per_skill_and_category_by_hand():
    correct = np.array([True, False, True, True, False, False, True])
    skills = ["easy", "easy", "hard", "easy", "hard", "edge", "hard"]
    cats = ["barbara", "celarent", "chain4", "barbara", "chain4", "negation", "broken"]
    r = skill_scores(correct, skills, cats)
    assert list(r.skills) == ["easy", "hard", "edge"]                  # first-seen order
    assert r.skills == {"easy": pytest.approx(2 / 3), "hard": pytest.approx(2 / 3), "edge": 0.0}
    assert r.counts == {"easy": 3, "hard": 3, "edge": 1}
    assert list(r.categories) == ["easy/barbara", "easy/celarent", "hard/chain4", "edge/negation", "hard/broken"]
    assert r.categories == {"easy/barbara": 1.0, "easy/celarent": 0.0, "hard/chain4": 0.5,
                            "edge/negation": 0.0, "hard/broken": 1.0}
    assert r.category_counts["hard/chain4"] == 2
    assert r.overall == pytest.approx(4 / 7)


def test_same_category_name_under_two_skills_is_kept_apart():
    r = skill_scores([True, False], np.array(["a", "b"], dtype=object), np.array(["x", "x"], dtype=object))
    assert r.categories == {"a/x": 1.0, "b/x": 0.0}


def test_compare_to_base():
    base = skill_scores([False, False, True, False], ["easy", "easy", "hard", "hard"], ["c"] * 4)
    cur = skill_scores([True, False, True, True, True], ["easy", "easy", "hard", "hard", "new"], ["c"] * 5)
    d = compare_to_base(cur, base)
    assert list(d) == ["easy", "hard", "new"]
    assert d["easy"] == pytest.approx(0.5 - 0.0)
    assert d["hard"] == pytest.approx(1.0 - 0.5)
    assert math.isnan(d["new"])
    assert compare_to_base({"easy": 0.25}, base) == {"easy": 0.25}
    assert compare_to_base(base, base) == {"easy": 0.0, "hard": 0.0}


def test_empty_and_zero_one_input():
    r = skill_scores(np.zeros(0, bool), [], [])
    assert r.skills == {} and r.categories == {} and r.counts == {} and math.isnan(r.overall)
    assert isinstance(r, SkillScores)
    assert skill_scores(np.array([1, 0]), ["s", "s"], ["c", "c"]).skills == {"s": 0.5}


def test_bad_input():
    with pytest.raises(ValueError, match="skills has 1 entries"):
        skill_scores([True, False], ["a"], ["x", "y"])
    with pytest.raises(ValueError, match="categories has 3 entries"):
        skill_scores([True, False], ["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="booleans"):
        skill_scores(np.array([0.5, np.nan]), ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="one-dimensional"):
        skill_scores(np.ones((2, 2), bool), ["a", "b"], ["x", "y"])


def test_demo_archive_matches_pipeline_skill_accuracy(demo):
    from learnviz.archive import list_archives
    from learnviz.readout import skill_accuracy
    archives = list_archives(demo.archive_dir())
    d = archives[-1].read("extract", ["correct", "probe_skill", "probe_category"])
    r = skill_scores(d["correct"], d["probe_skill"], d["probe_category"])
    assert r.skills == pytest.approx(skill_accuracy(d["correct"], list(d["probe_skill"])))
    assert sum(r.counts.values()) == len(d["correct"]) == sum(r.category_counts.values())
