"""Cross-dataset transfer: a run trained on one dataset, tested on another's test split.

The datasets name their classes differently (SIPaKMeD's five, CRIC's Bethesda six, Herlev's seven
or two), so both the model's predicted class and the target image's true class are mapped into a
shared label space first. The built-in space is the clinical question, normal vs abnormal, with the
same abnormal list as the report's clinical view (``analysis.abnormal_classes``); ``mappings`` in
the config adds finer ones (class -> shared class).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import read_table
from .errors import CvmError

BUILTIN = "normal_abnormal"
# Every normal class of the built-in layouts: SIPaKMeD's three normal cell types, CRIC's NILM,
# Herlev's three normal folders (its own spelling) and its two-class task's "Normal".
NORMAL_CLASSES = ["NILM", "Metaplastic", "Parabasal", "Superficial-Intermediate", "Normal", "normal_superficiel",
                  "normal_intermediate", "normal_columnar"]


def resolve_mapping(config: dict, name: str) -> dict[str, str]:
    """Class -> shared class of mapping ``name``: the built-in normal/abnormal one or ``mappings.<name>``."""
    if name == BUILTIN:  # 'mappings.normal_abnormal' adds classes to the built-in one
        abnormal = list(config["analysis"]["abnormal_classes"])
        return {**{c: "normal" for c in NORMAL_CLASSES if c not in abnormal}, **{c: "abnormal" for c in abnormal},
                **dict(config.get("mappings", {}).get(name, {}))}
    try:
        return dict(config["mappings"][name])
    except KeyError:
        raise CvmError(f"config key 'transfer.mapping': no mapping {name!r} (built in: {BUILTIN}; defined under "
                       f"'mappings': {', '.join(sorted(config.get('mappings', {}))) or 'none'})") from None


def known_classes(config: dict, dataset: str) -> list[str] | None:
    """A dataset's class names where the config alone says them (synthetic sets, the fixed layouts)."""
    from .data import CLASS_SETS
    from .data._adapters import CRIC_CLASSES, HERLEV_FOLDERS, PBC_CLASSES, SIPAKMED_CLASSES

    spec = config["datasets"][dataset]
    kind = spec["kind"]
    if kind == "synthetic":
        return list(CLASS_SETS[spec["classes"]])
    if kind == "combined":
        parts = [known_classes(config, p) for p in spec.get("parts") or []]
        return None if any(p is None for p in parts) else list(dict.fromkeys(c for p in parts for c in p))
    fixed = {"sipakmed": SIPAKMED_CLASSES, "cric": CRIC_CLASSES, "pbc": PBC_CLASSES,
             "herlev": ["Normal", "Abnormal"] if int(spec.get("task", 2)) == 2 else list(HERLEV_FOLDERS)}
    return list(fixed[kind]) if kind in fixed else None


def check_mapped(classes: list[str], mapping: dict[str, str], name: str, where: str) -> None:
    """Every class must have a shared class: one line naming the first that has none and the fix."""
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise CvmError(f"{where}: class {missing[0]!r} has no class in mapping {name!r}"
                       f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}; add "
                       f"'{missing[0]}: <shared class>' under 'mappings.{name}'"
                       + (" or the class to 'analysis.abnormal_classes'" if name == BUILTIN else ""))


def transfer_predict(run_dir: str | os.PathLike, dataset_dir: str | os.PathLike, out_csv: str | os.PathLike,
                     mapping: dict[str, str], mapping_name: str, device: str = "auto", batch_size: int = 64,
                     threads: int | None = None) -> pd.DataFrame:
    """The run's predictions on the target dataset's test split, with both classes mapped.

    Writes ``path, label, pred, label_shared, pred_shared`` (label: the target's class, pred: the
    run's own class) and returns it.
    """
    import torch

    from ._io import read_json, write_csv
    from .data import load_cache, read_manifest
    from .engine import predict, resolve_device, to_device_images
    from .train import load_trained, split_arrays

    if threads:
        torch.set_num_threads(threads)
    run_dir, dataset_dir = Path(run_dir), Path(dataset_dir)
    dev = resolve_device(device)
    model, info = load_trained(run_dir, dev)
    target_classes = read_json(dataset_dir / "classes.json")
    check_mapped(info["classes"], mapping, mapping_name, f"{run_dir / 'train.json'} (the model's classes)")
    check_mapped(target_classes, mapping, mapping_name, f"{dataset_dir / 'classes.json'} (the test set's classes)")
    manifest = read_manifest(dataset_dir / "manifest.csv")
    cache = load_cache(dataset_dir / f"cache_{info['img_size']}.npy", len(manifest))
    x, y, rows = split_arrays(manifest, cache, "test")
    amp = bool(info.get("amp")) and dev.type == "cuda"
    probs = predict(model, to_device_images(x, dev), batch_size, dev, amp)["probs"]
    pred = [info["classes"][i] for i in probs.argmax(1)]
    label = [target_classes[i] for i in y]
    frame = pd.DataFrame({"path": list(rows["path"]), "label": label, "pred": pred,
                          "label_shared": [mapping[c] for c in label], "pred_shared": [mapping[c] for c in pred]})
    write_csv(out_csv, frame)
    return frame


def transfer_scores(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy in the shared space and, when it has an ``abnormal`` class, sensitivity (abnormal
    found) and specificity (normal kept), each with a percentile bootstrap interval over test images."""
    truth, pred = frame["label_shared"].to_numpy(), frame["pred_shared"].to_numpy()
    binary = "abnormal" in set(truth) | set(pred)

    def scores(idx):
        t, p = truth[idx], pred[idx]
        out = {"accuracy": float(np.mean(t == p)) if len(t) else float("nan")}
        if binary:
            pos, neg = t == "abnormal", t != "abnormal"
            out["sensitivity"] = float(np.mean(p[pos] == "abnormal")) if pos.any() else float("nan")
            out["specificity"] = float(np.mean(p[neg] != "abnormal")) if neg.any() else float("nan")
        return out

    n = len(truth)
    point = scores(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = [scores(rng.integers(0, n, n)) for _ in range(n_boot)] if n else []
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {"n": int(n), "n_abnormal": int(np.sum(truth == "abnormal")), "level": level, "n_boot": n_boot}
    for key, value in point.items():
        values = np.array([d[key] for d in draws], dtype=float)
        values = values[~np.isnan(values)]
        out[key] = None if np.isnan(value) else value
        out[f"{key}_ci"] = ([float(np.percentile(values, lo)), float(np.percentile(values, hi))]
                            if out[key] is not None and len(values) else None)
    return out


def transfer_matrix(entries: list[dict], mapping_name: str, n_boot: int = 1000) -> dict:
    """``entries``: dicts with ``source`` (run label), ``source_dataset``, ``target`` (dataset) and
    ``predictions`` (a file of :func:`transfer_predict`). Rows: trained on; columns: tested on."""
    cells = []
    for e in entries:
        frame = read_table(e["predictions"])
        cells.append({"source": e["source"], "source_dataset": e["source_dataset"], "target": e["target"],
                      "in_domain": e["source_dataset"] == e["target"], "predictions": str(e["predictions"]),
                      **transfer_scores(frame, n_boot)})
    return {"mapping": mapping_name, "sources": list(dict.fromkeys(e["source"] for e in entries)),
            "targets": list(dict.fromkeys(e["target"] for e in entries)), "cells": cells}
