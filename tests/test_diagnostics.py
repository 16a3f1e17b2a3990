"""ROC/PR with AUC, calibration and operating points, against values worked out by hand."""

import numpy as np
import pytest

from cvm_cervix.calibration import calibration
from cvm_cervix.diagnostics import binary_curves, operating_point, roc_pr, threshold_for


def test_auc_and_average_precision_of_four_images():
    # positives score 0.35 and 0.8, negatives 0.1 and 0.4: of the 4 (positive, negative) pairs, 3 are ordered
    # right, so AUC = 3/4. Ranked: 0.8 (pos) 0.4 (neg) 0.35 (pos) 0.1: precision 1 at recall 1/2, 2/3 at recall 1,
    # so AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    out = binary_curves(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), n_boot=200)
    assert out["auc"] == pytest.approx(0.75) and out["average_precision"] == pytest.approx(5 / 6)
    lo, hi = out["auc_ci"]
    assert 0 <= lo <= hi <= 1
    assert out["roc"]["fpr"][0] == 0 and out["roc"]["tpr"][-1] == 1
    assert out["positives"] == 2 and out["n"] == 4


def test_delong_interval_of_four_images_worked_by_hand():
    from cvm_cervix.intervals import delong

    # positives 0.35 and 0.8 outrank 1/2 and 2/2 of the negatives (V10 = 0.5, 1); negatives 0.1 and 0.4 are
    # outranked by 2/2 and 1/2 of the positives (V01 = 1, 0.5): each has variance 0.125, so
    # Var(AUC) = 0.125/2 + 0.125/2 = 0.125, SE = 0.3536, and 0.75 ± 1.96 SE clipped to [0, 1] = [0.057, 1].
    out = delong(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert out["auc"] == pytest.approx(0.75)
    assert out["se"] == pytest.approx(np.sqrt(0.125))
    assert out["interval"] == pytest.approx([0.75 - 1.959964 * np.sqrt(0.125), 1.0], abs=1e-6)
    # a tie between classes counts one half, as in the Mann-Whitney statistic
    assert delong(np.array([0, 1]), np.array([0.5, 0.5]))["auc"] == pytest.approx(0.5)
    # every pair ordered right: no spread to estimate, so no interval rather than [1, 1]
    assert delong(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))["interval"] is None
    assert delong(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_delong_matches_the_variance_of_the_auc_over_repeated_samples():
    from cvm_cervix.intervals import delong

    rng = np.random.default_rng(0)
    aucs, ses = [], []
    for _ in range(400):  # 40 positives scored N(1, 1), 60 negatives N(0, 1)
        truth = np.r_[np.ones(40), np.zeros(60)]
        score = np.r_[rng.normal(1, 1, 40), rng.normal(0, 1, 60)]
        out = delong(truth, score)
        aucs.append(out["auc"])
        ses.append(out["se"])
    assert np.mean(ses) == pytest.approx(np.std(aucs), rel=0.15)


def test_the_average_precision_interval_resamples_within_each_class():
    # 3 positives, 7 negatives: a plain bootstrap draws some resamples without a positive; the stratified one
    # keeps 3 and 7 in every draw, so every draw is defined and the interval lies within [0, 1]
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.6, 0.3, 0.8, 0.5, 0.4, 0.2, 0.2, 0.1, 0.05])
    out = binary_curves(truth, score, n_boot=300)
    lo, hi = out["average_precision_ci"]
    assert 0 < lo < out["average_precision"] < hi <= 1
    assert out["auc_method"] == "DeLong" and out["average_precision_method"].startswith("stratified")


def test_auc_is_undefined_with_one_class():
    assert binary_curves(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])) is None


