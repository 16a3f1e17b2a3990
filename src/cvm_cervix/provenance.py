"""Provenance of a report: the configuration as run, code and library versions, data digests, devices,
and wall time per rule (from the jobs' Snakemake benchmark files)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from ._io import sha256_file
from .record import RunRecord
from .report_inputs import ReportInputs

LIBRARIES = (
    "torch",
    "torchvision",
    "timm",
    "snakemake",
    "numpy",
    "scikit-learn",
    "openTSNE",
    "onnxruntime",
    "onnx",
    "pandas",
    "plotly",
    "torchstain",
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_state(folder: str | os.PathLike) -> dict | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``folder``; None outside one (an installed copy)."""

    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    changed = [line[3:] for line in status.stdout.splitlines()]
    return {"commit": head.stdout.strip(), "dirty": bool(changed), "changed": changed[:20]}


def rule_times(benchmarks: list[str | os.PathLike]) -> list[dict]:
    """Wall time per rule, summed over its jobs, from Snakemake ``benchmark:`` files
    (``.../benchmarks/<rule>/<job>.tsv``, column ``s``)."""
    per_rule: dict[str, list[float]] = {}
    for path in map(Path, benchmarks):
        if not path.is_file():
            continue
        rule = path.relative_to(_bench_root(path)).parts[0]
        seconds = pd.read_csv(path, sep="\t")["s"]
        per_rule.setdefault(rule, []).extend(float(s) for s in seconds)
    return [
        {"rule": rule, "jobs": len(s), "seconds": sum(s), "longest": max(s)}
        for rule, s in sorted(per_rule.items(), key=lambda kv: -sum(kv[1]))
    ]


def _bench_root(path: Path) -> Path:
    for parent in path.parents:
        if parent.name == "benchmarks":
            return parent
    raise ValueError(f"{path} is not under a benchmarks/ folder")


def provenance(
    config: dict,
    inputs: ReportInputs,
    datasets: list[str],
    configfiles: list[str] | None = None,
    workflow_dir: str | os.PathLike | None = None,
) -> dict:
    """Everything a reader needs to tell what produced a report, read from the report rule's ``inputs``
    (the training records that exist, the manifests of ``datasets``, the benchmark files)."""
    devices: dict[str, list[str]] = {}
    for run, files in sorted(inputs.runs.items()):
        if files.train_info is not None and files.train_info.is_file():
            record = RunRecord.read(files.train_info)
            devices.setdefault(record.device_name or record.device, []).append(run.path)
    manifests = {}
    for name in datasets:
        path = inputs.datasets[name].manifest
        manifests[name] = {"sha256": sha256_file(path), "images": int(sum(1 for _ in open(path)) - 1)}
    return {
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "config_yaml": yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        "configfiles": [str(f) for f in configfiles or []],
        "version": _version("cvm-cervix"),
        "git": git_state(workflow_dir) if workflow_dir else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "devices": [{"device": d, "runs": runs} for d, runs in devices.items()],
        "manifests": manifests,
        "rule_times": rule_times(inputs.benchmarks),
    }
