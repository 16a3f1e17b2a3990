"""The report rule's inputs as typed records: every file the report reads, by run, dataset and experiment.

The rule hands the report its files by kind (``Plan.report_inputs``: ``metrics``, ``train``, ``stats``...);
:meth:`ReportInputs.of` reads each back through its template in ``paths.py`` to the run, dataset or
experiment it belongs to. The report's modules take these records and never name a results file
themselves, so the report reads exactly what its rule declared (and Snakemake tracked). A declared file
that fits no template of its kind is an error naming it: a mismatch between the rule and the report is
never guessed around.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .paths import parse
from .runs import Run

# The rule's kinds of input (Plan.report_inputs) -> the templates their files are.
KINDS = {
    "plan": ("plan",),
    "transfer": ("transfer_matrix",),
    "benchmarks": (),  # read by provenance as they are: any rule's benchmark file
    "stats": ("stats",),
    "compressed": ("compressed_metrics",),
    "analysis": ("gallery", "gallery_images", "tsne"),
    "robustness": ("robustness",),
    "weights": ("weights",),
    "metrics": ("metrics",),
    "history": ("history",),
    "train": ("train_info",),
    "summaries": ("summary",),
    "manifests": ("manifest",),
    "classes": ("classes",),
    "caches": ("cache",),
}
_DATASET_FILES = {"summary": "summary", "manifest": "manifest", "classes": "classes", "cache": "cache"}


@dataclass(frozen=True)
class RunFiles:
    """One run's files the report reads (None: not declared for it, as the plan asks nothing of the kind)."""

    run: Run
    train_info: Path | None = None
    metrics: Path | None = None
    history: Path | None = None
    weights: Path | None = None
    robustness: Path | None = None
    gallery: Path | None = None
    gallery_images: Path | None = None
    tsne: Path | None = None
    compressed: Mapping[str, Path] = field(default_factory=dict)  # precision -> its metrics.json

    @property
    def folder(self) -> Path:
        """The run's folder, as the report names it to its reader."""
        return next(p for p in (self.train_info, self.metrics, self.history) if p is not None).parent


@dataclass(frozen=True)
class DatasetFiles:
    name: str
    summary: Path | None = None
    manifest: Path | None = None
    classes: Path | None = None
    cache: Path | None = None  # the decoded images of a set runs train on (the data section's examples)


@dataclass(frozen=True)
class ReportInputs:
    results: Path
    runs: Mapping[Run, RunFiles]
    datasets: Mapping[str, DatasetFiles]
    stats: Mapping[str, Path]  # experiment -> its statistics
    plan: Path | None = None  # the plan's stamp
    transfer_matrix: Path | None = None
    benchmarks: tuple[Path, ...] = ()

    def run(self, run: Run) -> RunFiles:
        """The run's files; a run the rule declared nothing of is an error naming it."""
        try:
            return self.runs[run]
        except KeyError:
            raise KeyError(f"the report rule declares no file of run {run.path}") from None

    @classmethod
    def of(cls, inputs: Mapping[str, list[str]], results: str | os.PathLike) -> ReportInputs:
        """The records of the rule's ``inputs`` (kind -> files) under ``results``."""
        runs: dict[Run, dict] = {}
        datasets: dict[str, dict] = {}
        stats: dict[str, Path] = {}
        single: dict[str, Path] = {}
        for kind, files in inputs.items():
            if kind not in KINDS:
                raise ValueError(f"report input kind {kind!r} is not one the report reads ({', '.join(KINDS)})")
            for file in map(Path, files if kind != "benchmarks" else []):
                key, values = _read(kind, file, results)
                if key in ("plan", "transfer_matrix"):
                    single[key] = file
                elif key == "stats":
                    stats[values["experiment"]] = file
                elif key in _DATASET_FILES:
                    datasets.setdefault(values["dataset"], {})[_DATASET_FILES[key]] = file
                else:
                    run = Run(values["dataset"], values["model"], values["recipe"], int(values["seed"]))
                    entry = runs.setdefault(run, {"compressed": {}})
                    if key == "compressed_metrics":
                        entry["compressed"][values["precision"]] = file
                    else:
                        entry[key] = file
        return cls(
            results=Path(results),
            runs=MappingProxyType(
                {r: RunFiles(r, **{**v, "compressed": MappingProxyType(v["compressed"])}) for r, v in runs.items()}
            ),
            datasets=MappingProxyType({d: DatasetFiles(d, **v) for d, v in datasets.items()}),
            stats=MappingProxyType(stats),
            plan=single.get("plan"),
            transfer_matrix=single.get("transfer_matrix"),
            benchmarks=tuple(Path(f) for f in inputs.get("benchmarks", [])),
        )


def _read(kind: str, file: Path, results) -> tuple[str, dict]:
    for key in KINDS[kind]:
        values = parse(key, file, results)
        if values is not None:
            return key, values
    raise ValueError(
        f"report input {file} (kind {kind!r}) is not a file of {' or '.join(KINDS[kind])} under {results}: "
        "the report rule and the report disagree"
    )
