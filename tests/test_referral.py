"""Referral with a coverage guarantee: split-conformal sets against hand-computed values."""

import numpy as np
import pytest
from scipy.stats import binomtest

from cvm_cervix.referral import (
    class_thresholds,
    conformal_threshold,
    coverage_distribution,
    prediction_sets,
    referral,
    risk_coverage,
)

# validation (calibration): scores 1 - p(true) are 0.3, 0.4, 0.2, 0.6
VAL_LABELS = np.array([0, 1, 2, 0])
VAL_PROBS = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8], [0.4, 0.5, 0.1]])
# test: class 2 is the abnormal one
TEST_LABELS = np.array([0, 2, 2, 1])
TEST_PROBS = np.array([[0.65, 0.30, 0.05], [0.62, 0.05, 0.33], [0.10, 0.20, 0.70], [0.45, 0.50, 0.05]])
ABNORMAL = np.array([False, False, True])


def test_the_threshold_is_the_ceil_n_plus_1_c_th_smallest_score():
    # n = 4: c = 0.6 takes the 3rd smallest of (0.2, 0.3, 0.4, 0.6); c = 0.9 would need the 5th of 4
    assert conformal_threshold(VAL_LABELS, VAL_PROBS, 0.6) == pytest.approx(0.4)
    assert conformal_threshold(VAL_LABELS, VAL_PROBS, 0.4) == pytest.approx(0.3)  # ceil(2.0) = 2nd
    assert conformal_threshold(VAL_LABELS, VAL_PROBS, 0.9) is None
    sets = prediction_sets(TEST_PROBS, 0.4)  # every class of probability >= 0.6
    assert sets.tolist() == [[True, False, False], [True, False, False], [False, False, True], [False, False, False]]
    assert prediction_sets(TEST_PROBS, None).all()


def test_coverage_set_size_referral_and_missed_abnormal_cells_by_hand():
    out = referral(VAL_LABELS, VAL_PROBS, TEST_LABELS, TEST_PROBS, [0.6, 0.9], ABNORMAL)
    at60, at90 = (r for r in out["rows"] if r["method"] == "marginal")
    assert (at60["empty_images"], at60["ambiguous_images"]) == (1, 0)  # the referred cell's set is empty
    # sets {0}, {0}, {2}, {}: the true class is in 2 of 4; the empty set is referred
    assert at60["coverage"] == 0.5 and at60["mean_set_size"] == 0.75
    assert at60["referred"] == 0.25 and at60["referred_images"] == 1
    # the second image is abnormal, decided alone, and called normal: the one the referral misses
    assert (at60["abnormal_images"], at60["abnormal_decided"], at60["abnormal_missed"]) == (2, 2, 1)
    assert at60["abnormal_missed_share"] == 0.5
    low, high = binomtest(2, 4).proportion_ci(0.95, method="wilson")
    assert at60["coverage_ci"] == pytest.approx([low, high])
    # too few calibration images for 90%: every set is every class, every cell referred, none missed
    assert at90["threshold"] is None and at90["coverage"] == 1.0 and at90["mean_set_size"] == 3.0
    assert at90["referred"] == 1.0 and at90["abnormal_missed"] == 0
    # none missed of 2 still has an upper bound (Wilson: 65.8%), never "0 to 0"
    assert at90["abnormal_missed_ci"][0] == 0 and at90["abnormal_missed_ci"][1] == pytest.approx(0.6576, abs=1e-4)


def test_risk_coverage_keeps_the_most_confident_first():
    # confidences 0.65, 0.62, 0.70, 0.50: kept in the order 3rd, 1st, 2nd (wrong: 0 for 2), 4th
    curve = risk_coverage(TEST_LABELS, TEST_PROBS)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["risk"] == pytest.approx([0.0, 0.0, 1 / 3, 1 / 4])


def test_the_guarantee_holds_on_exchangeable_images():
    """Over many random calibration/test splits of the same images the mean coverage is at least c."""
    rng = np.random.default_rng(0)
    n, k = 400, 5
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[rng.integers(0, k, n)]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in probs])
    achieved = []
    for _ in range(200):
        order = rng.permutation(n)
        cal, test = order[:200], order[200:]
        row = referral(labels[cal], probs[cal], labels[test], probs[test], [0.9])["rows"][0]
        achieved.append(row["coverage"])
    assert np.mean(achieved) >= 0.9 - 0.005


def test_class_conditional_sets_calibrate_each_class_on_its_own_images():
    # class 0's scores 0.3, 0.6 (n = 2: at 0.6 the 2nd); classes 1 and 2 have one image each: too few
    assert class_thresholds(VAL_LABELS, VAL_PROBS, 0.6) == [pytest.approx(0.6), None, None]
    out = referral(VAL_LABELS, VAL_PROBS, TEST_LABELS, TEST_PROBS, [0.6], ABNORMAL)
    (row,) = (r for r in out["rows"] if r["method"] == "per class")
    # class 0 where its probability is at least 0.4; classes 1 and 2 in every set
    assert row["too_few"] == [1, 2] and row["coverage"] == 1.0 and row["mean_set_size"] == 2.75
    assert (row["referred_images"], row["ambiguous_images"], row["empty_images"]) == (4, 4, 0)
    assert row["abnormal_missed"] == 0 and row["abnormal_coverage"] == 1.0


def test_the_coverage_of_one_calibration_set_is_beta_distributed():
    """n = 88 at 90%: the coverage of one calibration set falls below 90% about a third of the time (Beta(81, 8)),
    and 95% of calibration sets reach 85.6%; 24 images at 95% are flagged: 5% of such sets stay below 88.3%."""
    at88 = coverage_distribution(88, 0.9)
    assert at88["shortfall_probability"] == pytest.approx(0.336, abs=1e-3)
    assert at88["lower_95"] == pytest.approx(0.8558, abs=1e-4)
    assert coverage_distribution(24, 0.95)["lower_95"] == pytest.approx(0.8827, abs=1e-4)
    assert coverage_distribution(10, 0.95) is None  # the 11th of 10 scores: every set is every class
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    probs = rng.dirichlet(np.ones(3), 30)
    row = next(r for r in referral(labels[:24], probs[:24], labels[24:], probs[24:], [0.95])["rows"])
    assert row["small_calibration"] and row["coverage_lower_95"] == pytest.approx(0.8827, abs=1e-4)


def test_the_guarantee_holds_over_many_random_calibration_and_test_splits():
    """Exchangeable cells (a calibrated model: each label drawn from its own probabilities), split 300 times
    into 88 calibration and 1,912 test cells: the coverage is at least the target on average, it falls short
    about as often as the Beta distribution says, and the per-class sets cover every class on average."""
    rng = np.random.default_rng(1)
    n, target = 2000, 0.9
    probs = rng.dirichlet([0.5, 0.5, 0.5], n)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    marginal, short, per_class = [], 0, []
    for _ in range(300):
        order = rng.permutation(n)
        cal, test = order[:88], order[88:]
        sets = prediction_sets(probs[test], conformal_threshold(labels[cal], probs[cal], target))
        covered = sets[np.arange(len(test)), labels[test]]
        marginal.append(covered.mean())
        short += covered.mean() < target
        mondrian = prediction_sets(probs[test], class_thresholds(labels[cal], probs[cal], target))
        hit = mondrian[np.arange(len(test)), labels[test]]
        per_class.append([hit[labels[test] == c].mean() for c in range(3)])
    assert np.mean(marginal) >= target - 0.005
    assert abs(short / 300 - coverage_distribution(88, target)["shortfall_probability"]) < 0.1
    assert (np.mean(per_class, axis=0) >= target - 0.01).all()
