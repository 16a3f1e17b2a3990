"""What of the plan a results folder holds, and for each thing missing, the job that failed and why.

The rules' log files are named in the plan's ``LOGS`` (relative to the results folder), the table the
rule files take their ``log:`` paths from, so the report of a failed run names the file Snakemake
wrote. A run is missing when a file of its training or evaluation is; its failure is the first job of its chain
(synthesize, prepare, cache, weights, the run it starts from, train, evaluate) whose output is
absent, with the error line of that job's log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Run, base_dataset, dataset_spec
from .plan import LOGS, Plan, path, run_values


@dataclass(frozen=True)
class Failure:
    """Why something the plan asks for is not in the results folder."""

    rule: str  # the first job of its chain whose output is missing
    log: str  # that job's log, relative to the results folder
    error: str  # the log's error line, or what is known when there is none

    def as_dict(self) -> dict:
        return asdict(self)


def error_line(log: Path) -> str:
    """The line of ``log`` that says what went wrong: the workflow's one-line ``error:``, else the last
    line of a traceback, else the log's last line."""
    if not log.is_file():
        return "the job did not run (an earlier job failed, or the workflow stopped before it)"
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")[:1000]
    if not lines:
        return "the job stopped without writing to its log (killed, out of memory, or a lost node?)"
    return lines[-1][:1000]


def _failure(results: Path, rule: str, **wildcards) -> Failure:
    log = LOGS[rule].format(**wildcards)
    return Failure(rule, log, error_line(results / log))


def _exists(results: Path, key: str, run: Run | None = None, **values) -> bool:
    return Path(path(key, results, run, **values)).exists()


def dataset_failure(config: dict, results: Path, name: str) -> Failure | None:
    """Why dataset ``name`` has no manifest (a combined set: the first of its parts that has none)."""
    if _exists(results, "manifest", dataset=name):
        return None
    spec = dataset_spec(config, name)
    if spec["kind"] == "combined":
        for part in spec.get("parts") or []:
            failure = dataset_failure(config, results, part)
            if failure:
                return failure
    source = base_dataset(config, name)  # another split of a dataset reads its synthetic images
    if spec["kind"] == "synthetic" and not _exists(results, "synthetic", dataset=source):
        return _failure(results, "synthesize", dataset=source)
    return _failure(results, "prepare", dataset=name)


# A run is there when every file of its training and its evaluation is: a failed retraining removes the
# training's files (Snakemake does, before the job) and leaves the old evaluation's, which is no result.
TRAIN_OUTPUTS = ("weights", "history", "train_info")
EVALUATE_OUTPUTS = ("metrics", "predictions_val", "predictions_test")


def run_failure(plan: Plan, results: Path, run: Run) -> Failure | None:
    """Why ``run`` lacks one of its training's or evaluation's files; None when it has them all."""
    trained = all(_exists(results, key, run) for key in TRAIN_OUTPUTS)
    if trained and all(_exists(results, key, run) for key in EVALUATE_OUTPUTS):
        return None
    if not trained:
        failure = dataset_failure(plan.config, results, run.dataset)
        if failure:
            return failure
        size = plan.config["train"]["img_size"]
        if not _exists(results, "cache", dataset=run.dataset, size=size):
            return _failure(results, "cache", dataset=run.dataset, size=size)
        source = plan.init_source(run)
        if source is not None:
            failure = (
                run_failure(plan, results, source)
                if not all(_exists(results, key, source) for key in TRAIN_OUTPUTS)
                else None
            )
            if failure:
                return failure
        elif plan.needs_pretrained(run) and not _exists(results, "pretrained", model=run.model):
            return _failure(results, "weights", model=run.model)
        return _failure(results, "train", **run_values(run))
    return _failure(results, "evaluate", **run_values(run))


def plan_status(config: dict, results: str | Path) -> dict:
    """Everything the report needs that is missing, with its :class:`Failure`.

    ``runs``: Run -> Failure; ``datasets``: name -> Failure; ``stats``: experiment -> Failure;
    ``compress``: (Run, precision) -> Failure; ``analysis``: Run -> Failure; ``transfer``: Failure or None.
    """
    results, plan = Path(results), Plan(config)
    status: dict = {"datasets": {}, "runs": {}, "stats": {}, "compress": {}, "analysis": {}, "transfer": None}
    for name in plan.datasets:
        failure = dataset_failure(config, results, name)
        if failure:
            status["datasets"][name] = failure
    for run in plan.runs:
        failure = run_failure(plan, results, run)
        if failure:
            status["runs"][run] = failure
    for name in config["experiments"]:
        if not _exists(results, "stats", experiment=name):
            status["stats"][name] = _upstream(status, plan.experiment_runs(name)) or _failure(
                results, "stats", experiment=name
            )
    for job in plan.compress_jobs():
        if not _exists(results, "compressed_metrics", job.run, precision=job.precision):
            status["compress"][(job.run, job.precision)] = status["runs"].get(job.run) or _failure(
                results, "compress", precision=job.precision, **run_values(job.run)
            )
    for run in plan.analysis_runs():
        if not all(_exists(results, key, run) for key in ("gallery", "tsne")):
            status["analysis"][run] = status["runs"].get(run) or _failure(results, "analyse", **run_values(run))
    if config.get("transfer") and not _exists(results, "transfer_matrix"):
        cells = plan.transfer_cells()
        status["transfer"] = _upstream(status, [run for _, run, _ in cells]) or next(
            (
                _failure(results, "transfer_predict", target=target, **run_values(run))
                for _, run, target in cells
                if not _exists(results, "transfer_predictions", run, target=target)
            ),
            _failure(results, "transfer_matrix"),
        )
    return status


def _upstream(status: dict, runs) -> Failure | None:
    return next((status["runs"][r] for r in runs if r in status["runs"]), None)


def is_complete(status: dict) -> bool:
    return not any(status[k] for k in ("datasets", "runs", "stats", "compress", "analysis", "transfer"))
