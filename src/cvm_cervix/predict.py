"""``cvm-cervix predict``: a trained run's answer for any number of cells, as the report measured it.

Images are decoded in batches by a few threads while the previous batch is classified, so memory is
bounded by the batch, not by the number of images; rows are written as they come, into a partial file
renamed into place at the end (an interrupted run leaves no half-written CSV under the name asked for).
With the run's ``calibration.json`` (written by its evaluate step, copied by ``cvm-cervix export``):
``coverage`` adds each cell's conformal set and whether it is referred (the set is not exactly one class),
``operating_point`` the abnormal decision at that point's threshold, and the probabilities are
temperature-scaled where a temperature could be estimated (the columns say so: ``prob_T_<class>``).
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_path, shown_path, spreadsheet_safe_text
from .errors import CvmError


def read_calibration(run_dir: Path) -> dict | None:
    """The run's (or exported folder's) ``calibration.json``, or None where it has none; in an exported
    folder it must be the file ``config.json`` recorded (its sha256), as the weights must."""
    from ._io import sha256_file
    from .run import EXPORTED

    path = run_dir / EXPORTED["calibration"]
    if not path.is_file():
        return None
    config = run_dir / EXPORTED["config"]
    if config.is_file() and not (run_dir / "train.json").is_file():
        recorded = (json.loads(config.read_text(encoding="utf-8")).get("cvm_cervix") or {}).get("calibration_sha256")
        if recorded != sha256_file(path):
            raise CvmError(
                f"{path} is not the calibration {config} was exported with (their sha256 differs); "
                "export the run again (cvm-cervix export RUN -o DIR)"
            )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CvmError(f"{path} is not valid JSON ({err}); evaluate the run again") from None


class Combined:
    """Several runs' predictors (a deep ensemble: the mean of their probabilities) and/or test-time flips (the
    mean over the four flip4x views), called as one predictor; with its calibration fitted as the run's was,
    on the same validation cells: a run's own ``calibration.json`` (its ``tta`` part with flips), or for an
    ensemble the members' validation predictions averaged and calibrated alike (their calibration part)."""

    def __init__(self, predictors: list, tta: bool = False):
        first = predictors[0]
        for p in predictors[1:]:
            if p.classes != first.classes or p.img_size != first.img_size:
                raise CvmError(
                    f"{shown_path(p.run_dir)} and {shown_path(first.run_dir)} cannot be one ensemble: their classes "
                    f"or image sizes differ ({p.classes}, {p.img_size} px against {first.classes}, {first.img_size} px)"
                )
            if p.run.record.stain_reference != first.run.record.stain_reference:
                raise CvmError(
                    f"{shown_path(p.run_dir)} and {shown_path(first.run_dir)} cannot be one ensemble: they map the "
                    "images to different stain references (train.stain_normalization); ensemble runs trained alike"
                )
        self.members, self.tta = predictors, tta
        self.prepare = first.prepare  # one stain reference for all members
        self.classes, self.img_size, self.device = first.classes, first.img_size, first.device
        self.run_dir, self.info = first.run_dir, first.info

    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, float]:
        from .step import flip_views

        views = flip_views(images) if self.tta else [images]
        outs = [m(v, batch_size) for m in self.members for v in views]
        return np.mean([p for p, _ in outs], axis=0).astype(np.float32), sum(t for _, t in outs)

    def calibration(self) -> dict | None:
        """What ``--coverage`` and ``--operating-point`` read, for this predictor; None without one."""
        own = read_calibration(self.run_dir)
        if len(self.members) == 1:
            if not self.tta or own is None:
                return own
            if "tta" not in own:
                raise CvmError(
                    f"{shown_path(self.run_dir)}'s calibration.json predates test-time flips: evaluate the run "
                    "again (the workflow does it) to calibrate --tta"
                )
            return own["tta"]
        return self._ensemble_calibration(own)

    def _ensemble_calibration(self, own: dict | None) -> dict | None:
        from ._io import read_table
        from .diagnostics import calibration_record
        from .predictors import mean_predictions, tta_frame

        if own is None:
            return None
        vals = []
        for m in self.members:
            file = m.run_dir / "predictions_val.csv"
            if not file.is_file():
                raise CvmError(
                    f"{shown_path(m.run_dir)} has no predictions_val.csv: an ensemble's referral is calibrated on "
                    "its members' validation predictions; give run folders (not exported ones), evaluated"
                )
            frame = read_table(file)
            if self.tta:
                frame = tta_frame(frame)
                if frame is None:
                    raise CvmError(f"{shown_path(file)} predates test-time flips: evaluate the run again")
            vals.append(frame)
        val = mean_predictions(vals, "the ensemble's members")
        points = [{p["kind"]: p["target"]} for p in own.get("operating_points", [])]
        coverages = [float(c) for c in own.get("conformal", {})]
        return calibration_record(val, self.classes, coverages, points, own.get("abnormal_classes") or None)


def _decoded(files: list[Path], img_size: int, batch_size: int, skip_unreadable: bool, workers: int):
    """Batches of (files, uint8 N×3×S×S images, unreadable files), decoded a batch ahead of the caller."""
    from .data import load_image

    def load(file: Path):
        try:
            return load_image(file, img_size)
        except Exception as err:  # an unreadable image: one line naming it, or skipped and listed
            if not skip_unreadable:
                raise CvmError(
                    f"{shown_path(file)} cannot be read as an image ({type(err).__name__}); remove it, "
                    "or give --skip-unreadable to leave it out and list it in the summary"
                ) from None
            return None

    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        # each image its own task, so every worker decodes (PIL releases the GIL while it decodes and
        # resizes); the next batch is submitted before this one is classified: two batches in memory at most
        pending = [pool.submit(load, f) for f in batches[0]] if batches else []
        for index, batch in enumerate(batches):
            images = [p.result() for p in pending]
            if index + 1 < len(batches):
                pending = [pool.submit(load, f) for f in batches[index + 1]]
            kept = [(f, x) for f, x in zip(batch, images, strict=True) if x is not None]
            bad = [f for f, x in zip(batch, images, strict=True) if x is None]
            stacked = np.stack([x for _, x in kept]) if kept else np.zeros((0, 3, img_size, img_size), np.uint8)
            yield [f for f, _ in kept], stacked, bad


