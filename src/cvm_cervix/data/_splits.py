"""Portable split files: which image went to which split, as another lab can reuse it.

Every prepared dataset writes ``splits.csv``: one row per image, ``dataset`` (the part, for a
combined set), ``path`` relative to that dataset's root (CRIC cells cut from full images:
``crops/...``), ``sha256``, ``class`` and ``split``, in manifest order. A dataset given
``split_file:`` takes its splits from such a file instead of drawing them; the file must list
exactly the images found, with the same content and class, or prepare stops with one line naming
the first missing, extra and changed file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .._io import read_table
from ..errors import CvmError

COLUMNS = ["dataset", "path", "sha256", "class", "split"]


def relative_paths(frame: pd.DataFrame, root: str | os.PathLike | None, out_dir: str | os.PathLike) -> list[str]:
    """Each image's path relative to the dataset's root (or ``crops/...`` under the prepared folder), in POSIX form."""
    bases = [(Path(out_dir).resolve(), ""), *([(Path(root).resolve(), "")] if root else [])]
    out = []
    for p in frame["path"]:
        path, rel = Path(os.path.abspath(p)), None
        for base, prefix in bases:
            for candidate in (path, path.resolve()):
                try:
                    rel = prefix + candidate.relative_to(base).as_posix()
                    break
                except ValueError:
                    continue
            if rel is not None:
                break
        if rel is None:
            raise CvmError(f"{p} is neither under the dataset's root {root} nor under {out_dir}: no portable path")
        out.append(rel)
    return out


def split_table(frame: pd.DataFrame, relative: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": frame["dataset"].astype(str).to_numpy(),
            "path": relative,
            "sha256": frame["sha256"].to_numpy(),
            "class": frame["class"].to_numpy(),
            "split": frame["split"].to_numpy(),
        }
    )


def _first(items: list, describe) -> str:
    return f"{len(items)} (first: {describe(items[0])})"


def apply_split_file(
    frame: pd.DataFrame, relative: list[str], split_file: str | os.PathLike, name: str, combined: bool = False
) -> pd.DataFrame:
    """``frame`` with the ``split`` column of ``split_file``; one line naming what does not match, else.

    Images are matched by relative path (and, for a combined set, by part name as well: the file's
    ``dataset`` column), so the same images unpacked elsewhere, or under another dataset name, match.
    """
    split_file = Path(split_file)
    try:
        table = read_table(split_file, text=tuple(COLUMNS))
    except FileNotFoundError:
        raise CvmError(
            f"config key 'datasets.{name}.split_file': {split_file} not found; give a splits.csv "
            "written by the prepare step (results/data/<dataset>/splits.csv)"
        ) from None
    lacking = [c for c in COLUMNS if c not in table.columns]
    if lacking:
        raise CvmError(
            f"{split_file} is not a split file: it lacks column(s) {', '.join(lacking)} "
            f"(a split file has {', '.join(COLUMNS)})"
        )
    bad = table.loc[~table["split"].isin(["train", "val", "test"]), "split"]
    if len(bad):
        raise CvmError(f"{split_file}: split {bad.iloc[0]!r} is not train, val or test")
    keys = list(zip(table["dataset"] if combined else [""] * len(table), table["path"]))
    if len(set(keys)) != len(keys):
        seen, dup = set(), None
        for k in keys:
            if k in seen:
                dup = k
                break
            seen.add(k)
        raise CvmError(f"{split_file} lists {dup[1]} (dataset {dup[0]}) twice")
    listed = {k: row for k, row in zip(keys, table.itertuples(index=False))}
    parts = [str(d) for d in frame["dataset"]] if combined else [""] * len(frame)
    here = {(d, r): i for i, (d, r) in enumerate(zip(parts, relative))}
    missing = [k for k in listed if k not in here]
    extra = [k for k in here if k not in listed]
    changed = []
    for k, i in here.items():
        row = listed.get(k)
        if row is None:
            continue
        if row.sha256 != frame["sha256"].iloc[i]:
            changed.append((k, "its content (sha256) differs"))
        elif row[COLUMNS.index("class")] != frame["class"].iloc[i]:
            changed.append((k, f"class {frame['class'].iloc[i]!r} here, {row[COLUMNS.index('class')]!r} in the file"))
    if missing or extra or changed:
        what = []
        if missing:
            what.append("in the file but not among the images: " + _first(missing, lambda k: k[1]))
        if extra:
            what.append("among the images but not in the file: " + _first(extra, lambda k: k[1]))
        if changed:
            what.append("changed: " + _first(changed, lambda c: f"{c[0][1]}, {c[1]}"))
        raise CvmError(
            f"{split_file} does not match the images of dataset {name!r}: "
            + "; ".join(what)
            + f"; give the split file written for these images, or remove 'datasets.{name}.split_file' "
            "to draw a split"
        )
    frame = frame.reset_index(drop=True).copy()
    frame["split"] = [listed[(d, r)].split for d, r in zip(parts, relative)]
    # as a drawn split is: every class in every split (a class with no validation image leaves the run's
    # operating points undefined, one with no test image its per-class metrics)
    counts = frame.groupby(["class", "split"]).size()
    for cls in sorted(frame["class"].unique(), key=str):
        empty = [s for s in ("train", "val", "test") if counts.get((cls, s), 0) == 0]
        if empty:
            n = int((frame["class"] == cls).sum())
            raise CvmError(
                f"{split_file} puts no image of class {cls!r} (dataset {name!r}) in {' or '.join(empty)}; every "
                f"class needs at least one image in each of train, val and test: move some of its {n} images, "
                f"or remove 'datasets.{name}.split_file' to draw a split"
            )
    return frame
