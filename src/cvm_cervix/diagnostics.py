"""What a reviewer and a screening lab ask of a classifier beyond its accuracy, from one run's probabilities.

- ROC and precision-recall, per class (one against the rest) and abnormal against normal (the
  score: the summed probability of the abnormal classes), with AUC and average precision from
  scikit-learn, DeLong's interval for the AUC and a stratified percentile bootstrap for the AP;
- calibration: expected calibration error over equal-width confidence bins, and the bins for a
  reliability diagram;
- operating points: the threshold on the abnormal score that reaches a target specificity (or
  sensitivity) on the validation split, and the test split's sensitivity and specificity at it.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from .calibration import calibration, temperature_scaling
from .intervals import delong, wilson
from .labels import abnormal_flags, abnormal_in
from .referral import referral, risk_coverage

CURVE_POINTS = 101  # a curve is kept at most this many points (the report draws it; the AUC uses all)


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    """The percentile interval of bootstrap draws; None where there are none, or where every draw gives one
    value (a perfectly separated AUC of 1 in every resample): such a spread says nothing, and the report
    shows no interval rather than one of zero width."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = float(np.percentile(values, 100 * (1 - level) / 2)), float(np.percentile(values, 100 * (1 + level) / 2))
    return [lo, hi] if hi > lo else None


def _thin(*arrays: np.ndarray, points: int = CURVE_POINTS) -> list[list[float]]:
    """Every array at the same at most ``points`` indices, first and last kept."""
    n = len(arrays[0])
    idx = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int)) if n else np.zeros(0, int)
    return [np.asarray(a)[idx].astype(float).round(6).tolist() for a in arrays]


