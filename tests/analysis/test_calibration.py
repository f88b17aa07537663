from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error

from learnviz.analysis.calibration import bin_edges, calibration


def _torchmetrics(conf, correct, n_bins, norm="l1"):
    return float(binary_calibration_error(torch.from_numpy(conf), torch.from_numpy(correct.astype(np.int64)),
                                          n_bins=n_bins, norm=norm))


@pytest.mark.parametrize("n_bins", [10, 15])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_torchmetrics_on_random_inputs(seed, n_bins):
    rng = np.random.default_rng(seed)
    n = 500
    conf = rng.uniform(0, 1, n) ** rng.uniform(0.3, 3)          # skewed one way or the other
    correct = rng.uniform(0, 1, n) < conf ** 1.5                 # overconfident, roughly
    for c in (conf, conf.astype(np.float32)):
        cal = calibration(c, correct, n_bins=n_bins)
        assert cal.ece == pytest.approx(_torchmetrics(c, correct, n_bins), abs=1e-6)
        assert cal.mce == pytest.approx(_torchmetrics(c, correct, n_bins, "max"), abs=1e-6)
    assert cal.bin_count.sum() + cal.n_at_one == n
    assert cal.brier == pytest.approx(np.mean((conf - correct) ** 2), abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_confidences_on_edges_and_at_one_bin_like_torchmetrics(dtype):
    # Values exactly on bin edges and 1.0 are where bucket conventions differ.
    n_bins = 5
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32 if dtype == np.float32 else torch.float64).numpy()
    conf = np.concatenate([edges, edges, [0.6, 0.3, 1.0, 1.0]]).astype(dtype)
    correct = np.arange(conf.size) % 3 == 0
    cal = calibration(conf, correct, n_bins=n_bins)
    assert cal.ece == pytest.approx(_torchmetrics(conf, correct, n_bins), abs=1e-7)
    assert cal.mce == pytest.approx(_torchmetrics(conf, correct, n_bins, "max"), abs=1e-7)
    # each edge starts its bin; 1.0 (the last edge, twice, plus two more) has its own bucket
    assert cal.bin_count.tolist() == [2, 3, 2, 3, 2]
    assert cal.n_at_one == 4
    assert np.array_equal(cal.bin_edges, edges.astype(np.float64))


def test_edges_are_torch_linspace_not_numpy():
    # 3/5: numpy gives 0.6000000000000001, torch 0.6 -- and 0.6 must start bin 3
    assert bin_edges(5)[3] == 0.6
    assert np.linspace(0, 1, 6)[3] != 0.6
    cal = calibration(np.array([0.6]), np.array([True]), n_bins=5)
    assert cal.bin_count.tolist() == [0, 0, 0, 1, 0]


def test_small_case_by_hand():
    # n_bins=2: bin 0 = [0, .5), bin 1 = [.5, 1), plus the c == 1 bucket
    conf = np.array([0.1, 0.3, 0.6, 0.8, 0.9, 1.0])
    correct = np.array([False, True, True, False, True, True])
    cal = calibration(conf, correct, n_bins=2)
    # bin 0: conf .2, acc .5 ; bin 1: conf (.6+.8+.9)/3 = .7667, acc 2/3 ; at one: conf 1, acc 1
    assert cal.bin_count.tolist() == [2, 3]
    assert cal.bin_confidence == pytest.approx([0.2, 2.3 / 3])
    assert cal.bin_accuracy == pytest.approx([0.5, 2 / 3])
    assert cal.n_at_one == 1 and cal.accuracy_at_one == 1.0
    ece = 2 / 6 * 0.3 + 3 / 6 * (2.3 / 3 - 2 / 3) + 1 / 6 * 0
    assert cal.ece == pytest.approx(ece)
    assert cal.mce == pytest.approx(0.3)
    gap = 2 / 6 * (0.2 - 0.5) + 3 / 6 * (2.3 / 3 - 2 / 3)
    assert cal.gap == pytest.approx(gap)
    assert cal.gap == pytest.approx(conf.mean() - correct.mean())
    assert cal.direction == "underconfident"           # gap = -0.05
    brier = (0.01 + 0.49 + 0.16 + 0.64 + 0.01 + 0) / 6
    assert cal.brier == pytest.approx(brier)
    assert calibration(conf, correct, n_bins=2, tolerance=0.06).direction == "calibrated"


def test_empty_bins_are_nan_and_direction_overconfident():
    cal = calibration(np.array([0.95, 0.95, 0.92]), np.array([False, True, False]), n_bins=10)
    assert np.isnan(cal.bin_confidence[:9]).all() and np.isnan(cal.bin_accuracy[:9]).all()
    assert cal.bin_count.tolist() == [0] * 9 + [3]
    assert np.isnan(cal.accuracy_at_one)
    assert cal.direction == "overconfident"
    assert cal.ece == pytest.approx(cal.gap) == pytest.approx(0.94 - 1 / 3)


@pytest.mark.parametrize("conf, correct, match", [
    (np.array([]), np.array([], dtype=bool), "at least one"),
    (np.array([0.5, 1.2]), np.array([True, False]), r"\[0, 1\]"),
    (np.array([-0.1, 0.5]), np.array([True, False]), r"\[0, 1\]"),
    (np.array([np.nan, 0.5]), np.array([True, False]), "NaN"),
    (np.array([0.5, 0.5]), np.array([True]), "values"),
    (np.array([0.5]), np.array([2]), "0/1"),
])
def test_bad_input(conf, correct, match):
    with pytest.raises(ValueError, match=match):
        calibration(conf, correct)


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_bins"):
        calibration(np.array([0.5]), np.array([True]), n_bins=0)
    with pytest.raises(ValueError, match="tolerance"):
        calibration(np.array([0.5]), np.array([True]), tolerance=-1)


def test_demo_archive_confidence_becomes_informative(demo):
    from learnviz.archive import list_archives

    archives = list_archives(demo.archive_dir())
    first, last = (a.read("extract", ["answer_confidence", "correct"]) for a in (archives[0], archives[-1]))
    cal0 = calibration(first["answer_confidence"], first["correct"])
    cal = calibration(last["answer_confidence"], last["correct"])
    assert cal.ece == pytest.approx(_torchmetrics(last["answer_confidence"], last["correct"], 15), abs=1e-6)
    # a model that learns gets more right and more confident...
    assert cal.accuracy > cal0.accuracy and cal.mean_confidence > cal0.mean_confidence
    # ...and its confidence means something: the top bins are far more accurate than the rest
    top = cal.bin_count[-2:].sum()
    acc_top = np.nansum(cal.bin_accuracy[-2:] * cal.bin_count[-2:]) / top
    acc_rest = np.nansum(cal.bin_accuracy[:-2] * cal.bin_count[:-2]) / cal.bin_count[:-2].sum()
    assert top > 0 and acc_top > acc_rest + 0.2
