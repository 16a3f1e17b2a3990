"""Evaluation: per-image predictions and the paper's metrics, computed with scikit-learn."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from ._io import write_csv, write_json
from .data import load_cache, read_manifest
from .engine import precision_name, predict, resolve_device, to_device_images
from .train import load_trained, split_arrays


def predictions_frame(paths, labels, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``path, label, pred`` (class names) then one ``prob_<class>`` column per class."""
    frame = pd.DataFrame({"path": list(paths), "label": [classes[i] for i in labels],
                          "pred": [classes[i] for i in probs.argmax(1)]})
    for i, cls in enumerate(classes):
        frame[f"prob_{cls}"] = probs[:, i]
    return frame


def compute_metrics(frame: pd.DataFrame, classes: list[str]) -> dict:
    """Macro P/R/F1, accuracy, per-class figures and the confusion matrix (rows true, columns predicted)."""
    y_true, y_pred = frame["label"], frame["pred"]
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=classes, average="macro", zero_division=0)
    pc, rc, fc, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, average=None,
                                                          zero_division=0)
    return {
        "n": int(len(frame)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(p), "recall_macro": float(r), "f1_macro": float(f),
        "per_class": {c: {"precision": float(pc[i]), "recall": float(rc[i]), "f1": float(fc[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def evaluate_run(run_dir: str | os.PathLike, dataset_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 device: str = "auto", batch_size: int = 64, threads: int | None = None) -> dict:
    """Predict the validation and test splits; write ``predictions_{val,test}.csv`` and ``metrics.json``."""
    if threads:
        torch.set_num_threads(threads)
    run_dir, dataset_dir = Path(run_dir), Path(dataset_dir)
    out_dir = Path(out_dir or run_dir)
    dev = resolve_device(device)
    model, info = load_trained(run_dir, dev)
    classes = info["classes"]
    manifest = read_manifest(dataset_dir / "manifest.csv")
    cache = load_cache(dataset_dir / f"cache_{info['img_size']}.npy", len(manifest))
    # One setting governs training and every evaluation of a run: float32 unless it trained with AMP.
    amp = bool(info.get("amp")) and dev.type == "cuda"
    metrics: dict = {"model": info["model"], "dataset": info["dataset"], "augment": info["augment"],
                     "seed": info["seed"], "classes": classes, "precision": precision_name(dev, amp)}
    frames = {}
    for split in ("val", "test"):
        x, y, rows = split_arrays(manifest, cache, split)
        images = to_device_images(x, dev)
        predict(model, images[:batch_size], batch_size, dev, amp)  # warm-up: kernels, allocator
        out = predict(model, images, batch_size, dev, amp)
        frames[split] = predictions_frame(rows["path"], y, out["probs"], classes)
        metrics[split] = compute_metrics(frames[split], classes)
        metrics[split]["ms_per_image"] = 1000 * out["seconds"] / max(len(x), 1)
    weights = run_dir / "weights.safetensors"
    metrics["size_mb"] = weights.stat().st_size / 1e6
    metrics["size_mib"] = weights.stat().st_size / 2**20
    metrics["params"] = info["params"]
    metrics["device"] = str(dev)
    for split, frame in frames.items():
        write_csv(out_dir / f"predictions_{split}.csv", frame)
    write_json(out_dir / "metrics.json", metrics)
    return metrics
