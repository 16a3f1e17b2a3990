"""The prepare step: dataset folder (or other manifests) -> manifest.csv, classes.json, summary.json."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from .._io import read_json, read_table, write_csv, write_json
from ..errors import CvmError
from ..labels import check_distinct_classes
from ..paths import file_name
from ._adapters import list_dataset, listing_digest
from ._manifest import (
    assign_splits,
    combine_frames,
    conversions,
    limit_classes,
    read_manifest,
    records_frame,
    summarize,
)
from ._splits import COLUMNS as SPLIT_COLUMNS
from ._splits import apply_split_file, relative_paths, split_table

log = logging.getLogger(__name__)


def prepare_dataset(
    name: str,
    spec: dict,
    out_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    parts: dict[str, str | os.PathLike] | None = None,
    threads: int = 4,
    outputs: dict | None = None,
) -> dict:
    """Read one dataset and write its manifest, class list and summary into ``out_dir``.

    ``root`` is the folder to read (for ``combined``, ``parts`` maps part names to their prepared
    folders or manifests instead, each with its ``splits.csv`` beside it). ``outputs`` names the files
    to write (``manifest``, ``classes``, ``summary``, ``splits``, ``crops``: a rule's outputs),
    default: those names in ``out_dir``. Also writes ``splits.csv``, the portable split file; with
    ``spec["split_file"]`` the splits are taken from such a file instead of drawn. Returns the summary. Every file is
    written atomically.
    """
    files = {k: Path(v) for k, v in (outputs or {}).items()}
    # the prepared folder: where CRIC crops are cut (the rule's crops output) and paths are relative to
    out_dir = Path(out_dir) if out_dir is not None else (files.get("crops") or files["manifest"]).parent
    files = {
        key: files.get(key, out_dir / file_name(key)) for key in ("manifest", "classes", "summary", "splits", "crops")
    }
    folder_digest = None
    relative: dict[str, str] = {}  # a combined set's images: path -> path relative to its part's root
    if spec["kind"] == "combined":
        frames = {}
        for part, where in (parts or {}).items():
            manifest = Path(where) / file_name("manifest") if Path(where).is_dir() else Path(where)
            frame = read_manifest(manifest)
            frames[part] = frame
            part_splits = manifest.with_name(file_name("splits"))
            if part_splits.is_file():
                table = read_table(part_splits, text=tuple(SPLIT_COLUMNS))
                if len(table) == len(frame):  # written beside the manifest, row for row
                    relative.update(zip(frame["path"], table["path"]))
        if not frames:
            raise CvmError(f"dataset {name!r}: a combined dataset needs 'parts'")
        frame, classes = combine_frames(frames)
        skipped = []
        converted = [c for where in (parts or {}).values() for c in _part_summary(where).get("converted", [])]
    else:
        root = root or spec.get("root")
        if not root:
            raise CvmError(
                f"config key 'datasets.{name}.root' is not set; give the folder the {spec['kind']} "
                "dataset was unpacked into"
            )
        # the folder as it was read (names, sizes, dates): planning compares it with the folder's digest then
        folder_digest = listing_digest(root) if spec["kind"] != "synthetic" else None
        listing = list_dataset(spec["kind"], root, spec, out_dir)
        frame, classes, skipped = records_frame(listing, name, threads), listing.classes, listing.skipped
        converted = conversions(frame)
    present = sorted(set(frame["class"]))
    check_distinct_classes(
        list(dict.fromkeys([*classes, *present])), f"dataset {name!r}" + (f" ({root})" if root else "")
    )
    if len(present) < 2:  # one class trains to 100% accuracy and means nothing
        raise CvmError(
            f"dataset {name!r}{f' ({root})' if root else ''} has {len(present)} class "
            f"({', '.join(map(repr, present)) or 'no images'}); a classifier needs at least two: add the "
            "other classes' folders"
        )
    # another split of the same images (an experiment's split_seeds) keeps its dataset's draw of them
    sample_seed = spec.get("sample_seed", spec.get("split_seed", 0))
    frame, limits = limit_classes(
        frame,
        spec.get("max_per_class"),
        spec.get("class_limits"),
        sample_seed,
        name,
        spec.get("short_classes", "error"),
    )
    if spec["kind"] == "combined":
        missing = [p for p in frame["path"] if p not in relative]
        if missing:
            raise CvmError(
                f"dataset {name!r}: {missing[0]} has no portable path in its part's splits.csv; prepare the parts again"
            )
        rel = [relative[p] for p in frame["path"]]
    else:
        rel = relative_paths(frame, root, out_dir)
    if spec.get("split_file"):
        frame = apply_split_file(frame, rel, spec["split_file"], name, combined=spec["kind"] == "combined")
    else:
        frame = assign_splits(
            frame,
            spec.get("split_fractions", (0.6, 0.2, 0.2)),
            spec.get("split_seed", 0),
            spec.get("split", "stratified"),
            dataset=name,
        )
    summary = summarize(frame, classes, skipped, converted)
    summary["class_limits"] = limits
    summary.update(
        dataset=name,
        kind=spec["kind"],
        synthetic=spec["kind"] == "synthetic" or _any_synthetic(parts),
        split=spec.get("split", "stratified"),
        split_file=spec.get("split_file"),
        split_seed=None if spec.get("split_file") else spec.get("split_seed", 0),
        split_of=spec.get("split_of"),
        listing_digest=folder_digest,
    )
    for path, reason in skipped:
        log.warning("left out %s: %s", path, reason)
    for item in converted:
        log.info("converted %s: %s", item["path"], item["how"])
    for conflict in summary["duplicates"]["label_conflicts"]:
        log.warning("identical images with different classes %s: %s", conflict["classes"], conflict["paths"])
    files["crops"].mkdir(parents=True, exist_ok=True)  # declared by the workflow for every dataset
    write_csv(files["splits"], split_table(frame, rel))
    write_csv(files["manifest"], frame)
    write_json(files["classes"], classes)
    write_json(files["summary"], summary)
    return summary


def _part_summary(where) -> dict:
    name = file_name("summary")
    path = Path(where) / name if Path(where).is_dir() else Path(where).with_name(name)
    return read_json(path) if path.is_file() else {}


def _any_synthetic(parts) -> bool:
    return any(_part_summary(folder).get("synthetic", False) for folder in (parts or {}).values())


def build_stain_cache(
    manifest: str | os.PathLike,
    cache: str | os.PathLike,
    method: str,
    reference_out: str | os.PathLike,
    cache_out: str | os.PathLike,
    threads: int = 4,
) -> dict:
    """The dataset's images mapped to one stain (``stain_norm``), decoded once like the cache: the ``method``'s
    reference fitted on the training split (at most ``REFERENCE_IMAGES`` of its images, the first by sha256),
    every row of ``cache`` mapped to it into ``cache_out``, and the reference with what was mapped, and the
    normalised cache's sha256 (a run checks it trains on these very images), into ``reference_out``."""
    import numpy as np

    from .._io import atomic_path, sha256_file
    from ..stain_norm import REFERENCE_IMAGES, fit_reference, normalize_images
    from ._cache import load_cache

    frame = read_manifest(manifest)
    images = load_cache(cache, len(frame))
    size = images.shape[-1]
    train = frame.index[frame["split"] == "train"].to_numpy()
    train = train[np.argsort(frame["sha256"].to_numpy()[train], kind="stable")][:REFERENCE_IMAGES]
    dataset = Path(manifest).parent.name
    reference = fit_reference(
        images[np.sort(train)], method, f"the training split of {dataset} ({len(train)} images at {size} px)"
    )
    out = np.empty(images.shape, np.uint8)
    mapped = np.zeros(len(images), dtype=bool)
    for start in range(0, len(images), 1024):  # in slices: a memory-mapped cache is read, never copied whole
        out[start : start + 1024], mapped[start : start + 1024] = normalize_images(
            images[start : start + 1024], reference, threads
        )
    with atomic_path(cache_out) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, out)
    unmapped = int((~mapped).sum())
    if unmapped:  # said where the reference goes: the run's record, its export, the report
        reference = dataclasses.replace(
            reference,
            fitted_on=f"{reference.fitted_on}; {unmapped} of the dataset's {len(images)} images too faint to map, "
            "used as decoded",
        )
    record = {
        **reference.to_json(),
        "images": int(len(images)),
        # images with too few stained pixels (or no colour spread) to map: kept as they were decoded
        "unmapped": unmapped,
        "unmapped_paths": frame.loc[~mapped, "path"].astype(str).head(20).tolist(),
        "cache_sha256": sha256_file(cache_out),
    }
    write_json(reference_out, record)
    return record
