"""Analysis beyond the metrics: statistics (bootstrap, McNemar, clinical view), t-SNE, Grad-CAM."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from ._io import atomic_path, read_json, read_table, write_csv, write_json
from .diagnostics import class_codes, resample_counts
from .engine import predict, scale, to_device_images
from .errors import CvmError
from .models import get_model_spec
from .run import Inference

log = logging.getLogger(__name__)

# --- statistics -------------------------------------------------------------------------------------


def bootstrap_ci(labels, preds, classes, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap intervals for accuracy and macro F1 over resampled test images."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    rng = np.random.default_rng(seed)
    n = len(labels)
    # Every resample at once (the same draws as one rng.integers(0, n, n) per resample): 1,000 calls of
    # sklearn's f1_score cost about 4 s per run in input checks alone, the paper's comparison 100 s.
    idx = rng.integers(0, n, (n_boot, n))
    accs = np.mean(labels[idx] == preds[idx], axis=1) if n else np.full(n_boot, np.nan)
    f1s = macro_f1_resampled(labels, preds, classes, idx)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {
        "level": level, "n_boot": n_boot, "seed": seed,
        "accuracy": [float(np.percentile(accs, lo)), float(np.percentile(accs, hi))],
        "f1_macro": [float(np.percentile(f1s, lo)), float(np.percentile(f1s, hi))],
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


def clinical_view(labels, preds, abnormal: list[str]) -> dict | None:
    """Sensitivity and specificity of abnormal (any abnormal class) versus normal; None if undefined."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    true_abn, pred_abn = np.isin(labels, abnormal), np.isin(preds, abnormal)
    if true_abn.all() or (~true_abn).all():
        return None
    tp, fn = int(np.sum(true_abn & pred_abn)), int(np.sum(true_abn & ~pred_abn))
    tn, fp = int(np.sum(~true_abn & ~pred_abn)), int(np.sum(~true_abn & pred_abn))
    return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "abnormal_classes": [c for c in abnormal if c in set(labels)]}


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


