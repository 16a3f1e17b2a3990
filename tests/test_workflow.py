"""Snakemake end to end on tiny synthetic data, in a temporary working directory."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.workflow
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


# Tiny jobs on 2 cores: two one-thread jobs at once, as `make run` does: the Makefile's ONE_THREAD list.
ONE_THREAD = [
    f"{rule}=1"
    for rule in re.search(r"^ONE_THREAD := \$\(foreach r,([\w ]+),", (REPO / "Makefile").read_text(), re.M)
    .group(1)
    .split()
]


def snakemake(
    workdir: Path, *args: str, check=True, env=None, snakefile=REPO / "workflow" / "Snakefile"
) -> subprocess.CompletedProcess:
    # --set-threads takes every word up to the next option: before -s, so a target in args stays a target
    cmd = [
        SNAKEMAKE,
        *([] if "--set-threads" in args else ["--set-threads", *ONE_THREAD]),
        "-s",
        str(snakefile),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule -> number of jobs."""
    return {
        line.split()[0]: int(line.split()[1])
        for line in output.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }


def tiny_config(**train) -> dict:
    return {
        "datasets": {
            "syn": {"kind": "synthetic", "classes": "combined", "per_class": 5, "image_size": 32},
            "herl": {"kind": "synthetic", "classes": "herlev", "per_class": 6, "image_size": 32},
        },
        "train": {"img_size": 32, "epochs": 1, "batch_size": 8, "lr": 0.001, "seeds": [0], **train},
        "experiments": {
            "main": {
                "dataset": "syn",
                "models": ["cvm_cervix"],
                "paper": "combined",
                "analysis": True,
                "robustness": True,
                "compress": ["fp16", "int8", "onnx"],
            },
            "comparison": {
                "dataset": "syn",
                "models": ["shufflenet_v2_x0_5"],
                "augment": ["none", "flip4x"],
                "paper": "combined",
                "split_seeds": [0, 1],
            },  # and a second split of the same images
            # generalisation set + the fusion ablation with distilled DeiT
            "herlev": {"dataset": "herl", "models": ["cvm_cervix_distilled"], "augment": ["flip4x"], "paper": "herlev"},
        },
    }


def with_finetune_and_transfer(config: dict) -> dict:
    """Herlev-like from main's trained CVM-Cervix (all and half its training split), the transfer matrix, and
    a ShuffleNet with every image mapped to its training split's Reinhard stain beside the plain one."""
    config["experiments"]["finetune"] = {
        "dataset": "herl",
        "models": ["cvm_cervix"],
        "variants": ["from_main", "from_main_half"],
    }
    config["experiments"]["stain"] = {
        "dataset": "syn",
        "models": ["shufflenet_v2_x0_5"],
        "variants": ["default", "norm"],
        "robustness": True,
    }
    config["variants"] = {
        "from_main": {"init_from": "main/cvm_cervix/none"},
        "from_main_half": {"init_from": "main/cvm_cervix/none", "train_fraction": 0.5},
        "norm": {"stain_normalization": "reinhard"},
    }
    config["transfer"] = {
        "sources": ["main/cvm_cervix/none", "herlev/cvm_cervix_distilled/flip4x"],
        "targets": ["syn", "herl"],
    }
    return config


