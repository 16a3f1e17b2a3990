"""The paper's own run, rehearsed: config/paper.yaml as it is (every experiment, 23 models and the
ablation, variants, fine-tuning, transfer, the weights step, compression, analysis, statistics, the
report), on tiny datasets in the official layouts and a cache of public-shaped weight files, with
an override file that sets only the roots, epochs, image size and the cache.

First with one model's weights file unusable: the same command trains every other run and writes a
report that names the missing run, its rule, log and error. Then with the file replaced: the same
command again runs only what was missing and replaces it with the complete report of 47 runs.
"""

import json
import os
import shutil

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from layouts import make_cric_full, make_herlev, make_pbc, make_sipakmed
from test_workflow import job_counts, snakemake

from cvm_cervix.config import validate_config
from cvm_cervix.runs import all_runs

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

PAPER = REPO / "config" / "paper.yaml"
# The smallest size every model of the paper takes (>= 75, a multiple of 32 for BoTNet);
# benchmarks/paper_rehearsal.sh runs the same at the paper's 224 px on a GPU machine.
REHEARSAL_SIZE = int(os.environ.get("CVM_REHEARSAL_SIZE", "96"))
REHEARSAL_GPUS = os.environ.get("CVM_REHEARSAL_GPUS")
BROKEN = "alexnet"  # its weights file is replaced by one of another network first


def paper_plan() -> dict:
    config = yaml.safe_load(PAPER.read_text())
    for spec in config["datasets"].values():
        spec.pop("root", None)
    validate_config(config, require_roots=False)
    return config


def test_the_papers_plan_counts_are_the_ones_readme_gives(tmp_path):
    """README and BENCHMARKS give the plan's counts; they come from the plan, not from memory."""
    proc = snakemake(tmp_path, "-n", "--configfile", str(PAPER), check=True)
    counts = job_counts(proc.stdout + proc.stderr)
    runs = len(all_runs(paper_plan()))
    gpu = sum(
        counts.get(r, 0) for r in ("train", "evaluate", "transfer_predict", "analyse", "compress_half", "robustness")
    )
    assert (runs, counts["train"], counts["total"]) == (47, 47, 158) and gpu == 105
    readme = (REPO / "README.md").read_text()
    assert f"{runs} training runs, {counts['total']} jobs ({gpu} of them on the GPU)" in readme
    assert f"{runs} training runs" in (REPO / "BENCHMARKS.md").read_text()


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, public_cache):
    cache, written = public_cache
    base = tmp_path_factory.mktemp("paper")
    roots = {
        "sipakmed": make_sipakmed(base / "SIPaKMeD", clusters=3, cells=2),  # 6 cells per class, .dat outlines
        "cric": make_cric_full(base / "CRIC", per_class=6),  # full images + classifications.csv
        "herlev": make_herlev(base / "smear2005", per_class=3),  # 7 folders, -d.bmp masks beside
        "pbc": make_pbc(
            base / "PBC",
            per_class=5,
            classes=(
                "basophil",
                "eosinophil",
                "erythroblast",
                "ig",
                "lymphocyte",
                "monocyte",
                "neutrophil",
                "platelet",
            ),
        ),
    }
    overrides = {
        "datasets": {name: {"root": str(root)} for name, root in roots.items()},
        "train": {"epochs": 1, "img_size": REHEARSAL_SIZE, "weights_cache": str(cache)},
    }
    (base / "mine.yaml").write_text(yaml.safe_dump(overrides))
    # one model's weights file made unusable: another network's tensors under its name
    good = cache / "torch" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    saved = base / "alexnet.pth"
    shutil.copy(good, saved)
    torch.save(written["resnet18-f37072fd.pth"], good)
    # on CI's 2 cores, two one-thread jobs at once (the helper's default; tiny jobs: most of their time is
    # starting Python)
    command = (
        "--workflow-profile",
        str(REPO / "profiles" / "default"),
        "--configfile",
        str(PAPER),
        str(base / "mine.yaml"),
        *(["--resources", f"gpu={REHEARSAL_GPUS}"] if REHEARSAL_GPUS else []),
    )
    env = {"HF_HUB_OFFLINE": "1"}
    first = snakemake(base, *command, check=False, env=env)
    incomplete = {
        "html": (base / "results" / "report.html").read_text() if (base / "results" / "report.html").exists() else "",
        "files": sorted(p.name for p in (base / "results" / "report_files").glob("*")),
        "done": [r for r in all_runs(paper_plan()) if (base / "results" / r.path / "metrics.json").is_file()],
    }
    shutil.copy(saved, good)  # the right file again: the same command finishes the rest
    second = snakemake(base, *command, check=False, env=env)
    return base, first, incomplete, second


