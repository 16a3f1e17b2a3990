import json
from pathlib import Path

import pytest

from cvm_cervix.data import COMBINED_CLASSES
from cvm_cervix.models import PAPER_MODELS, model_names
from cvm_cervix.plan import STATS_FORMAT
from cvm_cervix.report import aggregate_runs, paper_metrics, paper_results
from cvm_cervix.stats import ranking


def test_paper_numbers_are_well_formed():
    paper = paper_results()
    combined = paper["results"]["combined"]
    assert sorted(combined) == sorted(PAPER_MODELS)  # Table 3: all 23 models
    for models in paper["results"].values():
        for model, augments in models.items():
            assert model in model_names()
            for augment, splits in augments.items():
                assert augment in ("none", "flip4x") and set(splits) <= {"val", "test"}
                for numbers in splits.values():
                    assert set(numbers) == {"precision", "recall", "f1", "accuracy"}
                    assert all(isinstance(v, float) and 50 < v <= 100 for v in numbers.values())
    assert set(paper["confusions"]) == {"val", "test"}  # Fig. 6: both matrices
    for item in paper["confusions"]["val"] + paper["confusions"]["test"]:
        assert item["label"] in COMBINED_CLASSES and item["pred"] in COMBINED_CLASSES and item["count"] > 0
    assert sum(v[0] for v in paper["splits"]["combined"].values()) == 5308  # Table 1 totals
    assert sum(v[2] for v in paper["splits"]["pbc"].values()) == 3415


def test_no_paper_number_is_typed_into_the_report_template():
    """The paper's numbers live in paper_results.yaml only: the template's own text (outside Jinja's
    expressions and statements, and outside tags) holds none of them, in figures or in words."""
    import re

    import cvm_cervix

    template = (Path(cvm_cervix.__file__).parent / "templates" / "report.html.j2").read_text()
    text = re.sub(r"{{.*?}}|{%.*?%}|{#.*?#}", " ", template, flags=re.S)
    text = re.sub(r"<style.*?</style>|<script.*?</script>|<[^>]*>", " ", text, flags=re.S)

    def numbers(node):
        if isinstance(node, dict):
            return {n for v in node.values() for n in numbers(v)}
        if isinstance(node, list):
            return {n for v in node for n in numbers(v)}
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return {f"{node:g}", f"{node:.2f}" if isinstance(node, float) else str(node)}
        return set()

    paper = {n for n in numbers(paper_results()) if len(n.replace(".", "").lstrip("-")) >= 2 or "." in n}
    typed = set(re.findall(r"(?<![\w.])-?\d+(?:[.,]\d+)?(?![\w.])", text))
    assert not typed & paper, sorted(typed & paper)
    words = re.findall(r"about (?:one|two|an?) (?:point|hour)|\b\d+ ?h (?:faster|shorter|less)", text)
    assert not words, words
    # nor do the shipped configs' titles and notes, which the report shows too
    from conftest import REPO

    for config in ("config.yaml", "paper.yaml"):
        shown = (REPO / "config" / config).read_text()
        assert not re.findall(r"about (?:one|two|an?) (?:point|hour)|\b\d+ ?h (?:faster|shorter|less)", shown), config
    # and the template does show the paper's cost and 16-bit figures, through the data file
    for key in ("fp16_accuracy_delta_points", "fp16_training_hours_saved", "size_mb_fp16"):
        assert f"paper.cost.{key}" in template, key


def test_paper_lookup():
    assert paper_metrics("combined", "cvm_cervix", "none", "test")["accuracy"] == 91.72
    assert paper_metrics("combined", "cvm_cervix", "flip4x", "test")["accuracy"] == 93.48
    assert paper_metrics("herlev", "cvm_cervix", "flip4x", "val")["f1"] == 95.80
    assert paper_metrics("combined", "resnet18", "none", "val") is None  # Table 3 is test only
    assert paper_metrics(None, "cvm_cervix", "none", "test") is None


def train_record(model="resnet18", classes=("a", "b"), epochs=10, seed=0, **measured) -> dict:
    """A run's train.json as training writes it (the record whole), with ``measured`` put in."""
    from cvm_cervix.record import RunRecord
    from cvm_cervix.settings import TrainSettings

    fields = {
        "device": "cpu",
        "device_name": "CPU",
        "amp": False,
        "amp_dtype": None,
        "step": "eager",
        "normalization": None,
        "fusion_head": None,
        "init": None,
        "data_digest": "0" * 16,
        "train_images": 50,
        "val_images": 10,
        "threads": 1,
        "torch": "2.14.1",
        "params": 1_000_000,
        "best_epoch": 1,
        "best_val_acc": 0.5,
        "total_seconds": 10.0,
        "first_step_seconds": None,
        "startup_seconds": None,
        **measured,
    }
    settings = TrainSettings(epochs=epochs)
    return RunRecord(
        model=model, dataset="syn", augment="none", seed=seed, classes=tuple(classes), settings=settings, **fields
    ).to_json()


def _fake_run(path, seed, acc, f1):
    path.mkdir(parents=True)
    split = {"accuracy": acc, "precision_macro": acc, "recall_macro": acc, "f1_macro": f1, "ms_per_image": 2.0}
    (path / "metrics.json").write_text(json.dumps({"seed": seed, "val": split, "test": split, "size_mb": 1.5}))
    record = train_record(seed=seed, params=2_000_000, total_seconds=10 * (10.0 + seed), train_images=50, best_epoch=3)
    (path / "train.json").write_text(json.dumps(record))
    return path