def test_per_class_and_abnormal_curves():
    classes = ["NILM", "HSIL", "LSIL"]
    labels = np.array([0, 0, 1, 2, 1, 0])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.2, 0.5], [0.5, 0.4, 0.1], [0.7, 0.2, 0.1]]
    )
    out = roc_pr(labels, probs, classes, abnormal=["HSIL", "LSIL"], n_boot=50)
    # abnormal score = 1 - P(NILM): abnormal images 0.8, 0.7, 0.5; normal ones 0.2, 0.4, 0.3: all 9 pairs right
    assert out["abnormal"]["auc"] == pytest.approx(1.0)
    assert out["abnormal"]["abnormal_classes"] == ["HSIL", "LSIL"]
    # NILM against the rest: scores 0.8, 0.6, 0.7 (NILM) against 0.2, 0.3, 0.5: every pair right
    assert out["per_class"]["NILM"]["auc"] == pytest.approx(1.0)
    # HSIL: positives 0.7, 0.4 against 0.1, 0.3, 0.2, 0.2: 8 of 8 pairs
    assert out["per_class"]["HSIL"]["auc"] == pytest.approx(1.0)
    assert out["macro_auc"] == pytest.approx(np.mean([v["auc"] for v in out["per_class"].values()]))


def test_expected_calibration_error_over_equal_width_bins():
    # two images at confidence 0.85, one right, one wrong: |0.5 - 0.85| = 0.35 for half the images;
    # two at 0.55, both right: |1 - 0.55| = 0.45 for the other half. ECE = 0.5 * 0.35 + 0.5 * 0.45 = 0.4
    probs = np.array([[0.85, 0.15], [0.85, 0.15], [0.45, 0.55], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    out = calibration(labels, probs, bins=10)
    assert out["ece"] == pytest.approx(0.4)
    filled = [b for b in out["table"] if b["n"]]
    assert [(b["lo"], b["n"], b["accuracy"]) for b in filled] == [
        (pytest.approx(0.5), 2, 1.0),
        (pytest.approx(0.8), 2, 0.5),
    ]
    assert out["accuracy"] == 0.75 and "10 equal-width bins" in out["binning"]


def test_a_perfectly_calibrated_model_has_no_calibration_error():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert calibration(np.array([0, 1]), probs)["ece"] == 0


def test_the_threshold_is_chosen_on_validation_and_reported_on_test():
    val_truth = np.array([0, 0, 0, 0, 1, 1])
    val_score = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    # specificity 0.75 on validation: 3 of the 4 normal images below the threshold; of the scores seen, the
    # lowest such is 0.5 (normals 0.1, 0.2, 0.3 below it; 0.6 at or above counts as abnormal)
    assert threshold_for(val_truth, val_score, 0.75, "specificity") == pytest.approx(0.5)
    # sensitivity 1: both abnormal images at or above it: the highest such threshold is 0.5
    assert threshold_for(val_truth, val_score, 1.0, "sensitivity") == pytest.approx(0.5)
    test_truth = np.array([0, 0, 1, 1])
    test_score = np.array([0.2, 0.7, 0.65, 0.4])
    out = operating_point(val_truth, val_score, test_truth, test_score, 0.75, "specificity")
    assert out["threshold"] == pytest.approx(0.5)
    assert out["val"] == {"sensitivity": 1.0, "specificity": 0.75}
    # on test at 0.5: abnormal 0.65 found, 0.4 missed -> sensitivity 1/2; normal 0.2 kept, 0.7 flagged -> 1/2
    assert out["test"]["sensitivity"] == 0.5 and out["test"]["specificity"] == 0.5
    assert (out["test"]["tp"], out["test"]["fn"], out["test"]["tn"], out["test"]["fp"]) == (1, 1, 1, 1)
    # Wilson for 1 of 2: [9.45%, 90.55%]
    assert out["test"]["sensitivity_ci"] == pytest.approx([0.0945, 0.9055], abs=1e-4)


def test_the_bootstrap_draws_equal_scikit_learn_on_the_resampled_images():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from cvm_cervix.diagnostics import bootstrap_auc_ap

    rng = np.random.default_rng(3)
    truth = rng.random(60) < 0.3
    score = np.round(rng.random(60), 1)  # rounded: many ties
    draws = [rng.integers(0, 60, 60) for _ in range(20)]
    weights = np.stack([np.bincount(d, minlength=60) for d in draws])
    auc, ap = bootstrap_auc_ap(truth, score, weights)
    for b, d in enumerate(draws):
        assert auc[b] == pytest.approx(roc_auc_score(truth[d], score[d]))
        assert ap[b] == pytest.approx(average_precision_score(truth[d], score[d]))
    one_class = np.zeros((1, 60))
    one_class[0, np.flatnonzero(truth)[:3]] = 1
    assert np.isnan(bootstrap_auc_ap(truth, score, one_class)[0][0])


def test_temperature_scaling_is_fitted_on_validation_and_keeps_every_prediction():
    from cvm_cervix.calibration import fit_temperature, scale_temperature, temperature_scaling

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 3)) * 3
    labels = np.array([rng.choice(3, p=np.exp(z / 3) / np.exp(z / 3).sum()) for z in logits])  # true T = 3
    over = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # over-confident: its logits are 3× too large
    assert fit_temperature(labels, over) == pytest.approx(3.0, rel=0.25)
    # scaling by T is softmax(logits / T), whatever constant the saved log-probabilities are off by
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    assert scale_temperature(over, 2.0) == pytest.approx(expected)
    assert (scale_temperature(over, 2.0).argmax(1) == over.argmax(1)).all()
    out = temperature_scaling(labels[:200], over[:200], labels[200:], over[200:])
    assert out["fitted_on"] == "validation" and out["val_nll"]["scaled"] < out["val_nll"]["raw"]
    assert out["test_ece"]["scaled"] < out["test_ece"]["raw"]  # the raw number is kept beside it
    calibrated = np.exp(logits / 3) / np.exp(logits / 3).sum(1, keepdims=True)
    assert fit_temperature(labels, calibrated) == pytest.approx(1.0, rel=0.25)
    assert out["temperature"] == pytest.approx(3.0, rel=0.3) and out["not_estimable"] is None
    assert out["worse"] is False and out["test_brier"]["scaled"] < out["test_brier"]["raw"]


