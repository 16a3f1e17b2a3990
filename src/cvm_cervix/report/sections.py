"""The report's sections read from the workflow's files: runs, datasets, compression, analysis, transfer, failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._io import read_json, read_table
from ..data import read_manifest, split_counts
from ..record import RunRecord
from ..report_inputs import DatasetFiles, RunFiles
from ._common import METRICS, _mean_sd, _png_data_uri, paper_results
from .figures import robustness_figure, transfer_figure, tsne_figure


def aggregate_runs(runs: list[RunFiles]) -> dict:
    """Mean and standard deviation over seeds of each split's metrics (percent) and of the costs."""
    metrics = [read_json(r.metrics) for r in runs]
    trains = [RunRecord.read(r.train_info).to_json() for r in runs]  # every layout of train.json read as one
    out: dict = {"seeds": [m["seed"] for m in metrics]}
    for split in ("val", "test"):
        out[split] = {name: _mean_sd([100 * m[split][key] for m in metrics]) for name, key in METRICS}
        out[split]["ms_per_image"] = _mean_sd([m[split]["ms_per_image"] for m in metrics])
    # from files on disk (decode, resize, inference), as the paper timed its test; runs evaluated before
    # this was measured have none
    ends = [m["test"].get("end_to_end_seconds") for m in metrics]
    out["end_to_end"] = (
        {
            "seconds": _mean_sd(ends),
            "ms_per_image": _mean_sd([m["test"]["end_to_end_ms_per_image"] for m in metrics]),
            "images": metrics[0]["test"]["n"],
        }
        if None not in ends
        else None
    )
    out["cost"] = {
        "params_m": trains[0]["params"] / 1e6,
        "size_mib": metrics[0].get("size_mib", metrics[0]["size_mb"] * 1e6 / 2**20),
        "seconds_per_epoch": _mean_sd([t["seconds_per_epoch"] for t in trains]),
        "total_seconds": _mean_sd([t["total_seconds"] for t in trains]),
        "device": trains[0]["device_name"] or trains[0]["device"],
        "epochs": trains[0]["epochs"],
        "train_images": trains[0]["train_images"],
        "best_epoch": [t["best_epoch"] for t in trains],
    }
    return out


SECTION_TITLES = {
    "intended-use": "Intended use",
    "data": "Data",
    "results": "Results",
    "transfer": "Transfer",
    "compression": "Compression",
    "robustness": "Robustness",
    "analysis": "Features and misclassifications",
    "cost": "Cost",
    "runs": "Runs",
    "provenance": "Provenance",
}


def checklists(optional: dict[str, bool]) -> list[dict]:
    """CLAIM and TRIPOD+AI, each item with the report's sections that answer it (``optional``: whether
    each section that only some configs have is in this report) or why none can."""
    from .._io import package_yaml

    out = []
    for name, checklist in package_yaml("reporting_checklists.yaml").items():
        items = [
            {
                "topic": item["topic"],
                "note": item.get("note"),
                "why": item.get("why"),
                "sections": [
                    {"id": sec, "title": SECTION_TITLES[sec], "present": optional.get(sec, True)}
                    for sec in item.get("where", [])
                ],
            }
            for item in checklist["items"]
        ]
        out.append({"name": name, "source": checklist["source"], "items": items})
    return out


def robustness_section(result: dict, label: str, experiment: str) -> dict:
    """One run's robustness: accuracy (and abnormal AUC) per corruption and severity, clean at 0, the
    mean over corruptions, and a plot of accuracy against severity."""
    severities = sorted(int(s) for s in result["mean"])
    return {
        "label": label,
        "experiment": experiment,
        "severities": severities,
        "clean": result["clean"],
        "mean": [result["mean"][str(s)] for s in severities],
        "corruptions": {
            name: [by_severity[str(s)] for s in severities] for name, by_severity in result["corruptions"].items()
        },
        "test_images": result["test_images"],
        "img_size": result["img_size"],
        "draws": result.get("draws", {}),
        "mean_of": [result["mean"][str(s)].get("corruptions") for s in severities],
        "result": result,  # for the mCE against the experiment's baseline run
        "mce": None,
        "figure": robustness_figure(result, label),
    }


def analysis_section(files: RunFiles, label: str, classes: list[str], experiment: str = "") -> dict:
    """One run's analysis: its Grad-CAM gallery (images inlined) and the t-SNE of its test features."""
    gallery = read_json(files.gallery)
    images = [{**img, "src": _png_data_uri(_gallery_image(files, img["file"]))} for img in gallery["images"]]
    return {
        "label": label,
        "experiment": experiment,
        "layer": gallery["layer"],
        "attention": gallery.get("attention"),
        "resolution": gallery.get("cam_resolution"),
        "pairs": gallery["pairs"],
        "images": images,
        "tsne": tsne_figure(read_table(files.tsne), classes, f"t-SNE (3-D) of the test features: {label}"),
    }


