"""The statistics of an experiment's runs, from their prediction files: Wilson and bootstrap intervals, McNemar's
test against the reference model, the clinical view, contrasts over seeds and splits, and each run's
screening diagnostics.

Tables in, JSON out, without torch: a statistics job imports in about 3 s, not the 10 s that torch,
timm and torchvision took with ``analysis.py`` on a 2-core machine (BENCHMARKS.md). The analysis of a
trained model (features, t-SNE, Grad-CAM) is ``analysis.py``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from ._io import read_json, read_table
from .diagnostics import class_codes, diagnose, resample_counts
from .errors import CvmError
from .intervals import wilson
from .labels import abnormal_in
from .plan import STATS_FORMAT
from .predictors import test_time_flips


def accuracy_f1_intervals(labels, preds, classes, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """95% intervals of a run's accuracy and macro F1 over its test images, with the counts.

    Accuracy is a proportion, ``correct`` of ``n``: Wilson's score interval, which keeps a width at 0 and
    100% (a percentile bootstrap of 24 of 24 gives [100, 100]). Macro F1 is no proportion: a percentile
    bootstrap over test images, None where every resample gives one value (no interval of zero width).
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    rng = np.random.default_rng(seed)
    n = len(labels)
    correct = int(np.sum(labels == preds))
    # Every resample at once (the same draws as one rng.integers(0, n, n) per resample): 1,000 calls of
    # sklearn's f1_score cost about 4 s per run in input checks alone, the paper's comparison 100 s.
    idx = rng.integers(0, n, (n_boot, n))
    f1s = macro_f1_resampled(labels, preds, classes, idx)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    f1 = [float(np.percentile(f1s, lo)), float(np.percentile(f1s, hi))] if n else None
    return {
        "level": level,
        "correct": correct,
        "n": int(n),
        "accuracy": wilson(correct, n, level),
        "accuracy_method": "Wilson score",
        "f1_macro": f1 if f1 and f1[1] > f1[0] else None,
        "f1_macro_method": "percentile bootstrap over test images",
        "n_boot": n_boot,
        "seed": seed,
    }


def macro_f1_resampled(labels, preds, classes, idx: np.ndarray) -> np.ndarray:
    """Macro F1 over ``classes`` of each resample (a row of image indices in ``idx``), as sklearn's
    ``f1_score(..., labels=classes, average="macro", zero_division=0)`` gives it for that resample
    (tests/test_analysis.py checks them equal): per class 2·TP / (2·TP + FP + FN), 0 where that is 0/0."""
    k = len(classes)
    # a label outside ``classes`` counts for no class (index k), as in sklearn with labels= given
    pair = class_codes(labels, classes) * (k + 1) + class_codes(preds, classes)
    confusion = resample_counts(pair[idx], (k + 1) ** 2).reshape(len(idx), k + 1, k + 1)  # [resample, true, predicted]
    tp2 = 2.0 * np.diagonal(confusion, axis1=1, axis2=2)[:, :k]
    denom = (confusion.sum(2) + confusion.sum(1))[:, :k]  # 2·TP + FP + FN = (TP + FN) + (TP + FP)
    f1 = np.divide(tp2, denom, out=np.zeros_like(tp2), where=denom > 0)
    return f1.mean(axis=1) if k else np.zeros(len(idx))


def mcnemar_exact(correct_a, correct_b) -> dict:
    """McNemar's exact test on paired correctness: ``b`` = only A right, ``c`` = only B right.

    The p-value is the two-sided binomial test of ``min(b, c)`` in ``b + c`` trials at 1/2.
    """
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError("McNemar needs predictions on the same images")
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return {"only_a": b, "only_b": c, "p_value": min(1.0, p)}


