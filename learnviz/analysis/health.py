"""Checkpoint health: flags that say, unasked, that a checkpoint looks wrong.

For each checkpoint i (in step order) and each signal below, the value at i is compared with the
same signal at the run's recent healthy checkpoints (the trailing window: the last `window`
unflagged checkpoints before i) by a robust z-score

    z = (x_i - median(window)) / max(1.4826 * MAD(window), floor)

(MAD: the median absolute deviation; 1.4826 * MAD estimates a standard deviation that one outlier
cannot inflate; `floor` keeps a window of near-equal values from turning a tiny change into a
huge z). A checkpoint is flagged for a signal when z passes `z_threshold` in the signal's bad
direction. The signals compare checkpoint i with its reference r, the last unflagged checkpoint
before it (usually i - 1), so that the checkpoint after a broken one is compared with a healthy
one, not with the broken one (its recovery is not a spike), and flagged checkpoints never enter a
later window. Only one flagged checkpoint is passed over: when two in a row are flagged, the
run has moved on (a lasting change, not one broken checkpoint) and the next is compared with the
last of them, which then counts as healthy, so one alarm never turns into a flag on every later
checkpoint:

    accuracy_drop         accuracy_i - accuracy_r                     z < -threshold and the change < -floor,
                                                                      or half of accuracy_r lost (and 5 floors)
    regression_burst      share of probes right at r and wrong at i   z > threshold
    loss_spike            log(loss_i / loss_r), eval loss else training loss   z > threshold and > floor
    geometry_drift_spike  RSA drift of the last pooled layer, r -> i  z > threshold, not on a learning step
    calibration_jump      ECE_i - ECE_r                               z > threshold and > floor (worse),
                                                                      not on a learning step

(For the changes, the value itself must go the bad way too: accuracy that plateaus after a climb
is unusual, but it is no drop. A learning step is one whose accuracy rose by more than the floor:
a model taking off moves its representation and grows confident before it grows right, which
is no fault. A checkpoint that lost half its reference's accuracy has dropped even when the run's
recent steps were so unsteady, a take-off among them, that the z-score alone would not say so.)

A signal is judged once its window holds at least `min_history` values; before that (the first
checkpoints of a run), or where a value is missing (no loss logged), it is not. Every value in
one signal is in units of about [0, 1] (accuracy, shares, ECE, RSA drift, relative loss change),
so one `floor` serves them all.

The weight flags of the analysis (exploding, vanishing, dead layers; learnviz.analysis.weight_drift)
are added to the checkpoint's flags as they are: they are thresholds, not z-scores, and do not
change which checkpoint is the reference of the next.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

SIGNALS = ("accuracy_drop", "regression_burst", "loss_spike", "geometry_drift_spike", "calibration_jump")
WEIGHT_FLAGS = ("exploding", "vanishing", "dead")
MAD_SCALE = 1.4826
METHOD = "robust z-score (median, 1.4826 MAD) against the trailing window of unflagged checkpoints"


def robust_z(value: float, window: Sequence[float], floor: float) -> float:
    """(value - median(window)) / max(1.4826 * MAD(window), floor). NaN for a NaN value or an
    empty window. (Plain Python: a window holds a handful of values, where numpy's median costs
    ten times more; the health of a 500-checkpoint run takes thousands of them.)"""
    w = [float(x) for x in window if x is not None and math.isfinite(x)]
    if not w or value is None or not math.isfinite(value):
        return math.nan
    med = statistics.median(w)
    scale = max(MAD_SCALE * statistics.median([abs(x - med) for x in w]), floor)
    return (float(value) - med) / scale


def _trailing(values: np.ndarray, healthy: list[int], window: int) -> list[float]:
    """The last `window` finite values of `values` at the `healthy` indices, oldest first: read
    from the end, so a checkpoint costs O(window), not O(run)."""
    out: list[float] = []
    for j in reversed(healthy):
        v = float(values[j])
        if math.isfinite(v):
            out.append(v)
            if len(out) == window:
                break
    out.reverse()
    return out


@dataclass(frozen=True)
class Health:
    """Per checkpoint (in the order given): the signals, their z-scores, the flags raised.

    `values`, `z`: signal -> (k,) float64, NaN where not measured or not judged. `flags`: per
    checkpoint, flag name -> why (a sentence with the value, the window's median and z; for a
    weight flag, the layers). `reference`: per checkpoint, the index it was compared with (-1 for
    the first)."""
    values: dict[str, np.ndarray]
    z: dict[str, np.ndarray]
    flags: list[dict[str, str]]
    reference: list[int]
    window: int
    z_threshold: float
    min_history: int
    floor: float
    method: str = METHOD
    moved_on: list[bool] = field(default_factory=list)   # per checkpoint: judged by z and not the run's new normal

    @property
    def flagged(self) -> list[int]:
        """Indices of the checkpoints with at least one flag."""
        return [i for i, f in enumerate(self.flags) if f]


@dataclass
class HealthInputs:
    """What the flags are computed from, per checkpoint i (k checkpoints, n probes).

    `accuracy` (k,) share of probes right; `correct` (k, n) bool; `loss` (k,) eval or training
    loss, NaN where not logged; `ece` (k,), NaN where not analysed; `drift(r, i)` the RSA drift of
    the last pooled layer between checkpoints r and i, NaN when unknown (None: no geometry);
    `weight_flags` per checkpoint, flag -> layer names."""
    accuracy: np.ndarray
    correct: np.ndarray
    loss: np.ndarray
    ece: np.ndarray
    drift: Callable[[int, int], float] | None = None
    weight_flags: list[Mapping[str, Sequence[str]]] = field(default_factory=list)


def _signal(name: str, inp: HealthInputs, r: int, i: int) -> float:
    if name == "accuracy_drop":
        return float(inp.accuracy[i] - inp.accuracy[r])
    if name == "regression_burst":
        return float(np.mean(inp.correct[r] & ~inp.correct[i])) if inp.correct.shape[1] else math.nan
    if name == "loss_spike":
        a, b = inp.loss[r], inp.loss[i]
        return float(math.log(b) - math.log(a)) if a > 0 and b > 0 and np.isfinite(a) and np.isfinite(b) else math.nan
    if name == "geometry_drift_spike":
        return float(inp.drift(r, i)) if inp.drift is not None else math.nan
    if name == "calibration_jump":
        return float(inp.ece[i] - inp.ece[r])
    raise ValueError(f"unknown health signal {name!r}")


GROSS_DROP = 5           # accuracy_drop: a loss of half the reference's accuracy and of this many floors


def _bad(signal: str, value: float, z: float, z_threshold: float, floor: float, *,
         learned: float = math.nan, before: float = math.nan) -> bool:
    """Beyond the threshold in the bad direction, and for the changes a real change that way: a
    plateau after a climb is unusual but no drop, a loss that falls more slowly no spike.
    `learned`: the accuracy change over the same step; on a step where accuracy climbs by more
    than `floor` the representation moves and confidence runs ahead of accuracy (a model taking
    off), so drift and calibration are not judged there. `before`: the reference's accuracy; a
    checkpoint that lost half of it (and GROSS_DROP floors) has dropped, however unsteady the
    run's recent steps were."""
    if signal == "accuracy_drop":
        gross = value < -GROSS_DROP * floor and value < -before / 2
        return (z < -z_threshold and value < -floor) or gross
    if signal in ("geometry_drift_spike", "calibration_jump") and learned > floor:
        return False
    if signal in ("loss_spike", "calibration_jump"):
        return z > z_threshold and value > floor
    return z > z_threshold


