"""The report rule's inputs read back into typed records, each file to its run, dataset or experiment."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from cvm_cervix.config import validate_config
from cvm_cervix.paths import parse, path
from cvm_cervix.plan import Plan
from cvm_cervix.report_inputs import ReportInputs
from cvm_cervix.runs import Run


def test_parse_reads_a_path_back_into_its_wildcards():
    file = path("compressed_metrics", "res", Run("a.split3", "cvm_cervix", "none+amp", 2), precision="int8")
    assert parse("compressed_metrics", file, "res") == {
        "dataset": "a.split3",
        "model": "cvm_cervix",
        "recipe": "none+amp",
        "seed": "2",
        "precision": "int8",
    }
    assert parse("metrics", file, "res") is None  # another template
    assert parse("metrics", "elsewhere/runs/a/m/r/seed0/metrics.json", "res") is None  # outside the results
    assert parse("stats", "stats/main.json") == {"experiment": "main"}


def test_every_file_the_plan_declares_lands_in_its_record():
    """The embedded default's plan: every run, dataset, experiment and compressed precision it declares."""
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    plan = Plan(config)
    inputs = plan.report_inputs("res")
    files = ReportInputs.of(inputs, "res")
    assert set(files.runs) == set(plan.runs)
    for run in plan.runs:
        record = files.run(run)
        assert record.metrics == Path(path("metrics", "res", run))
        assert record.train_info.name == "train.json" and record.history.name == "history.csv"
        assert record.folder.as_posix() == f"res/{run.path}"
    for job in plan.compress_jobs():
        assert files.run(job.run).compressed[job.precision].as_posix() == path(
            "compressed_metrics", "res", job.run, precision=job.precision
        )
    assert set(files.stats) == set(config["experiments"]) and plan.compress_jobs()
    assert set(files.datasets) == set(plan.datasets)
    assert all(files.datasets[d].cache is not None for d in plan.cached_datasets())
    assert files.plan.as_posix() == path("plan", "res", digest=plan.stamp)
    assert len(files.benchmarks) == len(inputs["benchmarks"])
    with pytest.raises(KeyError, match="declares no file of run runs/x/y/z/seed0"):
        files.run(Run("x", "y", "z", 0))


def test_a_declared_file_that_fits_no_template_of_its_kind_is_an_error_naming_it():
    with pytest.raises(ValueError, match="res/runs/a/m/r/seed0/history.csv .kind 'metrics'. is not a file of metrics"):
        ReportInputs.of({"metrics": ["res/runs/a/m/r/seed0/history.csv"]}, "res")
    with pytest.raises(ValueError, match="report input kind 'weights_of_another_run' is not one the report reads"):
        ReportInputs.of({"weights_of_another_run": []}, "res")