def test_one_unusable_weights_file_costs_only_its_run(rehearsal):
    base, first, incomplete, _ = rehearsal
    assert first.returncode != 0  # the workflow says it failed
    log = first.stdout + first.stderr
    assert "results/report.html is INCOMPLETE: 1 of 47 training runs missing" in log
    html = incomplete["html"]
    assert "INCOMPLETE REPORT" in html[: html.index('id="data"')]  # on the first screen, before any table
    run = f"runs/combined/{BROKEN}/none/seed0"
    row = html[html.index(f'<td class="l">{run}</td>') :]
    row = row[: row.index("</tr>")]
    assert "<code>weights</code>" in row and "logs/weights/alexnet.log" in row
    assert f"do not fit this model at img_size {REHEARSAL_SIZE}" in row
    assert "16 tensors missing (first: features.0.weight); 122 unexpected tensors (first: conv1.weight)" in row
    # every other run was trained and evaluated (weights, train, evaluate: none of them waited on alexnet)
    runs, done = all_runs(paper_plan()), incomplete["done"]  # what the first run had made
    assert len(runs) == 47 and len(done) == 46 and all(r.model != BROKEN for r in done)
    # the table that needs the run marks it, the others are whole
    assert html.count('class="missing"') >= 3  # the comparison's validation and test rows, and its cost row
    assert "report__missing.csv" in incomplete["files"]


def test_the_same_command_then_completes_the_report(rehearsal):
    base, _, _, second = rehearsal
    assert second.returncode == 0, second.stderr[-3000:]
    counts = job_counts(second.stdout + second.stderr)
    # only what was missing: alexnet's weights, training and evaluation, then its statistics and the report
    assert counts.get("train") == 1 and counts.get("weights") == 1 and "prepare" not in counts
    html = (base / "results" / "report.html").read_text()
    assert "INCOMPLETE REPORT" not in html and "<title>INCOMPLETE" not in html and 'class="missing"' not in html
    assert not (base / "results" / "report_files" / "report__missing.csv").exists()


def test_the_rehearsal_ran_the_papers_whole_plan(rehearsal):
    base, _, _, _ = rehearsal
    results = base / "results"
    config = paper_plan()
    runs = all_runs(config)
    html = (results / "report.html").read_text()
    for run in runs:  # every run named in the report, each with its metrics
        metrics = json.loads((results / run.path / "metrics.json").read_text())
        assert metrics["test"]["accuracy"] >= 0
    assert {r.model for r in runs} >= {"cvm_cervix", "cvm_cervix_distilled", "botnet", "t2t_vit", "inception_resnet_v1"}
    for model in {r.model for r in runs}:
        from cvm_cervix.models import get_model_spec

        assert (
            get_model_spec(model).paper_name.replace("×", "&#215;") in html or get_model_spec(model).paper_name in html
        )
    # the weights step recorded each public-shaped file it found, before any training
    records = sorted(p.stem for p in (results / "weights").glob("*.json"))
    assert len(records) == 24 and "botnet" in records
    for name in ("combined", "herlev", "pbc", "sipakmed", "cric"):
        assert (results / "data" / name / "manifest.csv").is_file()
    # the official layouts were read as such: SIPaKMeD's cells only, Herlev's masks left out, CRIC cut
    sip = pd.read_csv(results / "data" / "sipakmed" / "manifest.csv", keep_default_na=False)
    assert len(sip) == 5 * 6 and sip["path"].str.contains("CROPPED").all()
    herlev = pd.read_csv(results / "data" / "herlev" / "manifest.csv", keep_default_na=False)
    assert len(herlev) == 7 * 3 and not herlev["path"].str.endswith("-d.bmp").any()
    assert len(list((results / "data" / "cric" / "crops").rglob("*.png"))) == 6 * 6
    # CRIC as the paper balanced it: Table 1's limits, and the tiny release short of every one, said so
    summary = json.loads((results / "data" / "cric" / "summary.json").read_text())
    assert summary["class_limits"]["NILM"] == {"asked": 862, "found": 6, "kept": 6}
    assert "Fewer images than asked" in html and "NILM (6 of 862)" in html
    # compression, analysis, transfer and statistics of the paper's plan
    main = results / "runs" / "combined" / "cvm_cervix" / "none" / "seed0"
    for precision in ("fp16", "bf16", "int8", "int8_dynamic", "onnx"):
        assert (main / "compressed" / precision / "metrics.json").is_file()
    assert (main / "analysis" / "tsne.csv").is_file() and (main / "analysis" / "gallery.json").is_file()
    matrix = json.loads((results / "transfer" / "matrix.json").read_text())
    assert len(matrix["cells"]) == 4
    assert sorted(p.stem for p in (results / "stats").glob("*.json")) == sorted(config["experiments"])
    finetune = json.loads(
        (results / "runs" / "herlev" / "cvm_cervix" / "none+from_combined" / "seed0" / "train.json").read_text()
    )
    assert finetune["init_from"]["run"].endswith("runs/combined/cvm_cervix/none/seed0")
