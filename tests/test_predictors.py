"""Predictors beyond one network: the deep ensemble of a model's seeds and test-time flips, evaluated like runs."""

import numpy as np
import pandas as pd
import pytest

from cvm_cervix.errors import CvmError
from cvm_cervix.predictors import ensemble, mean_predictions, paired_change

CLASSES = ["NILM", "HSIL", "LSIL"]


def frame(probs, labels, paths=None, calibration=None):
    probs = np.asarray(probs, float)
    out = pd.DataFrame(
        {
            "path": paths or [f"c{i}.png" for i in range(len(probs))],
            "label": [CLASSES[i] for i in labels],
            "pred": [CLASSES[i] for i in probs.argmax(1)],
        }
    )
    for i, c in enumerate(CLASSES):
        out[f"prob_{c}"] = probs[:, i]
    if calibration is not None:
        out["calibration"] = calibration
    return out


def test_the_ensembles_probabilities_are_the_mean_of_its_seeds_and_its_prediction_their_argmax():
    a = frame([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [0, 2])
    b = frame([[0.2, 0.7, 0.1], [0.1, 0.3, 0.6]], [0, 2])
    mean = mean_predictions([a, b])
    assert np.allclose(mean[[f"prob_{c}" for c in CLASSES]].to_numpy(), [[0.4, 0.5, 0.1], [0.15, 0.4, 0.45]])
    # seed a says NILM, seed b HSIL: the mean says HSIL (0.5), and LSIL for the second cell (0.45)
    assert mean["pred"].tolist() == ["HSIL", "LSIL"] and mean["label"].tolist() == ["NILM", "LSIL"]
    with pytest.raises(CvmError, match="the members were tested on different images"):
        mean_predictions([a, frame([[1, 0, 0], [0, 1, 0]], [0, 2], paths=["x.png", "y.png"])])


def test_a_paired_change_counts_images_that_went_each_way():
    out = paired_change([1, 0, 0, 1], [[1, 1, 0, 0], [1, 1, 0, 0]], n_boot=500)
    # per image: 0, -1, 0, +1: no change on average, one image down, one up
    assert out["change"] == 0 and (out["down_images"], out["up_images"]) == (1, 1)
    lo, hi = out["change_ci"]
    assert lo < 0 < hi
    assert paired_change([1, 1], [[1, 1], [1, 1]])["change_ci"] is None  # no spread: no interval


def test_an_ensemble_is_evaluated_like_a_run_beside_its_members():
    rng = np.random.default_rng(0)
    n_val, n_test = 200, 300
    labels_val, labels_test = rng.integers(0, 3, n_val), rng.integers(0, 3, n_test)

    def seed_frames(s):
        noise = np.random.default_rng(s)

        def probs(labels):  # right more often than not, differently wrong per seed
            logits = noise.normal(size=(len(labels), 3)) * 1.5 + 1.2 * np.eye(3)[labels]
            return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

        held = np.arange(n_val) % 2 == 0
        return frame(probs(labels_test), labels_test), frame(probs(labels_val), labels_val, calibration=held)

    members = [seed_frames(s) for s in (1, 2, 3)]
    out = ensemble([t for t, _ in members], [v for _, v in members], ["HSIL", "LSIL"], [0.9], n_boot=200)
    e = out["ensemble"]
    assert out["members"] == 3 and e["n"] == n_test and e["correct"] == round(e["accuracy"] * n_test)
    assert e["accuracy_ci"][0] < e["accuracy"] < e["accuracy_ci"][1]
    # averaging three differently wrong members is right more often than they are on average
    assert e["accuracy"] > out["member_mean"]["accuracy"]
    assert out["accuracy_change"]["change"] == pytest.approx(e["accuracy"] - out["member_mean"]["accuracy"])
    (row,) = e["referral"]
    assert row["target"] == 0.9 and row["calibration_images"] == 100  # the held-out half of validation
    change = out["referral_change"]["0.9"]
    assert change["change"] == pytest.approx(row["referred"] - out["member_mean"]["referred"]["0.9"])
    with pytest.raises(CvmError, match="two members or more"):
        ensemble([members[0][0]], [members[0][1]], [], [0.9])


def test_test_time_flips_are_a_predictor_beside_the_run():
    from cvm_cervix.predictors import test_time_flips

    rng = np.random.default_rng(4)

    def with_flips(n, calibration=None):
        labels = rng.integers(0, 3, n)
        plain = np.exp(rng.normal(size=(n, 3)) + np.eye(3)[labels])
        flips = np.exp(rng.normal(size=(n, 3)) * 0.5 + 1.5 * np.eye(3)[labels])  # steadier: more often right
        out = frame(plain / plain.sum(1, keepdims=True), labels, calibration=calibration)
        for i, c in enumerate(CLASSES):
            out[f"tta_prob_{c}"] = (flips / flips.sum(1, keepdims=True))[:, i]
        return out

    test, val = with_flips(300), with_flips(200, calibration=np.arange(200) % 2 == 1)
    out = test_time_flips(test, val, ["HSIL", "LSIL"], [0.9], n_boot=200)
    tta_pred = np.asarray(CLASSES)[test[[f"tta_prob_{c}" for c in CLASSES]].to_numpy().argmax(1)]
    assert out["tta"]["correct"] == int((tta_pred == test["label"]).sum()) > out["plain"]["correct"]
    assert out["accuracy_change"]["change"] == pytest.approx((out["tta"]["correct"] - out["plain"]["correct"]) / 300)
    assert out["tta"]["referral"][0]["calibration_images"] == 100 and "0.9" in out["referral_change"]
    assert test_time_flips(test.drop(columns=[f"tta_prob_{c}" for c in CLASSES]), val, [], [0.9]) is None
