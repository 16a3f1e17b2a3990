"""The prepare step: dataset folder (or other manifests) -> manifest.csv, classes.json, summary.json."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .._io import read_json, write_csv, write_json
from ..errors import CvmError
from ._adapters import list_dataset
from ._manifest import (assign_splits, combine_frames, conversions, limit_classes, read_manifest, records_frame,
                        summarize)

log = logging.getLogger(__name__)


def prepare_dataset(name: str, spec: dict, out_dir: str | os.PathLike, root: str | os.PathLike | None = None,
                    parts: dict[str, str | os.PathLike] | None = None, threads: int = 4) -> dict:
    """Read one dataset and write its manifest, class list and summary into ``out_dir``.

    ``root`` is the folder to read (for ``combined``, ``parts`` maps part names to their manifest
    folders instead). Returns the summary. Every file is written atomically.
    """
    out_dir = Path(out_dir)
    if spec["kind"] == "combined":
        frames = {}
        for part, folder in (parts or {}).items():
            frame = read_manifest(Path(folder) / "manifest.csv")
            frames[part] = frame
        if not frames:
            raise CvmError(f"dataset {name!r}: a combined dataset needs 'parts'")
        frame, classes = combine_frames(frames)
        skipped = []
        converted = [c for folder in (parts or {}).values() for c in _part_summary(folder).get("converted", [])]
    else:
        root = root or spec.get("root")
        if not root:
            raise CvmError(f"config key 'datasets.{name}.root' is not set; give the folder the {spec['kind']} "
                           "dataset was unpacked into")
        listing = list_dataset(spec["kind"], root, spec, out_dir)
        frame, classes, skipped = records_frame(listing, name, threads), listing.classes, listing.skipped
        converted = conversions(frame)
    present = sorted(set(frame["class"]))
    if len(present) < 2:  # one class trains to 100% accuracy and means nothing
        raise CvmError(f"dataset {name!r}{f' ({root})' if root else ''} has {len(present)} class "
                       f"({', '.join(map(repr, present)) or 'no images'}); a classifier needs at least two: add the "
                       "other classes' folders")
    frame, limits = limit_classes(frame, spec.get("max_per_class"), spec.get("class_limits"),
                                  spec.get("split_seed", 0), name, spec.get("short_classes", "error"))
    frame = assign_splits(frame, spec.get("split_fractions", (0.6, 0.2, 0.2)), spec.get("split_seed", 0),
                          spec.get("split", "stratified"), dataset=name)
    summary = summarize(frame, classes, skipped, converted)
    summary["class_limits"] = limits
    summary.update(dataset=name, kind=spec["kind"], synthetic=spec["kind"] == "synthetic" or _any_synthetic(parts),
                   split=spec.get("split", "stratified"))
    for path, reason in skipped:
        log.warning("left out %s: %s", path, reason)
    for item in converted:
        log.info("converted %s: %s", item["path"], item["how"])
    for conflict in summary["duplicates"]["label_conflicts"]:
        log.warning("identical images with different classes %s: %s", conflict["classes"], conflict["paths"])
    (out_dir / "crops").mkdir(parents=True, exist_ok=True)  # declared by the workflow for every dataset
    write_csv(out_dir / "manifest.csv", frame)
    write_json(out_dir / "classes.json", classes)
    write_json(out_dir / "summary.json", summary)
    return summary


def _part_summary(folder) -> dict:
    path = Path(folder) / "summary.json"
    return read_json(path) if path.is_file() else {}


def _any_synthetic(parts) -> bool:
    return any(_part_summary(folder).get("synthetic", False) for folder in (parts or {}).values())
