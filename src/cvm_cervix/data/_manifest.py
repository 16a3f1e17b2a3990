"""Manifests: every image of a dataset with its class, label, sha256, group and split."""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import read_table, sha256_file
from ..errors import CvmError
from ..paths import file_name
from ._adapters import COMBINED_CLASSES, Listing
from ._cache import decode_rgb

GROUPED_NOTE = " (whole source images are kept together)"
SPLITS = ("train", "val", "test")
COLUMNS = ["path", "class", "label", "sha256", "group", "dataset", "split"]


def _check_image(path: str) -> tuple[str, str | None]:
    """sha256 of a readable image and its conversion note; a :class:`CvmError` naming the file otherwise."""
    p = Path(path)
    if p.stat().st_size == 0:
        raise CvmError(f"{p}: empty (zero-byte) file; delete it or download it again")
    _, note = decode_rgb(p)
    return sha256_file(p), note


def records_frame(listing: Listing, dataset: str, threads: int = 4) -> pd.DataFrame:
    """Check every image once (decode fully) and return the unsplit manifest.

    A ``converted`` column notes images that were not plain 8-bit RGB or grey (see :func:`to_rgb`);
    :func:`conversions` turns it into the summary's list before the split drops it.
    """
    frame = pd.DataFrame(listing.records, columns=["path", "class", "group", "source"])
    with ThreadPoolExecutor(max(1, threads)) as pool:
        checked = list(pool.map(_check_image, frame["path"]))
    frame["sha256"] = [sha for sha, _ in checked]
    frame["converted"] = [note or "" for _, note in checked]
    index = {c: i for i, c in enumerate(listing.classes)}
    frame["label"] = frame["class"].map(index)
    # the dataset an image comes from: this one, or the source a synthetic set's class imitates
    frame["dataset"] = frame.pop("source").fillna(dataset).astype(str)
    frame["group"] = frame["group"].astype(str)
    return frame