def _gallery_image(files: RunFiles, name: str) -> Path:
    """An image the gallery names (beside gallery.json): one of the rule's declared gallery images."""
    image = Path(os.path.normpath(files.gallery.parent / name))
    if files.gallery_images not in image.parents:
        raise ValueError(f"{files.gallery} names {name!r}, which is not in its gallery folder {files.gallery_images}")
    return image


def compression_rows(files: RunFiles, precisions: list[str]) -> list[dict]:
    """float32 (evaluated in float32 by the compress step), then each compressed variant."""
    rows = [read_json(files.compressed[p]) for p in precisions]
    fp32 = rows[0]["fp32"]
    return [
        {
            "precision": "fp32",
            "size_mib": files.weights.stat().st_size / 2**20,
            "accuracy": fp32["accuracy"],
            "f1_macro": fp32["f1_macro"],
            "delta_accuracy": 0.0,
            "delta_f1_macro": 0.0,
            "agreement_with_fp32": 1.0,
            "ms_per_image": fp32["ms_per_image"],
            "device": fp32["device"],
            "note": "float32 weights (the trained run), evaluated in float32",
        },
        *rows,
    ]


def paper_confusions(metrics: dict) -> list[dict]:
    """The confusions the paper names (Fig. 6, validation and test) beside this run's counts of the same pairs."""
    classes = metrics["classes"]
    rows = []
    for split in ("val", "test"):
        cm = metrics[split]["confusion"]
        for item in paper_results().get("confusions", {}).get(split, []):
            known = {item["label"], item["pred"]} <= set(classes)
            ours = cm[classes.index(item["label"])][classes.index(item["pred"])] if known else None
            rows.append({**item, "split": split, "ours": ours})
    return rows


def mixed_precision_contrasts(rows: list[dict], variants: dict) -> list[dict]:
    """Each run trained with mixed precision (a variant with ``amp: true``) against the same model and
    augmentation in the config's own arithmetic: training time saved (seconds, and as a share) and the
    change in test accuracy (points), beside the paper's "around 1 hour" and "around -1%" (Sec. 4.6)."""
    by_recipe = {(r["model"], r["recipe"]): r for r in rows if r.get("cost")}
    out = []
    for (model, recipe), row in by_recipe.items():
        augment, _, variant = recipe.partition("+")
        base = by_recipe.get((model, augment))
        if not variant or not (variants.get(variant) or {}).get("amp") or base is None:
            continue
        before, after = base["cost"]["total_seconds"]["mean"], row["cost"]["total_seconds"]["mean"]
        # amp asked for where it cannot run (a CPU) trains in float32 too: two float32 runs differ in time
        # only by chance, and that is no saving
        same = row.get("precision") is not None and row.get("precision") == base.get("precision")
        out.append(
            {
                "model": row["paper_name"],
                "recipe": recipe,
                "precision": row.get("precision"),
                "base_precision": base.get("precision"),
                "seconds_saved": None if same else before - after,
                "share_saved": None if same or not before else (before - after) / before,
                "delta_accuracy": row["test"]["accuracy"]["mean"] - base["test"]["accuracy"]["mean"],
                "note": (
                    f"both trained in {row.get('precision')}: mixed precision did not run on this device, so there "
                    "is no precision contrast (a time difference would be run-to-run variation)"
                    if same
                    else None
                ),
            }
        )
    return out


EXAMPLES_PER_CLASS, EXAMPLE_PX = 4, 64


def example_images(manifest, cache: Path, classes: list[str]) -> list[dict]:
    """The first few images of each class in the manifest's order (the paper's Figs 4, 8 and 10), from
    the decoded cache, as small PNG thumbnails: ``[{"class", "images": [data URI, ...]}]``."""
    import base64
    import io

    from PIL import Image

    try:  # read only: the report never removes a cache (load_cache does, for the jobs that train on it)
        pixels = np.load(cache, mmap_mode="r")
    except (ValueError, OSError, EOFError):
        pixels = None
    if pixels is None or pixels.dtype != np.uint8 or pixels.ndim != 4 or len(pixels) != len(manifest):
        return []  # unreadable or not this manifest's: the jobs that read it fail, and the report says so
    out = []
    for cls in classes:
        rows = manifest.index[manifest["class"] == cls][:EXAMPLES_PER_CLASS]
        uris = []
        for row in rows:
            image = Image.fromarray(np.ascontiguousarray(pixels[row].transpose(1, 2, 0)))
            if image.width > EXAMPLE_PX:
                image = image.resize((EXAMPLE_PX, EXAMPLE_PX), Image.BILINEAR)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            uris.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
        out.append({"class": cls, "images": uris})
    return out


