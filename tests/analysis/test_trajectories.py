from __future__ import annotations

import numpy as np
import pytest

from learnviz.analysis.trajectories import logprob_trajectories
from learnviz.archive import Ragged

# probabilities per sorted step (10, 20, 30), per probe, per answer token
P = {10: [[0.1, 0.6], [0.7], [0.2, 0.9, 0.1]],
     20: [[0.6, 0.4], [0.8], [0.3, 0.9, 0.2]],
     30: [[0.9, 0.7], [0.9], [0.4, 0.3, 0.6]]}
CATS = ["a", "a", "b"]


def _ragged(step):
    return Ragged.from_rows([np.log(r) for r in P[step]], np.float32)


def _traj(**kw):
    steps = [20, 10, 30]                                  # unsorted on purpose
    return logprob_trajectories(steps, [_ragged(s) for s in steps], CATS, **kw)


def test_small_case_by_hand():
    t = _traj()
    assert t.steps.tolist() == [10, 20, 30]
    assert np.exp(t.per_probe[0]) == pytest.approx(np.array([[0.1, 0.6], [0.6, 0.4], [0.9, 0.7]]), rel=1e-6)
    assert t.per_probe[2].shape == (3, 3)
    # above 0.5 from then on: .1 .6 .9 -> 20 ; .6 .4 .7 -> 30 (the dip resets it) ; .7 .8 .9 -> 10
    # .2 .3 .4 -> never ; .9 .9 .3 -> never (lost again) ; .1 .2 .6 -> 30
    assert [a.tolist() for a in t.learned_at] == [[20, 30], [10], [-1, -1, 30]]
    assert t.order == [(1, 0, 10), (0, 0, 20), (0, 1, 30), (2, 2, 30), (2, 0, -1), (2, 1, -1)]
    assert t.n_learned == 4 and t.max_len == 3
    a = t.category_mean["a"]
    assert a.shape == (3, 3)
    assert a[:, 0] == pytest.approx(np.log([[0.1, 0.7], [0.6, 0.8], [0.9, 0.9]]).mean(1), rel=1e-6)
    assert a[:, 1] == pytest.approx(np.log([0.6, 0.4, 0.7]), rel=1e-6)
    assert np.isnan(a[:, 2]).all()                        # no probe of "a" has 3 tokens
    assert np.exp(t.category_mean["b"][2]) == pytest.approx([0.4, 0.3, 0.6], rel=1e-6)


def test_threshold_is_a_parameter():
    t = _traj(threshold=0.85)
    assert [a.tolist() for a in t.learned_at] == [[30, -1], [30], [-1, -1, -1]]
    assert t.threshold == 0.85 and t.n_learned == 2


def test_single_checkpoint_and_nan():
    rows = Ragged.from_rows([[np.log(0.9), np.nan], [np.log(0.2)]], np.float32)
    t = logprob_trajectories([5], [rows], ["x", "x"])
    assert [a.tolist() for a in t.learned_at] == [[5, -1], [-1]]
    assert t.category_mean["x"][0, 0] == pytest.approx(np.log([0.9, 0.2]).mean(), rel=1e-6)
    assert np.isnan(t.category_mean["x"][0, 1])


def test_plus_inf_logprob_is_no_value():
    # +inf is no log-probability (an overflow): it was averaged in (category mean +inf) and
    # counted as learned; now it is left out like NaN, while -inf (probability 0) stays in
    rows = Ragged.from_rows([[np.inf, np.log(0.9)], [np.log(0.2), -np.inf]], np.float32)
    t = logprob_trajectories([5], [rows], ["x", "x"])
    assert [a.tolist() for a in t.learned_at] == [[-1, 5], [-1, -1]]
    assert t.category_mean["x"][0, 0] == pytest.approx(np.log(0.2), rel=1e-6)
    assert t.category_mean["x"][0, 1] == -np.inf
    assert t.per_probe[0][0, 0] == np.inf


def test_bad_input():
    steps = [10, 20]
    good = _ragged(10)
    other = Ragged.from_rows([[0.0], [0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    with pytest.raises(ValueError, match="differ"):
        logprob_trajectories(steps, [good, other], CATS)
    with pytest.raises(ValueError, match="distinct"):
        logprob_trajectories([10, 10], [good, good], CATS)
    with pytest.raises(ValueError, match="threshold"):
        logprob_trajectories(steps, [good, good], CATS, threshold=1.0)
    with pytest.raises(ValueError, match="categories"):
        logprob_trajectories(steps, [good, good], CATS[:2])
    with pytest.raises(ValueError, match="at least one checkpoint"):
        logprob_trajectories([], [], CATS)


def test_demo_archive_tokens_get_learned(demo):
    from learnviz.archive import list_archives

    archives = list_archives(demo.archive_dir())[::-1]                  # newest first: the function sorts
    skill = archives[0].read("extract", ["probe_skill"])["probe_skill"]
    lps = [a.read("extract", ["token_logprob"])["token_logprob"] for a in archives]
    t = logprob_trajectories([a.step for a in archives], lps, skill)
    easy = t.category_mean["syllo_easy"]
    assert np.all(easy[-1] > easy[0])                     # every answer position improves
    total = sum(len(a) for a in t.learned_at)
    assert t.n_learned > total / 2                        # most expected tokens are learned...
    assert all(step > t.steps[0] for _, _, step in t.order[:t.n_learned])  # ...none before training
    learned = [s for _, _, s in t.order[:t.n_learned]]
    assert learned == sorted(learned) and all(s == -1 for _, _, s in t.order[t.n_learned:])
