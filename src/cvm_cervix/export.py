"""A trained run as a folder to share: ``cvm-cervix export RUN -o DIR``.

The folder is laid out as timm and Hugging Face lay out a model: ``model.safetensors`` (the run's
weights, with their metadata), ``config.json`` (architecture, classes, input size and normalisation;
the run's record under ``cvm_cervix``), ``README.md`` (the model card: data and split, metrics with
intervals, calibration, intended use and limitations) and, asked for, ``model.onnx``.
``cvm-cervix predict --run DIR`` reads it like a run folder, to the same predictions.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from . import __version__
from ._io import partial_path, read_json, read_table, sha256_file, shown_path
from .errors import CvmError, disk_full
from .intended_use import INTENDED_USE, LIMITATIONS, SYNTHETIC
from .models import pretrained_sources
from .paths import file_name, path
from .run import EXPORTED, TrainedRun


def _run_files(run: TrainedRun) -> dict[str, Path]:
    """The evaluated run's files the card is made from; a run not evaluated yet is one line."""
    files = {key: run.dir / file_name(key) for key in ("metrics", "predictions_test", "predictions_val")}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise CvmError(
            f"{shown_path(run.dir)} has no {', '.join(missing)}: the card reports the run's test metrics; "
            "run the workflow's evaluate step for this run first"
        )
    return files


def _summary(run: TrainedRun) -> dict:
    """The prepared dataset's summary (kind, synthetic or not, split, counts), found above the run folder."""
    relative = path("summary", dataset=run.info["dataset"])
    for parent in run.dir.parents:
        if (parent / relative).is_file():
            return read_json(parent / relative)
    raise CvmError(
        f"no {relative} above {shown_path(run.dir)}: export a run inside the results folder that trained it "
        "(results/runs/<dataset>/<model>/<recipe>/seed<N>)"
    )


def _default_abnormal() -> list[str]:
    from .configfile import load_schema

    return list(load_schema()["properties"]["analysis"]["properties"]["abnormal_classes"]["default"])


def card_numbers(run: TrainedRun, abnormal: list[str] | None = None, n_boot: int = 1000) -> dict:
    """What the model card states, computed from the run's prediction files: test accuracy and macro F1
    with 95% intervals (Wilson for proportions, a bootstrap for macro F1), per-class recall, calibration
    (ECE) and, where the classes have both, abnormal-vs-normal sensitivity and specificity."""
    from .calibration import calibration
    from .diagnostics import class_codes, probabilities
    from .stats import accuracy_f1_intervals, clinical_view

    files = _run_files(run)
    metrics = read_json(files["metrics"])["test"]
    test = read_table(files["predictions_test"])
    probs, classes = probabilities(test)
    if classes != run.classes:
        raise CvmError(
            f"{shown_path(files['predictions_test'])} has classes {classes} but the run has {run.classes}: "
            "the two files belong to different runs; evaluate the run again"
        )
    labels = class_codes(test["label"], classes)
    interval = accuracy_f1_intervals(test["label"], test["pred"], classes, n_boot, seed=run.info["seed"])
    clinical = clinical_view(test["label"].to_numpy(), test["pred"].to_numpy(), abnormal or _default_abnormal())
    calibration_file = run.dir / file_name("calibration")
    return {
        "calibration": json.loads(calibration_file.read_text(encoding="utf-8")) if calibration_file.is_file() else None,
        "test_images": int(len(test)),
        "accuracy": float(np.mean(test["label"].to_numpy() == test["pred"].to_numpy())),
        "f1_macro": float(metrics["f1_macro"]),
        "interval": interval,
        "per_class": metrics["per_class"],
        "ece": calibration(labels, probs)["ece"],
        "clinical": clinical,
    }


def md(text) -> str:
    """``text`` as inert Markdown inline text: HTML escaped (a class named ``<img onerror=...>`` is shown,
    never run), table cells kept whole (``|``) and one line (a newline would start a heading)."""
    import html
    import re

    one_line = re.sub(r"\s+", " ", str(text)).strip()
    return html.escape(one_line, quote=True).replace("|", "\\|").replace("`", "&#96;")


TIMM_WEIGHTS = "timm_model.safetensors"