def test_seeds_aggregate_to_mean_and_sample_sd(tmp_path):
    from cvm_cervix.report_inputs import RunFiles
    from cvm_cervix.runs import Run

    folders = [
        _fake_run(tmp_path / f"s{i}", i, acc, f1) for i, (acc, f1) in enumerate([(0.80, 0.7), (0.90, 0.8), (0.85, 0.9)])
    ]
    runs = [
        RunFiles(Run("syn", "resnet18", "none", i), train_info=f / "train.json", metrics=f / "metrics.json")
        for i, f in enumerate(folders)
    ]
    agg = aggregate_runs(runs)
    assert agg["seeds"] == [0, 1, 2]
    assert agg["test"]["accuracy"]["mean"] == pytest.approx(85.0)
    assert agg["test"]["accuracy"]["sd"] == pytest.approx(5.0)  # sample sd of 80, 90, 85
    assert agg["test"]["f1"]["mean"] == pytest.approx(80.0)
    assert agg["cost"]["seconds_per_epoch"]["mean"] == pytest.approx(11.0)
    assert agg["cost"]["params_m"] == 2.0
    single = aggregate_runs(runs[:1])
    assert single["test"]["accuracy"]["sd"] is None and single["test"]["accuracy"]["n"] == 1


def _fabricated_gap(rng) -> dict:
    """A baseline gap as the statistics job computes it: 3 seeds per arm, 100 test cells each, 50 in both,
    five cells per source image."""
    import numpy as np
    import pandas as pd

    from cvm_cervix.stats import baseline_gap

    def arm(cells, p):
        return [
            pd.DataFrame({"path": cells, "label": "a", "pred": np.where(rng.random(len(cells)) < p, "a", "b")})
            for _ in range(3)
        ]

    ours, theirs = [f"c{i}.png" for i in range(100)], [f"c{i}.png" for i in range(50, 150)]
    return baseline_gap(arm(ours, 0.7), arm(theirs, 0.9), {f"c{i}.png": f"img{i // 5}" for i in range(150)}, 200)


def _fabricated_ensemble(rng) -> dict:
    """An ensemble of three seeds as the statistics job computes it, on 200 test and 100 validation cells."""
    import numpy as np
    import pandas as pd

    from cvm_cervix.predictors import ensemble

    def frame(n):
        labels = rng.integers(0, 2, n)
        logits = rng.normal(size=(n, 2)) + 1.5 * np.eye(2)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return pd.DataFrame(
            {
                "path": [f"{i}.png" for i in range(n)],
                "label": np.array(["NILM", "HSIL"])[labels],
                "pred": np.array(["NILM", "HSIL"])[probs.argmax(1)],
                "prob_NILM": probs[:, 0],
                "prob_HSIL": probs[:, 1],
            }
        )

    labels_test, labels_val = frame(200)["label"], frame(100)["label"]
    tests = [frame(200).assign(label=labels_test) for _ in range(3)]
    vals = [frame(100).assign(label=labels_val, calibration=np.arange(100) % 2 == 0) for _ in range(3)]
    return ensemble(tests, vals, ["HSIL"], [0.9, 0.95], n_boot=100)


def _fabricated_recipe_gain(rng) -> dict:
    """A stain recipe's robustness against none's, as the statistics job pairs them: 50 images, 6 corruptions."""
    from cvm_cervix.stats import recipe_gain

    def result(p):
        def right(draws):
            return "".join(str(int(k)) for k in rng.binomial(draws, p, 50))

        return {
            "test_images": 50,
            "clean": {"right": right(1)},
            "corruptions": {
                c: {str(s): {"right": right(5), "draws": 5, "no_effect": False} for s in range(1, 6)}
                for c in ("stain", "blur", "jpeg", "brightness", "contrast", "scale")
            },
        }

    return recipe_gain(result(0.8), result(0.6), n_boot=100)


def _fabricated_flips(rng) -> dict:
    """A run's test-time flips beside itself, as the statistics job computes them (two classes, 200 cells)."""
    import numpy as np
    import pandas as pd

    from cvm_cervix.predictors import test_time_flips

    def frame(n, calibration=None):
        labels = rng.integers(0, 2, n)
        out = pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": np.array(["NILM", "HSIL"])[labels]})
        for prefix, strength in (("prob_", 1.0), ("tta_prob_", 1.5)):
            logits = rng.normal(size=(n, 2)) + strength * np.eye(2)[labels]
            probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            out[f"{prefix}NILM"], out[f"{prefix}HSIL"] = probs[:, 0], probs[:, 1]
            if prefix == "prob_":
                out["pred"] = np.array(["NILM", "HSIL"])[probs.argmax(1)]
        if calibration is not None:
            out["calibration"] = calibration
        return out

    return test_time_flips(frame(200), frame(100, np.arange(100) % 2 == 0), ["HSIL"], [0.9, 0.95], n_boot=100)


