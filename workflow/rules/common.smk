# Config validation, then the plan (cvm_cervix.plan, unit-tested) turned into the file names rules declare.
import functools
import importlib.util
import os
import re
import sys
from pathlib import Path

# The one place the package is found for a checkout used without `pip install .` (or with `--sdm conda`,
# whose environment has the dependencies but not the package): its src/, for this process and, through
# PYTHONPATH, for every job it starts. Scripts and the library import the package and nothing else.
# The workflow's own folder (workflow/), wherever the Snakefile that includes it stands: the top-level
# Snakefile, workflow/Snakefile, or a module's.
WORKFLOW_DIR = Path(str(workflow.current_basedir)).parent
if importlib.util.find_spec("cvm_cervix") is None:
    _SRC = str(WORKFLOW_DIR.parent / "src")
    sys.path.insert(0, _SRC)
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p))

from snakemake.exceptions import WorkflowError

from cvm_cervix.config import validate_config
from cvm_cervix.runs import AUGMENTS, Run, as_dict, dataset_spec
from cvm_cervix.configfile import read_config_file
from cvm_cervix.data import listing_digest
from cvm_cervix.errors import CvmError
from cvm_cervix.jobs import inputs as job_inputs
from cvm_cervix.labels import abnormal_classes, resolve_mapping
from cvm_cervix.owner import announce_workflow
from cvm_cervix.plan import STATS_FORMAT, Plan
from cvm_cervix.paths import pattern
from cvm_cervix.report_state import choose_stamp
from cvm_cervix.precisions import PRECISIONS, rule_artifact, rule_precisions

import warnings

try:
    for configfile in workflow.configfiles:  # Snakemake read them already, keeping the last of a key given twice
        read_config_file(configfile)
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
if workflow.is_main_process:  # its jobs tell whether it still runs when they finish (owner.keep_if_orphaned)
    announce_workflow()
TRAIN = config["train"]
IMG = TRAIN["img_size"]
PLAN = Plan(config)
DATASETS = PLAN.dataset_names


def check_report_state():
    """The plan's stamp, chosen when Snakemake plans with nothing written (report_state.choose_stamp): a
    new name when the report on disk is not current, so the report, statistics and transfer matrix are
    made again; each job's own process takes the name its Snakemake chose."""
    try:
        return choose_stamp(PLAN, RESULTS, main=workflow.is_main_process)
    except CvmError as err:
        raise WorkflowError(f"error: {err}") from None


check_report_state()


@functools.lru_cache(maxsize=None)
def folder_digest(root):
    return listing_digest(root)


def changed_dataset_folders():
    """Real datasets whose folder differs (names, sizes, dates) from the one their prepare step read (the
    digest in summary.json): each gets a listing stamp of the folder's new digest, which does not exist,
    so prepare runs again, and what depends on it, also where Snakemake has no records of the results
    (.snakemake/ removed). Nothing is written while planning. A summary without a digest (an older
    version) is left to Snakemake's own triggers."""
    import json

    changed = {}
    for name in PLAN.datasets:
        spec = dataset_spec(config, name)
        if spec["kind"] in ("synthetic", "combined") or not spec.get("root"):
            continue
        try:
            recorded = json.loads(Path(pattern("summary", RESULTS, dataset=name)).read_text()).get("listing_digest")
        except (OSError, ValueError):
            continue
        now = folder_digest(spec["root"]) if recorded else None
        if recorded and recorded != now:
            changed[name] = now
            print(
                f"note: the folder of dataset {name} changed since it was prepared; it is prepared again",
                file=sys.stderr,
            )
    return changed


CHANGED_DATASETS = changed_dataset_folders() if workflow.is_main_process else {}


def listing_stamp(wildcards):
    """The stamp of a real dataset's folder as it is now: an input of its prepare job where the folder
    changed since it was prepared (changed_dataset_folders), and kept as one once it exists (a stamp that
    came and went would change the job's list of inputs, which reruns it)."""
    spec = dataset_spec(config, wildcards.dataset)
    if spec["kind"] in ("synthetic", "combined") or not spec.get("root"):
        return []
    digest = CHANGED_DATASETS.get(wildcards.dataset) or folder_digest(spec["root"])
    stamp = pattern("listing", RESULTS, dataset=wildcards.dataset, digest=digest)
    return [stamp] if wildcards.dataset in CHANGED_DATASETS or Path(stamp).is_file() else []