def paired_bootstrap_diff(correct_a, correct_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile interval of accuracy(B) − accuracy(A), resampling the same test images for both."""
    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    diffs = b[idx].mean(1) - a[idx].mean(1)
    return [float(np.percentile(diffs, 100 * (1 - level) / 2)), float(np.percentile(diffs, 100 * (1 + level) / 2))]


RUN_KEY = ("model", "augment", "seed", "split_seed")  # what tells an experiment's runs apart in its statistics


def _run_key(entry: dict) -> tuple:
    return entry["model"], entry["augment"], entry["seed"], entry.get("split_seed", 0)


def spread(scores: dict) -> list[dict]:
    """Where the spread of a model's test scores comes from, over splits and over seeds.

    ``scores``: (model, augment, seed, split seed) -> {"accuracy": .., "f1_macro": ..}. Per model and
    augment and score: the standard deviation over all its runs, of the split means (between splits:
    it also holds 1/seeds of the initialisation variance) and pooled over splits of the seeds within
    one split (initialisation: the same split, another seed). None where a source cannot be seen
    (one split, or one seed per split).
    """
    groups: dict[tuple, dict[int, list]] = {}
    for (model, augment, seed, split), value in sorted(scores.items()):
        groups.setdefault((model, augment), {}).setdefault(split, []).append(value)
    out = []
    for (model, augment), by_split in groups.items():
        entry = {"model": model, "augment": augment, "splits": len(by_split),
                 "seeds": sorted({len(v) for v in by_split.values()}), "runs": sum(map(len, by_split.values()))}
        for name in ("accuracy", "f1_macro"):
            cells = {s: np.array([v[name] for v in values]) for s, values in by_split.items()}
            every = np.concatenate(list(cells.values()))
            means = np.array([c.mean() for c in cells.values()])
            within = [c for c in cells.values() if len(c) > 1]
            entry[name] = {
                "mean": float(every.mean()),
                "sd_total": float(every.std(ddof=1)) if len(every) > 1 else None,
                "sd_split": float(means.std(ddof=1)) if len(means) > 1 else None,
                "sd_seed": (float(np.sqrt(sum((len(c) - 1) * c.var(ddof=1) for c in within)
                                          / sum(len(c) - 1 for c in within))) if within else None),
                "split_means": {str(s): float(m) for s, m in zip(cells, means)}}
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
    return {"test": "corrected resampled t-test (Nadeau & Bengio 2003)", "t": t, "df": j - 1, "p_value": p,
            "test_train_ratio": test_train_ratio}


def split_contrasts(pairs: list[dict], ratios: dict) -> list[dict]:
    """Each contrast over splits: per split the accuracy difference (B − A) averaged over its seeds,
    then :func:`corrected_resampled_t` over the splits, and Holm's adjustment over all of them.

    ``pairs``: the per-run contrasts (:func:`contrasts`); ``ratios``: run key -> test/train images.
    Contrasts seen on one split only are left out (the per-run McNemar tests cover them).
    """
    groups: dict[tuple, dict[int, list]] = {}
    for c in pairs:
        key = (c["contrast"], *(c[s][k] for s in ("a", "b") for k in ("model", "augment")))
        groups.setdefault(key, {}).setdefault(c["b"]["split_seed"], []).append((c["accuracy_diff"], c))
    out = []
    for (kind, a_model, a_augment, b_model, b_augment), by_split in groups.items():
        if len(by_split) < 2:
            continue
        diffs = {s: float(np.mean([d for d, _ in v])) for s, v in sorted(by_split.items())}
        ratio = float(np.mean([ratios[tuple(c["b"][k] for k in RUN_KEY)] for v in by_split.values() for _, c in v]))
        out.append({"contrast": kind, "a": {"model": a_model, "augment": a_augment},
                    "b": {"model": b_model, "augment": b_augment}, "splits": len(diffs),
                    "seeds": sorted({len(v) for v in by_split.values()}),
                    "accuracy_diff": float(np.mean(list(diffs.values()))),
                    "split_diffs": {str(s): d for s, d in diffs.items()},
                    **corrected_resampled_t(list(diffs.values()), ratio)})
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
    from .config import split_recipe

    pairs = []
    for (model, augment, seed, split) in frames:  # always on the same split and seed: the same test images
        base, variant = split_recipe(augment)
        if variant != "default" and (model, base, seed, split) in frames:
            pairs.append(((model, base, seed, split), (model, augment, seed, split), f"{variant} vs default"))
        elif variant == "default" and augment != "none" and (model, "none", seed, split) in frames:
            pairs.append(((model, "none", seed, split), (model, augment, seed, split), f"{augment} vs none"))
        if reference and model != reference and (reference, augment, seed, split) in frames:
            pairs.append(((reference, augment, seed, split), (model, augment, seed, split), f"vs {reference}"))
    starts = starts or {}
    for b, (start, fraction) in starts.items():
        for a, (other, same_fraction) in starts.items():
            if (other == "random weights" and start != other and same_fraction == fraction and a[0] == b[0]
                    and a[2:] == b[2:] and a in frames and b in frames and not any(p[:2] == (a, b) for p in pairs)):
                pairs.append((a, b, f"{start} vs random weights, {100 * fraction:g}% of training"))
    out = []
    for a, b, kind in pairs:
        fa, fb = frames[a], frames[b]
        if not fa["path"].equals(fb["path"]):
            raise CvmError(f"runs {a} and {b} were tested on different images; re-run prepare")
        ca, cb = (fa["label"] == fa["pred"]).to_numpy(), (fb["label"] == fb["pred"]).to_numpy()
        test = mcnemar_exact(ca, cb)
        out.append({"contrast": kind, "a": dict(zip(RUN_KEY, a)), "b": dict(zip(RUN_KEY, b)), **test,
                    "accuracy_diff": float(cb.mean() - ca.mean()),
                    "accuracy_diff_ci": paired_bootstrap_diff(ca, cb, n_boot, seed=b[2])})
    for entry, adjusted in zip(out, holm([e["p_value"] for e in out])):
        entry["p_holm"] = adjusted
    return out


def experiment_stats(runs: list[dict], reference: str | None, abnormal: list[str], n_boot: int = 1000,
                     operating_points: list[dict] | None = None, calibration_bins: int = 15,
                     paper_abnormal: list[str] | None = None) -> dict:
    """Statistics of one experiment's runs from their predictions.

    ``runs``: dicts with ``model``, ``augment``, ``seed`` and ``predictions`` (path of
    predictions_test.csv), optionally ``split_seed`` (default 0), ``test_train_ratio``,
    ``predictions_val``, ``start`` and ``train_fraction``; the reference model's runs may be among
    them. McNemar compares every run with the reference run of the same augment, seed and split on
    the same test images; ``spread`` separates split from initialisation spread and
    ``split_contrasts`` tests each contrast over the splits (:func:`corrected_resampled_t`). Each run also gets its ROC/PR, calibration
    and operating points (``diagnostics``, thresholds chosen on ``predictions_val``).
    """
    from .diagnostics import diagnose

    frames = {_run_key(r): read_table(r["predictions"]) for r in runs}
    val_files = {_run_key(r): r.get("predictions_val") for r in runs}
    out, scores = [], {}
    for (model, augment, seed, split), frame in frames.items():
        classes = sorted(set(frame["label"]) | set(frame["pred"]))
        val = val_files[(model, augment, seed, split)]
        scores[(model, augment, seed, split)] = {
            "accuracy": float(np.mean(frame["label"] == frame["pred"])),
            "f1_macro": float(f1_score(frame["label"], frame["pred"], labels=classes, average="macro", zero_division=0))}
        entry = {"model": model, "augment": augment, "seed": seed, "split_seed": split,
                 "bootstrap": bootstrap_ci(frame["label"], frame["pred"], classes, n_boot, seed=seed),
                 "clinical": clinical_view(frame["label"], frame["pred"], abnormal), "mcnemar": None,
                 "diagnostics": diagnose(frame, read_table(val) if val else None, abnormal, operating_points,
                                         calibration_bins, n_boot, seed, paper_abnormal)}
        ref = frames.get((reference, augment, seed, split))
        if ref is not None and model != reference:
            if not ref["path"].equals(frame["path"]):
                raise CvmError(f"runs of {model} and {reference} were tested on different images; re-run prepare")
            entry["mcnemar"] = {"reference": reference, **mcnemar_exact(ref["label"] == ref["pred"],
                                                                        frame["label"] == frame["pred"])}
        out.append(entry)
    pairs = contrasts(frames, reference, n_boot,
                      {_run_key(r): (r["start"], r.get("train_fraction", 1.0)) for r in runs if r.get("start")})
    ratios = {_run_key(r): r.get("test_train_ratio", 0.2 / 0.6) for r in runs}
    return {"reference": reference, "abnormal_classes": abnormal, "runs": out, "contrasts": pairs,
            "spread": spread(scores), "split_contrasts": split_contrasts(pairs, ratios)}


# --- features and t-SNE -----------------------------------------------------------------------------


def tsne_3d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """3-D t-SNE with openTSNE's Barnes-Hut gradients (its FFT method is 2-D only)."""
    from openTSNE import TSNE

    if len(features) < 5:
        raise CvmError(f"a t-SNE of {len(features)} test images means nothing (its PCA start needs at least 5); "
                       "enlarge the dataset's test split or set the experiment's analysis: false")
    perplexity = float(min(perplexity, max(2.0, (len(features) - 1) / 3)))
    return np.asarray(TSNE(n_components=3, perplexity=perplexity, negative_gradient_method="bh",
                           random_state=seed, n_jobs=1, verbose=False).fit(features.astype(np.float64)))


# --- Grad-CAM ---------------------------------------------------------------------------------------


def grad_cam(model, images: torch.Tensor, targets: list[int], layer: str, return_resolution: bool = False):
    """Grad-CAM maps (N×H×W in [0, 1]) of ``layer`` (a module path inside ``model.backbone``).

    Maps are scaled by their maximum (not min-max: a flat map stays flat instead of turning
    rounding noise into structure). With ``return_resolution`` also returns the layer's map size.
    """
    module = model.backbone.get_submodule(layer)
    store = {}
    hook = module.register_forward_hook(lambda m, i, o: store.__setitem__("act", o))
    try:
        model.eval()
        with torch.enable_grad():
            x = scale(images).requires_grad_(True)
            logits = model(x)
            act = store["act"]
            score = logits[torch.arange(len(targets)), torch.as_tensor(targets)].sum()
            grads = torch.autograd.grad(score, act)[0]
    finally:
        hook.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * act).sum(1, keepdim=True))
    resolution = tuple(cam.shape[-2:])
    cam = torch.nn.functional.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = (cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).clamp(0, 1).detach().cpu().numpy()
    return (cam, resolution) if return_resolution else cam


