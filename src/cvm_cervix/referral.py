"""Which cells must a cytopathologist still see: referral with a coverage guarantee.

Split-conformal prediction sets (the least-ambiguous set-valued classifier, LAC): the conformity score
of an image is 1 − the probability the model gives its true class; on the validation split (the
calibration set, never trained on) the threshold q̂ is the ⌈(n + 1)·c⌉-th smallest score, and a test
image's set holds every class whose probability is at least 1 − q̂. Over exchangeable images the true
class is in the set with probability at least c (Vovk et al.; Angelopoulos & Bates, 2021). A cell whose
set is not exactly one class (ambiguous, or empty) is referred to a person; the others are decided by
the model, and the abnormal cells among them called normal are the ones the referral misses.

Written here rather than through MAPIE: the workflow has each run's saved probabilities, not an
estimator to wrap, and LAC on probabilities is the few lines below (tested against hand-computed sets).
The selective-classification view beside it: the risk-coverage curve (error among the images kept when
only the most confident are kept).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

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


def prediction_sets(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """N×C booleans: the classes of each image's set (all of them where the threshold is None)."""
    probs = np.asarray(probs, float)
    if threshold is None:
        return np.ones_like(probs, dtype=bool)
    # a tolerance of float rounding: a class whose probability is 1 − q̂ to the last bit is in the set
    return probs >= 1.0 - threshold - 1e-12


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


def referral(
    val_labels: np.ndarray,
    val_probs: np.ndarray,
    test_labels: np.ndarray,
    test_probs: np.ndarray,
    coverages: list[float],
    abnormal: np.ndarray | None = None,
    level: float = 0.95,
) -> dict:
    """For each coverage asked: the threshold from validation and, on test, the coverage achieved
    (with a Wilson interval), the mean set size, the share referred, and the abnormal cells decided
    as normal (missed). ``abnormal``: per class, whether it is abnormal (None: no such count)."""
    test_labels, test_probs = np.asarray(test_labels, int), np.asarray(test_probs, float)
    n = len(test_labels)
    rows = []
    for coverage in coverages:
        threshold = conformal_threshold(val_labels, val_probs, coverage)
        sets = prediction_sets(test_probs, threshold)
        size = sets.sum(1)
        covered = int(sets[np.arange(n), test_labels].sum()) if n else 0
        referred = size != 1
        row = {
            "target": float(coverage),
            "threshold": threshold,
            "calibration_images": int(len(val_labels)),
            "coverage": covered / n if n else None,
            "coverage_ci": list(binomtest(covered, n).proportion_ci(level, method="wilson")) if n else None,
            "mean_set_size": float(size.mean()) if n else None,
            "referred": float(referred.mean()) if n else None,
            "referred_images": int(referred.sum()),
            "test_images": n,
        }
        if abnormal is not None:
            abnormal = np.asarray(abnormal, bool)
            decided = ~referred
            single = sets.argmax(1)  # the one class of a decided image's set
            truly = abnormal[test_labels]
            missed = decided & truly & ~abnormal[single]
            row.update(
                {
                    "abnormal_images": int(truly.sum()),
                    "abnormal_decided": int((decided & truly).sum()),
                    "abnormal_missed": int(missed.sum()),
                    # of every abnormal test cell, the share the model alone called normal, with Wilson's
                    # interval (0 of 56 missed is at most 6.4%, not "none")
                    "abnormal_missed_share": float(missed.sum() / truly.sum()) if truly.any() else None,
                    "abnormal_missed_ci": list(
                        binomtest(int(missed.sum()), int(truly.sum())).proportion_ci(level, method="wilson")
                    )
                    if truly.any()
                    else None,
                }
            )
        rows.append(row)
    return {"method": "split conformal (LAC), calibrated on the validation split", "level": level, "rows": rows}