def test_a_temperature_is_not_estimated_where_the_validation_split_cannot_say_it():
    """A perfectly separated validation split (every top class right) fits better at any smaller T, a
    chance-level one at any larger: the fit would stop at a bound of its search, which is no estimate."""
    from cvm_cervix.calibration import brier, fit_temperature, temperature_scaling

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    right = np.full((60, 3), 0.1)
    right[np.arange(60), labels] = 0.8
    assert fit_temperature(labels, right) == pytest.approx(0.05, rel=0.1)  # the bound, not an estimate
    out = temperature_scaling(labels[:30], right[:30], labels[30:], right[30:])
    assert (
        out["temperature"] is None
        and "every one of the 30 validation images is classified right" in out["not_estimable"]
    )
    assert out["test_ece"]["scaled"] is None and out["test_ece"]["raw"] == pytest.approx(0.2)
    wrong = np.roll(right, 1, axis=1)  # every top class wrong
    out = temperature_scaling(labels[:30], wrong[:30], labels[30:], wrong[30:])
    assert out["temperature"] is None and "none of the 30 validation images" in out["not_estimable"]
    assert brier(labels, right) == pytest.approx(0.2**2 + 2 * 0.1**2)
    # scaling can make the test ECE worse: validation overconfident, test underconfident
    val = np.tile([0.9, 0.05, 0.05], (40, 1))
    val_labels = np.array([0] * 28 + [1] * 12)  # 70% right at confidence 0.9: T > 1
    test = np.tile([0.6, 0.2, 0.2], (40, 1))
    test_labels = np.array([0] * 36 + [1] * 4)  # 90% right at confidence 0.6: already underconfident
    out = temperature_scaling(val_labels, val, test_labels, test)
    assert out["temperature"] > 1 and out["worse"] is True


def test_the_ece_comes_with_a_bootstrap_interval_that_matches_the_ece_of_each_resample():
    from cvm_cervix.calibration import calibration

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    out = calibration(labels, probs, bins=10)
    lo, hi = out["ece_ci"]
    assert lo < out["ece"] < hi
    # the vectorised resamples give each resample's own ECE: redo a few by hand with the same draws
    idx = np.random.default_rng(0).integers(0, 60, (1000, 60))
    by_hand = np.array([calibration(labels[i], probs[i], bins=10)["ece"] for i in idx])
    assert [lo, hi] == pytest.approx([np.percentile(by_hand, 2.5), np.percentile(by_hand, 97.5)])
    assert out["brier"] > 0 and out["nll"] > 0
