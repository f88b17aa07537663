"""Data impact on synthetic runs where the answer is known: a source that alone raises a skill is
found and significant; with the mixes shuffled, no source is significantly different."""

from __future__ import annotations

import numpy as np

from learnviz.analysis.data_impact import data_impact, significant


def run(m: int = 14, seed: int = 0):
    """m intervals of varied length and mix over three sources; only `hard` raises skill_hard
    (0.05 per 1000 of its examples); every interval also improves skill_easy by generic progress."""
    rng = np.random.default_rng(seed)
    steps = np.cumsum(np.r_[10, rng.integers(20, 60, m)])
    length = np.diff(steps) * 32
    shares = rng.dirichlet([1.0, 1.0, 1.0], m)
    mix = np.round(shares * length[:, None]).astype(np.int64)
    sources = ["easy", "hard", "web"]
    progress = np.log(steps[1:] + 1) - np.log(steps[:-1] + 1)
    hard = 0.05 * mix[:, 1] / 1000 + rng.normal(0, 0.003, m)
    easy = 0.2 * progress + rng.normal(0, 0.003, m)
    return steps, mix, sources, np.stack([hard, easy], axis=1)


def test_a_source_that_alone_raises_a_skill_is_found():
    for seed in range(3):
        steps, mix, sources, change = run(seed=seed)
        imp = data_impact(steps, mix, sources, change, ["skill_hard", "skill_easy"], n_permutations=499)
        assert imp.ranking("skill_hard")[0] == "hard", (seed, imp.beta)
        j = imp.sources.index("hard")
        assert abs(imp.beta[j, 0] - 0.05) < 4 * imp.stderr[j, 0] + 0.005
        assert significant(imp)[j, 0] and imp.p_value[j, 0] < 0.01
        # the generic progress term takes skill_easy's rise: no source stands out for it
        assert not significant(imp)[:, 1].any(), imp.p_value
        assert imp.note == ""


def test_shuffled_mixes_give_no_significant_impact():
    hits = 0
    for seed in range(20):
        steps, mix, sources, change = run(seed=seed)
        rng = np.random.default_rng(100 + seed)
        shuffled = mix[rng.permutation(len(mix))]          # the changes no longer belong to these mixes
        imp = data_impact(steps, shuffled, sources, change[:, :1], ["skill_hard"], n_permutations=199, seed=seed)
        hits += int(significant(imp).any())
    # three tests per run at alpha 0.05: chance alone flags a few runs, not most of them
    assert hits <= 5, hits


def test_one_fixed_mix_is_not_estimated_and_says_why():
    steps = np.arange(0, 110, 10)
    mix = np.tile([100, 100], (10, 1))
    imp = data_impact(steps, mix, ["a", "b"], np.random.default_rng(0).normal(size=(10, 1)), ["s"])
    assert np.isnan(imp.beta).all() and "collinear" in imp.note


def test_too_few_intervals_says_so():
    imp = data_impact([0, 10, 20], np.array([[5, 0], [0, 5]]), ["a", "b"], np.zeros((2, 1)), ["s"])
    assert np.isnan(imp.beta).all() and "needs at least" in imp.note