def _fabricate(results, config, seed=0):
    """Result files of every run, stats, compression and analysis a config plans, with plausible numbers."""
    import numpy as np
    import pandas as pd

    from cvm_cervix.config import validate_config
    from cvm_cervix.data import COMBINED_CLASSES
    from cvm_cervix.runs import all_runs, base_dataset, dataset_spec, experiment_runs, used_datasets

    validate_config(config, require_roots=False)
    rng = np.random.default_rng(seed)
    classes_of = {}
    sizes = {"combined": 8838, "herlev": 917, "pbc": 17092, "sipakmed": 4049, "cric": 4789}
    for name in used_datasets(config):
        spec, base = dataset_spec(config, name), base_dataset(config, name)
        classes = (
            COMBINED_CLASSES
            if base in ("combined", "sipakmed", "cric")
            else ["Normal", "Abnormal"]
            if base == "herlev"
            else [f"class{i}" for i in range(8)]
        )
        classes_of[name] = classes
        n = sizes.get(name, 500)
        labels = rng.integers(0, len(classes), n)
        folder = results / "data" / name
        folder.mkdir(parents=True)
        pd.DataFrame(
            {
                "path": [f"/data/{name}/{i}.png" for i in range(n)],
                "class": [classes[i] for i in labels],
                "label": labels,
                "sha256": [f"{i:064x}" for i in range(n)],
                "group": range(n),
                "dataset": name,
                "split": rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2]),
            }
        ).to_csv(folder / "manifest.csv", index=False)
        (folder / "classes.json").write_text(json.dumps(classes))
        size = config["train"]["img_size"]
        if size <= 64:  # the decoded images (the data section's examples), where small enough to write
            np.save(folder / f"cache_{size}.npy", rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
        (folder / "summary.json").write_text(
            json.dumps(
                {
                    "synthetic": False,
                    "split": "stratified",
                    "kind": spec["kind"],
                    "skipped": [],
                    "duplicates": {"duplicate_sets": 0, "duplicate_images": 0, "sets": [], "label_conflicts": []},
                }
            )
        )
    for run in all_runs(config):
        folder = results / run.path
        folder.mkdir(parents=True)
        classes = classes_of[run.dataset]
        k = len(classes)

        def split_metrics(k=k, classes=classes):
            cm = rng.integers(0, 5, (k, k)) + np.diag(rng.integers(50, 150, k))
            acc = float(np.trace(cm) / cm.sum())
            return {
                "n": int(cm.sum()),
                "accuracy": acc,
                "precision_macro": acc,
                "recall_macro": acc,
                "f1_macro": acc,
                "per_class": {
                    c: {"precision": acc, "recall": acc, "f1": acc, "support": int(cm[i].sum())}
                    for i, c in enumerate(classes)
                },
                "confusion": cm.tolist(),
                "ms_per_image": 1.5,
                "end_to_end_seconds": 31.0 + seed,
                "end_to_end_ms_per_image": 17.25,
            }

        (folder / "metrics.json").write_text(
            json.dumps(
                {
                    "model": run.model,
                    "dataset": run.dataset,
                    "recipe": run.recipe,
                    "seed": run.seed,
                    "classes": classes,
                    "val": split_metrics(),
                    "test": split_metrics(),
                    "size_mb": 120.0,
                    "params": 31_000_000,
                    "device": "cuda:0",
                }
            )
        )
        (folder / "train.json").write_text(
            json.dumps(
                train_record(
                    model=run.model,
                    classes=classes,
                    epochs=100,
                    seed=run.seed,
                    params=31_000_000,
                    total_seconds=200.0,
                    device="cuda:0",
                    device_name="NVIDIA H100",
                    train_images=5308,
                    best_epoch=80,
                )
            )
        )
        epochs = np.arange(1, 101)
        pd.DataFrame(
            {
                "epoch": epochs,
                "train_loss": 1 / epochs,
                "train_acc": 1 - 1 / epochs,
                "val_loss": 1 / epochs,
                "val_acc": 1 - 1 / epochs,
                "seconds": 2.0,
            }
        ).to_csv(folder / "history.csv", index=False)
        (folder / "weights.safetensors").write_bytes(b"\0" * 1000)
        for split in ("val", "test"):  # an evaluated run has its predictions (their content is the stats job's)
            (folder / f"predictions_{split}.csv").write_text("path,label,pred\n")
        (folder / "analysis").mkdir(exist_ok=True)  # robustness (read where an experiment asks for it)
        # as robustness_run writes it: blur's severity 1 does nothing at this size, stain is drawn 5 times
        names = ("stain", "blur", "jpeg", "brightness", "contrast", "scale")

        def cell(name, s, worse=0.0):
            return {
                "accuracy": 0.8 - 0.1 * s - worse,
                "abnormal_auc": 0.9 - 0.05 * s,
                "pixels_changed": 0.0 if (name, s) == ("blur", 1) else 0.5,
                "no_effect": (name, s) == ("blur", 1),
                "draws": 5 if name == "stain" else 1,
                **({"accuracy_ci": [0.7 - 0.1 * s, 0.85 - 0.1 * s]} if name == "stain" else {}),
            }

        (folder / "analysis" / "robustness.json").write_text(
            json.dumps(
                {
                    "model": run.model,
                    "dataset": run.dataset,
                    "seed": run.seed,
                    "test_images": 400,
                    "img_size": config["train"]["img_size"],
                    "draws": {n: 5 if n == "stain" else 1 for n in names},
                    "clean": {"accuracy": 0.85, "abnormal_auc": 0.95},
                    "corruptions": {n: {str(s): cell(n, s) for s in range(1, 6)} for n in names},
                    "mean": {
                        str(s): {
                            "corruptions": [n for n in names if not cell(n, s)["no_effect"]],
                            "accuracy": 0.8 - 0.1 * s,
                            "abnormal_auc": 0.9 - 0.05 * s,
                        }
                        for s in range(1, 6)
                    },
                }
            )
        )
    diagnostics = {}  # one run's ROC/PR, calibration and operating points per dataset, from random predictions
    for name, classes in classes_of.items():
        from cvm_cervix.diagnostics import diagnose
        from cvm_cervix.labels import paper_abnormal_classes

        def frame(n, classes=classes):
            labels = rng.integers(0, len(classes), n)
            # mostly right, not separable: every interval of the screening view has a width
            probs = rng.dirichlet(np.ones(len(classes)), n) * 0.8 + 0.2 * np.eye(len(classes))[labels]
            out = pd.DataFrame(
                {
                    "path": [f"{i}.png" for i in range(n)],
                    "label": [classes[i] for i in labels],
                    "pred": [classes[i] for i in probs.argmax(1)],
                }
            )
            for i, c in enumerate(classes):
                out[f"prob_{c}"] = probs[:, i]
            return out

        abnormal = [
            c
            for c in classes
            if c in config.get("analysis", {}).get("abnormal_classes", ["ASC-H", "HSIL", "Abnormal", "class1"])
        ]
        diagnostics[name] = diagnose(
            frame(400),
            frame(300),
            abnormal or [classes[-1]],
            [{"specificity": 0.95}, {"sensitivity": 0.9}],
            15,
            30,
            0,
            paper_abnormal_classes(),
            [0.9, 0.95],
        )
    flips = _fabricated_flips(rng)
    for name, exp in config["experiments"].items():
        runs = [r for r in experiment_runs(config, name) if r.recipe in exp["augment"]]
        (results / "stats").mkdir(exist_ok=True)
        (results / "stats" / f"{name}.json").write_text(
            json.dumps(
                {
                    "format": STATS_FORMAT,
                    "reference": "cvm_cervix",
                    "runs": [
                        {
                            "model": r.model,
                            "recipe": r.recipe,
                            "seed": r.seed,
                            "split_seed": dataset_spec(config, r.dataset).get("split_seed", 0),
                            "intervals": {"accuracy": [0.85, 0.9], "f1_macro": [0.84, 0.9], "correct": 87, "n": 100},
                            "clinical": None,
                            "mcnemar": None,
                            "diagnostics": diagnostics[r.dataset],
                            "tta": flips if r.model == "cvm_cervix" else None,
                            "subgroups": {
                                "dataset": [
                                    {
                                        "value": part,
                                        "n": 800 + i,
                                        "accuracy": 0.9 - 0.1 * i,
                                        "accuracy_ci": [0.85 - 0.1 * i, 0.93 - 0.1 * i],
                                        "f1_macro": 0.88,
                                        "f1_macro_ci": [0.84, 0.91],
                                        "clinical": {
                                            "sensitivity": 0.9,
                                            "sensitivity_ci": [0.79, 0.96],
                                            "tp": 45,
                                            "fn": 5,
                                            "specificity": 0.5,
                                            "specificity_ci": [0.3, 0.7],
                                            "tn": 10,
                                            "fp": 10,
                                        }
                                        if part == "cric"
                                        else None,
                                        "sensitivity": 0.9 if part == "cric" else None,
                                        "specificity": 0.5 if part == "cric" else None,
                                    }
                                    for i, part in enumerate(("cric", "sipakmed"))
                                ]
                            }
                            if r.dataset == "combined"
                            else {},
                        }
                        for r in runs
                    ],
                    "baseline_gaps": (
                        [{"model": "cvm_cervix", "recipe": "none", **_fabricated_gap(rng)}]
                        if exp.get("baseline")
                        else []
                    ),
                    "ranking": ranking(
                        {
                            (r.model, r.recipe, r.seed, dataset_spec(config, r.dataset).get("split_seed", 0)): {
                                "accuracy": float(rng.random())
                            }
                            for r in runs
                        }
                    ),
                    "robustness_gains": [
                        {"model": "cvm_cervix", "recipe": "stain", "base": "none"} | _fabricated_recipe_gain(rng)
                    ]
                    if name == "main"
                    else [],
                    "ensembles": [
                        {"model": "cvm_cervix", "recipe": "none", "split_seed": 0, "seeds": [0, 1, 2]}
                        | _fabricated_ensemble(rng)
                    ]
                    if name == "main"
                    else [],
                }
            )
        )
        for r in runs:
            for p in exp.get("compress", []):
                folder = results / r.path / "compressed" / p
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "metrics.json").write_text(
                    json.dumps(
                        {
                            "fp32": {"accuracy": 0.9, "f1_macro": 0.9, "ms_per_image": 2.0, "device": "cuda:0"},
                            "precision": p,
                            "size_mib": 30.0,
                            "accuracy": 0.9,
                            "f1_macro": 0.9,
                            "delta_accuracy": -0.001,
                            "delta_f1_macro": 0.0,
                            "agreement_with_fp32": 0.99,
                            "ms_per_image": 3.0,
                            "device": "cpu",
                            "note": p,
                        }
                    )
                )
            if exp.get("analysis"):
                folder = results / r.path / "analysis"
                (folder / "gallery").mkdir(parents=True, exist_ok=True)
                from PIL import Image

                Image.new("RGB", (320, 160)).save(folder / "gallery" / "a.png")
                (folder / "gallery.json").write_text(
                    json.dumps(
                        {
                            "layer": "cnn.act4",
                            "cam_resolution": [7, 7],
                            "pairs": [["ASC-US", "LSIL", 21]],
                            "images": [{"file": "gallery/a.png", "true": "ASC-US", "pred": "LSIL"}] * 15,
                        }
                    )
                )
                n = 1763
                pd.DataFrame(
                    {
                        "x": rng.normal(size=n),
                        "y": rng.normal(size=n),
                        "z": rng.normal(size=n),
                        "path": [f"/x/{i}.png" for i in range(n)],
                        "label": rng.choice(classes_of[r.dataset], n),
                        "pred": rng.choice(classes_of[r.dataset], n),
                    }
                ).to_csv(folder / "tsne.csv", index=False)

    if config.get("transfer"):
        from cvm_cervix.runs import transfer_pairs
        from cvm_cervix.transfer import transfer_scores

        cells = [
            {
                "source": name,
                "source_dataset": run.dataset,
                "target": target,
                "in_domain": run.dataset == target,
                # as transfer_scores writes them: the counts beside each proportion and its interval
                **transfer_scores(
                    pd.DataFrame(
                        {
                            "label_shared": ["abnormal"] * 50 + ["normal"] * 50,
                            "pred_shared": ["abnormal"] * 40 + ["normal"] * 50 + ["abnormal"] * 10,
                        }
                    )
                ),
            }
            for name, run, target in transfer_pairs(config)
        ]
        (results / "transfer").mkdir()
        (results / "transfer" / "matrix.json").write_text(
            json.dumps(
                {
                    "mapping": config["transfer"]["mapping"],
                    "sources": config["transfer"]["sources"],
                    "targets": config["transfer"]["targets"],
                    "cells": cells,
                }
            )
        )


