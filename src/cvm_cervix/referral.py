"""Which cells must a cytopathologist still see: referral by conformal prediction sets, and what it holds.

Split-conformal prediction sets (the least-ambiguous set-valued classifier, LAC): the conformity score
of an image is 1 − the probability the model gives its true class; on the calibration images (a part
of the validation split, never trained on) the threshold q̂ is the ⌈(n + 1)·c⌉-th smallest score, and a test
image's set holds every class whose probability is at least 1 − q̂ (Vovk et al.; Angelopoulos & Bates,
2021). What that holds, and only that: if calibration and test images are exchangeable, the true class
is in the set with probability at least c, *marginally*: averaged over calibration sets and over
classes. The coverage of one calibration set is itself random, Beta(k, n + 1 − k) with k = ⌈(n + 1)·c⌉
(Angelopoulos & Bates, Sec. 3.2): with n = 88 images at c = 0.9 it falls below 0.9 about a third of the
time (:func:`shortfall_probability`). The calibration images are the validation split's part that took
no part in choosing the best epoch or the temperature (``train.calibration_holdout``), so nothing fitted
to the model favours them; a run without such a part calibrates on the split that chose its epoch, and
there exchangeability is an assumption, said so. The realised coverage on test stands beside the target.

Class-conditional (Mondrian) sets (Vovk et al. 2005) calibrate one threshold per true class on that
class's own validation images: the guarantee then holds for each class, abnormal ones included, at the
price of larger sets; a class with too few calibration images for c is in every set.

A cell whose set is not exactly one class is referred to a person: ambiguous (several classes) or empty
(none: counted apart); the others are decided by the model, and the abnormal cells among them called
normal are the ones the referral misses.

Written here rather than through MAPIE or crepes: the workflow has each run's saved probabilities, not
an estimator to wrap, and LAC and its Mondrian form on probabilities are the few lines below (tested
against hand-computed sets and over many random calibration/test splits). The selective-classification
view beside it: the risk-coverage curve (error among the images kept when only the most confident are kept).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

from .intervals import wilson

CURVE_POINTS = 101


def conformal_threshold(labels: np.ndarray, probs: np.ndarray, coverage: float) -> float | None:
    """q̂ of the calibration images (labels as class indices); None where there are too few images for
    the coverage asked (⌈(n + 1)·c⌉ > n): every set is then every class."""
    labels, probs = np.asarray(labels, int), np.asarray(probs, float)
    n = len(labels)
    k = math.ceil((n + 1) * coverage)
    if n == 0 or k > n:
        return None
    scores = np.sort(1.0 - probs[np.arange(n), labels])
    return float(scores[k - 1])


def coverage_distribution(n: int, coverage: float) -> dict | None:
    """What one calibration set of ``n`` images gives: its coverage is Beta(k, n + 1 − k), k = ⌈(n + 1)·c⌉
    (continuous scores, exchangeable images). Returns the probability that it falls below ``coverage``
    and the coverage that 95% of calibration sets reach (the Beta's 5% quantile); None where there are too
    few images for a threshold (every set is then every class: coverage 1)."""
    k = math.ceil((n + 1) * coverage)
    if n == 0 or k > n:
        return None
    return {
        "shortfall_probability": float(beta.cdf(coverage, k, n + 1 - k)),
        "lower_95": float(beta.ppf(0.05, k, n + 1 - k)),
    }


# A calibration set is flagged small where 5% of such sets would give a coverage this far below the target.
SMALL_CALIBRATION_GAP = 0.05


def class_thresholds(labels: np.ndarray, probs: np.ndarray, coverage: float) -> list[float | None]:
    """Mondrian q̂ of each class: :func:`conformal_threshold` on that class's calibration images alone."""
    labels, probs = np.asarray(labels, int), np.asarray(probs, float)
    return [conformal_threshold(labels[labels == c], probs[labels == c], coverage) for c in range(probs.shape[1])]


def prediction_sets(probs: np.ndarray, threshold) -> np.ndarray:
    """N×C booleans: the classes of each image's set. ``threshold``: one q̂ (marginal), or one per class
    (Mondrian); None (for all, or for a class) puts every class (or that class) in every set."""
    probs = np.asarray(probs, float)
    per_class = threshold if isinstance(threshold, (list, tuple)) else [threshold] * probs.shape[1]
    # None: in every set; a tolerance of float rounding: a probability of 1 − q̂ to the last bit is in it
    limits = np.array([-np.inf if q is None else 1.0 - q - 1e-12 for q in per_class])
    return probs >= limits


def risk_coverage(labels: np.ndarray, probs: np.ndarray, points: int = CURVE_POINTS) -> dict:
    """Error rate among the images kept when only the most confident share is kept, for shares 1/n..1."""
    labels, probs = np.asarray(labels, int), np.asarray(probs, float)
    n = len(labels)
    if n == 0:
        return {"coverage": [], "risk": []}
    order = np.argsort(-probs.max(1), kind="stable")
    errors = np.cumsum(probs.argmax(1)[order] != labels[order])
    kept = np.arange(1, n + 1)
    pick = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return {"coverage": (kept[pick] / n).tolist(), "risk": (errors[pick] / kept[pick]).tolist()}


METHODS = {
    "marginal": "split conformal (LAC): one threshold, the target met on average over cells and calibration sets",
    "per class": "Mondrian split conformal (LAC per true class): the target met for each class, abnormal ones too",
}


def referral(
    val_labels: np.ndarray,
    val_probs: np.ndarray,
    test_labels: np.ndarray,
    test_probs: np.ndarray,
    coverages: list[float],
    abnormal: np.ndarray | None = None,
    level: float = 0.95,
) -> dict:
    """For each coverage asked and each method (:data:`METHODS`): the threshold(s) from validation and, on
    test, the coverage achieved (with a Wilson interval), the lowest coverage of a class, the mean set
    size, the cells referred (ambiguous and empty apart), and the abnormal cells decided as normal
    (missed). ``abnormal``: per class, whether it is abnormal (None: no such count)."""
    val_labels, val_probs = np.asarray(val_labels, int), np.asarray(val_probs, float)
    test_labels, test_probs = np.asarray(test_labels, int), np.asarray(test_probs, float)
    n_cal = len(val_labels)
    per_class_cal = np.bincount(val_labels, minlength=test_probs.shape[1])
    rows = []
    for coverage in coverages:
        for method in METHODS:
            if method == "marginal":
                threshold = conformal_threshold(val_labels, val_probs, coverage)
                found = [coverage_distribution(n_cal, coverage)]
                too_few = [] if threshold is not None else ["all"]
            else:
                threshold = class_thresholds(val_labels, val_probs, coverage)
                found = [coverage_distribution(int(m), coverage) for m in per_class_cal]
                too_few = [int(c) for c, q in enumerate(threshold) if q is None]
            # per class: the class whose calibration is the weakest
            known = [f for f in found if f is not None]
            lower = min((f["lower_95"] for f in known), default=None)
            sets = prediction_sets(test_probs, threshold)
            rows.append(
                {
                    "method": method,
                    "target": float(coverage),
                    "threshold": threshold,
                    "calibration_images": int(n_cal),
                    # over calibration sets of this size (Beta(k, n + 1 - k)): the chance this one's coverage
                    # falls below the target, and the coverage 95% of them reach (per class: the weakest class)
                    "shortfall_probability": max((f["shortfall_probability"] for f in known), default=None),
                    "coverage_lower_95": lower,
                    "small_calibration": lower is not None and lower < coverage - SMALL_CALIBRATION_GAP,
                    # classes with too few calibration images for the target: in every set
                    "too_few": too_few,
                    **_outcome(sets, test_labels, abnormal, level),
                }
            )
    return {
        "method": "split conformal (LAC), calibrated on the validation split",
        "methods": METHODS,
        "level": level,
        "rows": rows,
    }


def _outcome(sets: np.ndarray, labels: np.ndarray, abnormal: np.ndarray | None, level: float) -> dict:
    """What the sets do on test: coverage (overall and of the worst class), set sizes, referrals, misses."""
    n = len(labels)
    size = sets.sum(1)
    covered = sets[np.arange(n), labels] if n else np.zeros(0, bool)
    by_class = [float(covered[labels == c].mean()) for c in range(sets.shape[1]) if (labels == c).any()]
    referred = size != 1
    out = {
        "coverage": float(covered.mean()) if n else None,
        "coverage_ci": wilson(int(covered.sum()), n, level),
        "covered_images": int(covered.sum()),
        "lowest_class_coverage": min(by_class) if by_class else None,
        "mean_set_size": float(size.mean()) if n else None,
        "referred": float(referred.mean()) if n else None,
        "referred_images": int(referred.sum()),
        "ambiguous_images": int((size > 1).sum()),
        "empty_images": int((size == 0).sum()),
        "test_images": n,
    }
    if abnormal is not None:
        abnormal = np.asarray(abnormal, bool)
        decided = ~referred
        single = sets.argmax(1)  # the one class of a decided image's set
        truly = abnormal[labels]
        missed = decided & truly & ~abnormal[single]
        out.update(
            {
                "abnormal_images": int(truly.sum()),
                "abnormal_decided": int((decided & truly).sum()),
                "abnormal_missed": int(missed.sum()),
                # of every abnormal test cell, the share the model alone called normal, with Wilson's
                # interval (0 of 56 missed is at most 6.4%, not "none")
                "abnormal_missed_share": float(missed.sum() / truly.sum()) if truly.any() else None,
                "abnormal_missed_ci": wilson(int(missed.sum()), int(truly.sum()), level),
                "abnormal_coverage": float(covered[truly].mean()) if truly.any() else None,
            }
        )
    return out