def write_config(workdir: Path, config: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    cfg = write_config(workdir, with_finetune_and_transfer(tiny_config()))
    # from the repository's top-level Snakefile, as the design card names it (the tests below that ask
    # again go through workflow/Snakefile, the catalog's: one workflow, whichever file starts it)
    snakemake(workdir, "--configfile", str(cfg), snakefile=REPO / "Snakefile")
    return workdir


def test_every_run_has_its_outputs(finished):
    runs = finished / "results" / "runs" / "syn"
    expected = [
        runs / "cvm_cervix" / "none" / "seed0",
        runs / "shufflenet_v2_x0_5" / "none" / "seed0",
        runs / "shufflenet_v2_x0_5" / "flip4x" / "seed0",
    ]
    for run in expected:
        for name in (
            "weights.safetensors",
            "history.csv",
            "train.json",
            "predictions_val.csv",
            "predictions_test.csv",
            "metrics.json",
        ):
            assert (run / name).is_file(), run / name
        metrics = json.loads((run / "metrics.json").read_text())
        for split in ("val", "test"):
            assert 0 <= metrics[split]["f1_macro"] <= 1
        assert metrics["size_mb"] > 0 and metrics["params"] > 0
    assert json.loads((expected[2] / "train.json").read_text())["train_images"] == 4 * 33
    assert (finished / "results" / "data" / "syn" / "cache_32.npy").is_file()
    assert (finished / "results" / "logs" / "train" / "syn" / "cvm_cervix_none_seed0.log").is_file()


def test_a_normalised_recipe_trains_on_the_mapped_cache_and_is_reported_beside_none(finished):
    """The normalize step maps the dataset once; the run trains on that cache and records its reference; the
    statistics pair its robustness with none's, and the report names the reference."""
    from cvm_cervix._io import sha256_file

    data = finished / "results" / "data" / "syn"
    reference = json.loads((data / "stain_reinhard_32.json").read_text())
    assert reference["method"] == "reinhard" and reference["images"] == 55 and reference["unmapped"] == 0
    assert reference["cache_sha256"] == sha256_file(data / "cache_32_reinhard.npy")
    run = finished / "results" / "runs" / "syn" / "shufflenet_v2_x0_5" / "none+norm" / "seed0"
    info = json.loads((run / "train.json").read_text())
    assert info["stain_reference"] == {k: reference[k] for k in ("method", "means", "stds", "fitted_on")}
    robustness = json.loads((run / "analysis" / "robustness.json").read_text())
    assert robustness["stain_normalization"] == "reinhard"
    (gain,) = json.loads((finished / "results" / "stats" / "stain.json").read_text())["robustness_gains"]
    assert (gain["recipe"], gain["base"], gain["stain"]["method"]) == ("none+norm", "none", "reinhard")
    html = (finished / "results" / "report.html").read_text()
    assert "<code>none+norm</code>: every image, corrupted or not, is mapped to one\nReinhard reference stain" in html


def test_first_steps_lists_every_training_job_against_its_epochs(finished):
    """benchmarks/first_steps.py: each job's wait for its first step, from the files the jobs wrote."""
    infos = sorted((finished / "results" / "runs").glob("*/*/*/seed*/train.json"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "first_steps.py"), str(finished / "results")],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ") and "/seed" in line]
    assert len(rows) == len(infos) > 5
    info = json.loads(infos[0].read_text())
    first = rows[0]
    assert first[0] == "| " + "/".join(infos[0].parent.relative_to(finished / "results" / "runs").parts)
    # a job's own process: imports and start-up before training, then data, model and the first step
    assert 0 < info["startup_seconds"] < 60 and 0 < info["first_step_seconds"] < 60
    assert float(first[3]) == round(info["startup_seconds"], 1) and float(first[4]) == round(
        info["first_step_seconds"], 1
    )
    assert float(first[5]) == pytest.approx(info["startup_seconds"] + info["first_step_seconds"], abs=0.051)
    assert re.search(rf"\n\d+ of {len(infos)} jobs reached their first step within 10 s of their start", proc.stdout)


def test_a_split_file_of_one_results_folder_gives_another_the_same_split(finished, tmp_path):
    """The workflow's splits.csv, given to another results folder that would draw another split (another
    seed), reproduces the same manifest split; the statistics carry ROC, calibration and operating points."""
    from cvm_cervix.data import read_manifest

    splits = finished / "results" / "data" / "syn" / "splits.csv"
    config = tiny_config()
    config["datasets"]["syn"].update(split_seed=11, split_file=str(splits))
    config["experiments"]["comparison"].pop("split_seeds")  # a split file is one split
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/data/syn/manifest.csv", "--configfile", str(tmp_path / "config.yaml"))
    ours, theirs = (read_manifest(f / "results" / "data" / "syn" / "manifest.csv") for f in (finished, tmp_path))
    assert list(ours["sha256"]) == list(theirs["sha256"]) and (ours["split"] == theirs["split"]).all()
    assert json.loads((tmp_path / "results" / "data" / "syn" / "summary.json").read_text())["split_file"] == str(splits)

    stats = json.loads((finished / "results" / "stats" / "main.json").read_text())
    diag = stats["runs"][0]["diagnostics"]
    assert 0 <= diag["calibration"]["ece"] <= 1 and diag["calibration"]["bins"] == 15
    assert [p["kind"] for p in diag["operating_points"]] == ["specificity", "sensitivity"]
    assert set(diag["roc_pr"]["per_class"]) == set(diag["classes"])


def test_split_seeds_repeat_runs_over_splits_and_the_report_separates_the_spread(finished):
    """comparison's split_seeds [0, 1]: a second prepared split of the same images, each run trained on
    both, the spread by source and flip4x against none tested over the two splits."""
    from cvm_cervix.data import read_manifest

    data = finished / "results" / "data"
    first, second = (read_manifest(data / d / "manifest.csv").set_index("sha256") for d in ("syn", "syn.split1"))
    assert sorted(first.index) == sorted(second.index)  # the same images
    assert not (first["split"] == second.loc[first.index, "split"]).all()  # split another way
    assert json.loads((data / "syn.split1" / "summary.json").read_text())["split_seed"] == 1
    assert not (finished / "results" / "synthetic" / "syn.split1").exists()  # rendered once
    for recipe in ("none", "flip4x"):
        assert (finished / f"results/runs/syn.split1/shufflenet_v2_x0_5/{recipe}/seed0/metrics.json").is_file()
    stats = json.loads((finished / "results" / "stats" / "comparison.json").read_text())
    assert {(r["recipe"], r["split_seed"]) for r in stats["runs"] if r["model"] == "shufflenet_v2_x0_5"} == {
        (a, s) for a in ("none", "flip4x") for s in (0, 1)
    }
    spread = {e["recipe"]: e for e in stats["spread"] if e["model"] == "shufflenet_v2_x0_5"}
    assert spread["none"]["splits"] == 2 and spread["none"]["accuracy"]["sd_seed"] is None  # one seed per split
    accuracy = {
        s: json.loads((finished / f"results/runs/{d}/shufflenet_v2_x0_5/none/seed0/metrics.json").read_text())["test"][
            "accuracy"
        ]
        for s, d in (("0", "syn"), ("1", "syn.split1"))
    }
    assert spread["none"]["accuracy"]["split_means"] == pytest.approx(accuracy)
    (over,) = [c for c in stats["split_contrasts"] if c["contrast"] == "flip4x vs none"]
    assert over["splits"] == 2 and over["df"] == 1 and 0 <= over["p_value"] <= 1
    html = (finished / "results" / "report.html").read_text()
    assert "Split against initialisation" in html and "corrected resampled t-test" in html
    assert "the images of syn, split with seed 1" in html
    files = finished / "results" / "report_files"
    assert (files / "comparison__spread.csv").is_file() and (
        files / "comparison__comparisons_over_splits.tex"
    ).is_file()


def test_transfer_matrix_is_recomputed_from_the_saved_predictions(finished):
    from cvm_cervix.labels import NORMAL_CLASSES

    results = finished / "results"
    matrix = json.loads((results / "transfer" / "matrix.json").read_text())
    assert matrix["mapping"] == "normal_abnormal" and matrix["targets"] == ["syn", "herl"]
    assert len(matrix["cells"]) == 4 and sum(c["in_domain"] for c in matrix["cells"]) == 2
    html = (results / "report.html").read_text()
    assert 'id="transfer"' in html and "tested on herl" in html
    for cell in matrix["cells"]:
        frame = pd.read_csv(finished / cell["predictions"], keep_default_na=False)
        assert cell["predictions"].endswith(f"/transfer/{cell['target']}.csv")
        # the target's whole test split, every class mapped as the built-in normal/abnormal space says
        assert len(frame) == cell["n"] == (11 if cell["target"] == "syn" else 2)
        for column in ("label", "pred"):
            expected = ["normal" if c in NORMAL_CLASSES else "abnormal" for c in frame[column]]
            assert frame[f"{column}_shared"].tolist() == expected
        truth, pred = frame["label_shared"], frame["pred_shared"]
        assert cell["accuracy"] == pytest.approx((truth == pred).mean())
        abnormal = truth == "abnormal"
        assert cell["sensitivity"] == pytest.approx((pred[abnormal] == "abnormal").mean())
        assert cell["specificity"] == pytest.approx((pred[~abnormal] == "normal").mean())
        assert cell["accuracy_ci"][0] <= cell["accuracy"] <= cell["accuracy_ci"][1]
        assert f"Acc {100 * cell['accuracy']:.2f}" in html


def test_a_finetuned_run_starts_from_the_other_runs_weights(finished):
    import hashlib

    runs = finished / "results" / "runs"
    source = runs / "syn" / "cvm_cervix" / "none" / "seed0"
    full = json.loads((runs / "herl" / "cvm_cervix" / "none+from_main" / "seed0" / "train.json").read_text())
    half = json.loads((runs / "herl" / "cvm_cervix" / "none+from_main_half" / "seed0" / "train.json").read_text())
    digest = hashlib.sha256((source / "weights.safetensors").read_bytes()).hexdigest()
    for info in (full, half):
        assert info["init_from"]["run"] == str(Path("results") / "runs" / "syn" / "cvm_cervix" / "none" / "seed0")
        assert info["init_from"]["weights_sha256"] == digest
        assert info["init_from"]["head"] == "replaced (other classes)" and info["classes"] == ["Normal", "Abnormal"]
    assert full["train_fraction"] == 1 and half["train_fraction"] == 0.5
    assert full["train_images"] == 8 and half["train_images"] == 4  # 4 training images per class, half of them
    stats = json.loads((finished / "results" / "stats" / "finetune.json").read_text())
    assert {r["recipe"] for r in stats["runs"]} == {"none+from_main", "none+from_main_half"}
    assert stats["contrasts"] == []  # a variant is compared with its plain run, which this experiment lacks
    html = (finished / "results" / "report.html").read_text()
    assert "Learning curve: finetune" in html and "from main\\u002fcvm_cervix\\u002fnone" in html  # plotly's JSON
    assert (finished / "results" / "report_files" / "finetune__learning_curve.html").is_file()


def test_analysis_compression_and_statistics(finished):
    run = finished / "results/runs/syn/cvm_cervix/none/seed0"
    for precision in ("fp16", "int8", "onnx"):
        assert json.loads((run / "compressed" / precision / "metrics.json").read_text())["precision"] == precision
    assert not (run / "compressed" / "bf16").exists()
    tsne = pd.read_csv(run / "analysis" / "tsne.csv")
    assert len(tsne) == 11 and {"x", "y", "z"} <= set(tsne.columns)  # one test image per class
    gallery = json.loads((run / "analysis" / "gallery.json").read_text())
    assert all((run / "analysis" / img["file"]).is_file() for img in gallery["images"])
    stats = json.loads((finished / "results" / "stats" / "comparison.json").read_text())
    by_key = {(r["model"], r["recipe"]): r for r in stats["runs"] if r["split_seed"] == 0}
    # the comparison experiment is compared with cvm_cervix, trained for "main" (on the first split only)
    assert by_key[("shufflenet_v2_x0_5", "none")]["mcnemar"]["reference"] == "cvm_cervix"
    assert by_key[("shufflenet_v2_x0_5", "flip4x")]["mcnemar"] is None  # no flip4x reference run
    herlev = json.loads((finished / "results" / "stats" / "herlev.json").read_text())["runs"][0]
    assert herlev["model"] == "cvm_cervix_distilled" and herlev["mcnemar"] is None
    clinical = herlev["clinical"]  # Normal vs Abnormal
    assert clinical["abnormal_classes"] == ["Abnormal"] and clinical["tp"] + clinical["fn"] == 1
    html = (finished / "results" / "report.html").read_text()
    assert "CVM-Cervix (DeiT distilled)" in html
    assert '<td class="paper">1620</td>' in html  # the paper's Table 4 beside the Herlev-like counts
    for heading in ("Compression", "Features and misclassifications", "McNemar p vs CVM-Cervix", "Acc 95% CI"):
        assert heading in html
    fp16 = json.loads((run / "compressed" / "fp16" / "metrics.json").read_text())
    assert f"{fp16['size_mib']:.1f}" in html and "size (MiB)" in html
    int8 = json.loads((run / "compressed" / "int8" / "metrics.json").read_text())
    assert int8["size_mib"] < int8["fp32_size_mib"] / 3  # CVM-Cervix, static int8: under a third of float32
    # chosen on validation and kept, within two test images of float32 (U8U8: the same on every x86 CPU)
    assert int8["kept"] and int8["delta_accuracy"] * int8["n"] >= -2 - 1e-9, int8
    assert (run / "compressed" / "int8" / "model.onnx").is_file() and "static int8" in html
    assert f"{100 * int8['delta_accuracy']:+.2f}" in html
    assert "To deploy" in html and "smallest <b>" in html
    # the comparison experiment's own contrast: flip4x against none, with Holm's p and a paired interval
    contrast = next(c for c in stats["contrasts"] if c["contrast"] == "flip4x vs none")
    assert contrast["a"]["recipe"] == "none" and contrast["b"]["recipe"] == "flip4x"
    assert "ShuffleNetV2×0.5 · flip4x against ShuffleNetV2×0.5 · none" in html and "Holm p" in html


def test_report_is_self_contained_and_labelled_synthetic(finished):
    html = (finished / "results" / "report.html").read_text()
    assert "SYNTHETIC DATA" in html
    assert "cdn.plot.ly" not in html.split("</script>", 1)[1] and "<script src=" not in html
    assert "Plotly" in html  # plotly.js is inlined
    # the paper's combined-set numbers are shown beside ours, from paper_results.yaml
    assert "91.72" in html and "91.70" in html
    # every reproduced number comes from metrics.json
    metrics = json.loads((finished / "results/runs/syn/cvm_cervix/none/seed0/metrics.json").read_text())
    assert f"{100 * metrics['test']['accuracy']:.2f}" in html
    assert "ShuffleNetV2×0.5" in html and "flip4x" in html
    # the paper's Fig. 6 confusions (validation and test) beside this run's counts of the same pairs
    classes = metrics["classes"]
    for split, name, count in (("test", "test", 21), ("val", "validation", 15)):
        ours = metrics[split]["confusion"][classes.index("ASC-US")][classes.index("LSIL")]
        row = f'<td class="l">ASC-US → LSIL</td><td class="l">{name}</td><td class="paper">{count}</td><td>{ours}</td>'
        assert row in html, split
    # data table: per-class counts per split from the manifest, with the paper's Table 1 beside
    assert '<td class="paper">484</td>' in html


def test_the_report_answers_a_screening_lab(finished):
    """Referral, robustness and per-source metrics of the tiny workflow, each from its own files."""
    html = (finished / "results" / "report.html").read_text()
    stats = json.loads((finished / "results" / "stats" / "main.json").read_text())
    (entry,) = stats["runs"]
    sources = {row["value"]: row for row in entry["subgroups"]["dataset"]}
    assert set(sources) == {"synthetic CRIC", "synthetic SIPaKMeD"}  # the two datasets the set imitates
    test = pd.read_csv(finished / "results/runs/syn/cvm_cervix/none/seed0/predictions_test.csv")
    assert sum(row["n"] for row in sources.values()) == len(test)
    assert "By source dataset and subgroup" in html and "synthetic SIPaKMeD" in html
    assert [row["target"] for row in entry["diagnostics"]["referral"]["rows"]] == [0.9, 0.9, 0.95, 0.95]
    assert "Referral: which cells a person must still see" in html
    robustness = json.loads((finished / "results/runs/syn/cvm_cervix/none/seed0/analysis/robustness.json").read_text())
    metrics = json.loads((finished / "results/runs/syn/cvm_cervix/none/seed0/metrics.json").read_text())
    assert robustness["clean"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert set(robustness["corruptions"]) == {"stain", "blur", "jpeg", "brightness", "contrast", "scale"}
    # at the default's 32 px ImageNet-C's smallest blur does nothing: marked, and left out of the mean
    assert robustness["corruptions"]["blur"]["1"]["no_effect"] and "blur" not in robustness["mean"]["1"]["corruptions"]
    assert "Robustness to slide variation" in html and "no effect" in html
    # each evaluated run has its calibration, for predict
    calibration = json.loads((finished / "results/runs/syn/cvm_cervix/none/seed0/calibration.json").read_text())
    assert set(calibration["conformal"]) == {"0.9", "0.95"} and calibration["fitted_on"] == "validation"


def test_rerun_has_nothing_to_do(finished):
    """Run from the top-level Snakefile, the workflow has nothing left to do from either Snakefile."""
    for snakefile in (REPO / "workflow" / "Snakefile", REPO / "Snakefile"):
        proc = snakemake(finished, "--configfile", str(finished / "config.yaml"), "-n", snakefile=snakefile)
        assert "Nothing to be done" in proc.stdout + proc.stderr, snakefile


def test_config_overlays_merge_in_order(finished):
    overlay = finished / "seeds.yaml"
    overlay.write_text("train:\n  seeds: [0, 1]\n")
    proc = snakemake(finished, "--configfile", str(finished / "config.yaml"), str(overlay), "-n")
    out = proc.stdout + proc.stderr
    assert "seed1/weights.safetensors" in out
    seed0_runs = list((finished / "results" / "runs").glob("*/*/*/seed0"))
    assert len(seed0_runs) == 9  # comparison: two recipes on each of its two splits; stain: the normalised one
    assert job_counts(out)["train"] == len(seed0_runs)  # only the new seed's runs; seed 0 is done
    proc = snakemake(finished, "--configfile", str(finished / "config.yaml"), "-n", "--config", "results=elsewhere")
    assert "elsewhere/report.html" in proc.stdout + proc.stderr


def test_bad_config_stops_with_one_line(tmp_path):
    cfg = tiny_config()
    cfg["train"]["epochs"] = "many"
    proc = snakemake(tmp_path, "--configfile", str(write_config(tmp_path, cfg)), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "error: config key 'train.epochs'" in out and "should be of type integer" in out
    cfg = tiny_config()
    cfg["experiments"]["main"]["models"] = ["cvm_cervics"]
    proc = snakemake(tmp_path, "--configfile", str(write_config(tmp_path, cfg)), "-n", check=False)
    assert proc.returncode != 0 and "unknown model 'cvm_cervics'" in proc.stdout + proc.stderr
    # a key given twice in a file Snakemake was given (Snakemake itself keeps the last one)
    twice = write_config(tmp_path, tiny_config())
    twice.write_text(twice.read_text() + "train:\n  epochs: 3\n")
    proc = snakemake(tmp_path, "--configfile", str(twice), "-n", check=False)
    assert proc.returncode != 0 and f"error: config file {twice}, line" in proc.stdout + proc.stderr
    assert "key 'train' is given twice in one mapping" in proc.stdout + proc.stderr


def test_unreadable_image_fails_the_prepare_job_naming_the_file(tmp_path):
    root = tmp_path / "images"
    from conftest import write_image

    for cls in ("a", "b"):
        for i in range(4):
            write_image(root / cls / f"{i}.png", seed=i + (10 if cls == "b" else 0))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    cfg = tiny_config()
    cfg["datasets"] = {"mine": {"kind": "imagefolder", "root": str(root)}}
    cfg["experiments"] = {"e": {"dataset": "mine", "models": ["shufflenet_v2_x0_5"]}}
    proc = snakemake(tmp_path, "--configfile", str(write_config(tmp_path, cfg)), check=False)
    assert proc.returncode != 0
    assert f"error: {root / 'b' / 'broken.png'}: cannot be read as an image" in proc.stderr
    assert not (tmp_path / "results" / "data" / "mine" / "manifest.csv").exists()


def planned_resources(output: str) -> list[tuple[str, dict]]:
    """(rule, {wildcard or resource: value}) of every job block of a dry run."""
    jobs = []
    for block in output.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            head, _, rest = line.strip().partition(" ")
            if head in ("rule", "localrule"):
                fields["rule"] = rest.rstrip(":")
            elif head in ("wildcards:", "resources:"):
                fields.update(kv.split("=", 1) for kv in rest.split(", "))
        if "rule" in fields:
            jobs.append((fields.pop("rule"), fields))
    return jobs


def test_gpu_rules_ask_for_a_gpu_whatever_the_planning_machine(tmp_path):
    proc = snakemake(
        tmp_path,
        "--configfile",
        str(write_config(tmp_path, with_finetune_and_transfer(tiny_config()))),
        "-n",
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    jobs = planned_resources(proc.stdout + proc.stderr)
    gpu = {}
    for rule, res in jobs:
        key = f"compress:{res['precision']}" if rule.startswith("compress") else rule
        gpu.setdefault(key, set()).add(int(res.get("gpu", 0)))
    assert gpu["train"] == gpu["evaluate"] == gpu["analyse"] == gpu["compress:fp16"] == {1}
    assert gpu["compress:int8"] == gpu["compress:onnx"] == {0}
    assert gpu["transfer_predict"] == {1}
    assert all(gpu[r] == {0} for r in ("synthesize", "prepare", "cache", "stats", "report", "transfer_matrix"))


def test_a_changed_dataset_folder_is_prepared_again(tmp_path):
    from conftest import write_image

    root = tmp_path / "images"
    for c, cls in enumerate(("a", "b")):
        for i in range(5):
            write_image(root / cls / f"{i}.png", seed=10 * c + i)
    cfg = tiny_config()
    cfg["datasets"] = {"my-set_1": {"kind": "imagefolder", "root": str(root)}}  # '-' is allowed and escaped
    cfg["experiments"] = {"e": {"dataset": "my-set_1", "models": ["shufflenet_v2_x0_5"]}}
    path = str(write_config(tmp_path, cfg))
    manifest = "results/data/my-set_1/manifest.csv"

    def planned():
        proc = snakemake(tmp_path, manifest, "-n", "--configfile", path)
        return job_counts(proc.stdout + proc.stderr).get("prepare", 0)

    snakemake(tmp_path, manifest, "--configfile", path)
    assert planned() == 0
    write_image(root / "b" / "new.png", seed=99)  # an image added
    assert planned() == 1
    snakemake(tmp_path, manifest, "--configfile", path)
    assert len(pd.read_csv(tmp_path / manifest)) == 11 and planned() == 0
    (root / "a" / "0.png").unlink()  # an image removed
    assert planned() == 1
    # without Snakemake's records (.snakemake/ removed: a params change is then invisible to it), the whole
    # workflow still prepares a changed folder again, and what depends on it
    import shutil

    snakemake(tmp_path, "--configfile", path)
    shutil.rmtree(tmp_path / ".snakemake")
    write_image(root / "a" / "late.png", seed=98)
    before = _tree(tmp_path / "results")
    proc = snakemake(tmp_path, "-n", "--configfile", path)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("listing") == 1 and counts.get("prepare") == 1 and counts.get("train") == 1, counts
    assert "the folder of dataset my-set_1 changed since it was prepared" in proc.stderr
    assert _tree(tmp_path / "results") == before  # planned, nothing written
    snakemake(tmp_path, "--configfile", path)
    assert len(pd.read_csv(tmp_path / manifest)) == 11
    proc = snakemake(tmp_path, "-n", "--configfile", path)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_paper_config_plans_one_training_job_per_model(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for name, spec in cfg["datasets"].items():
        if "root" in spec:
            spec["root"] = str(tmp_path / name)
            (tmp_path / name).mkdir()
    proc = snakemake(tmp_path, "--configfile", str(write_config(tmp_path, cfg)), "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    # 23 models on combined, + cvm_cervix flip4x, + the distilled-DeiT fusion, + Herlev and blood cells,
    # + mixed precision, + Herlev from 3 starts at 3 training-set sizes, + the grouped split, + the stain
    # recipe, none and it with stains normalised, + seeds 1 and 2 of Xception, DeiT and CVM-Cervix
    assert counts["train"] == 23 + 1 + 1 + 1 + 1 + 1 + 9 + 1 + 1 + 2 + 6
    assert counts["evaluate"] == counts["train"]
    assert counts["prepare"] == 6 and counts["cache"] == 4
    assert counts["normalize"] == 1  # the combined set at 224 px mapped to its Reinhard stain, once for both runs
    assert counts["compress_half"] == 2 and counts["compress_onnx"] == 2 and counts["compress_dynamic"] == 1
    assert counts["analyse"] == 1 and counts["robustness"] == 4  # main's run and the three stain recipes
    assert counts["stats"] == len(cfg["experiments"]) == 11
    assert counts["transfer_predict"] == 4 and counts["transfer_matrix"] == 1
    assert cfg["train"]["pretrained"] is True
    assert counts["weights"] == 24  # 23 models of Table 3 and the distilled-DeiT fusion, one job each


def test_paper_config_fetches_every_weights_file_before_any_training(tmp_path):
    """In the DAG of config/paper.yaml every training job waits for its model's weights job (or, started
    from another run, for that run's training job; from random weights, for nothing)."""
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    proc = snakemake(tmp_path, "--configfile", str(write_config(tmp_path, cfg)), "-n", "--dag")
    nodes = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', proc.stdout, re.M))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", proc.stdout, re.M)
    trains = [n for n, label in nodes.items() if label.startswith("train\\n")]
    assert len(trains) == 47
    for node in trains:
        parents = [nodes[a] for a, b in edges if b == node]
        if "+from_combined" in nodes[node]:
            assert any(p.startswith("train\\nrecipe: none\\n") for p in parents), (nodes[node], parents)
        elif "+random" not in nodes[node]:
            assert any(p.startswith("weights\\nmodel: ") for p in parents), (nodes[node], parents)


def test_paper_config_plans_without_roots_and_stops_before_training(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())  # roots left empty, as shipped
    path = write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "--configfile", str(path), "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert "warning: config key 'datasets.sipakmed.root'" in out and "not set" in out
    assert job_counts(out)["train"] == 47
    cfg["datasets"] = {"cric": {"kind": "cric", "root": ""}}
    cfg["experiments"] = {"e": {"dataset": "cric", "models": ["resnet18"]}}
    del cfg["transfer"], cfg["variants"]
    proc = snakemake(tmp_path, "--configfile", str(write_config(tmp_path, cfg)), check=False)
    assert proc.returncode != 0
    assert "error: config key 'datasets.cric.root' is not set" in proc.stdout + proc.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_lint_is_clean():
    proc = subprocess.run(
        [SNAKEMAKE, "--lint", "-s", str(REPO / "workflow" / "Snakefile")], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "cric").is_dir(), reason="../shared/data/cric not present")
def test_whole_path_on_real_cric_crops(tmp_path):
    # The shared crops come without CRIC's classifications.csv, which names each cell's slide image: the
    # folders are linked and a table added that puts consecutive cell ids six to an image (CRIC numbers the
    # cells of one image in a row), so that the grouped split has images to keep together.
    shared, root = REPO.parent / "shared" / "data" / "cric", tmp_path / "cric"
    root.mkdir()
    rows = ["image_id,cell_id"]
    for folder in sorted(p for p in shared.iterdir() if p.is_dir()):
        (root / folder.name).symlink_to(folder)
        rows += [f"{int(f.stem) // 6},{f.stem}" for f in folder.glob("*.png")]
    (root / "classifications.csv").write_text("\n".join(rows) + "\n")
    cfg = {
        "datasets": {
            "cric": {"kind": "cric", "root": str(root)},
            "cric_grouped": {"kind": "cric", "root": str(root), "split": "grouped"},  # by slide image
        },
        "train": {"img_size": 32, "epochs": 1, "batch_size": 32, "lr": 0.001},
        "experiments": {
            "real": {"dataset": "cric", "models": ["shufflenet_v2_x0_5"]},
            "leakage": {"dataset": "cric_grouped", "models": ["shufflenet_v2_x0_5"], "baseline": "real"},
        },
    }
    snakemake(tmp_path, "--configfile", str(write_config(tmp_path, cfg)))
    # the grouped split against the random one, from both runs' predictions and the CRIC images' ids
    (gap,) = json.loads((tmp_path / "results/stats/leakage.json").read_text())["baseline_gaps"]
    grouped, plain = (
        pd.read_csv(tmp_path / f"results/runs/{d}/shufflenet_v2_x0_5/none/seed0/predictions_test.csv")
        for d in ("cric_grouped", "cric")
    )
    assert gap["gap"] == pytest.approx((grouped.label == grouped.pred).mean() - (plain.label == plain.pred).mean())
    assert gap["common"]["n"] == len(set(grouped.path) & set(plain.path)) > 0
    assert 1 < gap["source_images"][0] < gap["n"] and gap["gap_ci"][0] < gap["gap_ci"][1]
    assert gap["seed_spread_included"] is False
    metrics = json.loads((tmp_path / "results/runs/cric/shufflenet_v2_x0_5/none/seed0/metrics.json").read_text())
    assert metrics["classes"] == ["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"]
    # 20% per class, rounded down: 68 + 25 + 8 + 64 + 77 + 180
    assert metrics["test"]["n"] == 422 and sum(map(sum, metrics["test"]["confusion"])) == 422
    html = (tmp_path / "results" / "report.html").read_text()
    assert "SYNTHETIC DATA" not in html and "902" in html  # NILM's total, from the manifest


# --- the report: provenance, Snakemake's report, a real browser, hostile names --------------------------------


def test_report_provenance(finished):
    html = (finished / "results" / "report.html").read_text()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert commit and commit in html
    import hashlib
    import importlib.metadata

    manifest = finished / "results" / "data" / "syn" / "manifest.csv"
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() in html
    assert f'<td class="l">torch</td><td class="l">{importlib.metadata.version("torch")}</td>' in html
    assert str(finished / "config.yaml") in html  # the config file it came from
    for rule in ("train", "evaluate", "compress_onnx", "prepare"):
        assert f'<td class="l">{rule}</td>' in html  # wall time per rule, from the benchmark files
    assert "epochs: 1" in html  # the configuration as run


def test_snakemake_report_has_every_figure_with_captions(finished):
    import zipfile

    snakemake(finished, "--configfile", str(finished / "config.yaml"), "--report", str(finished / "report.zip"))
    with zipfile.ZipFile(finished / "report.zip") as archive:
        names = archive.namelist()
        main = next(n for n in names if n.endswith("report/report.html") and "/data/" not in n)
        page = archive.read(main).decode()
    files = sorted(n.rsplit("/", 1)[1] for n in names if "/data/raw/" in n)
    for expected in (
        "report.html",
        "main__accuracy.html",
        "main__results.csv",
        "main__compression.html",
        "main__tsne.html",
        "comparison__accuracy.html",
        "herlev__results.csv",
        "data__syn.csv",
        "provenance__rule_times.csv",
        "provenance__config.yaml",
        "main__results.tex",
        "main__results.md",
        "main__results_val.csv",
        "main__per_class.tex",
        "main__screening.md",
        "main__roc.html",
        "main__reliability.html",
    ):
        assert expected in files, expected
    assert page.count("A figure or table of the CVM-Cervix reproduction report") >= 10  # captions from report/
    assert "Reproduces Liu et al." in page  # report/workflow.rst
    for category in ('"main"', '"comparison"', '"herlev"', '"provenance"', '"Report"'):
        assert category in page


@pytest.mark.browser
def test_report_in_a_real_browser(finished, browser, tmp_path):
    from conftest import artifact_dir, open_page

    shot = artifact_dir(tmp_path) / "report.png"
    logs = open_page(browser, finished / "results" / "report.html", shot)
    assert [e for e in logs if e["level"] == "SEVERE"] == []  # no console errors, with the network off
    anchors = browser.execute_script(
        "return Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))"
    )
    assert anchors == [
        "#glance",
        "#data",
        "#results",
        "#transfer",
        "#compression",
        "#robustness",
        "#analysis",
        "#cost",
        "#runs",
        "#provenance",
        "#checklists",
    ]
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('nav a'))"
        ".every(a => document.querySelector(a.getAttribute('href')))"
    )
    plots = browser.execute_script("""return Array.from(document.querySelectorAll('.plotly-graph-div')).map(
        d => !!d.querySelector('svg.main-svg') || !!d.querySelector('canvas'))""")
    assert len(plots) >= 8 and all(plots)  # every plot drew, from the inlined plotly.js
    assert browser.execute_script("return typeof Plotly") == "object"
    assert browser.execute_script("return window.__alerts") == []
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


HOSTILE = ["<img src=x onerror=alert(1)>", '"quotes" & <b>']


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The tiny workflow on a dataset whose class folders are named like HTML."""
    from conftest import write_image

    workdir = tmp_path_factory.mktemp("hostile")
    root = workdir / "images"
    for c, cls in enumerate(HOSTILE):
        for i in range(15):  # 3 test images per class: enough for a t-SNE
            write_image(root / cls / f"{i}.png", seed=10 * c + i)
    cfg = {
        "datasets": {"odd": {"kind": "imagefolder", "root": str(root)}},
        "train": {"img_size": 32, "epochs": 1, "batch_size": 8},
        "experiments": {"main": {"dataset": "odd", "models": ["shufflenet_v2_x0_5"], "analysis": True}},
        "analysis": {"reference": "shufflenet_v2_x0_5"},
    }
    snakemake(workdir, "--configfile", str(write_config(workdir, cfg)))
    return workdir


def test_hostile_class_names_are_escaped_in_the_html(hostile):
    html = (hostile / "results" / "report.html").read_text()
    assert HOSTILE[0] not in html and '<b>"quotes"' not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # in tables, as text
    assert "&#34;quotes&#34; &amp; &lt;b&gt;" in html or "&quot;quotes&quot; &amp; &lt;b&gt;" in html


@pytest.mark.browser
def test_hostile_class_names_show_as_text_and_run_nothing_in_a_browser(hostile, browser, tmp_path):
    from conftest import artifact_dir, open_page

    logs = open_page(browser, hostile / "results" / "report.html", artifact_dir(tmp_path) / "report_hostile.png")
    assert browser.execute_script("return window.__alerts") == []
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"], body b > b').length") == 0
    cells = browser.execute_script("return Array.from(document.querySelectorAll('td')).map(td => td.textContent)")
    svg_text = browser.execute_script(
        "return Array.from(document.querySelectorAll('.plotly-graph-div svg text')).map(t => t.textContent)"
    )
    for name in HOSTILE:
        assert name in cells, name  # a table shows the name as written
        assert any(name in t for t in svg_text), name  # and so do the plots' labels
    assert [e for e in logs if e["level"] == "SEVERE"] == []


def test_pretrained_weights_are_fetched_by_their_own_step_before_training(tmp_path):
    import timm
    from weights_cache import hub_snapshot

    cache = tmp_path / "cache"
    cfg = tiny_config(pretrained=True, weights_cache=str(cache))
    cfg["experiments"] = {"e": {"dataset": "syn", "models": ["deit_tiny", "cvm_cervix"]}}
    path = str(write_config(tmp_path, cfg))
    out = snakemake(tmp_path, "-n", "--configfile", path)
    counts = job_counts(out.stdout + out.stderr)
    assert counts["weights"] == 2 and counts["train"] == 2  # one fetch per model, each before its training
    assert "results/weights/deit_tiny.json" in out.stdout
    offline = {"HF_HUB_OFFLINE": "1"}
    # no network and nothing in the cache: one line naming the model, the file and where to put it
    proc = snakemake(tmp_path, "results/weights/deit_tiny.json", "--configfile", path, env=offline, check=False)
    assert proc.returncode != 0
    assert "error: model 'deit_tiny': its pretrained weights cannot be fetched" in proc.stderr
    assert (
        "timm/deit_tiny_patch16_224.fb_in1k" in proc.stderr
        and not (tmp_path / "results/weights/deit_tiny.json").exists()
    )
    # the file in the cache layout timm expects: the step records it, through the same code a download takes
    file = hub_snapshot(
        cache / "timm",
        "timm/deit_tiny_patch16_224.fb_in1k",
        timm.create_model("deit_tiny_patch16_224", num_classes=1000).state_dict(),
    )
    snakemake(tmp_path, "results/weights/deit_tiny.json", "--configfile", path, env=offline)
    record = json.loads((tmp_path / "results/weights/deit_tiny.json").read_text())
    assert (
        record["files"][0]["path"] == str(file) and record["files"][0]["hub_id"] == "timm/deit_tiny_patch16_224.fb_in1k"
    )


def test_only_one_model_of_one_experiment_is_planned_and_reported_alone(tmp_path):
    path = str(write_config(tmp_path, with_finetune_and_transfer(tiny_config())))
    out = snakemake(tmp_path, "-n", "--configfile", path, "--config", "only=comparison/shufflenet_v2_x0_5")
    counts = job_counts(out.stdout + out.stderr)
    # its two recipes (none, flip4x) on its two splits: trained, evaluated, its statistics and the report;
    # nothing of the rest
    assert counts["train"] == 4 and counts["evaluate"] == 4 and counts["stats"] == 1 and counts["report"] == 1
    assert "compress_onnx" not in counts and "transfer_predict" not in counts and "analyse" not in counts
    bad = snakemake(tmp_path, "-n", "--configfile", path, "--config", "only=comparison/vgg19", check=False)
    assert bad.returncode != 0 and "experiment 'comparison' has no model 'vgg19'" in bad.stdout + bad.stderr


@pytest.fixture
def results_copy(finished, tmp_path):
    """The finished results folder and config in a fresh working directory: no .snakemake/ records, as
    with someone else's results, a copy, or a fresh clone beside kept results."""
    import shutil

    shutil.copytree(finished / "results", tmp_path / "results", symlinks=True)  # dates kept (copy2)
    shutil.copy(finished / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def test_results_without_records_are_judged_by_what_their_report_covers(results_copy):
    cfg = str(results_copy / "config.yaml")
    proc = snakemake(results_copy, "-n", "--configfile", cfg)
    assert "Nothing to be done" in proc.stdout + proc.stderr  # this plan's report of these very files
    # another experiment in the config: its runs are trained and the report covers them
    config = yaml.safe_load((results_copy / "config.yaml").read_text())
    config["experiments"]["extra"] = {"dataset": "syn", "models": ["resnet18"]}
    extra = write_config(results_copy / "other", config)
    out = snakemake(results_copy, "-n", "--configfile", str(extra))
    text = out.stdout + out.stderr
    counts = job_counts(text)
    # the plan's stamp is written as Snakemake plans, newer than the report: every aggregation is made again
    assert counts["train"] == 1 and counts["evaluate"] == 1 and counts["report"] == 1, counts
    assert counts["stats"] == len(config["experiments"]) and counts["transfer_matrix"] == 1, counts
    assert "report.html is not up to date (it covers plan" in text and "not this config's plan" in text


def test_a_report_put_back_or_of_other_files_is_made_again(results_copy):
    cfg = str(results_copy / "config.yaml")
    report = results_copy / "results" / "report.html"
    # a newer result than the report was made from (as when the report job failed and the last complete
    # report was put back): the report and its plan stamp are made again, nothing else
    metrics = next((results_copy / "results" / "runs").glob("syn/cvm_cervix/none/seed0/metrics.json"))
    os.utime(metrics, (metrics.stat().st_atime, metrics.stat().st_mtime + 5))
    out = snakemake(results_copy, "-n", "--configfile", cfg)
    text = out.stdout + out.stderr
    counts = job_counts(text)
    assert counts["report"] == 1 and "train" not in counts and "evaluate" not in counts, counts
    assert "the results it was made from have changed since" in text
    # a report with no marks at all (another tool's, or cut short)
    report.write_text("<html><head><title>someone else's report</title></head></html>")
    out = snakemake(results_copy, "-n", "--configfile", cfg)
    assert "carries no plan digest" in out.stderr and job_counts(out.stdout + out.stderr)["report"] == 1


def test_a_file_someone_put_in_report_files_stops_the_run_before_it_is_lost(results_copy):
    notes = results_copy / "results" / "report_files" / "my_notes.txt"
    notes.write_text("keep me")
    proc = snakemake(results_copy, "-n", "--configfile", str(results_copy / "config.yaml"), check=False)
    assert proc.returncode != 0
    assert "report_files/ holds 1 file(s) the report job did not write (my_notes.txt)" in proc.stdout + proc.stderr
    assert notes.read_text() == "keep me"


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: size and modification time."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_dry_run_writes_nothing_even_where_the_report_is_made_again(results_copy):
    cfg = str(results_copy / "config.yaml")
    metrics = next((results_copy / "results" / "runs").glob("syn/cvm_cervix/none/seed0/metrics.json"))
    os.utime(metrics, (metrics.stat().st_atime, metrics.stat().st_mtime + 5))  # the report is not current
    before = _tree(results_copy / "results")
    out = snakemake(results_copy, "-n", "--configfile", cfg)
    counts = job_counts(out.stdout + out.stderr)
    assert counts["plan"] == 1 and counts["report"] == 1 and "train" not in counts, counts
    snakemake(results_copy, "--list-rules", "--configfile", cfg)
    assert _tree(results_copy / "results") == before
    # planned twice, the same stamp name: the refresh is fixed by the inputs, not by the time
    again = snakemake(results_copy, "-n", "--configfile", cfg)
    stamps = set(re.findall(r"plan/[0-9a-f]{16}-refresh-[0-9a-f]{8}\.json", out.stdout + out.stderr))
    assert len(stamps) == 1 and stamps == set(re.findall(r"plan/\S+-refresh-\S+\.json", again.stdout + again.stderr))


def test_a_second_workflow_on_a_busy_results_folder_stops_before_any_job(results_copy):
    """Two workflows from two working folders on one results folder: Snakemake's own lock is per working
    folder. The second one stops before its first job, naming the owner, and changes nothing."""
    cfg = str(results_copy / "config.yaml")
    results = results_copy / "results"
    metrics = next((results / "runs").glob("syn/cvm_cervix/none/seed0/metrics.json"))
    os.utime(metrics, (metrics.stat().st_atime, metrics.stat().st_mtime + 5))  # work to do: the report
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cvm_cervix.owner import hold_results\n"
            "hold_results(sys.argv[1]); print('held', flush=True); time.sleep(120)",
            str(results),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline().strip() == "held"
        before = _tree(results)
        proc = snakemake(results_copy, "--configfile", cfg, check=False)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert (
            f"results folder results is in use by pid {owner.pid} on " in text and "another workflow runs on it" in text
        )
        assert "Removing output files" not in text and _tree(results) == before
    finally:
        owner.kill()
        owner.wait()
    done = snakemake(results_copy, "--configfile", cfg)  # the owner has ended: this one runs
    assert "report" in job_counts(done.stdout + done.stderr)
    # the report made again through a stamp of a new name keeps that stamp: the jobs' inputs stay the same
    again = snakemake(results_copy, "-n", "--configfile", cfg)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_no_interval_in_the_report_has_zero_width(finished):
    """Every interval the report shows has a width ([a–b], "a – b", "a to b"): where a method would give
    one of zero width the report shows none."""
    html = (finished / "results" / "report.html").read_text()
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S))
    number = r"[-+]?\d+(?:\.\d+)?"
    pairs = re.findall(rf"\[({number})–({number})\]", text)
    pairs += re.findall(rf"(?<![\d.])({number}) – ({number})(?![\d.])", text)
    pairs += re.findall(rf"(?<![\d.])({number}) to ({number})(?![\d.])", text)
    assert len(pairs) > 20
    assert [p for p in pairs if float(p[0]) >= float(p[1])] == []