def timm_checkpoint(run: TrainedRun) -> dict | None:
    """A run whose network is one timm architecture, as plain timm holds it: ``arch``, the ``create_model``
    keywords that build it, and its state dict in timm's keys (the classifier under the architecture's own
    name); None for any other network (the fusion models, torchvision's, the ones written here)."""
    from .models import Builder, get_model_spec

    build = get_model_spec(run.record.model).build_backbone
    if not isinstance(build, Builder) or build.function != "_timm":
        return None
    model = run.model("cpu")
    backbone = model.backbone
    classifier = backbone.pretrained_cfg.get("classifier")
    if not isinstance(classifier, str) or not isinstance(model.head, torch.nn.Linear):
        return None
    state = {k: v for k, v in backbone.state_dict().items()}
    state[f"{classifier}.weight"], state[f"{classifier}.bias"] = model.head.weight, model.head.bias
    kwargs = {"num_classes": run.record.num_classes}
    if dict(build.kwargs).get("sized", True):
        kwargs["img_size"] = run.img_size
    return {
        "arch": build.args[0],
        "kwargs": kwargs,
        "state": {k: v.detach().contiguous() for k, v in state.items()},
        "mean": backbone.input_normalization["mean"],
        "std": backbone.input_normalization["std"],
    }


def card_metadata(run: TrainedRun, summary: dict, numbers: dict) -> str:
    """The card's front matter, written by ``huggingface_hub``'s :class:`ModelCardData` as the Hub reads it:
    library, tags, the dataset, the test metrics as a ``model-index``, the ImageNet weights it started from
    (``base_model``) where it did, and the licence of the code (the datasets' own terms are in the card)."""
    from huggingface_hub import EvalResult, ModelCardData

    info = run.info
    base = None
    if info["pretrained"]:
        sources = [s for s in pretrained_sources(run.model("cpu")) if s.get("hub_id")]
        base = [s["hub_id"] for s in sources] or None
    dataset = info["dataset"]
    results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="test",
            metric_type=metric,
            metric_name=name,
            metric_value=round(float(numbers[key]), 4),
        )
        for metric, name, key in (("accuracy", "accuracy", "accuracy"), ("f1", "macro F1", "f1_macro"))
    ]
    data = ModelCardData(
        model_name=f"{info['model']} on {dataset}",
        license="mit",
        library_name="cvm-cervix",
        pipeline_tag="image-classification",
        tags=[
            "image-classification",
            "cervical-cytology",
            "cvm-cervix",
            *(["synthetic-data"] if summary.get("synthetic") else []),
        ],
        datasets=[dataset],
        metrics=["accuracy", "f1"],
        base_model=base[0] if base and len(base) == 1 else base,
        eval_results=results,
    )
    return f"---\n{data.to_yaml()}\n---"