@torch.no_grad()
def attention_rollout(model, images: torch.Tensor, path: str = "") -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) of the vision transformer at ``path`` inside
    ``model.backbone``: how much the class token draws on each image patch, through every block.

    Each block's attention (heads averaged, plus the identity for the residual path, rows
    renormalised) is multiplied through the layers; the class token's row over the patch tokens
    is the map, upsampled to the image (N×H×W, scaled by its maximum like :func:`grad_cam`).
    """
    vit = model.backbone.get_submodule(path) if path else model.backbone
    maps, hooks, fused = [], [], []
    for block in vit.blocks:
        fused.append(block.attn.fused_attn)
        block.attn.fused_attn = False  # the fused kernel never materialises the attention weights
        hooks.append(block.attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(o.float())))
    try:
        model.eval()
        model.forward_features(scale(images))  # through the model: each branch normalises its own input
    finally:
        for hook in hooks:
            hook.remove()
        for block, value in zip(vit.blocks, fused):
            block.attn.fused_attn = value
    tokens = maps[0].shape[-1]
    rollout = torch.eye(tokens, device=maps[0].device).expand(len(images), tokens, tokens)
    for attn in maps:
        a = attn.mean(1) + torch.eye(tokens, device=attn.device)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    prefix = vit.num_prefix_tokens
    grid = vit.patch_embed.grid_size
    cls = rollout[:, 0, prefix:].reshape(len(images), 1, *grid)
    cls = torch.nn.functional.interpolate(cls, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return (cls / cls.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).clamp(0, 1).cpu().numpy()


_HEAT = np.array([[0, 0, 0.5], [0, 0.4, 1], [0, 0.9, 0.6], [1, 0.9, 0], [1, 0.2, 0]])  # blue → red


def overlay(image_chw: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with its Grad-CAM map blended in (H×W×3 uint8)."""
    pos = cam * (len(_HEAT) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_HEAT) - 2)
    frac = (pos - lo)[..., None]
    heat = (1 - frac) * _HEAT[lo] + frac * _HEAT[lo + 1]
    image = image_chw.transpose(1, 2, 0).astype(np.float32) / 255
    return ((1 - alpha) * image + alpha * heat).clip(0, 1).__mul__(255).astype(np.uint8)


