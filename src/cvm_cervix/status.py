"""What of the plan a results folder holds, and for each thing missing, the job that failed and why.

The rules' log files are named here (``LOGS``, relative to the results folder) and the rule files
take their ``log:`` paths from this table, so the report of a failed run names the file Snakemake
wrote. A run is missing when its ``metrics.json`` is; its failure is the first job of its chain
(synthesize, prepare, cache, weights, the run it starts from, train, evaluate) whose output is
absent, with the error line of that job's log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Run, all_runs, experiment_runs, experiment_seeds, init_source, run_settings, transfer_pairs, used_datasets

JOB = "{dataset}/{model}_{augment}_seed{seed}"
LOGS = {
    "synthesize": "logs/synthesize/{dataset}.log",
    "prepare": "logs/prepare/{dataset}.log",
    "cache": "logs/cache/{dataset}_{size}.log",
    "weights": "logs/weights/{model}.log",
    "train": f"logs/train/{JOB}.log",
    "evaluate": f"logs/evaluate/{JOB}.log",
    "analyse": f"logs/analyse/{JOB}.log",
    "compress": f"logs/compress/{JOB}_{{precision}}.log",
    "transfer_predict": f"logs/transfer/{JOB}_on_{{target}}.log",
    "transfer_matrix": "logs/transfer/matrix.log",
    "stats": "logs/stats/{experiment}.log",
    "report": "logs/report/report.log",
}


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


def _job(run: Run) -> dict:
    return {"dataset": run.dataset, "model": run.model, "augment": run.augment, "seed": run.seed}


def dataset_failure(config: dict, results: Path, name: str) -> Failure | None:
    """Why dataset ``name`` has no manifest (a combined set: the first of its parts that has none)."""
    if (results / "data" / name / "manifest.csv").is_file():
        return None
    spec = config["datasets"][name]
    if spec["kind"] == "combined":
        for part in spec.get("parts") or []:
            failure = dataset_failure(config, results, part)
            if failure:
                return failure
    if spec["kind"] == "synthetic" and not (results / "synthetic" / name).is_dir():
        return _failure(results, "synthesize", dataset=name)
    return _failure(results, "prepare", dataset=name)


def run_failure(config: dict, results: Path, run: Run) -> Failure | None:
    """Why ``run`` has no ``metrics.json``; None when it has."""
    folder = results / run.path
    if (folder / "metrics.json").is_file():
        return None
    if not (folder / "train.json").is_file():
        failure = dataset_failure(config, results, run.dataset)
        if failure:
            return failure
        size = config["train"]["img_size"]
        if not (results / "data" / run.dataset / f"cache_{size}.npy").is_file():
            return _failure(results, "cache", dataset=run.dataset, size=size)
        settings = run_settings(config, run)
        source = init_source(config, run)
        if source is not None:
            failure = run_failure(config, results, source) if not (results / source.path / "train.json").is_file() else None
            if failure:
                return failure
        elif settings["pretrained"] and not config["train"]["weights"].get(run.model):
            if not (results / "weights" / f"{run.model}.json").is_file():
                return _failure(results, "weights", model=run.model)
        return _failure(results, "train", **_job(run))
    return _failure(results, "evaluate", **_job(run))


def plan_status(config: dict, results: str | Path) -> dict:
    """Everything the report needs that is missing, with its :class:`Failure`.

    ``runs``: Run -> Failure; ``datasets``: name -> Failure; ``stats``: experiment -> Failure;
    ``compress``: (Run, precision) -> Failure; ``analysis``: Run -> Failure; ``transfer``: Failure or None.
    """
    results = Path(results)
    status: dict = {"datasets": {}, "runs": {}, "stats": {}, "compress": {}, "analysis": {}, "transfer": None}
    for name in used_datasets(config):
        failure = dataset_failure(config, results, name)
        if failure:
            status["datasets"][name] = failure
    for run in all_runs(config):
        failure = run_failure(config, results, run)
        if failure:
            status["runs"][run] = failure
    for name, exp in config["experiments"].items():
        if not (results / "stats" / f"{name}.json").is_file():
            status["stats"][name] = _upstream(status, experiment_runs(config, name)) or _failure(
                results, "stats", experiment=name)
        first = experiment_seeds(config, name)[0]
        for run in experiment_runs(config, name):
            if run.seed != first:
                continue
            for precision in exp.get("compress") or []:
                if not (results / run.path / "compressed" / precision / "metrics.json").is_file():
                    status["compress"][(run, precision)] = status["runs"].get(run) or _failure(
                        results, "compress", precision=precision, **_job(run))
            if exp.get("analysis") and not all((results / run.path / "analysis" / f).is_file()
                                               for f in ("gallery.json", "tsne.csv")):
                status["analysis"][run] = status["runs"].get(run) or _failure(results, "analyse", **_job(run))
    if config.get("transfer") and not (results / "transfer" / "matrix.json").is_file():
        pairs = transfer_pairs(config)
        status["transfer"] = _upstream(status, [run for _, run, _ in pairs]) or next(
            (_failure(results, "transfer_predict", target=target, **_job(run)) for _, run, target in pairs
             if not (results / run.path / "transfer" / f"{target}.csv").is_file()),
            _failure(results, "transfer_matrix"))
    return status


def _upstream(status: dict, runs) -> Failure | None:
    return next((status["runs"][r] for r in runs if r in status["runs"]), None)


def is_complete(status: dict) -> bool:
    return not any(status[k] for k in ("datasets", "runs", "stats", "compress", "analysis", "transfer"))
