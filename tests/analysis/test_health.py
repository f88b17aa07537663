"""Health flags on synthetic runs where the answer is known: one outlier checkpoint is flagged,
a steady climb is not, and the checkpoint after a broken one is compared with a healthy one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learnviz.analysis.health import SIGNALS, HealthInputs, _bad, health, robust_z


def climb(k: int = 12, n: int = 400, seed: int = 0, bad: int | None = None) -> HealthInputs:
    """A run whose accuracy climbs steadily (with a little noise), loss and ECE fall and geometry
    drift shrinks; checkpoint `bad` (if any) is broken: most answers wrong, loss up, drift high."""
    rng = np.random.default_rng(seed)
    target = np.linspace(0.2, 0.9, k) + rng.normal(0, 0.01, k)
    correct = np.zeros((k, n), dtype=bool)
    order = rng.permutation(n)
    for i, t in enumerate(target):               # probes are learned in a fixed order: few regressions
        correct[i, order[: int(t * n)]] = True
    loss = np.exp(np.linspace(1.0, -0.5, k) + rng.normal(0, 0.01, k))
    ece = np.linspace(0.3, 0.1, k) + rng.normal(0, 0.005, k)
    drift_prev = np.linspace(0.3, 0.1, k) + rng.normal(0, 0.005, k)
    if bad is not None:
        correct[bad] = rng.random(n) < 0.1
        loss[bad] *= 4
        ece[bad] += 0.3
        drift_prev[bad] = 0.9

    def drift(r: int, i: int) -> float:
        if bad is not None and bad in (r, i):
            return 0.9
        return float(drift_prev[i] * np.sqrt(i - r))      # farther apart, a little more drift

    return HealthInputs(accuracy=correct.mean(axis=1), correct=correct, loss=loss, ece=ece, drift=drift,
                        weight_flags=[{} for _ in range(k)])


def test_a_steady_climb_is_not_flagged():
    for seed in range(5):
        h = health(climb(seed=seed))
        assert h.flagged == [], (seed, h.flags)
        assert np.isfinite(h.z["accuracy_drop"][4:]).all()     # judged, not skipped


def test_a_single_outlier_checkpoint_is_flagged_and_no_other():
    h = health(climb(bad=7))
    assert h.flagged == [7], h.flags
    assert set(h.flags[7]) == set(SIGNALS)
    assert h.z["accuracy_drop"][7] < -3.5 and h.z["loss_spike"][7] > 3.5
    # the checkpoint after it is compared with checkpoint 6, not with the broken one
    assert h.reference[8] == 6 and h.reference[7] == 6
    assert h.values["accuracy_drop"][8] > 0 and h.values["regression_burst"][8] < 0.05


def test_two_broken_checkpoints_in_a_row_start_a_new_normal():
    inp = climb()
    inp.accuracy[6:] -= 0.4           # a lasting shift (e.g. a new probe-relevant regime), not one bad checkpoint
    inp.correct[6:] = False
    h = health(inp)
    assert h.flagged[:2] == [6, 7] and 8 not in h.flagged and 9 not in h.flagged, h.flags
    assert h.reference[7] == 5 and h.reference[8] == 7


def test_early_checkpoints_are_not_judged():
    h = health(climb(bad=2))        # too early: the window holds one value only
    assert 2 not in h.flagged
    assert math.isnan(h.z["accuracy_drop"][2])


def test_weight_flags_are_carried_but_do_not_move_the_reference():
    inp = climb()
    inp.weight_flags[5] = {"dead": ["block.1"], "exploding": []}
    h = health(inp)
    assert h.flagged == [5] and h.flags[5] == {"weights_dead": "block.1"}
    assert h.reference[6] == 5


def test_robust_z_ignores_one_outlier_in_the_window_and_has_a_floor():
    assert robust_z(1.0, [0.0, 0.0, 0.0, 100.0], floor=0.5) == pytest.approx(2.0)
    assert robust_z(0.1, [0.1, 0.1, 0.1], floor=0.02) == 0.0
    assert math.isnan(robust_z(1.0, [], floor=0.1))
    with pytest.raises(ValueError):
        health(climb(), window=0)


def test_a_plateau_after_a_climb_is_no_drop():
    inp = climb()
    inp.accuracy[9:] = inp.accuracy[8] + 0.003          # learning stops: unusual, but nothing dropped
    h = health(inp, z_threshold=2.5)
    assert h.z["accuracy_drop"][9] < -2.5 and "accuracy_drop" not in h.flags[9], h.z["accuracy_drop"]


def _equal(a, b):
    assert a.flags == b.flags and a.reference == b.reference and a.moved_on == b.moved_on
    for s in SIGNALS:
        np.testing.assert_array_equal(a.values[s], b.values[s])
        np.testing.assert_array_equal(a.z[s], b.z[s])


@pytest.mark.parametrize("bad", [None, 6, 13, 14])
def test_resuming_from_an_earlier_result_equals_judging_the_whole_run(bad):
    """A new checkpoint at the end resumes from the earlier result of the run (checkpoint i depends
    on 0..i only); a changed checkpoint resumes from just before it. Both equal a whole pass."""
    whole = health(climb(k=16, bad=bad), min_history=3)
    head = climb(k=16, bad=bad)
    short = HealthInputs(accuracy=head.accuracy[:15], correct=head.correct[:15], loss=head.loss[:15],
                         ece=head.ece[:15], drift=head.drift, weight_flags=head.weight_flags[:15])
    earlier = health(short, min_history=3)
    _equal(health(climb(k=16, bad=bad), min_history=3, resume=earlier, same=15), whole)
    # the earlier result of another run, resumed from a checkpoint before where it differs
    other = health(climb(k=16, bad=3, seed=1), min_history=3)
    _equal(health(climb(k=16, bad=bad), min_history=3, resume=other, same=0), whole)
    # other settings: nothing is kept
    _equal(health(climb(k=16, bad=bad), min_history=3, resume=health(short, min_history=4), same=15), whole)


@pytest.mark.parametrize("changed", [1, 8, 15])
def test_resuming_before_a_changed_checkpoint_equals_judging_the_whole_run(changed):
    before = health(climb(k=16, bad=9), min_history=3)
    after_inputs = climb(k=16, bad=9)
    after_inputs.ece[changed] += 0.4                      # a recomputed analysis: a calibration jump
    after_inputs.correct[changed] = ~after_inputs.correct[changed]
    after_inputs.accuracy[changed] = after_inputs.correct[changed].mean()
    whole = health(after_inputs, min_history=3)
    assert not np.array_equal(whole.values["calibration_jump"], before.values["calibration_jump"], equal_nan=True)
    _equal(health(after_inputs, min_history=3, resume=before, same=changed), whole)


def plateau_then_takeoff(k: int = 12, n: int = 400, fault: int | None = None) -> HealthInputs:
    """Accuracy flat near 0.1 for six checkpoints, then a take-off (0.1 -> 0.55 -> 0.8) with its
    representation moving and its calibration worsening (confidence ahead of accuracy), then a
    plateau; checkpoint `fault` (if any) loses most of what was learned."""
    acc = np.asarray([0.1, 0.11, 0.1, 0.12, 0.11, 0.12, 0.55, 0.8, 0.81, 0.82, 0.82, 0.83][:k])
    rng = np.random.default_rng(1)
    order = rng.permutation(n)
    correct = np.zeros((k, n), dtype=bool)
    for i, a in enumerate(acc):
        correct[i, order[: int(a * n)]] = True
    if fault is not None:
        correct[fault] = False
        correct[fault, order[: int(0.15 * n)]] = True
    ece = np.asarray([0.05, 0.05, 0.06, 0.05, 0.05, 0.06, 0.40, 0.25, 0.12, 0.1, 0.1, 0.1][:k])
    drift = np.asarray([0.1, 0.1, 0.11, 0.1, 0.1, 0.1, 0.6, 0.4, 0.1, 0.1, 0.1, 0.1][:k])
    return HealthInputs(accuracy=correct.mean(axis=1), correct=correct, loss=np.full(k, np.nan), ece=ece,
                        drift=lambda r, i: float(drift[i]), weight_flags=[{} for _ in range(k)])


def test_a_take_off_is_not_flagged_for_its_drift_or_calibration():
    """Where accuracy climbs by more than the floor, the representation's drift and the
    calibration's worsening are how a model learns: no flag. The same spikes on a flat step are."""
    h = health(plateau_then_takeoff())
    assert h.flagged == [], h.flags
    assert h.z["calibration_jump"][6] > 3.5 and h.z["geometry_drift_spike"][6] > 3.5   # judged, and large
    flat = plateau_then_takeoff()
    flat.accuracy[6:] = flat.accuracy[5]
    flat.correct[6:] = flat.correct[5]
    assert {"calibration_jump", "geometry_drift_spike"} <= set(health(flat).flags[6])


def test_a_checkpoint_that_loses_half_its_accuracy_is_flagged_after_a_take_off():
    """After a take-off the trailing window of accuracy changes is unsteady, so a z-score alone
    misses a collapse from 0.81 to 0.15; losing half the reference's accuracy is a drop."""
    h = health(plateau_then_takeoff(fault=9))
    assert h.flagged == [9] and "accuracy_drop" in h.flags[9], h.flags
    # the demo's planted fault with today's libraries: -0.63 from 0.77, robust z -3.1
    assert _bad("accuracy_drop", -0.63, -3.1, 3.5, 0.02, before=0.77)
    assert not _bad("accuracy_drop", -0.08, -3.1, 3.5, 0.02, before=0.77)    # neither a z nor half
    assert not _bad("accuracy_drop", -0.06, -3.1, 3.5, 0.02, before=0.1)     # half, but of little