def dataset_section(
    name: str, spec: dict, files: DatasetFiles, paper_key: str | None, parts: list[DatasetFiles]
) -> dict:
    """A prepared dataset: images per class and split beside the paper's, example images, what was left out;
    ``parts``: a combined set's parts (their summaries say which classes were short)."""
    manifest = read_manifest(files.manifest)
    classes = read_json(files.classes)
    summary = read_json(files.summary)
    cache = files.cache
    table = split_counts(manifest, classes)
    paper = (paper_results()["splits"].get(paper_key) or {}) if paper_key else {}
    rows = []
    for cls, row in table.iterrows():
        rows.append(
            {
                "class": cls,
                "train": int(row["train"]),
                "val": int(row["val"]),
                "test": int(row["test"]),
                "total": int(row["total"]),
                "paper": paper.get(cls),
            }
        )
    totals = table.sum()
    return {
        # a cache that is missing (its job failed: the report says so elsewhere) gives no examples
        "examples": example_images(manifest, cache, classes) if cache is not None and cache.is_file() else [],
        "short_parts": _short_parts(parts),
        "name": name,
        "kind": spec["kind"],
        "synthetic": bool(summary.get("synthetic")),
        "split_of": spec.get("split_of"),
        "split_seed": spec.get("split_seed", 0),
        "split": summary.get("split", "stratified"),
        "rows": rows,
        "totals": {k: int(totals[k]) for k in ("train", "val", "test", "total")},
        "paper_totals": [sum(v[i] for v in paper.values()) for i in range(3)] if paper else None,
        "skipped": summary.get("skipped", []),
        "limits": summary.get("class_limits") or {},
        "duplicates": summary.get("duplicates", {}),
        "paper_key": paper_key,
        "paper_note": paper_results().get("split_notes", {}).get(paper_key) if paper_key else None,
    }


def _short_parts(parts: list[DatasetFiles]) -> list[dict]:
    """A combined set's parts that hold fewer images of a class than their limits ask: the classes,
    asked against kept, and how many images the combined set is short by for it."""
    short = []
    for files in parts:
        part = files.name
        limits = read_json(files.summary).get("class_limits") or {}
        classes = {c: v for c, v in limits.items() if v["kept"] < v["asked"]}
        if classes:
            missing = sum(v["asked"] - v["kept"] for v in classes.values())
            short.append({"part": part, "classes": classes, "missing": missing})
    return short


def _missing_dataset(name: str, spec: dict, failure) -> dict:
    return {
        "name": name,
        "kind": spec["kind"],
        "synthetic": spec["kind"] == "synthetic",
        "missing": failure.as_dict(),
        "split": spec.get("split", "stratified"),
        "rows": [],
        "paper_key": None,
    }


def failures_table(config: dict, status: dict) -> list[dict]:
    """One row per missing thing: what, the rule that failed (or did not run), its log, the error line."""
    rows = [{"what": f"dataset {name}", **f.as_dict()} for name, f in status["datasets"].items()]
    rows += [{"what": run.path, **f.as_dict()} for run, f in sorted(status["runs"].items())]
    caused = set(status["runs"].values())
    rows += [{"what": f"statistics of {name}", **f.as_dict()} for name, f in status["stats"].items() if f not in caused]
    rows += [
        {"what": f"{run.path} compressed to {p}", **f.as_dict()}
        for (run, p), f in sorted(status["compress"].items())
        if f not in caused
    ]
    rows += [
        {"what": f"{run.path} analysis", **f.as_dict()}
        for run, f in sorted(status["analysis"].items())
        if f not in caused
    ]
    rows += [
        {"what": f"{run.path} robustness", **f.as_dict()}
        for run, f in sorted(status["robustness"].items())
        if f not in caused
    ]
    if status["transfer"] and status["transfer"] not in caused:
        rows.append({"what": "transfer matrix", **status["transfer"].as_dict()})
    return rows


def transfer_section(config: dict, path: Path | None) -> dict | None:
    """The transfer matrix (rows: trained on, columns: tested on) from ``transfer/matrix.json``."""
    spec = config.get("transfer")
    if not spec or path is None or not path.is_file():
        return None
    matrix = read_json(path)
    cells = {(c["source"], c["target"]): c for c in matrix["cells"]}
    rows = [
        {
            "source": s,
            "dataset": next(c["source_dataset"] for c in matrix["cells"] if c["source"] == s),
            "cells": [cells.get((s, t)) for t in matrix["targets"]],
        }
        for s in matrix["sources"]
    ]
    return {
        "title": spec.get("title", "Transfer between datasets"),
        "mapping": matrix["mapping"],
        "targets": matrix["targets"],
        "rows": rows,
        "cells": matrix["cells"],
        "figure": transfer_figure(matrix, rows),
    }
