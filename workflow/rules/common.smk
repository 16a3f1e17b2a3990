# Config validation and input helpers shared by every rule file.
import importlib.util
import os
import re
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.exceptions import WorkflowError

from cvm_cervix.data import listing_digest
from cvm_cervix.config import (
    Run,
    all_runs,
    as_dict,
    experiment_runs,
    experiment_seeds,
    init_source,
    run_settings,
    start_label,
    transfer_pairs,
    used_datasets,
    validate_config,
)
from cvm_cervix.errors import CvmError
from cvm_cervix.status import LOGS

import warnings

try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_config(
            config,
            source=", ".join(map(str, workflow.configfiles)) or "the config",
            # Snakemake parses before it knows about -n: missing roots warn here, so a dry run can
            # plan before the data is there, and stop the prepare job (the first to need them).
            require_roots=False,
        )
except CvmError as err:
    raise WorkflowError(f"error: {err}") from None
for warning in caught:
    print(f"warning: {warning.message}", file=sys.stderr)

RESULTS = config["results"]
TRAIN = config["train"]
IMG = TRAIN["img_size"]
RUNS = all_runs(config)
# What one run depends on: changing the seed list or another model's weights must not retrain it,
# and neither must where it runs (device) or how the step is compiled: scripts read those from the
# config, so they are not params and never trigger a rerun.
NOT_RUN_SETTINGS = ("seeds", "weights", "device", "compile", "weights_cache")


def wildcards_run(wildcards):
    return Run(wildcards.dataset, wildcards.model, wildcards.augment, int(wildcards.seed))


def train_settings(wildcards):
    """The run's settings (its variant's keys put in): a param, so changing them retrains that run."""
    return run_settings(config, wildcards_run(wildcards), exclude=NOT_RUN_SETTINGS)
DATASETS = used_datasets(config)



wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)) or "NONE",
    model=r"[A-Za-z0-9_]+",
    augment=r"(none|flip4x)(\+[A-Za-z0-9][A-Za-z0-9_-]*)?",  # a variant's runs: none+amp
    seed=r"\d+",
    precision="fp16|bf16|int8_dynamic|int8|onnx",
    experiment="|".join(map(re.escape, config["experiments"])),
    target="|".join(map(re.escape, DATASETS)) or "NONE",


def dataset_spec(wildcards):
    return as_dict(config["datasets"][wildcards.dataset])


def prepare_input(wildcards):
    """Synthetic data is generated first; a combined set needs its parts' manifests."""
    spec = config["datasets"][wildcards.dataset]
    if spec["kind"] == "synthetic":
        return {"root": f"{RESULTS}/synthetic/{wildcards.dataset}"}
    if spec["kind"] == "combined":
        return {
            f"part_{p}": f"{RESULTS}/data/{p}/manifest.csv" for p in spec["parts"]
        }
    return {}


def dataset_listing(wildcards):
    """A digest of the names, sizes and mtimes under a real dataset's root: images added to or removed
    from the folder change this param, so prepare runs again and, through the manifest, what depends on it."""
    spec = config["datasets"][wildcards.dataset]
    if spec["kind"] in ("synthetic", "combined"):
        return ""
    return listing_digest(spec.get("root") or "")


def dataset_root(wildcards, input):
    spec = config["datasets"][wildcards.dataset]
    if spec["kind"] == "synthetic":
        return input.root
    return spec.get("root", "")


def combined_parts(wildcards):
    spec = config["datasets"][wildcards.dataset]
    return {p: f"{RESULTS}/data/{p}" for p in spec.get("parts") or []}


def run_dir(run):
    return f"{RESULTS}/{run.path}"


def train_weights(wildcards):
    return TRAIN["weights"].get(wildcards.model) or ""


def pretrained_marker(wildcards):
    """With train.pretrained, training waits for the weights step (which fetches every file first);
    a model started from a local train.weights file needs no download."""
    settings = train_settings(wildcards)
    if not settings["pretrained"] or settings.get("init_from") or TRAIN["weights"].get(wildcards.model):
        return []
    return [f"{RESULTS}/weights/{wildcards.model}.json"]


def init_input(wildcards):
    """A variant with init_from starts from another run's trained weights: that run is trained first."""
    source = init_source(config, wildcards_run(wildcards))
    if source is None:
        return {}
    return {"init_weights": f"{run_dir(source)}/weights.safetensors", "init_info": f"{run_dir(source)}/train.json"}


def first_seed_runs(flag):
    """Runs (the experiment's first seed) of every experiment that switches ``flag`` on."""
    return sorted(
        {
            r
            for name, exp in config["experiments"].items()
            if exp.get(flag)
            for r in experiment_runs(config, name)
            if r.seed == experiment_seeds(config, name)[0]
        }
    )


def compress_jobs():
    """(run, precision) of every compression the experiments ask for (the experiment's first seed)."""
    return sorted(
        {
            (r, p)
            for name, exp in config["experiments"].items()
            for r in experiment_runs(config, name)
            if r.seed == experiment_seeds(config, name)[0]
            for p in exp["compress"]
        }
    )


COMPRESS_RULE = {"fp16": "compress_half", "bf16": "compress_half", "int8": "compress_onnx",
                 "onnx": "compress_onnx", "int8_dynamic": "compress_dynamic"}


def compress_targets():
    return [f"{run_dir(r)}/compressed/{p}/metrics.json" for r, p in compress_jobs()]


def analysis_targets():
    return [f"{run_dir(r)}/analysis/gallery.json" for r in first_seed_runs("analysis")] + [
        f"{run_dir(r)}/analysis/tsne.csv" for r in first_seed_runs("analysis")
    ]