def model_card(run: TrainedRun, summary: dict, numbers: dict) -> str:
    """The model card (README.md of an exported folder), Markdown; every name read from data escaped (:func:`md`)."""
    info, lo_hi = run.info, numbers["interval"]

    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    synthetic = bool(summary.get("synthetic"))
    lines = [
        card_metadata(run, summary, numbers),  # the front matter model hubs read
        f"# {info['model']} on {info['dataset']}" + (" (SYNTHETIC data)" if synthetic else ""),
        "",
        f"Exported by the CVM-Cervix workflow {__version__} from `{info['dataset']}/{info['model']}/"
        f"{info['augment']}/seed{info['seed']}`. Every number below is computed from the run's own files.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
    ]
    if synthetic:
        lines += [f"**{SYNTHETIC}**", ""]
    lines += ["## Limitations", "", *[f"- {text}" for text in LIMITATIONS], ""]
    lines += [
        "## Licence",
        "",
        f"The workflow's code and this card: MIT. The weights were trained on `{md(info['dataset'])}`: the terms "
        "under which its images were published (SIPaKMeD, CRIC, Herlev, the blood-cell set each state their "
        "own) govern what may be done with them and with this model.",
        "",
    ]
    counts = summary.get("counts", {})
    split_total = {s: sum(c.get(s, 0) for c in counts.values()) for s in ("train", "val", "test")}
    lines += [
        "## Data",
        "",
        f"- dataset: `{info['dataset']}` (kind `{summary.get('kind', '?')}`), {summary.get('images', '?')} images, "
        f"{info['num_classes']} classes: {', '.join(md(c) for c in info['classes'])}",
        f"- split: `{summary.get('split', '?')}` (split seed {summary.get('split_seed', 0)}): "
        f"{split_total['train']} training, {split_total['val']} validation, {split_total['test']} test images",
        f"- digest of the training data (manifest and decoded images): `{info['data_digest'] or '?'}`",
        f"- input: RGB, resized to {info['img_size']}×{info['img_size']} px (bilinear, both sides), scaled to "
        "[0, 1]; the model normalises its input itself (`config.json`, `cvm_cervix.normalization`)",
    ]
    stain = info.get("stain_reference")
    if stain:
        lines.append(
            f"- stain: every image is first mapped to one {stain['method'].capitalize()} reference stain ("
            f"{md(stain['fitted_on'])}; `config.json`, `cvm_cervix.run.stain_reference`), as in training: "
            "`cvm-cervix predict` does it; `model.onnx` and the weights alone take images already mapped"
        )
    lines += [
        "",
        "## Training",
        "",
        f"- epochs: {info['epochs']}, batch {info['batch_size']}, {info['optimizer']} "
        f"at learning rate {info['lr']}, augmentation `{info['augment']}`, seed {info['seed']}; "
        f"ImageNet weights: {'yes' if info['pretrained'] else 'no'}",
        f"- best validation accuracy {pct(info['best_val_acc'])} at epoch {info['best_epoch']}"
        if isinstance(info["best_val_acc"], float)
        else "- best validation accuracy: not recorded",
        "",
        f"## Test results ({numbers['test_images']} images)",
        "",
        "| metric | value | 95% interval |",
        "|---|---|---|",
        f"| accuracy ({lo_hi['correct']} of {lo_hi['n']}) | {pct(numbers['accuracy'])} | "
        f"{pct(lo_hi['accuracy'][0])} to {pct(lo_hi['accuracy'][1])} (Wilson) |",
        f"| macro F1 | {pct(numbers['f1_macro'])} | "
        + (
            f"{pct(lo_hi['f1_macro'][0])} to {pct(lo_hi['f1_macro'][1])} (bootstrap) |"
            if lo_hi["f1_macro"]
            else "none: every bootstrap resample gives the same value |"
        ),
        f"| expected calibration error (15 bins) | {numbers['ece']:.3f} | |",
    ]
    clinical = numbers["clinical"]
    if clinical:
        lines += [
            f"| abnormal sensitivity ({', '.join(md(c) for c in clinical['abnormal_classes'])}; "
            f"{clinical['tp']} of {clinical['tp'] + clinical['fn']}) | {pct(clinical['sensitivity'])} | "
            f"{pct(clinical['sensitivity_ci'][0])} to {pct(clinical['sensitivity_ci'][1])} (Wilson) |",
            f"| specificity ({clinical['tn']} of {clinical['tn'] + clinical['fp']}) | {pct(clinical['specificity'])} | "
            f"{pct(clinical['specificity_ci'][0])} to {pct(clinical['specificity_ci'][1])} (Wilson) |",
        ]
    lines += ["", "| class | precision | recall | F1 | test images |", "|---|---|---|---|---|"]
    for name, row in numbers["per_class"].items():
        lines.append(
            f"| {md(name)} | {pct(row['precision'])} | {pct(row['recall'])} | {pct(row['f1'])} | {row['support']} |"
        )
    calibration = numbers.get("calibration")
    if calibration:
        t = calibration["temperature"]
        scaled = f"{t:.3f} (predict shows temperature-scaled probabilities)" if t else None
        lines += [
            "",
            f"## Calibration (`calibration.json`: the validation split, {calibration['images']} images"
            + (
                f"; the conformal thresholds on {calibration['calibration_images']} of them kept out of model "
                "selection)"
                if calibration.get("calibration_held_out")
                else ")"
            ),
            "",
            f"- temperature: {scaled or 'not estimable: ' + md(calibration['temperature_not_estimable'] or '')}",
            "- conformal referral (`predict --coverage C`): "
            + ", ".join(
                f"{float(c):.0%}" + (" (too few images: every class in every set)" if e["threshold"] is None else "")
                for c, e in calibration["conformal"].items()
            )
            + f"; {md(calibration['assumption'])}",
            "- operating points (`predict --operating-point NAME`): "
            + (", ".join(f"`{p['name']}`" for p in calibration["operating_points"]) or "none"),
        ]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "cvm-cervix predict my_cells/ --run THIS_FOLDER -o predictions.csv",
        "cvm-cervix predict my_cells/ --run THIS_FOLDER --coverage 0.9 -o predictions.csv  # with referral",
        "```",
        "",
        "Or load `model.safetensors` into `cvm_cervix.models.create_model(config['architecture'], "
        "config['num_classes'], config['pretrained_cfg']['input_size'][-1], "
        "normalization=config['cvm_cervix']['normalization'])`.",
        "",
    ]
    timm = numbers.get("timm")
    if timm:
        call = ", ".join(f"{k}={v!r}" for k, v in timm["kwargs"].items())
        lines += [
            f"In plain timm ({TIMM_WEIGHTS}, timm's own keys; the caller normalises with mean {timm['mean']} "
            f"and std {timm['std']}, as timm's data config for the architecture says):",
            "",
            "```python",
            f"timm.create_model({timm['arch']!r}, {call}, pretrained=True,",
            f"    pretrained_cfg_overlay=dict(file={TIMM_WEIGHTS!r}, num_classes={timm['kwargs']['num_classes']}))",
            "```",
            "",
        ]
    return "\n".join(lines)