def predict_files(
    predictor,
    files: list[Path],
    *,
    batch_size: int = 64,
    coverage: float | None = None,
    operating_point: str | None = None,
    skip_unreadable: bool = False,
    workers: int = 2,
    progress: bool | None = None,
    review=None,
) -> Iterator[dict]:
    """Rows (one per readable image, in the order given) and, last, a summary dict under key ``summary``.
    ``review``: a :class:`~cvm_cervix.review.Review` offered every row with its image."""
    from tqdm import tqdm

    from .calibration import scale_temperature
    from .diagnostics import abnormal_score
    from .referral import prediction_sets

    classes = predictor.classes
    calibration = predictor.calibration() if hasattr(predictor, "calibration") else read_calibration(predictor.run_dir)
    threshold = point = None
    if coverage is not None:
        if calibration is None:
            raise CvmError(f"{shown_path(predictor.run_dir)} has no calibration.json: run its evaluate step first")
        entry = calibration["conformal"].get(f"{coverage:g}")
        if entry is None:
            raise CvmError(
                f"--coverage {coverage:g} is not one the run was calibrated for (calibrated: "
                f"{', '.join(calibration['conformal'])}; analysis.referral.coverages)"
            )
        threshold = entry["threshold"]
    if operating_point is not None:
        points = {p["name"]: p for p in (calibration or {}).get("operating_points", [])}
        if operating_point not in points:
            raise CvmError(
                f"--operating-point {operating_point} is not one of the run's ({', '.join(points) or 'none'}; "
                "analysis.operating_points)"
            )
        point = points[operating_point]
        if point["threshold"] is None:
            raise CvmError(f"operating point {operating_point}: the validation split could not reach its target")
    temperature = (calibration or {}).get("temperature")
    bar = tqdm(
        total=len(files),
        unit="img",
        file=sys.stderr,
        disable=not (sys.stderr.isatty() if progress is None else progress),
        mininterval=2.0,
    )
    counts: Counter = Counter()
    referred = total = 0
    unreadable: list[str] = []
    unmapped = 0
    for names, images, bad in _decoded(files, predictor.img_size, batch_size, skip_unreadable, workers):
        unreadable += [str(f) for f in bad]
        bar.update(len(names) + len(bad))
        if not names:
            continue
        # as the network takes them (the run's stain reference); the review page shows them as decoded
        prepared, mapped = predictor.prepare(images)
        unmapped += int((~mapped).sum())
        probs, _ = predictor(torch.from_numpy(prepared).to(predictor.device), batch_size)
        shown = scale_temperature(probs, temperature) if temperature else probs
        sets = prediction_sets(probs, threshold) if coverage is not None else None
        abnormal = (
            abnormal_score(probs, classes, calibration["abnormal_classes"]) >= point["threshold"]
            if point is not None
            else None
        )
        for i, name in enumerate(names):
            pred = classes[int(probs[i].argmax())]
            counts[pred] += 1
            total += 1
            row = {"path": str(name), "pred": pred, "confidence": float(shown[i].max())}
            if sets is not None:
                members = [c for c, inside in zip(classes, sets[i], strict=True) if inside]
                row["set"] = "|".join(members)
                row["refer"] = len(members) != 1
                referred += row["refer"]
            if abnormal is not None:
                row[f"abnormal_at_{operating_point}"] = bool(abnormal[i])
            prefix = "prob_T_" if temperature else "prob_"
            row.update({f"{prefix}{c}": float(shown[i][k]) for k, c in enumerate(classes)})
            if review is not None:
                review.offer(row, images[i])
            yield row
    bar.close()
    yield {
        "summary": {
            "images": total,
            "per_class": {c: counts[c] for c in classes},
            "referred": referred if coverage is not None else None,
            "coverage": coverage,
            "temperature": temperature,
            "unreadable": unreadable,
            # images the run's stain normalisation could not map (too few stained pixels): classified as decoded
            "stain_normalization": predictor.info["settings"]["stain_normalization"],
            "stain_unmapped": unmapped if predictor.info["settings"]["stain_normalization"] != "none" else None,
        }
    }


def write_predictions(rows: Iterator[dict], output: Path | None) -> dict:
    """Each row to ``output`` or standard output as it comes; returns the summary. ``output`` is written
    through :func:`~cvm_cervix._io.atomic_path`: complete under its name only at the end (a link keeps
    its link, a FIFO is written through). Cells that would start a spreadsheet formula are neutralised."""
    if output is None:
        return _write(rows, sys.stdout)
    with atomic_path(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        return _write(rows, handle)


def _write(rows: Iterator[dict], handle) -> dict:
    writer = None
    for row in rows:
        if "summary" in row:
            if writer is None:  # no readable image: the header alone
                handle.write("path,pred,confidence\n")
            return row["summary"]
        if writer is None:
            writer = csv.DictWriter(handle, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: spreadsheet_safe_text(v) for k, v in row.items()})
    raise AssertionError("predict_files yields a summary last")