def test_a_report_at_the_papers_scale_stays_one_reasonable_offline_file(tmp_path):
    import numpy as np
    import pandas as pd
    import yaml
    from conftest import REPO

    from cvm_cervix.report import build_report

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    config["train"]["seeds"] = [0, 1, 2]  # 3 seeds of every one of the 45 runs
    results = tmp_path / "results"
    _fabricate(results, config)
    # the public CRIC release holds fewer SCC and ASC-US cells than Table 1 asks (short_classes: take_all)
    cric = results / "data" / "cric" / "summary.json"
    summary = json.loads(cric.read_text())
    summary["class_limits"] = {
        "SCC": {"asked": 687, "found": 161, "kept": 161},
        "ASC-US": {"asked": 742, "found": 606, "kept": 606},
        "NILM": {"asked": 862, "found": 6779, "kept": 862},
    }
    cric.write_text(json.dumps(summary))
    context = build_report(config, tmp_path / "report.html", results, files_dir=tmp_path / "files")
    html = (tmp_path / "report.html").read_text()
    size = (tmp_path / "report.html").stat().st_size
    text = " ".join(html.split())
    assert "its part cric holds SCC 161 of the 687 asked, ASC-US 606 of the 742 asked" in text
    assert "this set has 662 image(s) fewer than its parts' limits ask (8838 against 9500)" in text
    assert "SCC (161 of 687), ASC-US (606 of 742) than the limits ask" in text  # in cric's own section
    # the precision experiment: mixed precision against float32, from the two runs' train.json, beside
    # the paper's Sec. 4.6 figures from its data file
    precision = next(e for e in context["experiments"] if e["name"] == "precision")
    (contrast,) = precision["mixed_precision"]
    total = {
        recipe: np.mean(
            [
                json.loads((results / f"runs/combined/cvm_cervix/{recipe}/seed{s}/train.json").read_text())[
                    "total_seconds"
                ]
                for s in (0, 1, 2)
            ]
        )
        for recipe in ("none", "none+amp")
    }
    assert contrast["recipe"] == "none+amp"
    assert contrast["seconds_saved"] == pytest.approx(total["none"] - total["none+amp"])
    assert "precision: mixed precision against float32" in text
    # referral: the conformal table and the risk-coverage curve of each run, from its statistics
    referral = next(e for e in context["experiments"] if e["name"] == "main")["screening"]["referral"][0]
    assert [(r["target"], r["method"]) for r in referral["rows"]] == [
        (0.9, "marginal"),
        (0.9, "per class"),
        (0.95, "marginal"),
        (0.95, "per class"),
    ]
    assert "Referral: which cells a person must still see" in html and "Risk against coverage (test): main" in html
    row = referral["rows"][0]
    assert f"({row['covered_images']} of {row['test_images']}; [{100 * row['coverage_ci'][0]:.2f}" in text
    assert f"{100 * row['coverage_lower_95']:.2f}%" in text and "What holds, and under which assumption" in text
    assert f"{row['abnormal_missed']} of {row['abnormal_images']}" in text
    # the grouped split against the paper's random one: the gaps with their intervals, from the statistics
    leakage = next(e for e in context["experiments"] if e["name"] == "leakage")
    (gap,) = leakage["gaps"]
    stated = json.loads((results / "stats" / "leakage.json").read_text())["baseline_gaps"][0]
    assert gap["gap"] == stated["gap"] and gap["common"]["gap_ci"] == stated["common"]["gap_ci"]
    assert gap["gap_ci"][0] < gap["gap"] < gap["gap_ci"][1]
    assert "Against main: the same cells, split another way" in html
    assert f"{100 * gap['common']['gap']:+.2f}" in text and "50 cells in both test splits" in text
    # the 23 comparison models ranked over their three seeds: Friedman, Nemenyi, the CD diagram
    comparison = next(e for e in context["experiments"] if e["name"] == "comparison")["ranking"]
    assert comparison["result"]["blocks"] == 3 and len(comparison["result"]["mean_ranks"]) == 23
    assert "CVM-Cervix" in comparison["result"]["mean_ranks"] and "Critical difference: comparison" in html
    assert f"CD = {comparison['result']['critical_difference']:.2f}" in text
    # the augmentation ablation: one model, two recipes; main (one model, one recipe) shows no ranking at all
    assert "Not ranked: 2 model(s) and recipe(s): a ranking needs three or more" in text
    # main's stain recipe against none under every corruption, paired, from the statistics
    (gain,) = next(e for e in context["experiments"] if e["name"] == "main")["recipe_gains"]
    assert "Robustness by training recipe" in html and "Robustness by recipe: main" in html
    assert f"{100 * gain['mean']['5']['gain']:+.2f}" in text and "stain − none" in text
    # each first run with test-time flips beside itself
    (flips,) = next(e for e in context["experiments"] if e["name"] == "main")["tta"]
    assert "Test-time flips" in html and flips["label"] == "CVM-Cervix"
    assert f"({flips['tta']['correct']} of {flips['tta']['n']}; [" in text
    # main's three seeds as one predictor, from the statistics
    (ens,) = next(e for e in context["experiments"] if e["name"] == "main")["ensembles"]
    assert "Ensembles of seeds" in html and ens["paper_name"] == "CVM-Cervix"
    e = ens["ensemble"]
    assert f"({e['correct']} of {e['n']}; [{100 * e['accuracy_ci'][0]:.2f}" in text
    assert f"({e['referral'][0]['referred_images']} of {e['referral'][0]['test_images']})" in text
    # per source dataset of the combined set, from the statistics
    assert "By source dataset and subgroup" in html
    assert '<td class="l">sipakmed</td><td>801</td> <td>80.00 <span class="note">[75.00–83.00]</span></td>' in text
    # per source: sensitivity and specificity with their counts and Wilson intervals, "–" where undefined
    assert '<td>90.00 <span class="note">(45 of 50; [79.00–96.00])</span></td>' in text
    assert '<td>50.00 <span class="note">(10 of 20; [30.00–70.00])</span></td>' in text
    # robustness of main's runs, from their robustness.json: each corruption and the mean per severity
    assert "Robustness to slide variation" in html and "Test accuracy under slide variation" in html
    assert context["robustness"] and context["robustness"][0]["mean"][4]["accuracy"] == pytest.approx(0.3)
    assert '<th>30.00 <span class="note">AUC 0.650</span></th>' in text
    # the test time from files beside the inference time, labelled
    assert "test ms / image, from files" in text and "<td>17.25</td>" in html
    assert (
        f"{paper_results()['cost']['fp16_training_hours_saved']} h of {paper_results()['cost']['total_hours']} h"
        in text
    )
    assert len(context["runs"]) == 41 and len(context["experiments"]) == 11
    assert context["incomplete"] is None and "INCOMPLETE REPORT" not in html
    assert size < 12 * 2**20, f"{size / 2**20:.1f} MiB"  # plotly.js (4.6 MiB) once, and the figures' data
    assert html.count('<script type="text/javascript">/**') == 1  # plotly.js inlined exactly once
    assert "cdn.plot.ly" not in html.split("</script>", 1)[1] and "<script src=" not in html
    assert html.count("<details open>") == 1 and html.count("<details>") >= 26  # run sections start collapsed
    assert {p.name for p in (tmp_path / "files").iterdir()} >= {"comparison__accuracy.html", "main__compression.csv"}
    # for screening: ROC/PR with intervals, calibration, operating points, and the paper's Sec. 4.4 claim
    main = next(e for e in context["experiments"] if e["name"] == "main")
    # the first screen: each experiment's headline beside the paper's, with its interval and referral
    glance = {g["experiment"]: g for g in context["glance"]}
    assert set(glance) == {e["name"] for e in context["experiments"]}
    headline = glance["main"]
    assert headline["model"] == "CVM-Cervix" and headline["paper"] == pytest.approx(
        paper_metrics("combined", "cvm_cervix", "none", "test")["accuracy"]
    )
    assert headline["referral"]["method"] == "marginal" and headline["referral"]["target"] == 0.9
    assert html.index('id="glance"') < html.index('id="data"')
    assert main["screening"]["rows"][0]["roc_pr"]["abnormal"]["auc_ci"] is not None
    assert "For screening: ROC, calibration and operating points" in html and "Sec. 4.4 claim" in html
    assert [p["kind"] for p in main["screening"]["points"]] == ["specificity", "sensitivity"]
    # every table ready to cite: CSV, LaTeX (booktabs) and Markdown, validation and test, per class
    files = {p.name for p in (tmp_path / "files").iterdir()}
    for stem in (
        "main__results",
        "main__results_val",
        "main__per_class",
        "main__screening",
        "comparison__statistics",
        "data__combined",
        "transfer__matrix",
    ):
        assert {f"{stem}.csv", f"{stem}.tex", f"{stem}.md"} <= files, stem
    tex = (tmp_path / "files" / "main__screening.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "CVM-Cervix" in tex
    md = (tmp_path / "files" / "comparison__results.md").read_text().splitlines()
    assert md[0].startswith("| model") and set(md[1]) <= set("|:- ") and len(md) == 2 + 23
    per_class = pd.read_csv(tmp_path / "files" / "main__per_class.csv")
    assert set(per_class["split"]) == {"val", "test"} and len(set(per_class["class"])) == 11
    assert {"main__roc.html", "main__pr.html", "main__reliability.html"} <= files
    # the precision-recall curves drawn, from the statistics' curve points, each AP in the legend
    abnormal = main["screening"]["rows"][0]["roc_pr"]["abnormal"]
    assert "Precision-recall, abnormal against normal (test): main" in html
    assert f"(AP {abnormal['average_precision']:.3f})" in main["screening"]["pr"]
    # a reliability diagram for every run in its section, from its own statistics (fabricated here for
    # every run but the variants')
    plain = [r for r in context["runs"] if "+" not in r["label"].split(" · recipe ")[1]]
    assert len(plain) == 30 and all(r["reliability"] for r in plain)  # 41 runs, 11 of them variants
    assert html.count("Reliability (test): ") >= len(plain) + 1


def test_a_failed_job_is_named_and_marked_wherever_its_result_is_needed(tmp_path):
    """The onerror report: everything that finished, each missing result with its rule, log and error line."""
    import shutil

    import pandas as pd
    import yaml
    from conftest import REPO

    from cvm_cervix.report import build_report

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    results = tmp_path / "results"
    _fabricate(results, config)
    # VGG19 ran out of memory in training: its weights step and the data were there
    shutil.rmtree(results / "runs" / "combined" / "vgg19")
    (results / "stats" / "comparison.json").unlink()  # its statistics never ran
    (results / "data" / "combined" / "cache_224.npy").write_bytes(b"")
    (results / "weights").mkdir()
    (results / "weights" / "vgg19.json").write_text("{}")
    log = results / "logs" / "train" / "combined" / "vgg19_none_seed0.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-12-01 INFO start\nerror: CUDA out of memory at batch 16; lower train.batch_size\n")
    # and the int8 export of the main run failed with a traceback of its own
    main = results / "runs" / "combined" / "cvm_cervix" / "none" / "seed0"
    (main / "compressed" / "int8" / "metrics.json").unlink()
    log = results / "logs" / "compress" / "combined" / "cvm_cervix_none_seed0_int8.log"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback (most recent call last):\n  File x\nRuntimeError: ONNX export failed\n")

    context = build_report(config, tmp_path / "report.html", results, files_dir=tmp_path / "files")
    gap = context["incomplete"]
    assert gap["runs_missing"] == 1 and gap["runs_total"] == 47
    assert gap["failures"] == [
        {
            "what": "runs/combined/vgg19/none/seed0",
            "rule": "train",
            "log": "logs/train/combined/vgg19_none_seed0.log",
            "error": "CUDA out of memory at batch 16; lower train.batch_size",
        },
        {
            "what": "runs/combined/cvm_cervix/none/seed0 compressed to int8",
            "rule": "compress",
            "log": "logs/compress/combined/cvm_cervix_none_seed0_int8.log",
            "error": "RuntimeError: ONNX export failed",
        },
    ]
    html = (tmp_path / "report.html").read_text()
    first_screen = html[: html.index('id="data"')]
    assert "INCOMPLETE REPORT" in first_screen and "CUDA out of memory at batch 16" in first_screen
    comparison = next(e for e in context["experiments"] if e["name"] == "comparison")
    vgg = next(r for r in comparison["rows"] if r["model"] == "vgg19")
    assert vgg["missing"]["rule"] == "train" and "test" not in vgg and vgg["paper_test"]["accuracy"] > 0
    assert len(comparison["rows"]) == 23  # the row stays, marked; the table is never silently shorter
    assert comparison["stats_missing"]["rule"] == "train" and comparison["not_plotted"] == ["VGG19"]
    section = html[html.index("Comparison with 22 models", html.index('id="results"')) :]
    section = section[: section.index("<h3>", 10)]
    assert section.count('<tr class="missing"><td class="l">VGG19</td>') == 2  # validation and test
    assert 'Statistics of this experiment: <span class="tag">missing</span> rule <code>train</code>' in section
    assert "Not in the plot, every seed missing (see the tables): VGG19." in section
    cost = html[html.index('id="cost"') : html.index('id="runs"')]
    assert cost.count('class="missing"') == 1
    assert "ONNX export failed" in html[html.index('id="compression"') :]
    table = pd.read_csv(tmp_path / "files" / "comparison__results.csv", keep_default_na=False)
    row = table[table["model"] == "VGG19"].iloc[0]
    assert row["status"].startswith("missing (rule train: CUDA out of memory") and row["test accuracy"] == ""
    assert (table["status"] == "complete").sum() == 22
    missing = pd.read_csv(tmp_path / "files" / "report__missing.csv")
    assert list(missing["rule"]) == ["train", "compress"]