def listing_root(wildcards):
    return dataset_spec(config, wildcards.dataset).get("root", "")


def register_module_handlers():
    """As a module: this workflow's onstart (one owner for the results folder) and onerror (the INCOMPLETE
    report) on the importing workflow, each after the handler that workflow set before `use rule`."""

    def chained(previous, ours):
        def handler(log):
            ours()
            previous(log)

        return handler

    workflow._onstart = chained(workflow._onstart, hold_results_folder)
    workflow._onerror = chained(workflow._onerror, incomplete_report)


def hold_results_folder():
    """Before the first job (onstart: never in a dry run): the results folder gets one owner, this
    Snakemake process, until it ends. A second workflow on the same folder stops here, before any job,
    with one line naming the owner, instead of failing jobs whose outputs Snakemake would then remove."""
    from cvm_cervix.owner import hold_results

    try:
        hold_results(RESULTS)
    except CvmError as err:
        raise WorkflowError(f"error: {err}") from None


def P(key, **fixed):
    """A path of the plan's table under the results folder; names not fixed stay wildcards."""
    return pattern(key, RESULTS, **fixed)


def minutes(base):
    """A job's time limit (the `runtime` resource, minutes): longer on each retry, so a job killed by a
    cluster's time limit comes back with more time. Memory and time live in each rule's `resources:`,
    so every executor sees them; profiles/slurm adds only the CPUs and the partition."""
    return lambda wildcards, attempt: base * attempt


def LOG(rule, **fixed):
    return pattern(rule, RESULTS, table="log", **fixed)


def BENCH(rule):
    return pattern(rule, RESULTS, table="benchmark")


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)) or "NONE",
    model=r"[A-Za-z0-9_]+",
    recipe="(" + "|".join(AUGMENTS) + r")(\+[A-Za-z0-9][A-Za-z0-9_-]*)?",  # augment, then a variant: none+amp
    seed=r"\d+",
    precision="|".join(p for p in PRECISIONS if p != "fp32"),
    experiment="|".join(map(re.escape, config["experiments"])),
    target="|".join(map(re.escape, DATASETS)) or "NONE",


def inputs_of(rule):
    """A job's inputs, by name, from the table of the workflow's jobs (cvm_cervix.jobs), for `unpack`."""

    def rule_inputs(wildcards):
        return job_inputs(PLAN, rule, RESULTS, **dict(wildcards.items()))

    return rule_inputs


def wildcards_run(wildcards):
    return Run(wildcards.dataset, wildcards.model, wildcards.recipe, int(wildcards.seed))


def train_settings(wildcards):
    return PLAN.train_params(wildcards_run(wildcards))


def prepare_spec(wildcards):
    """The dataset's spec; another split of it (an experiment's split_seeds) has its split seed put in."""
    return as_dict(dataset_spec(config, wildcards.dataset))


def dataset_listing(wildcards):
    """A digest of the names, sizes and mtimes under a real dataset's root: images added to or removed
    from the folder change this param, so prepare runs again and, through the manifest, what depends on it."""
    spec = dataset_spec(config, wildcards.dataset)
    if spec["kind"] in ("synthetic", "combined"):
        return ""
    return folder_digest(spec.get("root") or "")


def dataset_root(wildcards, input):
    spec = dataset_spec(config, wildcards.dataset)
    return input.root if spec["kind"] == "synthetic" else spec.get("root", "")


def combined_parts(wildcards):
    """A combined set's part names, in the config's order (their manifests are the job's inputs)."""
    return list(dataset_spec(config, wildcards.dataset).get("parts") or [])


def train_weights(wildcards):
    return TRAIN["weights"].get(wildcards.model) or ""


def stats_params(wildcards):
    return PLAN.stats_entries(wildcards.experiment, RESULTS)


def transfer_mapping():
    return resolve_mapping(as_dict(config), config["transfer"]["mapping"])


def report_inputs(wildcards):
    return PLAN.report_inputs(RESULTS)


def incomplete_report():
    from cvm_cervix.report import write_incomplete_report

    write_incomplete_report(
        as_dict(config),
        RESULTS,
        report_inputs(None),
        {"html": P("report"), "files": P("report_files"), "log": LOG("report")},
        [str(f) for f in workflow.configfiles],
        WORKFLOW_DIR,
    )