def stats_runs(experiment):
    """The experiment's runs plus the reference model's runs they are compared with."""
    reference = config["analysis"]["reference"]
    runs = set(experiment_runs(config, experiment))
    for r in list(runs):
        ref = Run(r.dataset, reference, r.augment, r.seed)
        if ref in RUNS:
            runs.add(ref)
    return sorted(runs)


def stats_inputs(wildcards):
    return [f"{run_dir(r)}/predictions_test.csv" for r in stats_runs(wildcards.experiment)]


def stats_params(wildcards):
    return [
        {
            "model": r.model,
            "augment": r.augment,
            "seed": r.seed,
            "predictions": f"{run_dir(r)}/predictions_test.csv",
            # where its weights start and on how much of the training split: start-vs-start contrasts
            "start": start_label(config, r),
            "train_fraction": run_settings(config, r).get("train_fraction", 1.0),
        }
        for r in stats_runs(wildcards.experiment)
    ]


def benchmark_files():
    """The benchmark file of every job the report depends on (wall time per rule in its provenance)."""
    bench = f"{RESULTS}/benchmarks"
    job = lambda r: f"{r.dataset}/{r.model}_{r.augment}_seed{r.seed}"  # noqa: E731
    files = [f"{bench}/prepare/{d}.tsv" for d in DATASETS]
    files += [f"{bench}/synthesize/{d}.tsv" for d in DATASETS if config["datasets"][d]["kind"] == "synthetic"]
    files += [f"{bench}/cache/{d}_{IMG}.tsv" for d in sorted({r.dataset for r in RUNS})]
    files += [f"{bench}/{rule}/{job(r)}.tsv" for r in RUNS for rule in ("train", "evaluate")]
    files += [f"{bench}/analyse/{job(r)}.tsv" for r in first_seed_runs("analysis")]
    files += [f"{bench}/stats/{e}.tsv" for e in config["experiments"]]
    files += [f"{bench}/{COMPRESS_RULE[p]}/{job(r)}_{p}.tsv" for r, p in compress_jobs()]
    files += [f"{bench}/transfer_predict/{job(r)}_on_{t}.tsv" for _, r, t in transfer_pairs(config)]
    files += [f"{bench}/transfer_matrix/matrix.tsv"] if config.get("transfer") else []
    return files


def transfer_mapping():
    from cvm_cervix.transfer import resolve_mapping

    return resolve_mapping(as_dict(config), config["transfer"]["mapping"])


def transfer_entries():
    """Every cell of the transfer matrix: the source run, the target dataset, the predictions file."""
    return [
        {"source": name, "source_dataset": run.dataset, "target": target,
         "predictions": f"{run_dir(run)}/transfer/{target}.csv"}
        for name, run, target in transfer_pairs(config)
    ]


def report_inputs(wildcards):
    runs = [run_dir(r) for r in RUNS]
    extra = {"transfer": [f"{RESULTS}/transfer/matrix.json"]} if config.get("transfer") else {}
    return {
        **extra,
        "benchmarks": benchmark_files(),
        "stats": [f"{RESULTS}/stats/{e}.json" for e in config["experiments"]],
        "compressed": compress_targets(),
        "analysis": analysis_targets(),
        "metrics": [f"{r}/metrics.json" for r in runs],
        "history": [f"{r}/history.csv" for r in runs],
        "train": [f"{r}/train.json" for r in runs],
        "summaries": [f"{RESULTS}/data/{d}/summary.json" for d in DATASETS],
        "manifests": [f"{RESULTS}/data/{d}/manifest.csv" for d in DATASETS],
    }


def incomplete_report():
    """After a failed job (with --keep-going: once every job that does not depend on it has run), the
    report of everything that finished, each missing result named with its rule, log and error line."""
    from cvm_cervix.report import build_report, restore_last_complete

    # Snakemake does not look behind an output that is newer than every input it has (a missing input
    # of an existing output never reruns it), so an incomplete report is dated just before the oldest
    # input it was made from: the next run of the same command sees it out of date, makes what is
    # missing and replaces it with the complete report.
    inputs = [Path(f) for files in report_inputs(None).values() for f in files if Path(f).exists()]
    oldest = min(f.stat().st_mtime for f in inputs) - 1 if inputs else None
    try:
        context = build_report(
            as_dict(config), f"{RESULTS}/report.html", results=RESULTS, files_dir=f"{RESULTS}/report_files",
            configfiles=[str(f) for f in workflow.configfiles], workflow_dir=workflow.basedir,
            benchmarks=[f for f in benchmark_files() if Path(f).is_file()],
        )
    except Exception as err:  # the report itself failed: say so, and keep the last complete report
        kept = restore_last_complete(f"{RESULTS}/report.html", oldest)
        print(f"error: the report could not be written ({type(err).__name__}: {err}); see {RESULTS}/{LOGS['report']}"
              + (f"; {RESULTS}/report.html is the last complete report, from before" if kept else ""), file=sys.stderr)
        return
    gap = context["incomplete"]
    if gap and inputs:
        os.utime(f"{RESULTS}/report.html", (oldest, oldest))
    elif gap:  # nothing it needs was made (every dataset failed): a report of nothing would never be rebuilt
        Path(f"{RESULTS}/report.html").unlink(missing_ok=True)
        print(f"\nno report was written: nothing it needs was made", file=sys.stderr)
    if gap:
        print(f"\n{RESULTS}/report.html is INCOMPLETE: {gap['runs_missing']} of {gap['runs_total']} training runs "
              f"missing, {len(gap['failures'])} result(s) in all; each is named there with the job that failed, its log "
              "and its error (below, the first 20)",
              file=sys.stderr)
        for f in gap["failures"][:20]:
            print(f"  {f['what']}: {f['rule']} job, {f['error']} (log {RESULTS}/{f['log']})", file=sys.stderr)