def test_a_truncated_metrics_file_is_one_line_naming_it(tmp_path):
    import yaml
    from conftest import REPO

    from cvm_cervix.errors import CvmError
    from cvm_cervix.report import build_report, restore_last_complete

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    results = tmp_path / "results"
    _fabricate(results, config)
    build_report(config, tmp_path / "report.html", results)  # complete: kept under a second name too
    complete = (tmp_path / "report.html").read_text()
    (tmp_path / "report.html").unlink()  # as Snakemake removes a job's outputs before running it
    metrics = results / "runs" / "synthetic_combined" / "resnet18" / "none" / "seed0" / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    with pytest.raises(CvmError) as err:
        build_report(config, tmp_path / "report.html", results)
    assert str(metrics) in str(err.value) and "is not valid JSON" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "report.html").exists()
    # the failure handler puts the last complete report back, dated so that the next run rebuilds it
    assert restore_last_complete(tmp_path / "report.html", older_than=1_000_000)
    assert (tmp_path / "report.html").read_text() == complete
    assert (tmp_path / "report.html").stat().st_mtime == 1_000_000
    assert not restore_last_complete(tmp_path / "report.html")  # never over a report that is there


def test_the_data_section_shows_example_images_of_each_class_from_the_cache(tmp_path):
    """The paper's Figs 4, 8 and 10: the first images of each class, as the network sees them (the
    decoded cache), each a thumbnail in the report; a set no run trains on has no cache and shows none."""
    import base64
    import io

    import numpy as np
    import pandas as pd
    import yaml
    from conftest import REPO
    from PIL import Image

    from cvm_cervix.report import build_report

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    results = tmp_path / "results"
    _fabricate(results, config)
    context = build_report(config, tmp_path / "report.html", results, files_dir=tmp_path / "files")
    sections = {d["name"]: d for d in context["datasets"]}
    name = "synthetic_combined"
    manifest = pd.read_csv(results / "data" / name / "manifest.csv")
    cache = np.load(results / "data" / name / "cache_32.npy")
    examples = sections[name]["examples"]
    assert [e["class"] for e in examples] == json.loads((results / "data" / name / "classes.json").read_text())
    first = examples[0]
    rows = manifest.index[manifest["class"] == first["class"]][:4]
    assert len(first["images"]) == len(rows) == 4
    for uri, row in zip(first["images"], rows, strict=True):
        png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert np.array_equal(np.asarray(png), cache[row].transpose(1, 2, 0))
    html = (tmp_path / "report.html").read_text()
    assert "Example images per class" in html and first["images"][0] in html


