"""Predictors beyond one network, from the prediction files the runs already wrote: the deep ensemble of a
model's seeds (Lakshminarayanan et al. 2017: the mean of the members' probabilities) and test-time flips
(the mean over the four views of ``flip4x``, written by the evaluate step), each evaluated like a run:
accuracy with Wilson's interval, calibration (ECE with its interval, Brier, NLL), and the conformal
referral at each coverage (calibrated like the run's on the validation split's calibration part), beside
the single networks it is made of, with the change in cells referred paired over the same test images.

Tables in, JSON out, without torch (the statistics job).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .diagnostics import class_codes, probabilities
from .errors import CvmError
from .intervals import wilson

TTA_PREFIX = "tta_prob_"  # the test-time-flip probabilities' columns, beside prob_ (probabilities() skips them)


def tta_frame(frame: pd.DataFrame) -> pd.DataFrame | None:
    """A predictions frame whose ``prob_`` columns (and ``pred``) are its test-time-flip ones; None where it
    has none (evaluated before they were kept)."""
    tta = [c for c in frame.columns if c.startswith(TTA_PREFIX)]
    if not tta:
        return None
    classes = [c.removeprefix(TTA_PREFIX) for c in tta]
    out = frame.drop(columns=[c for c in frame.columns if c.startswith("prob_")] + tta)
    probs = frame[tta].to_numpy(float)
    out["pred"] = np.asarray(classes)[probs.argmax(1)]
    for i, c in enumerate(classes):
        out[f"prob_{c}"] = probs[:, i]
    return out


def mean_predictions(frames: list[pd.DataFrame], where: str = "the members") -> pd.DataFrame:
    """One predictions frame whose probabilities are the mean of ``frames``' (the same images, in the same
    order, with the same classes), its ``pred`` their arg-max; a ``calibration`` column is kept (it
    depends on the images only)."""
    first = frames[0]
    probs, classes = probabilities(first)
    for f in frames[1:]:
        if not f["path"].equals(first["path"]) or not f["label"].equals(first["label"]):
            raise CvmError(f"{where} were tested on different images; evaluate them again on one prepared split")
        other, their_classes = probabilities(f)
        if their_classes != classes:
            raise CvmError(f"{where} have different classes ({their_classes} against {classes})")
        probs = probs + other
    probs = probs / len(frames)
    out = pd.DataFrame({"path": first["path"], "label": first["label"], "pred": np.asarray(classes)[probs.argmax(1)]})
    for i, c in enumerate(classes):
        out[f"prob_{c}"] = probs[:, i]
    if "calibration" in first.columns:
        out["calibration"] = first["calibration"].to_numpy()
    return out


def _referred(test: pd.DataFrame, val: pd.DataFrame, coverages: list[float]) -> dict:
    """Per coverage (marginal sets): whether each test image is referred."""
    return _evaluate(test, val, [], coverages)[1]


def summary(
    test: pd.DataFrame,
    val: pd.DataFrame | None,
    abnormal: list[str],
    coverages: list[float],
    bins: int = 15,
    n_boot: int = 1000,
) -> dict:
    """A predictor's accuracy (with its counts and Wilson interval), calibration (ECE with its bootstrap
    interval, Brier, NLL) and marginal conformal referral at each coverage, calibrated on the validation
    split's calibration part (the run's own diagnostics hold the rest: ROC, operating points)."""
    return _evaluate(test, val, abnormal, coverages, bins, n_boot)[0]


def _evaluate(test, val, abnormal, coverages, bins: int = 15, n_boot: int = 1000) -> tuple[dict, dict]:
    """:func:`summary`, and per coverage whether each test image is referred (from the same thresholds)."""
    from .calibration import calibration
    from .diagnostics import validation_parts
    from .labels import abnormal_flags
    from .referral import prediction_sets, referral

    probs, classes = probabilities(test)
    labels = class_codes(test["label"], classes)
    correct, n = int((test["label"] == test["pred"]).sum()), len(test)
    cal = calibration(labels, probs, bins)
    rows = []
    if val is not None and coverages:
        _, part, _ = validation_parts(val)
        found = referral(
            class_codes(part["label"], classes), probabilities(part)[0], labels, probs, coverages,
            abnormal_flags(classes, abnormal),
        )  # fmt: skip
        rows = [r for r in found["rows"] if r.get("method", "marginal") == "marginal"]
    referred = {f"{r['target']:g}": prediction_sets(probs, r["threshold"]).sum(1) != 1 for r in rows}
    return {
        "correct": correct,
        "n": n,
        "accuracy": correct / n if n else None,
        "accuracy_ci": wilson(correct, n),
        "ece": cal["ece"],
        "ece_ci": cal.get("ece_ci"),
        "brier": cal.get("brier"),
        "nll": cal.get("nll"),
        "referral": [
            {k: r.get(k) for k in ("target", "referred", "referred_images", "test_images", "coverage")}
            | {k: r.get(k) for k in ("covered_images", "coverage_ci", "calibration_images")}
            for r in rows
        ],
    }, referred


def paired_change(ours, members: list, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The predictor's per-image value (``ours``: 1 referred or right, else 0) less the members' mean on the
    same images: the mean change, with a percentile interval from resampling the same test images for
    both (paired; None where there is no spread), and how many images went down or up."""
    diff = np.asarray(ours, float) - np.mean([np.asarray(m, float) for m in members], axis=0)
    idx = np.random.default_rng(seed).integers(0, len(diff), (n_boot, len(diff)))
    lo, hi = np.percentile(diff[idx].mean(1), [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {
        "change": float(diff.mean()),
        "change_ci": [float(lo), float(hi)] if hi > lo else None,
        "down_images": int(np.sum(diff < 0)),
        "up_images": int(np.sum(diff > 0)),
        "method": "paired percentile bootstrap over test images",
    }


def ensemble(
    tests: list[pd.DataFrame],
    vals: list[pd.DataFrame | None],
    abnormal: list[str],
    coverages: list[float],
    bins: int = 15,
    n_boot: int = 1000,
    where: str = "the seeds",
) -> dict:
    """The deep ensemble of ``tests``/``vals`` (one frame per seed) beside its members."""
    if len(tests) < 2:
        raise CvmError(f"an ensemble needs two members or more, not {len(tests)}")
    test = mean_predictions(tests, where)
    val = mean_predictions(vals, where) if all(v is not None for v in vals) else None
    found = [_evaluate(t, v, abnormal, coverages, bins, n_boot) for t, v in zip(tests, vals, strict=True)]
    members = [m for m, _ in found]
    mine, ours = _evaluate(test, val, abnormal, coverages, bins, n_boot)
    out = {"members": len(tests), "ensemble": mine}
    out["member_mean"] = {
        "accuracy": float(np.mean([m["accuracy"] for m in members])),
        "ece": float(np.mean([m["ece"] for m in members])),
        "referred": {
            f"{r['target']:g}": float(np.mean([m["referral"][i]["referred"] for m in members]))
            for i, r in enumerate(members[0]["referral"])
        },
    }
    right = [(t["label"] == t["pred"]).to_numpy() for t in tests]
    out["accuracy_change"] = paired_change((test["label"] == test["pred"]).to_numpy(), right, n_boot)
    if val is not None and coverages:
        out["referral_change"] = {k: paired_change(ours[k], [r[k] for _, r in found], n_boot) for k in ours}
    return out


def test_time_flips(
    test: pd.DataFrame,
    val: pd.DataFrame | None,
    abnormal: list[str],
    coverages: list[float],
    bins: int = 15,
    n_boot: int = 1000,
) -> dict | None:
    """A run's test-time-flip predictor (the ``tta_prob_`` columns the evaluate step writes) beside the run
    itself: each summarised alike, and the changes paired over the same test images; None where the run's
    predictions hold no flips (evaluated before they were kept)."""
    tta_test = tta_frame(test)
    if tta_test is None:
        return None
    tta_val = tta_frame(val) if val is not None else None
    plain, theirs = _evaluate(test, val, abnormal, coverages, bins, n_boot)
    flipped, ours = _evaluate(tta_test, tta_val, abnormal, coverages, bins, n_boot)
    out = {
        "views": 4,
        "plain": plain,
        "tta": flipped,
        "accuracy_change": paired_change(
            (tta_test["label"] == tta_test["pred"]).to_numpy(), [(test["label"] == test["pred"]).to_numpy()], n_boot
        ),
    }
    if tta_val is not None and coverages:
        out["referral_change"] = {k: paired_change(ours[k], [theirs[k]], n_boot) for k in ours}
    return out