def bootstrap_auc_ap(truth: np.ndarray, score: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision of each bootstrap draw, given as counts per image (``weights``, B×N).

    A draw with repeats is the sample weighted by its counts, so both have closed forms that take all
    draws at once: AUC is the weighted Mann-Whitney statistic (a tie counts one half), AP sums precision
    over the recall gained at each distinct score, highest first (as scikit-learn's
    ``average_precision_score``). Written here because 1,000 draws × (classes + 1) × 2 calls of
    scikit-learn take minutes per run; ``tests/test_diagnostics.py`` checks both against
    scikit-learn on resampled data. NaN where a draw holds one class only.
    """
    truth, score, w = np.asarray(truth, bool), np.asarray(score, float), np.asarray(weights, float)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    wins = (score[pos, None] > score[None, neg]) + 0.5 * (score[pos, None] == score[None, neg])
    n_pos, n_neg = w[:, pos].sum(1), w[:, neg].sum(1)
    defined = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.einsum("bi,ij,bj->b", w[:, pos], wins, w[:, neg]) / (n_pos * n_neg)
        order = np.argsort(-score, kind="stable")
        s_sorted = score[order]
        last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # the last image of each distinct score
        tp = np.cumsum(w[:, order] * truth[order], axis=1)[:, last]
        fp = np.cumsum(w[:, order] * ~truth[order], axis=1)[:, last]
        precision = np.nan_to_num(tp / (tp + fp))
        recall_gain = np.diff(np.concatenate([np.zeros((len(w), 1)), tp], axis=1), axis=1) / n_pos[:, None]
        ap = (recall_gain * precision).sum(1)
    auc[~defined], ap[~defined] = np.nan, np.nan
    return np.clip(auc, 0, 1), np.clip(ap, 0, 1)  # a sum of fractions may pass 1 by a rounding error


def class_codes(values, classes: list[str]) -> np.ndarray:
    """Each value's index in ``classes``; ``len(classes)`` for a value that is none of them."""
    code = {c: i for i, c in enumerate(classes)}
    return np.array([code.get(c, len(classes)) for c in np.asarray(values).tolist()], int)


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` values occurs in each row of ``idx``: shape (rows, n)."""
    offset = np.arange(len(idx))[:, None] * n
    return np.bincount((offset + idx).ravel(), minlength=len(idx) * n).reshape(len(idx), n)


def binary_curves(
    truth: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict | None:
    """ROC and PR of a binary ``truth`` (1 = positive) against ``score``; None when one class is absent.

    The AUC's interval is DeLong's (``intervals.delong``); the average precision, which has no variance
    formula, gets a stratified percentile bootstrap: each draw resamples the positives among the positives
    and the negatives among the negatives, so every draw keeps the test split's prevalence (on which AP
    depends) and both classes. Either is left out where it has no spread (a perfect separation).
    """
    truth, score = np.asarray(truth, int), np.asarray(score, float)
    if truth.min(initial=0) == truth.max(initial=0) or len(np.unique(truth)) < 2:
        return None
    fpr, tpr, _ = roc_curve(truth, score)
    precision, recall, _ = precision_recall_curve(truth, score)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(truth == 0)
    draws = np.concatenate(
        [pos[rng.integers(0, len(pos), (n_boot, len(pos)))], neg[rng.integers(0, len(neg), (n_boot, len(neg)))]], 1
    )
    _, aps = bootstrap_auc_ap(truth, score, resample_counts(draws, len(truth)))
    auc = delong(truth, score, level)
    fpr_t, tpr_t = _thin(fpr, tpr)
    recall_t, precision_t = _thin(recall[::-1], precision[::-1])
    return {
        "n": int(len(truth)),
        "positives": int(truth.sum()),
        "auc": float(roc_auc_score(truth, score)),
        "auc_ci": auc["interval"],
        "auc_method": "DeLong",
        "average_precision": float(average_precision_score(truth, score)),
        "average_precision_ci": _interval(aps, level),
        "average_precision_method": "stratified percentile bootstrap",
        "roc": {"fpr": fpr_t, "tpr": tpr_t},
        "pr": {"recall": recall_t, "precision": precision_t},
    }


def abnormal_score(probs: np.ndarray, classes: list[str], abnormal: list[str]) -> np.ndarray:
    """The probability a model gives to any abnormal class of ``abnormal``."""
    cols = [i for i, a in enumerate(abnormal_in(classes, abnormal)) if a]
    return np.asarray(probs)[:, cols].sum(1) if cols else np.zeros(len(probs))


def roc_pr(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    abnormal: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Per class (one against the rest, macro mean of the defined AUCs) and abnormal against normal."""
    labels, probs = np.asarray(labels, int), np.asarray(probs, float)
    per_class = {c: binary_curves(labels == i, probs[:, i], n_boot, seed, level) for i, c in enumerate(classes)}
    defined = [v["auc"] for v in per_class.values() if v is not None]
    out = {
        "level": level,
        "n_boot": n_boot,
        "per_class": per_class,
        "macro_auc": float(np.mean(defined)) if defined else None,
        "abnormal": None,
    }
    if abnormal:
        truth = np.array(abnormal_in(classes, abnormal), dtype=bool)[labels] if len(labels) else np.zeros(0, bool)
        curves = binary_curves(truth, abnormal_score(probs, classes, abnormal), n_boot, seed, level)
        if curves is not None:
            out["abnormal"] = {
                **curves,
                "abnormal_classes": [c for c, a in zip(classes, abnormal_in(classes, abnormal)) if a],
            }
    return out


def threshold_for(truth: np.ndarray, score: np.ndarray, target: float, kind: str) -> float | None:
    """The threshold (abnormal when score ≥ it) that reaches ``target`` specificity (the lowest such
    threshold: the most sensitive one) or ``target`` sensitivity (the highest such: the most specific)."""
    truth, score = np.asarray(truth, bool), np.asarray(score, float)
    if truth.all() or not truth.any():
        return None
    candidates = np.unique(np.concatenate([score, [np.inf]]))
    if kind == "specificity":
        negatives = score[~truth]
        ok = [t for t in candidates if np.mean(negatives < t) >= target - 1e-12]
        return float(min(ok))
    if kind == "sensitivity":
        positives = score[truth]
        ok = [t for t in candidates if np.mean(positives >= t) >= target - 1e-12]
        return float(max(ok)) if ok else None
    raise ValueError(f"unknown operating point kind {kind!r}")


def operating_point(
    val_truth,
    val_score,
    test_truth,
    test_score,
    target: float,
    kind: str,
    level: float = 0.95,
) -> dict | None:
    """Chosen on validation, reported on test: sensitivity and specificity at the validation threshold,
    with their counts and Wilson intervals."""
    threshold = threshold_for(val_truth, val_score, target, kind)
    test_truth, test_score = np.asarray(test_truth, bool), np.asarray(test_score, float)
    if threshold is None or test_truth.all() or not test_truth.any():
        return None
    pred = test_score >= threshold
    tp, fn = int((pred & test_truth).sum()), int((~pred & test_truth).sum())
    tn, fp = int((~pred & ~test_truth).sum()), int((pred & ~test_truth).sum())
    val_pred = np.asarray(val_score, float) >= threshold
    val_truth = np.asarray(val_truth, bool)
    return {
        "kind": kind,
        "target": target,
        "threshold": threshold,
        "val": {
            "sensitivity": float(np.mean(val_pred[val_truth])),
            "specificity": float(np.mean(~val_pred[~val_truth])),
        },
        "test": {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            # proportions with their counts: Wilson's score interval, never of zero width
            "sensitivity_ci": wilson(tp, tp + fn, level),
            "specificity_ci": wilson(tn, tn + fp, level),
            "tp": tp,
            "fn": fn,
            "tn": tn,
            "fp": fp,
        },
    }


def class_accuracy_gap(
    labels, preds, group: list[str], classes: list[str], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict | None:
    """Mean per-class accuracy (recall) of the classes in ``group`` minus that of the other classes, with a
    percentile bootstrap interval over images: the paper's Sec. 4.4 claim that its abnormal classes are
    classified better than its normal ones. None when either side has no class in the test split."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    inside = [c for c in classes if c in set(group) and (labels == c).any()]
    outside = [c for c in classes if c not in set(group) and (labels == c).any()]
    if not inside or not outside:
        return None

    k = len(classes)
    true = class_codes(labels, classes)
    hit = np.where(labels == preds, true, k)  # a right prediction counts for its class

    def gap(idx):  # mean recall of each side in each row of image indices (a class a draw lacks is skipped)
        counts, hits = resample_counts(true[idx], k + 1), resample_counts(hit[idx], k + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = hits / counts
        side = lambda names: np.nanmean(recall[..., [classes.index(c) for c in names]], axis=-1)  # noqa: E731
        return side(inside), side(outside)

    a, b = (float(x[0]) for x in gap(np.arange(len(labels))[None]))
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # a draw without one side's classes: nan, left out of the interval
        draws = np.subtract(*gap(rng.integers(0, len(labels), (n_boot, len(labels)))))
    return {
        "group": inside,
        "others": outside,
        "group_accuracy": float(a),
        "others_accuracy": float(b),
        "difference": float(a - b),
        "difference_ci": _interval(draws, level),
        "level": level,
        "n_boot": n_boot,
    }


def probabilities(frame) -> tuple[np.ndarray, list[str]]:
    """The ``prob_<class>`` columns of a predictions file, in its order, and the class names."""
    columns = [c for c in frame.columns if c.startswith("prob_")]
    return frame[columns].to_numpy(float), [c.removeprefix("prob_") for c in columns]


def validation_parts(val) -> tuple:
    """(the part that chose the best epoch, the calibration part, whether they differ) of a validation
    predictions frame: its ``calibration`` column where the run kept a part out of model selection
    (``train.calibration_holdout``), else the whole split for both."""
    if val is None or "calibration" not in val.columns:
        return val, val, False
    held = val["calibration"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    return val[~held].reset_index(drop=True), val[held].reset_index(drop=True), True


def diagnose(
    test,
    val=None,
    abnormal: list[str] | None = None,
    operating_points: list[dict] | None = None,
    bins: int = 15,
    n_boot: int = 1000,
    seed: int = 0,
    paper_abnormal: list[str] | None = None,
    coverages: list[float] | None = None,
) -> dict | None:
    """ROC/PR, calibration, operating points and referral of one run from its predictions files' frames.

    ``test``/``val``: frames of ``predictions_{test,val}.csv``; the intervals are over test images;
    validation gives only the operating points' thresholds. ``paper_abnormal``: the paper's abnormal
    classes, for its Sec. 4.4 claim (computed where the run has them).
    """
    probs, classes = probabilities(test)
    if not classes:  # a predictions file without probabilities (written by hand): nothing to draw a curve from
        return None
    unknown = sorted(set(test["label"]) - set(classes))
    if unknown:
        raise ValueError(f"the predictions' labels {unknown} have no prob_<class> column")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in test["label"]], dtype=int)
    out = {
        "classes": classes,
        "abnormal_classes": [c for c, a in zip(classes, abnormal_in(classes, abnormal or [])) if a],
        "roc_pr": roc_pr(labels, probs, classes, abnormal, n_boot, seed),
        "calibration": calibration(labels, probs, bins),
        "operating_points": [],
        "paper_claim": None,
        "temperature": None,
        "referral": None,
        "risk_coverage": risk_coverage(labels, probs),
    }
    val, calibration_part, held_out = validation_parts(val)
    if val is not None:
        val_probs, val_classes = probabilities(val)
        if val_classes != classes:
            raise ValueError(f"the validation predictions have classes {val_classes}, the test ones {classes}")
        val_labels = np.array([index[c] for c in val["label"]], dtype=int)
        out["temperature"] = temperature_scaling(val_labels, val_probs, labels, probs, bins)
        if coverages:
            cal_probs, _ = probabilities(calibration_part)
            cal_labels = np.array([index[c] for c in calibration_part["label"]], dtype=int)
            out["referral"] = referral(
                cal_labels, cal_probs, labels, probs, coverages, abnormal_flags(classes, abnormal)
            )
            out["referral"]["held_out"] = held_out
    if abnormal and val is not None:
        val_truth = np.array(abnormal_in(val["label"].to_numpy(), abnormal), dtype=bool)
        test_truth = np.array(abnormal_in(test["label"].to_numpy(), abnormal), dtype=bool)
        val_score, test_score = abnormal_score(val_probs, classes, abnormal), abnormal_score(probs, classes, abnormal)
        for point in operating_points or []:
            ((kind, target),) = point.items()
            found = operating_point(val_truth, val_score, test_truth, test_score, float(target), kind)
            out["operating_points"].append(
                found if found is not None else {"kind": kind, "target": target, "threshold": None}
            )
    if paper_abnormal and set(paper_abnormal) <= set(classes):
        out["paper_claim"] = class_accuracy_gap(
            test["label"].to_numpy(), test["pred"].to_numpy(), paper_abnormal, classes, n_boot, seed
        )
    return out


def calibration_record(val, classes: list[str], coverages, operating_points, abnormal: list[str] | None = None) -> dict:
    """A run's ``calibration.json``: what its validation predictions (``val``, a predictions frame) fix for
    later use: the temperature (None where it cannot be estimated), the split-conformal threshold of each
    coverage (marginal and per class), and the threshold of each operating point on the abnormal score.

    The conformal thresholds come from the validation split's calibration part where the run kept one out
    of model selection (:func:`validation_parts`), the temperature and operating points from the rest:
    the guarantee then holds as stated for cells exchangeable with the split (marginal, over calibration
    sets). Without such a part, the split that chose the best epoch calibrates too, and that it did not
    favour its cells is an assumption, said so in ``assumption``."""
    from .calibration import estimate_temperature
    from .referral import class_thresholds, conformal_threshold, coverage_distribution

    val, part, held_out = validation_parts(val)
    probs, found = probabilities(val)
    if found != list(classes):
        raise ValueError(f"the validation predictions have classes {found}, the run {classes}")
    labels = class_codes(val["label"], classes)
    cal_probs, cal_labels = probabilities(part)[0], class_codes(part["label"], classes)
    t, why = estimate_temperature(labels, probs)
    points = []
    if abnormal:
        truth = np.array(abnormal_in(val["label"].to_numpy(), abnormal), dtype=bool)
        score = abnormal_score(probs, classes, abnormal)
        for point in operating_points or []:
            ((kind, target),) = dict(point).items()
            points.append(
                {
                    "name": f"{kind}{target:g}",
                    "kind": kind,
                    "target": float(target),
                    "threshold": threshold_for(truth, score, float(target), kind),
                }
            )
    return {
        "format": 1,
        "fitted_on": "validation",
        "images": int(len(labels)),
        # the conformal thresholds' images: the validation split's part kept out of model selection, or all of it
        "calibration_images": int(len(cal_labels)),
        "calibration_held_out": held_out,
        "classes": list(classes),
        "temperature": t,
        "temperature_not_estimable": why,
        "conformal": {
            f"{c:g}": {
                "coverage": float(c),
                "threshold": conformal_threshold(cal_labels, cal_probs, float(c)),
                "per_class": class_thresholds(cal_labels, cal_probs, float(c)),
                **(coverage_distribution(len(cal_labels), float(c)) or {}),
            }
            for c in coverages
        },
        "abnormal_classes": [c for c in classes if abnormal and abnormal_in([c], abnormal)[0]],
        "operating_points": points,
        "assumption": (
            "conformal sets cover the true class for at least the coverage on average over calibration sets, "
            + (
                "for new cells exchangeable with the validation split's calibration part, which took no part "
                "in choosing the epoch or the temperature"
                if held_out
                else "if new cells are exchangeable with the validation split, which also chose the best epoch "
                "(assumed not to favour its cells)"
            )
        ),
    }