def test_intended_use_leads_the_report_and_every_checklist_item_is_answered_or_explained(tmp_path):
    import re

    import yaml
    from conftest import REPO

    from cvm_cervix._io import package_yaml
    from cvm_cervix.intended_use import INTENDED_USE, LIMITATIONS
    from cvm_cervix.report import build_report
    from cvm_cervix.report.sections import SECTION_TITLES

    checklist = package_yaml("reporting_checklists.yaml")
    assert set(checklist) == {"CLAIM", "TRIPOD+AI"} and len(checklist["CLAIM"]["items"]) == 42
    for name, c in checklist.items():
        for item in c["items"]:
            assert bool(item.get("where")) != bool(item.get("why")), (name, item["topic"])  # one, not both
            assert set(item.get("where", [])) <= set(SECTION_TITLES), (name, item["topic"])

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    del config["transfer"]  # a report without a transfer section says so where an item points to it
    results = tmp_path / "results"
    _fabricate(results, config)
    build_report(config, tmp_path / "report.html", results, files_dir=tmp_path / "files")
    html = (tmp_path / "report.html").read_text()
    from html import unescape

    head = unescape(html[: html.index('<h2 id="data">')])
    assert INTENDED_USE in head and all(limit in head for limit in LIMITATIONS)  # on the first screen
    ids = set(re.findall(r'id="([^"]+)"', html))
    links = set(re.findall(r'<a href="#([^"]+)">', html.split('id="checklists"', 1)[1]))
    assert links and links <= ids, links - ids
    assert 'Validation or testing on external data</td><td class="l">Transfer <span class="note">(not in this' in html
    assert html.count("research use only, not for diagnosis") >= 1


def test_mixed_precision_that_did_not_run_is_no_time_saved():
    """On a CPU `amp: true` trains in float32 too: two float32 runs differ in time by chance only."""
    from cvm_cervix.report.sections import mixed_precision_contrasts

    def row(recipe, precision, seconds, acc):
        return {
            "model": "cvm_cervix",
            "paper_name": "CVM-Cervix",
            "recipe": recipe,
            "precision": precision,
            "cost": {"total_seconds": {"mean": seconds}},
            "test": {"accuracy": {"mean": acc}},
        }

    variants = {"amp": {"amp": True}}
    (cpu,) = mixed_precision_contrasts(
        [row("none", "float32", 100, 0.8), row("none+amp", "float32", 80, 0.8)], variants
    )
    assert cpu["seconds_saved"] is None and cpu["share_saved"] is None
    assert cpu["note"].startswith("both trained in float32: mixed precision did not run on this device")
    (gpu,) = mixed_precision_contrasts(
        [row("none", "float32", 100, 0.8), row("none+amp", "float16", 60, 0.79)], variants
    )
    assert gpu["seconds_saved"] == 40 and gpu["share_saved"] == 0.4 and gpu["note"] is None
    assert gpu["delta_accuracy"] == pytest.approx(-0.01)