def clinical_view(labels, preds, abnormal: list[str], level: float = 0.95) -> dict | None:
    """Sensitivity and specificity of abnormal (any abnormal class) versus normal, each with its counts and
    Wilson's 95% interval; None if undefined (the images are all abnormal or all normal)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    true_abn = np.array(abnormal_in(labels, abnormal), dtype=bool)
    pred_abn = np.array(abnormal_in(preds, abnormal), dtype=bool)
    if true_abn.all() or (~true_abn).all():
        return None
    tp, fn = int(np.sum(true_abn & pred_abn)), int(np.sum(true_abn & ~pred_abn))
    tn, fp = int(np.sum(~true_abn & ~pred_abn)), int(np.sum(~true_abn & pred_abn))
    return {
        "sensitivity": tp / (tp + fn),
        "sensitivity_ci": wilson(tp, tp + fn, level),
        "specificity": tn / (tn + fp),
        "specificity_ci": wilson(tn, tn + fp, level),
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        # in the order of the abnormal list, each as the dataset names it
        "abnormal_classes": [str(c) for a in abnormal for c in sorted(set(labels)) if abnormal_in([c], [a])[0]],
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (family-wise error), in their order.

    Written here (six lines) rather than adding statsmodels for it: adjusted p_(i) is the running
    maximum of (m - i) p_(i) over the sorted p-values, capped at 1.
    """
    order = np.argsort(p_values, kind="stable")
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def proportion_difference(correct: int, n: int, base_correct: int, base_n: int, level: float = 0.95) -> dict:
    """The difference of two independent proportions, ``correct / n`` minus ``base_correct / base_n``, with
    Newcombe's hybrid score interval (Newcombe 1998, method 10: from each proportion's Wilson interval).
    Unlike the normal (Wald) approximation it stays inside [-1, 1] and keeps a width at 0 or 100%.

    Written here from scipy's Wilson intervals (a few lines) rather than adding statsmodels for it.
    """
    if not n or not base_n:
        raise CvmError(f"a difference of proportions needs images on both sides (got {n} and {base_n})")
    p1, p0 = correct / n, base_correct / base_n
    (l1, u1), (l0, u0) = wilson(correct, n, level), wilson(base_correct, base_n, level)
    d = p1 - p0
    return {
        "correct": int(correct),
        "n": int(n),
        "base_correct": int(base_correct),
        "base_n": int(base_n),
        "difference": d,
        "interval": [d - float(np.hypot(p1 - l1, u0 - p0)), d + float(np.hypot(u1 - p1, p0 - l0))],
        "method": "Newcombe hybrid score (Wilson), two independent samples",
    }