def export_run(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    onnx: bool = False,
    abnormal: list[str] | None = None,
) -> Path:
    """Write the run folder ``run`` as a shareable folder ``out`` (which must not exist, or be empty):
    built beside it under a temporary name and renamed into place whole, so a failure leaves nothing."""
    out = Path(out)
    if out.is_symlink():  # renaming onto it would replace the link, or fail on the folder it points to
        raise CvmError(f"{shown_path(out)} is a symbolic link; give -o a new folder name (or the folder itself)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CvmError(f"{shown_path(out)} exists and is not an empty folder; choose another -o or remove it")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise CvmError(f"{shown_path(above)} is a file, so {shown_path(out)} cannot be made; choose another -o")
    trained = TrainedRun.open(run)
    if trained.exported:
        raise CvmError(f"{shown_path(trained.dir)} is an exported folder already; export the run folder it came from")
    trained.tensors()  # the weights are checked against train.json before anything is written
    numbers = card_numbers(trained, abnormal)
    timm = timm_checkpoint(trained)
    numbers["timm"] = None if timm is None else {k: v for k, v in timm.items() if k != "state"}
    summary = _summary(trained)
    info = trained.info
    config = {
        "architecture": info["model"],
        "num_classes": info["num_classes"],
        "label_names": list(info["classes"]),
        "pretrained_cfg": {
            "input_size": [3, info["img_size"], info["img_size"]],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            # the model takes [0, 1] and normalises per branch itself: no normalisation outside it
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "cvm_cervix": {
            "version": __version__,
            # the run's record whole (train.json's layout), read back by the same reader; its input
            # normalisation once, in the key of its own beside it
            "run": {k: v for k, v in info.items() if k != "normalization"},
            "normalization": trained.normalization(),
            # the weights this config and the card describe: checked whenever the folder is loaded
            "weights_sha256": sha256_file(trained.weights_path),
            "synthetic": bool(summary.get("synthetic")),
            "test": {k: numbers[k] for k in ("test_images", "accuracy", "f1_macro", "ece")},
        },
    }
    calibration = trained.dir / file_name("calibration")
    if calibration.is_file():  # what predict --coverage / --operating-point reads, checked by its digest
        config["cvm_cervix"]["calibration_sha256"] = sha256_file(calibration)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out)
    tmp.mkdir()
    try:
        shutil.copyfile(trained.weights_path, tmp / EXPORTED["weights"])
        (tmp / EXPORTED["config"]).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / EXPORTED["card"]).write_text(model_card(trained, summary, numbers), encoding="utf-8")
        if calibration.is_file():
            shutil.copyfile(calibration, tmp / EXPORTED["calibration"])
        if timm is not None:
            from safetensors.torch import save_file

            save_file(timm["state"], str(tmp / TIMM_WEIGHTS))
        if onnx:
            from .compress import export

            export(trained, "onnx", tmp, artifact=tmp / EXPORTED["onnx"])
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full(err, out)
        if full is not None:
            raise full from None
        raise
    return out
