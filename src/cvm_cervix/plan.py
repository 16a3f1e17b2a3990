"""The workflow's plan: which jobs a config asks for.

:class:`Plan` decides which runs, compress jobs, analyses, statistics, transfer cells and report inputs
a config asks for, named by the path table of ``paths.py``; it is plain Python, so it is unit-tested
(``tests/test_plan.py``) and the rule files only turn it into file names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .models import get_model_spec
from .paths import path, run_values
from .runs import (
    Run,
    all_runs,
    as_dict,
    base_dataset,
    dataset_spec,
    experiment_dataset,
    experiment_runs,
    experiment_seeds,
    init_source,
    run_settings,
    start_label,
    transfer_pairs,
    used_datasets,
)
from .settings import NOT_SETTINGS, TrainSettings

# The layout of stats/<experiment>.json: a param of the statistics rule, so a results folder whose statistics
# an earlier version computed gets them computed again, and the report refuses a file of another layout.
STATS_FORMAT = 4

# Keys of the config that say where results go and which GPU computes them, not what the report shows.
NOT_PLAN_KEYS = ("results", "gpu")


def plan_digest(config: dict) -> str:
    """A short digest of the validated config (defaults filled in), less where results go and which GPU
    runs: the plan a report covers, named in its stamp file ``plan/<digest>.json`` and in the report."""
    text = json.dumps({k: v for k, v in as_dict(config).items() if k not in NOT_PLAN_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CompressJob:
    run: Run
    precision: str


class Plan:
    """What a (validated) config asks the workflow to make."""

    def __init__(self, config: dict):
        self.config = config
        self.runs: list[Run] = all_runs(config)
        self.datasets: list[str] = used_datasets(config)
        # every value the dataset wildcard takes: a split of a synthetic set reads its base's rendered
        # images, so the base is one even where no run uses its own split
        self.dataset_names: list[str] = sorted(set(self.datasets) | {base_dataset(config, d) for d in self.datasets})
        self.digest = plan_digest(config)
        # the name of the plan's stamp file (plan/<stamp>.json): the digest, or with a refresh token after it
        # when the report on disk is not this plan's report of the current files (see :meth:`refresh`)
        self.stamp = self.digest

    def refresh(self, why: str, fingerprint: str) -> None:
        """Name the stamp ``<digest>-refresh-<token>``, a file that does not exist yet, so that its rule, and
        the report, statistics and transfer matrix that read it, run again. Nothing is written here: a dry
        run plans the same jobs and leaves the results folder as it was. The token is fixed by ``why`` and
        the current inputs' ``fingerprint``, so planning twice gives one name, and a report made from those
        inputs is current at the next planning (the stamp is back to the digest alone)."""
        token = hashlib.sha256(f"{why}\n{fingerprint}".encode()).hexdigest()[:8]
        self.stamp = f"{self.digest}-refresh-{token}"

    # -- runs ----------------------------------------------------------------------------------------
    def experiment_runs(self, experiment: str) -> list[Run]:
        return experiment_runs(self.config, experiment)

    def first_seed_runs(self, experiment: str) -> list[Run]:
        """The experiment's runs at its first seed and split: the ones compressed, analysed and shown in detail."""
        first, dataset = experiment_seeds(self.config, experiment)[0], experiment_dataset(self.config, experiment)
        return [r for r in self.experiment_runs(experiment) if r.seed == first and r.dataset == dataset]

    def flagged_runs(self, flag: str) -> list[Run]:
        """First-seed runs of every experiment that switches ``flag`` on (``analysis``)."""
        return sorted(
            {r for name, exp in self.config["experiments"].items() if exp.get(flag) for r in self.first_seed_runs(name)}
        )

    def init_source(self, run: Run) -> Run | None:
        return init_source(self.config, run)

    def train_params(self, run: Run) -> dict:
        """The run's settings (its variant's keys put in) that decide its result: changing one retrains it
        (``TrainSettings.params``). Not among them: the seed list or another model's weights, and neither
        where it runs (device) nor how the step is compiled or where weights are cached (the training
        script reads those from the config, so they never trigger a rerun)."""
        settings = TrainSettings.of(run_settings(self.config, run, exclude=NOT_SETTINGS))
        return settings.params(get_model_spec(run.model).mlp_head)

    def needs_pretrained(self, run: Run) -> bool:
        """Whether the run waits for the weights step: ImageNet weights, not a local file or another run."""
        settings = run_settings(self.config, run)
        return bool(
            settings["pretrained"]
            and not settings.get("init_from")
            and not self.config["train"]["weights"].get(run.model)
        )

    # -- jobs after training ---------------------------------------------------------------------------
    def compress_jobs(self) -> list[CompressJob]:
        """Every compression the experiments ask for (each experiment's first seed), sorted."""
        jobs = {
            (r, p)
            for name, exp in self.config["experiments"].items()
            for r in self.first_seed_runs(name)
            for p in exp.get("compress") or []
        }
        return [CompressJob(r, p) for r, p in sorted(jobs)]

    def analysis_runs(self) -> list[Run]:
        return self.flagged_runs("analysis")

    def robustness_runs(self) -> list[Run]:
        return self.flagged_runs("robustness")

    def stats_runs(self, experiment: str) -> list[Run]:
        """The experiment's runs plus the reference model's runs they are compared with."""
        reference = self.config["analysis"]["reference"]
        runs = set(self.experiment_runs(experiment))
        planned = set(self.runs)
        for r in list(runs):
            ref = Run(r.dataset, reference, r.recipe, r.seed)
            if ref in planned:
                runs.add(ref)
        return sorted(runs | set(self.baseline_runs(experiment)))

    def stats_robustness_runs(self, experiment: str) -> list[Run]:
        """The experiment's runs whose robustness its statistics compare: its first-seed runs where it asks
        for robustness and a model has several recipes."""
        if not self.config["experiments"][experiment].get("robustness"):
            return []
        runs = self.first_seed_runs(experiment)
        recipes = {m: {r.recipe for r in runs if r.model == m} for m in {r.model for r in runs}}
        return [r for r in runs if len(recipes[r.model]) > 1]

    def baseline_runs(self, experiment: str) -> list[Run]:
        """The runs of the experiment's ``baseline`` experiment (its first split, every seed) of the models and
        recipes it has: the other arm of each baseline gap; none without a baseline."""
        base = self.config["experiments"][experiment].get("baseline")
        if not base:
            return []
        ours = {(r.model, r.recipe) for r in self.experiment_runs(experiment)}
        dataset = experiment_dataset(self.config, base)
        return [r for r in self.experiment_runs(base) if (r.model, r.recipe) in ours and r.dataset == dataset]

    def stats_entries(self, experiment: str, results: str) -> list[dict]:
        """What the statistics of ``experiment`` read: each run's test predictions and how it started."""
        baseline = set(self.baseline_runs(experiment)) - set(self.experiment_runs(experiment))
        robust = set(self.stats_robustness_runs(experiment))
        return [
            {
                "model": r.model,
                "recipe": r.recipe,
                "seed": r.seed,
                "dataset": r.dataset,
                "split_seed": dataset_spec(self.config, r.dataset).get("split_seed", 0),
                # test images per training image: the corrected resampled t-test over splits needs it
                "test_train_ratio": self._test_train_ratio(r),
                "predictions": path("predictions_test", results, r),
                "predictions_val": path("predictions_val", results, r),
                # its test images' source dataset and other columns: the per-source metrics
                "manifest": path("manifest", results, dataset=r.dataset),
                # where its weights start and on how much of the training split: start-vs-start contrasts
                "start": start_label(self.config, r),
                "train_fraction": run_settings(self.config, r).get("train_fraction", 1.0),
                # the other arm of a baseline gap, not one of the experiment's runs
                **({"arm": "baseline"} if r in baseline else {}),
                # its test split under slide variation (robustness: true, first seed): recipes compared pairwise
                **({"robustness": path("robustness", results, r)} if r in robust else {}),
            }
            for r in self.stats_runs(experiment)
        ]

    def _test_train_ratio(self, run: Run) -> float:
        fractions = dataset_spec(self.config, run.dataset).get("split_fractions", (0.6, 0.2, 0.2))
        return fractions[2] / (fractions[0] * run_settings(self.config, run).get("train_fraction", 1.0))

    def transfer_cells(self) -> list[tuple[str, Run, str]]:
        """(source name, source run, target dataset) of every cell of the transfer matrix."""
        return transfer_pairs(self.config)

    def transfer_entries(self, results: str) -> list[dict]:
        return [
            {
                "source": name,
                "source_dataset": run.dataset,
                "target": target,
                "predictions": path("transfer_predictions", results, run, target=target),
            }
            for name, run, target in self.transfer_cells()
        ]

    # -- the report -----------------------------------------------------------------------------------------
    def benchmark_files(self, results: str) -> list[str]:
        """The benchmark file of every job the report depends on (wall time per rule in its provenance)."""
        from .precisions import PRECISIONS  # precisions.py reads this module's table of paths

        size = self.config["train"]["img_size"]
        b = lambda key, **v: path(key, results, table="benchmark", **v)  # noqa: E731
        files = [b("prepare", dataset=d) for d in self.datasets]
        files += [
            b("synthesize", dataset=d)
            for d in self.datasets
            if d in self.config["datasets"] and self.config["datasets"][d]["kind"] == "synthetic"
        ]
        files += [b("cache", dataset=d, size=size) for d in sorted({r.dataset for r in self.runs})]
        files += [b(rule, **run_values(r)) for r in self.runs for rule in ("train", "evaluate")]
        files += [b("analyse", **run_values(r)) for r in self.analysis_runs()]
        files += [b("robustness", **run_values(r)) for r in self.robustness_runs()]
        files += [b("stats", experiment=e) for e in self.config["experiments"]]
        files += [
            b(PRECISIONS[j.precision].rule, precision=j.precision, **run_values(j.run)) for j in self.compress_jobs()
        ]
        files += [b("transfer_predict", target=t, **run_values(r)) for _, r, t in self.transfer_cells()]
        files += [b("transfer_matrix")] if self.config.get("transfer") else []
        return files

    def report_inputs(self, results: str) -> dict[str, list[str]]:
        """Every file the report is made from, by kind: the report rule's input."""
        p = lambda key, run=None, **v: path(key, results, run, **v)  # noqa: E731
        extra = {"transfer": [p("transfer_matrix")]} if self.config.get("transfer") else {}
        return {
            "plan": [p("plan", digest=self.stamp)],
            **extra,
            "benchmarks": self.benchmark_files(results),
            "stats": [p("stats", experiment=e) for e in self.config["experiments"]],
            "compressed": [p("compressed_metrics", j.run, precision=j.precision) for j in self.compress_jobs()],
            "analysis": [p(key, r) for r in self.analysis_runs() for key in ("gallery", "gallery_images", "tsne")],
            "robustness": [p("robustness", r) for r in self.robustness_runs()],
            # a compressed run's float32 file: its size is the table's float32 row
            "weights": sorted({p("weights", j.run) for j in self.compress_jobs()}),
            "metrics": [p("metrics", r) for r in self.runs],
            "history": [p("history", r) for r in self.runs],
            "train": [p("train_info", r) for r in self.runs],
            "summaries": [p("summary", dataset=d) for d in self.datasets],
            "manifests": [p("manifest", dataset=d) for d in self.datasets],
            "classes": [p("classes", dataset=d) for d in self.datasets],
            # the decoded images of each trained-on set: the data section's example images per class
            "caches": [p("cache", dataset=d, size=self.config["train"]["img_size"]) for d in self.cached_datasets()],
        }

    def cached_datasets(self) -> list[str]:
        """The datasets whose images are decoded into a cache: those runs train on."""
        return sorted({r.dataset for r in self.runs})


def write_plan(config: dict, out: str | Path, configfiles: list[str] | None = None, why: str | None = None) -> dict:
    """The plan's stamp file: its digest, the config files and validated config, and every training run.

    ``why``: the reason it is written anew over an existing one (a report on disk that is not current);
    with the time, it makes the new file's content differ, so Snakemake sees it as changed."""
    import datetime

    from ._io import write_json

    plan = Plan(config)
    record = {
        "digest": plan.digest,
        "configfiles": list(configfiles or []),
        "experiments": list(config["experiments"]),
        "runs": [r.path for r in plan.runs],
        "written": datetime.datetime.now().isoformat(),
        "why": why,
        "config": as_dict(config),
    }
    write_json(out, record)
    return record
