"""Calibration of a run's probabilities: the expected calibration error, the Brier score and the NLL, and
temperature scaling fitted on the validation split only, where a temperature can be estimated."""

from __future__ import annotations

import numpy as np


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error of the top-class confidence over ``bins`` equal-width bins of (0, 1].

    ECE = sum over bins of (images in bin / all images) × |accuracy in bin − mean confidence in bin|.
    A bin holds confidences in (lo, hi]; the first also takes 0.
    """
    labels, probs = np.asarray(labels, int), np.asarray(probs, float)
    confidence, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows, ece, n = [], 0.0, max(len(labels), 1)
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else None
        conf = float(confidence[mask].mean()) if count else None
        if count:
            ece += count / n * abs(acc - conf)
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": count, "accuracy": acc, "confidence": conf})
    return {
        "ece": float(ece),
        "ece_ci": ece_interval(which, confidence, correct, bins),
        "brier": brier(labels, probs) if len(labels) else None,
        "nll": _nll(labels, probs) if len(labels) else None,
        "bins": bins,
        "binning": f"{bins} equal-width bins of the top-class confidence",
        "mean_confidence": float(confidence.mean()) if len(labels) else None,
        "accuracy": float(correct.mean()) if len(labels) else None,
        "table": rows,
    }


def ece_interval(
    which: np.ndarray, confidence: np.ndarray, correct: np.ndarray, bins: int, n_boot: int = 1000, seed: int = 0
) -> list[float] | None:
    """The 95% percentile bootstrap interval of the ECE over test images (the bins fixed, the images
    resampled); None with no images or where every resample gives one value. On 24-96 images an ECE
    moves by several hundredths between resamples: the interval says how much."""
    n = len(which)
    if n == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    # per resample and bin: the summed confidence and the number right
    offsets = (np.arange(n_boot)[:, None] * bins + which[idx]).ravel()
    conf = np.bincount(offsets, weights=confidence[idx].ravel(), minlength=n_boot * bins).reshape(n_boot, bins)
    right = np.bincount(offsets, weights=correct[idx].ravel(), minlength=n_boot * bins).reshape(n_boot, bins)
    eces = np.abs(right - conf).sum(1) / n  # sum over bins of |n_b acc_b - n_b conf_b| / n
    lo, hi = float(np.percentile(eces, 2.5)), float(np.percentile(eces, 97.5))
    return [lo, hi] if hi > lo else None


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, float), 1e-12, 1.0))  # logits up to a constant per image


def scale_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a model with its logits divided by ``temperature`` gives.

    log p differs from the logits by a constant per image, which softmax ignores, so the saved
    probabilities are enough; the top class, and so every prediction, stays the same.
    """
    z = _log_probs(probs) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _nll(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(-_log_probs(probs)[np.arange(len(labels)), labels].mean())


# The temperatures searched (Guo et al. fit one positive scalar; these bounds are wide: T = 20 flattens
# any model's probabilities to near chance, T = 0.05 makes them near one-hot).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``probs`` (Guo et al., 2017).

    One scalar fitted by scipy's bounded scalar search (on log T within :data:`TEMPERATURE_BOUNDS`): no
    library of the project's dependencies offers temperature scaling, and these few lines are all it is.
    """
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, int)
    found = minimize_scalar(
        lambda log_t: _nll(labels, scale_temperature(probs, float(np.exp(log_t)))),
        bounds=tuple(np.log(TEMPERATURE_BOUNDS)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def temperature_estimable(labels: np.ndarray, probs: np.ndarray) -> str | None:
    """Why no temperature can be estimated from these images, or None where one can.

    The likelihood has a minimum inside (0, ∞) only where some image's true class is not its top class
    and some is: on a split whose every top class is right (separated), any smaller T fits better and
    the fit runs to the search's lower bound; where none is right, to its upper bound. Either way the
    T found is the bound, not an estimate."""
    labels = np.asarray(labels, int)
    right = np.asarray(probs).argmax(1) == labels
    if len(labels) == 0:
        return "no validation images"
    if right.all():
        return (
            f"every one of the {len(labels)} validation images is classified right: any smaller temperature fits better"
        )
    if not right.any():
        return f"none of the {len(labels)} validation images is classified right: any larger temperature fits better"
    return None


def estimate_temperature(labels: np.ndarray, probs: np.ndarray) -> tuple[float | None, str | None]:
    """(T, None) where the validation images can estimate a temperature, else (None, why not): no
    likelihood minimum (:func:`temperature_estimable`), or the fit stops at a bound of its search."""
    why = temperature_estimable(labels, probs)
    if why:
        return None, why
    t = fit_temperature(labels, probs)
    # the search's tolerance on a flat likelihood: within 10% of a bound is at the bound
    if not TEMPERATURE_BOUNDS[0] * 1.1 < t < TEMPERATURE_BOUNDS[1] / 1.1:
        low, high = TEMPERATURE_BOUNDS
        return None, f"the fit stops at the bound {t:.3g} of its search ({low} to {high})"
    return t, None


def temperature_scaling(val_labels, val_probs, test_labels, test_probs, bins: int = 15) -> dict:
    """Temperature scaling fitted on validation only, and what it does on test, beside the raw numbers.

    Where the validation split cannot estimate a temperature (:func:`temperature_estimable`), or the fit
    stops at a bound of its search, the temperature is None and ``not_estimable`` says why. ``worse``:
    scaling made the test ECE larger (it is fitted to the validation NLL, not to any ECE)."""
    val_labels, test_labels = np.asarray(val_labels, int), np.asarray(test_labels, int)
    raw = {
        "val_nll": _nll(val_labels, val_probs),
        "test_nll": _nll(test_labels, test_probs),
        "test_ece": calibration(test_labels, test_probs, bins)["ece"],
        "test_brier": brier(test_labels, test_probs),
    }
    t, why = estimate_temperature(val_labels, val_probs)
    out = {"temperature": t, "fitted_on": "validation", "not_estimable": why}
    if t is None:
        return {
            **out,
            **{k: {"raw": v, "scaled": None} for k, v in raw.items()},
            "worse": None,
        }
    scaled = scale_temperature(test_probs, t)
    result = {
        **out,
        "val_nll": {"raw": raw["val_nll"], "scaled": _nll(val_labels, scale_temperature(val_probs, t))},
        "test_nll": {"raw": raw["test_nll"], "scaled": _nll(test_labels, scaled)},
        "test_ece": {"raw": raw["test_ece"], "scaled": calibration(test_labels, scaled, bins)["ece"]},
        "test_brier": {"raw": raw["test_brier"], "scaled": brier(test_labels, scaled)},
    }
    result["worse"] = result["test_ece"]["scaled"] > result["test_ece"]["raw"]
    return result


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """The multi-class Brier score: the mean over images of the squared distance between the probability
    vector and the one-hot true class (0 is perfect, 2 the worst)."""
    probs = np.asarray(probs, float)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), np.asarray(labels, int)] = 1.0
    return float(((probs - onehot) ** 2).sum(1).mean()) if len(labels) else float("nan")