def combine_frames(frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """Pool several datasets' manifests; classes in the paper's order when they are its 11."""
    parts = []
    seen: list[str] = []
    for name, frame in frames.items():
        seen += [c for c in frame.sort_values("label")["class"].unique() if c not in seen]
        frame = frame.drop(columns=["split", "label"]).copy()
        frame["group"] = name + ":" + frame["group"].astype(str)
        parts.append(frame)
    pooled = pd.concat(parts, ignore_index=True)
    classes = [c for c in COMBINED_CLASSES if c in seen] + [c for c in seen if c not in COMBINED_CLASSES]
    pooled["label"] = pooled["class"].map({c: i for i, c in enumerate(classes)})
    return pooled, classes


def assign_splits(
    frame: pd.DataFrame, fractions=(0.6, 0.2, 0.2), seed: int = 0, method: str = "stratified", dataset: str = "dataset"
) -> pd.DataFrame:
    """Add a ``split`` column: train/val/test in ``fractions`` per class, from ``seed``.

    Exact duplicates (same sha256) always share a split, so no image is in two of them. With
    ``method="grouped"`` every image of one ``group`` (source image) shares a split as well.
    Units (duplicate sets or groups) are dealt in a seeded random order to the split whose
    per-class quota is relatively furthest from full.
    """
    if method not in ("stratified", "grouped"):
        raise CvmError(f"split method {method!r} unknown; use 'stratified' or 'grouped'")
    frame = frame.reset_index(drop=True).copy()
    fractions = np.asarray(fractions, float) / np.sum(fractions)
    key = frame["sha256"] if method == "stratified" else frame["group"]
    if method == "grouped":
        # Duplicates in different groups would leak: merge their groups first (union-find).
        parent = {g: g for g in frame["group"]}

        def find(g):
            while parent[g] != g:
                parent[g] = parent[parent[g]]
                g = parent[g]
            return g

        for _, groups in frame.groupby("sha256")["group"]:
            first = find(groups.iloc[0])
            for g in groups.iloc[1:]:
                parent[find(g)] = first
        key = frame["group"].map(find)
    units = list(frame.groupby(key, sort=True).indices.values())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    if method == "grouped":  # big groups first, so the small ones can even out the quotas
        order = sorted(order, key=lambda i: -len(units[i]))

    n_classes = int(frame["label"].max()) + 1
    labels = frame["label"].to_numpy()
    totals = np.bincount(labels, minlength=n_classes)
    # Whole-image quotas per split × class, as the paper counted (Tables 1, 4, 5): validation rounded,
    # test rounded down, train takes the rest (HSIL's 874 images: 525 / 175 / 174).
    # A class too small for the rule to give it a test image (fewer than 5 at 20%) still gets one of each.
    target = np.empty((3, n_classes))
    target[1] = np.rint(fractions[1] * totals)
    target[2] = np.floor(fractions[2] * totals + 1e-9)
    small = totals >= 3
    target[1:, small] = np.maximum(target[1:, small], 1)
    target[0] = totals - target[1] - target[2]
    deficit = target.copy()
    split = np.empty(len(frame), dtype=object)
    for i in order:
        rows = units[i]
        counts = np.bincount(labels[rows], minlength=n_classes)
        # the split that still lacks the largest share of its quota for this unit's classes
        need = (counts[None, :] * deficit / np.maximum(target, 1e-9)).sum(1)
        s = int(np.argmax(need))
        split[rows] = SPLITS[s]
        deficit[s] -= counts
    frame["split"] = split

    table = pd.crosstab(frame["class"], frame["split"]).reindex(columns=list(SPLITS), fill_value=0)
    for cls, row in table.iterrows():
        if (row == 0).any():
            n = int(totals[frame.loc[frame["class"] == cls, "label"].iloc[0]])
            raise CvmError(
                f"class {cls!r} of dataset {dataset!r} has too few images ({n}) to give each of "
                f"train/val/test at least one{GROUPED_NOTE if method == 'grouped' else ''}; "
                + (
                    "add images, drop the class, or use split: stratified"
                    if method == "grouped"
                    else "add images or drop the class (each split needs one image of it)"
                )
            )
    return frame[COLUMNS]


def limit_classes(
    frame: pd.DataFrame,
    max_per_class: int | None = None,
    class_limits: dict | None = None,
    seed: int = 0,
    dataset: str = "dataset",
    short: str = "error",
) -> tuple[pd.DataFrame, dict]:
    """Keep at most ``class_limits[c]`` (else ``max_per_class``) images of each class, drawn with ``seed``.

    For users who want a subset such as the paper's 4,789 CRIC cells. A class asked for more images
    than it has is an error naming both counts, or with ``short="take_all"`` keeps every image of it
    (``kept < asked`` in the record says so). Returns the frame and ``{class: {"asked", "found", "kept"}}``.
    """
    class_limits = dict(class_limits or {})
    unknown = sorted(set(class_limits) - set(frame["class"]))
    if unknown:
        raise CvmError(
            f"config key 'datasets.{dataset}.class_limits': class {unknown[0]!r} is not in the dataset "
            f"(classes: {', '.join(sorted(set(frame['class'])))})"
        )
    if not max_per_class and not class_limits:
        return frame, {}
    rng = np.random.default_rng(seed)
    keep, report = [], {}
    for cls, rows in frame.groupby("class", sort=True).groups.items():
        asked = class_limits.get(cls, max_per_class)
        found = len(rows)
        if asked is None:
            keep.extend(rows)
            continue
        if asked > found and cls in class_limits and short != "take_all":
            raise CvmError(
                f"config key 'datasets.{dataset}.class_limits.{cls}': asks for {asked} images but class "
                f"{cls!r} has {found}; lower the limit, add images, or set short_classes: take_all"
            )
        chosen = rows if asked >= found else np.sort(rng.choice(np.asarray(rows), size=asked, replace=False))
        keep.extend(chosen)
        report[cls] = {"asked": int(asked), "found": int(found), "kept": int(len(chosen))}
    return frame.loc[sorted(keep)].reset_index(drop=True), report


def duplicate_report(frame: pd.DataFrame) -> dict:
    """Exact duplicates: how many sets, and those whose copies carry different classes."""
    dup = frame[frame.duplicated("sha256", keep=False)]
    sets, conflicts = [], []
    for sha, rows in dup.groupby("sha256"):
        entry = {"sha256": sha, "paths": rows["path"].tolist(), "classes": sorted(rows["class"].unique())}
        sets.append(entry)
        if len(entry["classes"]) > 1:
            conflicts.append(entry)
    return {"duplicate_sets": len(sets), "duplicate_images": int(len(dup)), "sets": sets, "label_conflicts": conflicts}


def split_counts(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Images per class and split, in label order (like the paper's Tables 1, 4 and 5)."""
    table = pd.crosstab(frame["class"], frame["split"]).reindex(index=classes, columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    try:
        frame = read_table(path, text=("path", "class", "group", "sha256", "dataset", "split"))
    except FileNotFoundError:
        raise CvmError(f"manifest {path} not found; run the workflow's prepare step first") from None
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise CvmError(f"manifest {path} lacks columns {sorted(missing)}; delete it and run prepare again")
    redo = "delete it and run prepare again (or correct the row)"
    splits = ~frame["split"].isin(SPLITS)
    if splits.any():
        row = int(np.flatnonzero(splits)[0])
        raise CvmError(
            f"manifest {path} line {row + 2}: split {frame['split'].iloc[row]!r} is not one of "
            f"{', '.join(SPLITS)}; {redo}"
        )
    labels = pd.to_numeric(frame["label"], errors="coerce")
    classes_file = Path(path).with_name(file_name("classes"))
    classes = json.loads(classes_file.read_text(encoding="utf-8")) if classes_file.is_file() else None
    bad = labels.isna() | (labels % 1 != 0) | (labels < 0)
    if classes is not None:
        bad |= labels >= len(classes)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        within = f" (classes.json has {len(classes)} classes)" if classes is not None else ""
        raise CvmError(
            f"manifest {path} line {row + 2}: label {str(frame['label'].iloc[row])!r} is not a class number"
            f"{within}; {redo}"
        )
    frame["label"] = labels.astype(int)
    if classes is not None:
        wrong = frame["class"] != frame["label"].map(lambda i: classes[i])
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise CvmError(
                f"manifest {path} line {row + 2}: class {frame['class'].iloc[row]!r} has label "
                f"{frame['label'].iloc[row]}, which classes.json calls {classes[frame['label'].iloc[row]]!r}; {redo}"
            )
    return frame


def conversions(frame: pd.DataFrame) -> list[dict]:
    """Images of :func:`records_frame` that were converted on decoding: ``{"path", "how"}`` each."""
    if "converted" not in frame:
        return []
    rows = frame[frame["converted"].fillna("") != ""]
    return [{"path": p, "how": how} for p, how in zip(rows["path"], rows["converted"])]


def summarize(frame: pd.DataFrame, classes: list[str], skipped: list, converted: list[dict] | None = None) -> dict:
    return {
        "images": int(len(frame)),
        "classes": classes,
        "counts": {c: dict(Counter(frame.loc[frame["class"] == c, "split"])) for c in classes},
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "converted": list(converted or []),
        "duplicates": duplicate_report(frame),
    }