def _arm(frames: list, groups: dict, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One arm of a baseline gap: its test images' paths, their correctness per seed (seeds × images) and
    their source images (groups); every seed must have been tested on the same images.
    """
    paths = frames[0]["path"]
    for f in frames[1:]:
        if not f["path"].equals(paths):
            raise CvmError(f"the seeds of {where} were tested on different images; re-run prepare")
    missing = [p for p in paths if p not in groups]
    if missing:
        raise CvmError(f"{missing[0]} is in the predictions of {where} but in no manifest; evaluate the run again")
    correct = np.stack([(f["label"] == f["pred"]).to_numpy(float) for f in frames])
    return paths.to_numpy(), correct, np.array([groups[p] for p in paths])


def _cluster_draws(correct: np.ndarray, clusters: np.ndarray, rng, n_boot: int) -> np.ndarray:
    """``n_boot`` draws of the mean correctness over seeds and images, resampling the seeds and the clusters
    (source images) with replacement: a two-stage bootstrap that keeps cells of one source image together and
    lets the spread of the training over seeds into the interval. ``correct``: seeds × images (or their
    difference, for a paired arm)."""
    keys, cluster = np.unique(clusters, return_inverse=True)
    per_cluster = np.stack([np.bincount(cluster, weights=row, minlength=len(keys)) for row in correct])  # seeds × K
    size = np.bincount(cluster, minlength=len(keys)).astype(float)
    seeds = resample_counts(rng.integers(0, len(correct), (n_boot, len(correct))), len(correct)).astype(float)
    picks = resample_counts(rng.integers(0, len(keys), (n_boot, len(keys))), len(keys)).astype(float)
    total = np.einsum("bs,sk,bk->b", seeds, per_cluster, picks) / len(correct)
    return total / (picks @ size)


def baseline_gap(
    ours: list, theirs: list, groups: dict, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """The gap in test accuracy between the same model trained and tested on two splits of the same cells
    (``ours``, e.g. split by source image, against ``theirs``, the paper's random split), each arm a list of
    prediction frames, one per seed; ``groups``: each image's source image.

    Two views, each with a percentile interval from a bootstrap fit for it: over each arm's whole test split,
    the clusters (source images) and seeds of each arm resampled apart (the arms' test splits share cells,
    which this ignores: if anything it widens the interval); and paired over the cells both test splits hold,
    their difference in correctness resampled by source image and seed together, which compares the two
    trainings on the very same cells. Where a bootstrap has no spread (both arms right on every cell),
    Newcombe's interval for two independent proportions stands in, labelled so: never an interval of zero
    width. One seed per arm leaves the spread of the training out, and the result says so.
    """
    rng = np.random.default_rng(seed)
    paths_a, correct_a, clusters_a = _arm(ours, groups, "the experiment")
    paths_b, correct_b, clusters_b = _arm(theirs, groups, "its baseline")
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def interval(draws):
        lo, hi = float(np.percentile(draws, lo_q)), float(np.percentile(draws, hi_q))
        return [lo, hi] if hi > lo else None

    acc_a, acc_b = float(correct_a.mean()), float(correct_b.mean())
    whole = _cluster_draws(correct_a, clusters_a, rng, n_boot) - _cluster_draws(correct_b, clusters_b, rng, n_boot)
    out = {
        "seeds": [len(ours), len(theirs)],
        "n": int(correct_a.shape[1]),
        "baseline_n": int(correct_b.shape[1]),
        # counts of the seeds' mean (a whole number with one seed)
        "correct": float(correct_a.sum(1).mean()),
        "baseline_correct": float(correct_b.sum(1).mean()),
        "accuracy": acc_a,
        "baseline_accuracy": acc_b,
        "source_images": [int(len(set(clusters_a))), int(len(set(clusters_b)))],
        "gap": acc_a - acc_b,
        "gap_ci": interval(whole),
        "gap_method": "cluster bootstrap over source images and seeds, each arm apart",
        "n_boot": n_boot,
        "seed_spread_included": len(ours) > 1 and len(theirs) > 1,
    }
    if out["gap_ci"] is None:
        one = proportion_difference(round(out["correct"]), out["n"], round(out["baseline_correct"]), out["baseline_n"])
        out["gap_ci"], out["gap_method"] = (
            one["interval"],
            "Newcombe hybrid score (as if independent: the bootstrap has no spread)",
        )
    common, ia, ib = np.intersect1d(paths_a, paths_b, return_indices=True)
    out["common"] = None
    if len(common):
        # seeds of each arm resampled apart, then the common cells' source images (the same draw for both arms)
        diff = correct_a[:, ia].mean(0) - correct_b[:, ib].mean(0)
        seeds_a = rng.integers(0, len(correct_a), (n_boot, len(correct_a)))
        seeds_b = rng.integers(0, len(correct_b), (n_boot, len(correct_b)))
        keys, cluster = np.unique(clusters_a[ia], return_inverse=True)
        clusters = resample_counts(rng.integers(0, len(keys), (n_boot, len(keys))), len(keys)).astype(float)
        weight = clusters[:, cluster]  # boot × common cells: how often each cell's source image was drawn
        mean_a = np.take(correct_a[:, ia], seeds_a, axis=0).mean(1)  # boot × common cells
        mean_b = np.take(correct_b[:, ib], seeds_b, axis=0).mean(1)
        draws = ((mean_a - mean_b) * weight).sum(1) / weight.sum(1)
        ci, method = (interval(draws), "paired cluster bootstrap over the common cells' source images and seeds")
        if ci is None:  # no cell right in one arm only: the gap lies within the share of such cells, at most
            bound = wilson(int(np.sum(diff != 0)), len(common))[1]
            ci, method = (
                [-bound, bound],
                "± Wilson's upper bound on the share of cells right in one arm only (none seen)",
            )
        a_right, b_right = correct_a[:, ia].mean(0), correct_b[:, ib].mean(0)
        out["common"] = {
            "n": int(len(common)),
            "source_images": int(len(keys)),
            "accuracy": float(a_right.mean()),
            "baseline_accuracy": float(b_right.mean()),
            "gap": float(diff.mean()),
            "gap_ci": ci,
            "gap_method": method,
            # cells right in one arm only (the seeds' mean, a whole number with one seed): where the two differ
            "only_ours": float(np.clip(a_right - b_right, 0, None).sum()),
            "only_baseline": float(np.clip(b_right - a_right, 0, None).sum()),
        }
    return out


def corruption_errors(result: dict, baseline: dict) -> dict | None:
    """Hendrycks & Dietterich's (2019) corruption error of a run against a baseline run (two
    ``robustness.json``): per corruption c, CE_c = the sum over severities of the run's error over the
    baseline's, and mCE their mean; the relative mCE measures the same with each error less its clean
    error (how much is lost to the corruption, not how much was wrong anyway). Severities that do nothing
    at the image size are left out; None where the two were not measured alike."""
    if result["img_size"] != baseline["img_size"] or set(result["corruptions"]) != set(baseline["corruptions"]):
        return None
    ce, relative = {}, {}
    for name, by_severity in result["corruptions"].items():
        theirs = baseline["corruptions"][name]
        counted = [s for s, e in by_severity.items() if s != "0" and s in theirs and not e.get("no_effect")]
        if not counted:
            continue
        ours_err = sum(1 - by_severity[s]["accuracy"] for s in counted)
        base_err = sum(1 - theirs[s]["accuracy"] for s in counted)
        ce[name] = ours_err / base_err if base_err > 0 else None
        lost = ours_err - len(counted) * (1 - result["clean"]["accuracy"])
        base_lost = base_err - len(counted) * (1 - baseline["clean"]["accuracy"])
        relative[name] = lost / base_lost if base_lost > 0 else None
    known = [v for v in ce.values() if v is not None]
    known_relative = [v for v in relative.values() if v is not None]
    return {
        "ce": ce,
        "mce": float(np.mean(known)) if known and len(known) == len(ce) else None,
        "relative_ce": relative,
        "relative_mce": float(np.mean(known_relative))
        if known_relative and len(known_relative) == len(relative)
        else None,
    }


def paired_bootstrap_diff(
    correct_a, correct_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile interval of accuracy(B) − accuracy(A), resampling the same test images for both; None
    where the two are right on the very same images (every resample's difference is 0: no spread to show)."""
    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    diffs = b[idx].mean(1) - a[idx].mean(1)
    lo, hi = float(np.percentile(diffs, 100 * (1 - level) / 2)), float(np.percentile(diffs, 100 * (1 + level) / 2))
    return [lo, hi] if hi > lo else None


def friedman_nemenyi(table, names: list[str], alpha: float = 0.05) -> dict:
    """Demšar's (2006) comparison of k predictors over N blocks: ``table`` is N × k scores (higher better).
    Each block ranks the predictors (1 = best, ties share their mean rank); Friedman's test (scipy's
    ``friedmanchisquare``) asks whether the mean ranks differ at all, Iman and Davenport's F beside it (the
    less conservative form Demšar recommends); Nemenyi's post-hoc test compares every pair: two mean
    ranks differ where they are at least the critical difference CD = q_α √(k(k+1)/6N) apart, q_α the
    studentized range's 1 − α quantile over √2, and each pair's p-value is the studentized range's tail at
    |R_i − R_j| √2 / √(k(k+1)/6N).

    Written on scipy's ``studentized_range`` (these formulas, a few lines) rather than through scikit-posthocs
    or autorank, which would bring matplotlib, seaborn and statsmodels into the workflow's environment (and
    the GPU machine's wheel folder past its limit) for the same numbers; tests/test_analysis.py checks CD
    against Demšar's Table 5, Friedman's statistic against scipy on a hand-made table, and every pair's
    p-value against scikit-posthocs' ``posthoc_nemenyi_friedman`` (a test dependency).
    """
    from scipy.stats import f as f_dist
    from scipy.stats import friedmanchisquare, rankdata, studentized_range

    table = np.asarray(table, float)
    n, k = table.shape
    ranks = np.vstack([rankdata(-row) for row in table])  # 1 = the best score of the block
    mean = ranks.mean(0)
    chi2, p = friedmanchisquare(*table.T)
    ff = (n - 1) * chi2 / (n * (k - 1) - chi2) if n * (k - 1) > chi2 else float("inf")
    se = np.sqrt(k * (k + 1) / (6 * n))
    q_alpha = float(studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            q = abs(mean[i] - mean[j]) / se
            pairs.append(
                {
                    "a": names[i],
                    "b": names[j],
                    "rank_difference": float(mean[i] - mean[j]),
                    "p_value": float(min(1.0, studentized_range.sf(q * np.sqrt(2), k, np.inf))),
                }
            )
    return {
        "blocks": int(n),
        "treatments": list(names),
        "mean_ranks": {name: float(r) for name, r in zip(names, mean, strict=True)},
        "friedman": {"statistic": float(chi2), "df": k - 1, "p_value": float(p)},
        "iman_davenport": {
            "statistic": float(ff),
            "df": [k - 1, (k - 1) * (n - 1)],
            "p_value": float(f_dist.sf(ff, k - 1, (k - 1) * (n - 1))) if np.isfinite(ff) else 0.0,
        },
        "alpha": alpha,
        "q_alpha": q_alpha,
        "critical_difference": float(q_alpha * se),
        "nemenyi": pairs,
    }


def ranking(scores: dict, metric: str = "accuracy") -> dict:
    """The experiment's predictors (model and recipe) ranked over its splits and seeds (the blocks) by
    :func:`friedman_nemenyi`, where every predictor has a run in every block; else, or with fewer than
    three predictors or two blocks, why not (one split alone is too few to rank). The blocks are splits and
    seeds of one dataset, not Demšar's independent datasets: the test says whether the predictors differ
    over these splits of these images, and with fewer than about ten blocks its chi-square is rough."""
    treatments = sorted({(m, r) for m, r, _, _ in scores})
    blocks = sorted({(split, seed) for _, _, seed, split in scores})
    names = [m if len({r for _, r in treatments}) == 1 else f"{m} ({r})" for m, r in treatments]
    out = {"metric": metric, "treatments": names, "blocks": len(blocks), "result": None, "too_few": None}
    complete = [b for b in blocks if all((m, r, b[1], b[0]) in scores for m, r in treatments)]
    if len(treatments) < 3:
        out["too_few"] = f"{len(treatments)} model(s) and recipe(s): a ranking needs three or more (two: McNemar above)"
    elif len(complete) < 2:
        out["too_few"] = (
            f"{len(complete)} split × seed with every model: one split alone is too few to rank "
            "(give the experiment seeds or split_seeds)"
        )
    else:
        table = [[scores[(m, r, b[1], b[0])][metric] for m, r in treatments] for b in complete]
        out["blocks"] = len(complete)
        out["result"] = friedman_nemenyi(table, names)
    return out


RUN_KEY = ("model", "recipe", "seed", "split_seed")  # what tells an experiment's runs apart in its statistics


def _run_key(entry: dict) -> tuple:
    return entry["model"], entry["recipe"], entry["seed"], entry.get("split_seed", 0)


def spread(scores: dict) -> list[dict]:
    """Where the spread of a model's test scores comes from, over splits and over seeds.

    ``scores``: (model, recipe, seed, split seed) -> {"accuracy": .., "f1_macro": ..}. Per model and
    recipe and score: the standard deviation over all its runs, of the split means (between splits:
    it also holds 1/seeds of the initialisation variance) and pooled over splits of the seeds within
    one split (initialisation: the same split, another seed). None where a source cannot be seen
    (one split, or one seed per split).
    """
    groups: dict[tuple, dict[int, list]] = {}
    for (model, recipe, _seed, split), value in sorted(scores.items()):
        groups.setdefault((model, recipe), {}).setdefault(split, []).append(value)
    out = []
    for (model, recipe), by_split in groups.items():
        entry = {
            "model": model,
            "recipe": recipe,
            "splits": len(by_split),
            "seeds": sorted({len(v) for v in by_split.values()}),
            "runs": sum(map(len, by_split.values())),
        }
        for name in ("accuracy", "f1_macro"):
            cells = {s: np.array([v[name] for v in values]) for s, values in by_split.items()}
            every = np.concatenate(list(cells.values()))
            means = np.array([c.mean() for c in cells.values()])
            within = [c for c in cells.values() if len(c) > 1]
            entry[name] = {
                "mean": float(every.mean()),
                "sd_total": float(every.std(ddof=1)) if len(every) > 1 else None,
                "sd_split": float(means.std(ddof=1)) if len(means) > 1 else None,
                "sd_seed": (
                    float(np.sqrt(sum((len(c) - 1) * c.var(ddof=1) for c in within) / sum(len(c) - 1 for c in within)))
                    if within
                    else None
                ),
                "split_means": {str(s): float(m) for s, m in zip(cells, means)},
            }
        out.append(entry)
    return out


def corrected_resampled_t(diffs, test_train_ratio: float) -> dict:
    """Nadeau & Bengio's (2003) corrected resampled t-test of a mean difference over repeated random splits.

    The splits share training images, so the plain paired t-test is far too confident; the variance of
    the mean is taken as (1/J + n_test/n_train) s² instead of s²/J, with J − 1 degrees of freedom.
    """
    from scipy.stats import t as student

    d = np.asarray(diffs, float)
    j = len(d)
    if j < 2:
        raise ValueError("the corrected resampled t-test needs at least two splits")
    var = (1 / j + test_train_ratio) * d.var(ddof=1)
    if var == 0:
        t, p = (0.0, 1.0) if d.mean() == 0 else (float(np.copysign(np.inf, d.mean())), 0.0)
    else:
        t = float(d.mean() / np.sqrt(var))
        p = float(2 * student.sf(abs(t), j - 1))
    return {
        "test": "corrected resampled t-test (Nadeau & Bengio 2003)",
        "t": t,
        "df": j - 1,
        "p_value": p,
        "test_train_ratio": test_train_ratio,
    }


def split_contrasts(pairs: list[dict], ratios: dict) -> list[dict]:
    """Each contrast over splits: per split the accuracy difference (B − A) averaged over its seeds,
    then :func:`corrected_resampled_t` over the splits, and Holm's adjustment over all of them.

    ``pairs``: the per-run contrasts (:func:`contrasts`); ``ratios``: run key -> test/train images.
    Contrasts seen on one split only are left out (the per-run McNemar tests cover them).
    """
    groups: dict[tuple, dict[int, list]] = {}
    for c in pairs:
        key = (c["contrast"], *(c[s][k] for s in ("a", "b") for k in ("model", "recipe")))
        groups.setdefault(key, {}).setdefault(c["b"]["split_seed"], []).append((c["accuracy_diff"], c))
    out = []
    for (kind, a_model, a_augment, b_model, b_augment), by_split in groups.items():
        if len(by_split) < 2:
            continue
        diffs = {s: float(np.mean([d for d, _ in v])) for s, v in sorted(by_split.items())}
        ratio = float(np.mean([ratios[tuple(c["b"][k] for k in RUN_KEY)] for v in by_split.values() for _, c in v]))
        out.append(
            {
                "contrast": kind,
                "a": {"model": a_model, "recipe": a_augment},
                "b": {"model": b_model, "recipe": b_augment},
                "splits": len(diffs),
                "seeds": sorted({len(v) for v in by_split.values()}),
                "accuracy_diff": float(np.mean(list(diffs.values()))),
                "split_diffs": {str(s): d for s, d in diffs.items()},
                **corrected_resampled_t(list(diffs.values()), ratio),
            }
        )
    for entry, adjusted in zip(out, holm([e["p_value"] for e in out])):
        entry["p_holm"] = adjusted
    return out


def contrasts(frames: dict, reference: str | None, n_boot: int = 1000, starts: dict | None = None) -> list[dict]:
    """The experiment's own comparisons on the same test images, each with McNemar's test, Holm's
    adjusted p over all of them, and a paired bootstrap interval of the accuracy difference.

    ×4 against no augmentation for each model and seed (the paper's Fig. 7), and every other model
    against ``reference`` with the same augmentation and seed (e.g. each fusion variant against
    CVM-Cervix); a variant's run (``none+amp``) against the same model's plain run (``none``); and,
    where ``starts`` gives runs' (start, training fraction), every start against random weights at
    the same fraction of the training split (the fine-tuning question).
    """
    from .runs import split_recipe

    pairs = []
    for model, recipe, seed, split in frames:  # always on the same split and seed: the same test images
        base, variant = split_recipe(recipe)
        if variant != "default" and (model, base, seed, split) in frames:
            pairs.append(((model, base, seed, split), (model, recipe, seed, split), f"{variant} vs default"))
        elif variant == "default" and recipe != "none" and (model, "none", seed, split) in frames:
            pairs.append(((model, "none", seed, split), (model, recipe, seed, split), f"{recipe} vs none"))
        if reference and model != reference and (reference, recipe, seed, split) in frames:
            pairs.append(((reference, recipe, seed, split), (model, recipe, seed, split), f"vs {reference}"))
    starts = starts or {}
    for b, (start, fraction) in starts.items():
        for a, (other, same_fraction) in starts.items():
            if (
                other == "random weights"
                and start != other
                and same_fraction == fraction
                and a[0] == b[0]
                and a[2:] == b[2:]
                and a in frames
                and b in frames
                and not any(p[:2] == (a, b) for p in pairs)
            ):
                pairs.append((a, b, f"{start} vs random weights, {100 * fraction:g}% of training"))
    out = []
    for a, b, kind in pairs:
        fa, fb = frames[a], frames[b]
        if not fa["path"].equals(fb["path"]):
            raise CvmError(f"runs {a} and {b} were tested on different images; re-run prepare")
        ca, cb = (fa["label"] == fa["pred"]).to_numpy(), (fb["label"] == fb["pred"]).to_numpy()
        test = mcnemar_exact(ca, cb)
        out.append(
            {
                "contrast": kind,
                "a": dict(zip(RUN_KEY, a)),
                "b": dict(zip(RUN_KEY, b)),
                **test,
                "accuracy_diff": float(cb.mean() - ca.mean()),
                "accuracy_diff_ci": paired_bootstrap_diff(ca, cb, n_boot, seed=b[2]),
            }
        )
    for entry, adjusted in zip(out, holm([e["p_value"] for e in out])):
        entry["p_holm"] = adjusted
    return out


def subgroup_metrics(
    frame, manifest: tuple, classes: list[str], abnormal: list[str], columns: list[str], n_boot: int, seed: int
) -> dict:
    """Test metrics of each value of the manifest's ``columns`` (a combined set's source ``dataset`` always,
    where it has several): images, accuracy and macro F1 (over the classes that value holds) with
    bootstrap intervals, abnormal sensitivity and specificity. ``manifest``: (its path, the frame)."""
    where, rows = manifest
    for column in columns:
        if column not in rows.columns:
            raise CvmError(
                f"analysis.subgroups names column {column!r}, which {where} does not have "
                f"(its columns: {', '.join(rows.columns)}); remove it or add the column to the dataset's manifest"
            )
    values = rows.set_index("path")
    missing = frame.loc[~frame["path"].isin(values.index), "path"]
    if len(missing):
        raise CvmError(f"{missing.iloc[0]} is in the predictions but not in {where}; evaluate the run again")
    out = {}
    for column in dict.fromkeys(["dataset", *columns]):
        if column not in values.columns:
            continue
        groups = values.loc[frame["path"], column].astype(str).to_numpy()
        if column == "dataset" and len(set(groups)) < 2:
            continue  # one source: the whole test split is that source
        out[column] = []
        for value in sorted(set(groups)):
            part = frame[groups == value]
            # macro F1 over the classes this value holds: a source's F1 is not halved by the other source's classes
            present = [c for c in classes if c in set(part["label"])]
            interval = accuracy_f1_intervals(part["label"], part["pred"], present, n_boot, seed=seed)
            clinical = clinical_view(part["label"], part["pred"], abnormal)
            out[column].append(
                {
                    "value": value,
                    "n": int(len(part)),
                    # the value's class mix: where sources hold different classes, a gap between them is as
                    # much the classes as the source
                    "classes": {c: int(k) for c, k in part["label"].value_counts().sort_index().items()},
                    "abnormal_share": float(np.mean(abnormal_in(part["label"].to_numpy(), abnormal))),
                    "correct": interval["correct"],
                    "accuracy": float(np.mean(part["label"].to_numpy() == part["pred"].to_numpy())),
                    "accuracy_ci": interval["accuracy"],
                    "f1_macro": float(
                        f1_score(part["label"], part["pred"], labels=present, average="macro", zero_division=0)
                    ),
                    "f1_macro_ci": interval["f1_macro"],
                    # with their counts and intervals, as the run's own; None where the value's images are
                    # all abnormal or all normal
                    "clinical": clinical,
                    "sensitivity": clinical["sensitivity"] if clinical else None,
                    "specificity": clinical["specificity"] if clinical else None,
                }
            )
    return out


def experiment_stats(
    runs: list[dict],
    reference: str | None,
    abnormal: list[str],
    n_boot: int = 1000,
    operating_points: list[dict] | None = None,
    calibration_bins: int = 15,
    paper_abnormal: list[str] | None = None,
    referral_coverages: list[float] | None = None,
    subgroups: list[str] | None = None,
) -> dict:
    """Statistics of one experiment's runs from their predictions.

    ``runs``: dicts with ``model``, ``recipe``, ``seed`` and ``predictions`` (path of
    predictions_test.csv), optionally ``split_seed`` (default 0), ``test_train_ratio``,
    ``predictions_val``, ``start`` and ``train_fraction``; the reference model's runs may be among
    them. McNemar compares every run with the reference run of the same recipe, seed and split on
    the same test images; ``spread`` separates split from initialisation spread and
    ``split_contrasts`` tests each contrast over the splits (:func:`corrected_resampled_t`). Each run also
    gets its ROC/PR, calibration and operating points (``diagnostics``, thresholds chosen on ``predictions_val``).
    """
    from .data import read_manifest

    read = {m: read_manifest(m) for m in {r["manifest"] for r in runs if r.get("manifest")}}
    baseline = [r for r in runs if r.get("arm") == "baseline"]
    runs = [r for r in runs if r.get("arm") != "baseline"]
    frames = {_run_key(r): read_table(r["predictions"]) for r in runs}
    manifests = {_run_key(r): (r["manifest"], read[r["manifest"]]) for r in runs if r.get("manifest")}
    val_files = {_run_key(r): r.get("predictions_val") for r in runs}
    out, scores, val_frames = [], {}, {}
    for (model, recipe, seed, split), frame in frames.items():
        classes = sorted(set(frame["label"]) | set(frame["pred"]))
        val = val_files[(model, recipe, seed, split)]
        scores[(model, recipe, seed, split)] = {
            "accuracy": float(np.mean(frame["label"] == frame["pred"])),
            "f1_macro": float(
                f1_score(frame["label"], frame["pred"], labels=classes, average="macro", zero_division=0)
            ),
        }
        val_frame = val_frames[(model, recipe, seed, split)] = read_table(val) if val else None
        entry = {
            "model": model,
            "recipe": recipe,
            "seed": seed,
            "split_seed": split,
            "intervals": accuracy_f1_intervals(frame["label"], frame["pred"], classes, n_boot, seed=seed),
            "clinical": clinical_view(frame["label"], frame["pred"], abnormal),
            "mcnemar": None,
            "diagnostics": diagnose(
                frame,
                val_frame,
                abnormal,
                operating_points,
                calibration_bins,
                n_boot,
                seed,
                paper_abnormal,
                referral_coverages,
            ),
        }
        # the same network with test-time flips, where the evaluate step kept them
        entry["tta"] = test_time_flips(frame, val_frame, abnormal, referral_coverages or [], calibration_bins, n_boot)
        manifest = manifests.get((model, recipe, seed, split))
        if manifest is not None:
            entry["subgroups"] = subgroup_metrics(frame, manifest, classes, abnormal, subgroups or [], n_boot, seed)
        ref = frames.get((reference, recipe, seed, split))
        if ref is not None and model != reference:
            if not ref["path"].equals(frame["path"]):
                raise CvmError(f"runs of {model} and {reference} were tested on different images; re-run prepare")
            entry["mcnemar"] = {
                "reference": reference,
                **mcnemar_exact(ref["label"] == ref["pred"], frame["label"] == frame["pred"]),
            }
        out.append(entry)
    pairs = contrasts(
        frames,
        reference,
        n_boot,
        {_run_key(r): (r["start"], r.get("train_fraction", 1.0)) for r in runs if r.get("start")},
    )
    ratios = {_run_key(r): r.get("test_train_ratio", 0.2 / 0.6) for r in runs}
    return {
        "format": STATS_FORMAT,
        "reference": reference,
        "abnormal_classes": abnormal,
        "runs": out,
        "contrasts": pairs,
        "spread": spread(scores),
        "split_contrasts": split_contrasts(pairs, ratios),
        "baseline_gaps": baseline_gaps(runs, baseline, frames, read, n_boot) if baseline else [],
        "ensembles": ensembles(frames, val_frames, abnormal, referral_coverages or [], calibration_bins, n_boot),
        "ranking": ranking(scores),
        "robustness_gains": robustness_gains(runs, n_boot),
    }


def ensembles(frames: dict, val_frames: dict, abnormal, coverages, bins: int, n_boot: int) -> list[dict]:
    """The deep ensemble (``predictors.ensemble``) of each model and recipe's seeds on one split, where it
    has two seeds or more."""
    from .predictors import ensemble

    groups: dict = {}
    for key in frames:
        model, recipe, seed, split = key
        groups.setdefault((model, recipe, split), []).append(key)
    out = []
    for (model, recipe, split), keys in groups.items():
        if len(keys) < 2 or not any(c.startswith("prob_") for c in frames[keys[0]].columns):
            continue  # one seed, or predictions without probabilities (nothing to average)
        keys = sorted(keys)
        vals = [val_frames.get(k) for k in keys]
        found = ensemble(
            [frames[k] for k in keys], vals, abnormal, coverages, bins, n_boot, f"the seeds of {model} ({recipe})"
        )
        out.append({"model": model, "recipe": recipe, "split_seed": split, "seeds": [k[2] for k in keys], **found})
    return out


def _right(entry: dict) -> np.ndarray:
    """The share of draws that classified each test image right, from a robustness entry's ``right``."""
    return np.array([int(c) for c in entry["right"]], float) / max(entry.get("draws") or 1, 1)


def recipe_gain(result: dict, base: dict, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """How much a recipe's run (``result``, a ``robustness.json``) keeps over the same model's ``base`` run
    (recipe ``none``) under each corruption and severity, and on the mean over the corruptions counted at a
    severity: the difference in accuracy, paired over the same test images under the same draws, with a
    percentile bootstrap interval over test images (None where every image agrees)."""
    if result["test_images"] != base["test_images"] or set(result["corruptions"]) != set(base["corruptions"]):
        raise CvmError("two runs' robustness were measured on different images or corruptions; run robustness again")
    rng = np.random.default_rng(seed)
    n = result["test_images"]
    idx = rng.integers(0, n, (n_boot, n))

    def gain(ours: np.ndarray, theirs: np.ndarray) -> dict:
        diff = ours - theirs
        draws = diff[idx].mean(1)
        lo, hi = np.percentile(draws, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
        return {
            "accuracy": float(ours.mean()),
            "base_accuracy": float(theirs.mean()),
            "gain": float(diff.mean()),
            "gain_ci": [float(lo), float(hi)] if hi > lo else None,
        }

    out = {"clean": gain(_right(result["clean"]), _right(base["clean"])), "corruptions": {}, "mean": {}}
    severities = sorted({s for c in result["corruptions"].values() for s in c}, key=int)
    for name, by_severity in result["corruptions"].items():
        out["corruptions"][name] = {
            s: gain(_right(e), _right(base["corruptions"][name][s])) for s, e in by_severity.items() if s != "0"
        }
    for s in severities:
        if s == "0":
            continue
        counted = [c for c in result["corruptions"] if not result["corruptions"][c][s].get("no_effect")]
        if counted:
            ours = np.mean([_right(result["corruptions"][c][s]) for c in counted], axis=0)
            theirs = np.mean([_right(base["corruptions"][c][s]) for c in counted], axis=0)
            out["mean"][s] = {**gain(ours, theirs), "corruptions": counted}
    return out


def robustness_gains(runs: list[dict], n_boot: int) -> list[dict]:
    """Each recipe's :func:`recipe_gain` over the same model's ``none`` run, where both measured robustness."""
    measured = {(r["model"], r["recipe"]): r["robustness"] for r in runs if r.get("robustness")}
    out = []
    for (model, recipe), file in sorted(measured.items()):
        base = measured.get((model, "none"))
        if recipe == "none" or base is None:
            continue
        result, base_result = read_json(file), read_json(base)
        if "right" not in result["clean"] or "right" not in base_result["clean"]:
            raise CvmError(f"{file} or {base} was written before per-image results were kept; run robustness again")
        gain = recipe_gain(result, base_result, n_boot)
        # the reference stain a normalised recipe maps every image to, and what it was fitted on
        out.append({"model": model, "recipe": recipe, "base": "none", **gain, "stain": result.get("stain_reference")})
    return out


def baseline_gaps(runs: list[dict], baseline: list[dict], frames: dict, manifests: dict, n_boot: int) -> list[dict]:
    """Each model and recipe's :func:`baseline_gap` (its first split, every seed) against its runs in the
    baseline experiment; a cell's source image from either arm's manifest."""
    groups = {}
    for m in {r["manifest"] for r in [*baseline, *runs] if r.get("manifest")}:
        groups.update(dict(zip(manifests[m]["path"], manifests[m]["group"].astype(str))))
    first_split = min(_run_key(r)[3] for r in runs)
    out = []
    for model, recipe in dict.fromkeys((r["model"], r["recipe"]) for r in runs):
        ours = [
            frames[_run_key(r)]
            for r in runs
            if r["model"] == model and r["recipe"] == recipe and _run_key(r)[3] == first_split
        ]
        theirs = [read_table(r["predictions"]) for r in baseline if r["model"] == model and r["recipe"] == recipe]
        if ours and theirs:
            out.append({"model": model, "recipe": recipe, **baseline_gap(ours, theirs, groups, n_boot)})
    return out