_WHAT = {"accuracy_drop": "accuracy changed by {v:+.3f}",
         "regression_burst": "{v:.1%} of the probes went from right to wrong",
         "loss_spike": "loss changed by a factor {x:.2f} (log ratio {v:+.2f})",
         "geometry_drift_spike": "representation drift {v:.3f}",
         "calibration_jump": "ECE changed by {v:+.3f}"}


def health(inp: HealthInputs, *, window: int = 5, z_threshold: float = 3.5, min_history: int = 3,
           floor: float = 0.02, resume: Health | None = None, same: int = 0) -> Health:
    """The health flags of every checkpoint of a run (see the module docstring).

    `resume`, `same`: an earlier result (of the same settings) whose first `same` checkpoints had
    the inputs these have: their results are kept and the judging goes on from there (checkpoint
    i depends on checkpoints 0..i only), so a new checkpoint at the end costs one step, not a
    pass over the run."""
    if window < 1 or min_history < 1 or z_threshold <= 0 or floor <= 0:
        raise ValueError(f"health: window ({window}), min_history ({min_history}), z_threshold ({z_threshold}) "
                         f"and floor ({floor}) must be positive")
    k = len(inp.accuracy)
    values = {s: np.full(k, np.nan) for s in SIGNALS}
    zs = {s: np.full(k, np.nan) for s in SIGNALS}
    flags: list[dict[str, str]] = []
    reference: list[int] = []
    moved_on: list[bool] = []
    healthy: list[int] = []          # unflagged checkpoints with signals, in order
    last_ok = -1
    start = 0
    if resume is not None and (resume.window, resume.z_threshold, resume.min_history, resume.floor) == \
            (window, z_threshold, min_history, floor) and len(resume.moved_on) == len(resume.flags):
        start = max(0, min(same, k, len(resume.flags)))
        for s in SIGNALS:
            values[s][:start] = resume.values[s][:start]
            zs[s][:start] = resume.z[s][:start]
        flags = [dict(f) for f in resume.flags[:start]]
        reference = list(resume.reference[:start])
        moved_on = list(resume.moved_on[:start])
        healthy = [j for j in range(start) if moved_on[j] and reference[j] >= 0]
        if start:
            last_ok = start - 1 if moved_on[start - 1] else reference[start - 1]
    for i in range(start, k):
        mine: dict[str, str] = {}
        reference.append(last_ok)
        if last_ok >= 0:
            learned = _signal("accuracy_drop", inp, last_ok, i)    # the step's accuracy change, for _bad
            for s in SIGNALS:
                v = _signal(s, inp, last_ok, i)
                values[s][i] = v
                past = _trailing(values[s], healthy, window)
                if len(past) < min_history or not np.isfinite(v):
                    continue
                z = robust_z(v, past, floor)
                zs[s][i] = z
                bad = _bad(s, v, z, z_threshold, floor, learned=learned, before=float(inp.accuracy[last_ok]))
                if bad:
                    gross = (" (half the reference's accuracy lost)" if s == "accuracy_drop" and z >= -z_threshold
                             else "")
                    mine[s] = (f"{_WHAT[s].format(v=v, x=math.exp(min(v, 700)))} against the last healthy "
                               f"checkpoint; the trailing "
                               f"window's median is {statistics.median(past):+.3f} (robust z {z:+.1f}){gross}")
        z_flagged = bool(mine)
        if z_flagged and reference[-1] >= 0 and reference[-1] != i - 1:
            z_flagged = False       # the second flagged in a row: the new normal (flags kept, see above)
        wf = inp.weight_flags[i] if i < len(inp.weight_flags) else {}
        for name in WEIGHT_FLAGS:
            layers = list(wf.get(name) or [])
            if layers:
                mine[f"weights_{name}"] = ", ".join(layers)
        flags.append(mine)
        moved_on.append(not z_flagged)
        if not z_flagged:
            if last_ok >= 0:
                healthy.append(i)
            last_ok = i
    return Health(values, zs, flags, reference, window, z_threshold, min_history, floor, moved_on=moved_on)