def top_confusions(confusion, classes: list[str], k: int) -> list[tuple[str, str, int]]:
    cm = np.asarray(confusion)
    pairs = [(classes[i], classes[j], int(cm[i, j])) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j]]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))[:k]


def analyse_run(run: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                perplexity: float = 30.0, pairs: int = 5, per_pair: int = 3, device: str = "auto",
                threads: int | None = None, display_size: int = 160, *, weights: str | os.PathLike | None = None,
                cache: str | os.PathLike | None = None, metrics_json: str | os.PathLike | None = None) -> dict:
    """Test-split features, their 3-D t-SNE and a Grad-CAM gallery of the most frequent confusions.

    ``run``: the run folder or its ``train.json`` (``weights`` and ``metrics_json`` beside it unless
    given); ``data``: the prepared dataset's folder or its manifest (``cache`` beside it unless given).
    Writes ``features_test.npy``, ``tsne.csv`` (x, y, z, path, label, pred) and ``gallery.json``
    with PNGs under ``gallery/`` into ``out_dir`` (default: the run's ``analysis/``).
    """
    inference = Inference.open(run, data, weights=weights, cache=cache, device=device, threads=threads)
    trained, dev, model, info = inference.run, inference.device, inference.model, inference.run.info
    classes = trained.classes
    out_dir = Path(out_dir or trained.dir / "analysis")
    x, y, rows = inference.images.split("test")
    images = to_device_images(x, dev)
    out = predict(model, images, 64, dev, amp=inference.amp, features=True)
    feats, preds = out["features"], out["probs"].argmax(1)
    with atomic_path(out_dir / "features_test.npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, feats)
    emb = tsne_3d(feats, perplexity, seed=info["seed"])
    tsne = pd.DataFrame({"x": emb[:, 0], "y": emb[:, 1], "z": emb[:, 2], "path": rows["path"],
                         "label": [classes[i] for i in y], "pred": [classes[i] for i in preds]})
    write_csv(out_dir / "tsne.csv", tsne)

    spec = get_model_spec(info["model"])
    layer, attention = spec.cam_layer, spec.attention
    gallery_dir = out_dir / "gallery"
    gallery_dir.mkdir(parents=True, exist_ok=True)
    metrics = read_json(metrics_json or trained.dir / "metrics.json")
    entries, resolution = [], None
    confusions = top_confusions(metrics["test"]["confusion"], classes, pairs)
    for true_cls, pred_cls, count in confusions:
        idx = np.flatnonzero((y == classes.index(true_cls)) & (preds == classes.index(pred_cls)))[:per_pair]
        cams = rollouts = [None] * len(idx)
        if layer and len(idx):
            cams, resolution = grad_cam(model, images[idx].to(dev), [classes.index(pred_cls)] * len(idx), layer,
                                        return_resolution=True)
        if attention is not None and len(idx):  # the transformer branch's view of the same images
            rollouts = attention_rollout(model, images[idx].to(dev), attention)
        for i, cam, roll in zip(idx, cams, rollouts):
            name = f"{true_cls}_as_{pred_cls}_{i}.png".replace("/", "-").replace(" ", "_")
            original = x[i]
            panels = [original.transpose(1, 2, 0)] + [overlay(original, m) for m in (cam, roll) if m is not None]
            strip = np.concatenate(panels, axis=1)
            with atomic_path(gallery_dir / name) as tmp:
                Image.fromarray(strip).resize((display_size * len(panels), display_size), Image.NEAREST).save(tmp, format="PNG")
            entries.append({"file": f"gallery/{name}", "path": rows["path"][i], "true": true_cls, "pred": pred_cls,
                            "pair_count": count, "grad_cam_layer": layer, "attention": attention})
    gallery = {"model": info["model"], "layer": layer, "cam_resolution": list(resolution) if resolution else None,
               "attention": attention, "panels": ["image"] + (["Grad-CAM"] if layer else [])
               + (["attention rollout"] if attention is not None else []),
               "pairs": [list(p) for p in confusions], "images": entries}
    write_json(out_dir / "gallery.json", gallery)
    return gallery
