"""Wilson's score interval for a proportion: the one interval every proportion the workflow reports gets
(accuracy, sensitivity, specificity, coverage, cells missed), with its counts beside it."""

from __future__ import annotations


def wilson(correct: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson's score interval for ``correct`` of ``n`` (scipy's), never of zero width; None for no images."""
    from scipy.stats import binomtest

    if not n:
        return None
    interval = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(interval.low), float(interval.high)]
