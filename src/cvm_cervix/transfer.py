"""Cross-dataset transfer: a run trained on one dataset, tested on another's test split.

The datasets name their classes differently, so both the model's predicted class and the target
image's true class are mapped into a shared label space first (``labels.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import read_table
from .labels import check_mapped
from .paths import file_name


def transfer_predict(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out_csv: str | os.PathLike,
    mapping: dict[str, str],
    mapping_name: str,
    *,
    weights: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    classes: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
) -> pd.DataFrame:
    """The run's predictions on the target dataset's test split, with both classes mapped.

    ``run``: the run folder or its ``train.json`` (``weights`` beside it unless given); ``data``: the
    target's prepared folder or its manifest (``cache`` and ``classes`` beside it unless given).
    Writes ``path, label, pred, label_shared, pred_shared`` (label: the target's class, pred: the
    run's own class) and returns it.
    """
    from ._io import read_json, write_csv
    from .engine import predict, to_device_images
    from .run import Inference, dataset_files

    inference = Inference.open(run, data, weights=weights, cache=cache, device=device, threads=threads)
    run_classes = inference.run.classes
    classes = (
        Path(classes) if classes else dataset_files(data, inference.run.img_size)[0].with_name(file_name("classes"))
    )
    target_classes = read_json(classes)
    check_mapped(run_classes, mapping, mapping_name, f"{inference.run.info_path} (the model's classes)")
    check_mapped(target_classes, mapping, mapping_name, f"{classes} (the test set's classes)")
    x, y, rows = inference.images.split("test")
    dev = inference.device
    probs = predict(inference.model, to_device_images(x, dev), batch_size, dev, inference.amp)["probs"]
    pred = [run_classes[i] for i in probs.argmax(1)]
    label = [target_classes[i] for i in y]
    frame = pd.DataFrame(
        {
            "path": list(rows["path"]),
            "label": label,
            "pred": pred,
            "label_shared": [mapping[c] for c in label],
            "pred_shared": [mapping[c] for c in pred],
        }
    )
    write_csv(out_csv, frame)
    return frame


def transfer_scores(frame: pd.DataFrame, level: float = 0.95) -> dict:
    """Accuracy in the shared space and, when it has an ``abnormal`` class, sensitivity (abnormal found)
    and specificity (normal kept): each a proportion, with its counts and Wilson's score interval."""
    from .intervals import wilson

    truth, pred = frame["label_shared"].to_numpy(), frame["pred_shared"].to_numpy()
    counts = {"accuracy": (int(np.sum(truth == pred)), len(truth))}
    if "abnormal" in set(truth) | set(pred):
        pos, neg = truth == "abnormal", truth != "abnormal"
        counts["sensitivity"] = (int(np.sum(pred[pos] == "abnormal")), int(pos.sum()))
        counts["specificity"] = (int(np.sum(pred[neg] != "abnormal")), int(neg.sum()))
    out = {"n": int(len(truth)), "n_abnormal": int(np.sum(truth == "abnormal")), "level": level}
    for key, (k, n) in counts.items():
        out[key] = k / n if n else None
        out[f"{key}_count"] = [k, n]
        out[f"{key}_ci"] = wilson(k, n, level)
    return out


def transfer_matrix(entries: list[dict], mapping_name: str) -> dict:
    """``entries``: dicts with ``source`` (run label), ``source_dataset``, ``target`` (dataset) and
    ``predictions`` (a file of :func:`transfer_predict`). Rows: trained on; columns: tested on."""
    cells = []
    for e in entries:
        frame = read_table(e["predictions"])
        cells.append(
            {
                "source": e["source"],
                "source_dataset": e["source_dataset"],
                "target": e["target"],
                "in_domain": e["source_dataset"] == e["target"],
                "predictions": str(e["predictions"]),
                **transfer_scores(frame),
            }
        )
    return {
        "mapping": mapping_name,
        "sources": list(dict.fromkeys(e["source"] for e in entries)),
        "targets": list(dict.fromkeys(e["target"] for e in entries)),
        "cells": cells,
    }
