"""Intervals the workflow computes the same way wherever they appear: Wilson's score interval for a
proportion (accuracy, sensitivity, specificity, coverage, cells missed; with its counts beside it) and
DeLong's for a ROC AUC."""

from __future__ import annotations

import numpy as np


def wilson(correct: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson's score interval for ``correct`` of ``n`` (scipy's), never of zero width; None for no images."""
    from scipy.stats import binomtest

    if not n:
        return None
    interval = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(interval.low), float(interval.high)]


def delong(truth, score, level: float = 0.95) -> dict | None:
    """The ROC AUC of ``score`` for a binary ``truth`` with DeLong, DeLong & Clarke-Pearson's (1988) variance,
    computed from midranks as Sun & Xu (2014) do, and the interval AUC ± z·SE clipped to [0, 1] (as pROC's
    ``ci.auc(method="delong")``). None where one class is absent, and no interval where the variance is 0
    (every pair ordered the same way, a perfectly separated AUC of 1): its spread cannot be estimated there.

    Written here (ten lines on scipy's ``rankdata``): neither scipy nor scikit-learn has it, and the PyPI
    packages that do are small, unkept copies of the same code.
    """
    from scipy.stats import norm, rankdata

    truth, score = np.asarray(truth, bool), np.asarray(score, float)
    x, y = score[truth], score[~truth]
    m, n = len(x), len(y)
    if not m or not n:
        return None
    z = rankdata(np.concatenate([x, y]))
    v10 = (z[:m] - rankdata(x)) / n  # per positive: the share of negatives it outranks (a tie half)
    v01 = 1 - (z[m:] - rankdata(y)) / m  # per negative: the share of positives that outrank it
    auc = float(v10.mean())
    var = (np.var(v10, ddof=1) if m > 1 else 0.0) / m + (np.var(v01, ddof=1) if n > 1 else 0.0) / n
    se = float(np.sqrt(var))
    half = float(norm.ppf((1 + level) / 2)) * se
    interval = [max(0.0, auc - half), min(1.0, auc + half)]
    return {
        "auc": auc,
        "se": se,
        "interval": interval if interval[1] > interval[0] else None,
        "method": "DeLong",
    }
