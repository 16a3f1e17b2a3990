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

from .jobs import OUTPUTS, PRODUCER, needs
from .paths import LOGS, path, run_values
from .plan import Plan
from .runs import Run


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


def missing_because(plan: Plan, results: Path, key: str, **values) -> Failure | None:
    """Why the file ``key`` (filled with ``values``) is not in the results folder; None when it is.

    The job that makes it (``jobs.OUTPUTS``) failed, or did not run because a file it reads is missing
    (``jobs.needs``): the first such file is traced back the same way, to the first job of the chain
    whose output is missing.
    """
    if _exists(results, key, **values):
        return None
    rule = PRODUCER[key]
    for need in needs(plan, rule, **values):
        if need.key is not None and not _exists(results, need.key, **need.values):
            return missing_because(plan, results, need.key, **need.values)
    return _failure(results, rule, **values)


# A run is there when every file of its training and its evaluation is: a failed retraining removes the
# training's files (Snakemake does, before the job) and leaves the old evaluation's, which is no result.
RUN_FILES_NEEDED = (*OUTPUTS["train"], "predictions_val", "predictions_test", "metrics")


def run_failure(plan: Plan, results: Path, run: Run) -> Failure | None:
    """Why ``run`` lacks one of its training's or evaluation's files; None when it has them all."""
    for key in RUN_FILES_NEEDED:
        failure = missing_because(plan, results, key, **run_values(run))
        if failure:
            return failure
    return None


def plan_status(config: dict, results: str | Path) -> dict:
    """Everything the report needs that is missing, with its :class:`Failure`.

    ``runs``: Run -> Failure; ``datasets``: name -> Failure; ``stats``: experiment -> Failure;
    ``compress``: (Run, precision) -> Failure; ``analysis``: Run -> Failure; ``transfer``: Failure or None.
    """
    results, plan = Path(results), Plan(config)
    status: dict = {
        "datasets": {},
        "runs": {},
        "stats": {},
        "compress": {},
        "analysis": {},
        "robustness": {},
        "transfer": None,
    }
    for name in plan.datasets:
        failure = missing_because(plan, results, "manifest", dataset=name)
        if failure:
            status["datasets"][name] = failure
    for run in plan.runs:
        failure = run_failure(plan, results, run)
        if failure:
            status["runs"][run] = failure
    for name in config["experiments"]:
        failure = missing_because(plan, results, "stats", experiment=name)
        if failure:
            status["stats"][name] = failure
    for job in plan.compress_jobs():
        failure = missing_because(plan, results, "compressed_metrics", precision=job.precision, **run_values(job.run))
        if failure:
            status["compress"][(job.run, job.precision)] = failure
    for run in plan.analysis_runs():
        failure = next(
            filter(None, (missing_because(plan, results, k, **run_values(run)) for k in ("gallery", "tsne"))), None
        )
        if failure:
            status["analysis"][run] = failure
    for run in plan.robustness_runs():
        failure = missing_because(plan, results, "robustness", **run_values(run))
        if failure:
            status["robustness"][run] = failure
    if config.get("transfer"):
        status["transfer"] = missing_because(plan, results, "transfer_matrix")
    return status


def is_complete(status: dict) -> bool:
    return not any(status[k] for k in ("datasets", "runs", "stats", "compress", "analysis", "robustness", "transfer"))
