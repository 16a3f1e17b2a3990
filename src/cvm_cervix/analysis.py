"""The analysis of a trained model: test-image features and their 3-D t-SNE, Grad-CAM and attention rollout
of the most confused pairs. The statistics of an experiment's runs are ``stats.py``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ._io import atomic_path, read_json, write_csv, write_json
from .engine import predict, scale, to_device_images
from .errors import CvmError
from .models import get_model_spec
from .paths import file_name
from .run import Inference

log = logging.getLogger(__name__)

# --- features and t-SNE -----------------------------------------------------------------------------


def tsne_3d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """3-D t-SNE with openTSNE's Barnes-Hut gradients (its FFT method is 2-D only)."""
    from openTSNE import TSNE

    if len(features) < 5:
        raise CvmError(
            f"a t-SNE of {len(features)} test images means nothing (its PCA start needs at least 5); "
            "enlarge the dataset's test split or set the experiment's analysis: false"
        )
    perplexity = float(min(perplexity, max(2.0, (len(features) - 1) / 3)))
    return np.asarray(
        TSNE(
            n_components=3,
            perplexity=perplexity,
            negative_gradient_method="bh",
            random_state=seed,
            n_jobs=1,
            verbose=False,
        ).fit(features.astype(np.float64))
    )


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
    pairs = [
        (classes[i], classes[j], int(cm[i, j])) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j]
    ]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))[:k]


def analyse_run(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    perplexity: float = 30.0,
    pairs: int = 5,
    per_pair: int = 3,
    device: str = "auto",
    threads: int | None = None,
    display_size: int = 160,
    *,
    weights: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    metrics_json: str | os.PathLike | None = None,
    outputs: dict | None = None,
) -> dict:
    """Test-split features, their 3-D t-SNE and a Grad-CAM gallery of the most frequent confusions.

    ``run``: the run folder or its ``train.json`` (``weights`` and ``metrics_json`` beside it unless
    given); ``data``: the prepared dataset's folder or its manifest (``cache`` beside it unless given).
    Writes ``features_test.npy``, ``tsne.csv`` (x, y, z, path, label, pred) and ``gallery.json``
    with PNGs under ``gallery/`` into ``out_dir`` (default: the run's ``analysis/``), or to ``outputs``
    (``features``, ``tsne``, ``gallery``, ``gallery_images``: the files a rule declares).
    """
    inference = Inference.open(run, data, weights=weights, cache=cache, device=device, threads=threads)
    trained, dev, model, info = inference.run, inference.device, inference.model, inference.run.info
    classes = trained.classes
    names = ("features", "tsne", "gallery", "gallery_images")
    files = {k: Path(v) for k, v in (outputs or {}).items()}
    files = {
        k: files.get(k, Path(out_dir) / Path(file_name(k)).name if out_dir else trained.dir / file_name(k))
        for k in names
    }
    x, y, rows = inference.images.split("test")
    images = to_device_images(x, dev)
    out = predict(model, images, 64, dev, amp=inference.amp, features=True)
    feats, preds = out["features"], out["probs"].argmax(1)
    with atomic_path(files["features"]) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, feats)
    emb = tsne_3d(feats, perplexity, seed=info["seed"])
    tsne = pd.DataFrame(
        {
            "x": emb[:, 0],
            "y": emb[:, 1],
            "z": emb[:, 2],
            "path": rows["path"],
            "label": [classes[i] for i in y],
            "pred": [classes[i] for i in preds],
        }
    )
    write_csv(files["tsne"], tsne)

    spec = get_model_spec(info["model"])
    layer, attention = spec.cam_layer, spec.attention
    gallery_dir = files["gallery_images"]
    gallery_dir.mkdir(parents=True, exist_ok=True)
    metrics = read_json(metrics_json or trained.dir / file_name("metrics"))
    entries, resolution = [], None
    confusions = top_confusions(metrics["test"]["confusion"], classes, pairs)
    for true_cls, pred_cls, count in confusions:
        idx = np.flatnonzero((y == classes.index(true_cls)) & (preds == classes.index(pred_cls)))[:per_pair]
        cams = rollouts = [None] * len(idx)
        if layer and len(idx):
            cams, resolution = grad_cam(
                model, images[idx].to(dev), [classes.index(pred_cls)] * len(idx), layer, return_resolution=True
            )
        if attention is not None and len(idx):  # the transformer branch's view of the same images
            rollouts = attention_rollout(model, images[idx].to(dev), attention)
        for i, cam, roll in zip(idx, cams, rollouts):
            name = f"{true_cls}_as_{pred_cls}_{i}.png".replace("/", "-").replace(" ", "_")
            original = x[i]
            panels = [original.transpose(1, 2, 0)] + [overlay(original, m) for m in (cam, roll) if m is not None]
            strip = np.concatenate(panels, axis=1)
            with atomic_path(gallery_dir / name) as tmp:
                Image.fromarray(strip).resize((display_size * len(panels), display_size), Image.NEAREST).save(
                    tmp, format="PNG"
                )
            entries.append(
                {
                    "file": os.path.relpath(gallery_dir / name, files["gallery"].parent),  # beside gallery.json
                    "path": rows["path"][i],
                    "true": true_cls,
                    "pred": pred_cls,
                    "pair_count": count,
                    "grad_cam_layer": layer,
                    "attention": attention,
                }
            )
    gallery = {
        "model": info["model"],
        "layer": layer,
        "cam_resolution": list(resolution) if resolution else None,
        "attention": attention,
        "panels": ["image"]
        + (["Grad-CAM"] if layer else [])
        + (["attention rollout"] if attention is not None else []),
        "pairs": [list(p) for p in confusions],
        "images": entries,
    }
    write_json(files["gallery"], gallery)
    return gallery
