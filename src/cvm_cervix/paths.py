"""The one table of where every job reads and writes, and the functions that fill it.

Every path of the results folder is a template here (``PATHS``, ``LOGS``, ``BENCHMARKS``), relative to
``results``, with Snakemake's wildcard names. The rule files take their ``input``, ``output``, ``log``
and ``benchmark`` patterns from :func:`pattern`; the library, the status of a results folder and the
report's rule fill the same templates with :func:`path`, and code given a run's folder names its files
with :func:`file_name`. This module imports nothing of the package: every layer may read it.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Any

RUN = "runs/{dataset}/{model}/{recipe}/seed{seed}"
DATA = "data/{dataset}"

PATHS = {
    "synthetic": "synthetic/{dataset}",
    "manifest": f"{DATA}/manifest.csv",
    "classes": f"{DATA}/classes.json",
    "summary": f"{DATA}/summary.json",
    "splits": f"{DATA}/splits.csv",
    "crops": f"{DATA}/crops",
    # a real dataset's folder changed since it was prepared: this stamp, of the folder's new digest, is
    # missing, so prepare runs again (see common.smk), also where Snakemake has no records
    "listing": f"{DATA}/listing/{{digest}}.json",
    "cache": f"{DATA}/cache_{{size}}.npy",
    # the cache mapped to one stain (train.stain_normalization), and the reference it was mapped to
    "stain_cache": f"{DATA}/cache_{{size}}_{{method}}.npy",
    "stain_reference": f"{DATA}/stain_{{method}}_{{size}}.json",
    "pretrained": "weights/{model}.json",
    "run": RUN,
    "weights": f"{RUN}/weights.safetensors",
    "history": f"{RUN}/history.csv",
    "train_info": f"{RUN}/train.json",
    "checkpoint": f"{RUN}/checkpoint.pt",
    "metrics": f"{RUN}/metrics.json",
    "predictions_val": f"{RUN}/predictions_val.csv",
    "predictions_test": f"{RUN}/predictions_test.csv",
    # what predict needs to answer as the report measured: temperature, conformal and operating thresholds
    "calibration": f"{RUN}/calibration.json",
    "compressed": f"{RUN}/compressed/{{precision}}",
    "compressed_metrics": f"{RUN}/compressed/{{precision}}/metrics.json",
    "compressed_predictions": f"{RUN}/compressed/{{precision}}/predictions_test.csv",
    # the compressed artifacts, one file name per kind (precisions.py says which precision writes which)
    "artifact_safetensors": f"{RUN}/compressed/{{precision}}/weights.safetensors",
    "artifact_onnx": f"{RUN}/compressed/{{precision}}/model.onnx",
    "artifact_torch": f"{RUN}/compressed/{{precision}}/weights.pt",
    "features": f"{RUN}/analysis/features_test.npy",
    "tsne": f"{RUN}/analysis/tsne.csv",
    "gallery": f"{RUN}/analysis/gallery.json",
    "gallery_images": f"{RUN}/analysis/gallery",
    "robustness": f"{RUN}/analysis/robustness.json",
    "transfer_predictions": f"{RUN}/transfer/{{target}}.csv",
    "transfer_matrix": "transfer/matrix.json",
    "stats": "stats/{experiment}.json",
    "plan": "plan/{digest}.json",  # the plan a report covers (see report_state.py)
    "report": "report.html",
    "report_files": "report_files",
}

JOB = "{dataset}/{model}_{recipe}_seed{seed}"
LOGS = {
    "synthesize": "logs/synthesize/{dataset}.log",
    "prepare": "logs/prepare/{dataset}.log",
    "cache": "logs/cache/{dataset}_{size}.log",
    "normalize": "logs/normalize/{dataset}_{size}_{method}.log",
    "weights": "logs/weights/{model}.log",
    "train": f"logs/train/{JOB}.log",
    "evaluate": f"logs/evaluate/{JOB}.log",
    "analyse": f"logs/analyse/{JOB}.log",
    "robustness": f"logs/robustness/{JOB}.log",
    "compress": f"logs/compress/{JOB}_{{precision}}.log",
    "transfer_predict": f"logs/transfer/{JOB}_on_{{target}}.log",
    "transfer_matrix": "logs/transfer/matrix.log",
    "stats": "logs/stats/{experiment}.log",
    "plan": "logs/plan/{digest}.log",
    "listing": "logs/listing/{dataset}_{digest}.log",
    "report": "logs/report/report.log",
}
# Each rule's benchmark file (wall time, memory): the report's provenance reads them.
BENCHMARKS = {
    "synthesize": "benchmarks/synthesize/{dataset}.tsv",
    "prepare": "benchmarks/prepare/{dataset}.tsv",
    "cache": "benchmarks/cache/{dataset}_{size}.tsv",
    "normalize": "benchmarks/normalize/{dataset}_{size}_{method}.tsv",
    "train": f"benchmarks/train/{JOB}.tsv",
    "evaluate": f"benchmarks/evaluate/{JOB}.tsv",
    "analyse": f"benchmarks/analyse/{JOB}.tsv",
    "robustness": f"benchmarks/robustness/{JOB}.tsv",
    "compress_half": f"benchmarks/compress_half/{JOB}_{{precision}}.tsv",
    "compress_onnx": f"benchmarks/compress_onnx/{JOB}_{{precision}}.tsv",
    "compress_dynamic": f"benchmarks/compress_dynamic/{JOB}_{{precision}}.tsv",
    "stats": "benchmarks/stats/{experiment}.tsv",
    "transfer_predict": f"benchmarks/transfer_predict/{JOB}_on_{{target}}.tsv",
    "transfer_matrix": "benchmarks/transfer_matrix/matrix.tsv",
    "report": "benchmarks/report/report.tsv",
}
TABLES = {"path": PATHS, "log": LOGS, "benchmark": BENCHMARKS}


def file_name(key: str, **values) -> str:
    """The name of ``key``'s file inside its run folder or prepared dataset's folder (``metrics`` ->
    ``metrics.json``, ``tsne`` -> ``analysis/tsne.csv``): for functions given a folder instead of files."""
    template = _template(key)
    for folder in (RUN, DATA):
        if template.startswith(folder + "/"):
            return template[len(folder) + 1 :].format(**values)
    raise KeyError(f"path template {key!r} is not a file of a run or a prepared dataset's folder")


class _Partial(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def _template(key: str, table: str = "path") -> str:
    try:
        return TABLES[table][key]
    except KeyError:
        raise KeyError(f"no {table} template {key!r} (known: {', '.join(TABLES[table])})") from None


def run_values(run: Any) -> dict:
    """The wildcards of a run's paths."""
    return {"dataset": run.dataset, "model": run.model, "recipe": run.recipe, "seed": run.seed}


def pattern(key: str, results: str = "", table: str = "path", **fixed) -> str:
    """The template ``key`` under ``results``, with ``fixed`` filled in and every other name left as a
    ``{wildcard}``: what a rule declares (``pattern("cache", RESULTS, size=IMG)``)."""
    text = string.Formatter().vformat(_template(key, table), (), _Partial(fixed))
    return f"{results}/{text}" if results else text


def path(key: str, results: str | Path = "", run: Any = None, table: str = "path", **values) -> str:
    """The template ``key`` filled in (a run's wildcards from ``run``); a name left unfilled is an error."""
    values = {**(run_values(run) if run is not None else {}), **values}
    try:
        text = _template(key, table).format(**values)
    except KeyError as err:
        raise KeyError(f"{table} template {key!r} needs {err.args[0]!r}") from None
    return f"{results}/{text}" if str(results) else text


def parse(key: str, text: str | Path, results: str | Path = "") -> dict[str, str] | None:
    """The wildcards of ``text`` read back through the template ``key`` (the inverse of :func:`path`), or
    None where it is not a file of that template. A value never spans a folder, as Snakemake's wildcards
    in these templates never do (their constraints in common.smk)."""
    relative = Path(text)
    if str(results):
        try:
            relative = Path(os.path.abspath(text)).relative_to(os.path.abspath(results))
        except ValueError:
            return None
    regex, names = "", []
    for literal, name, _, _ in string.Formatter().parse(_template(key)):
        regex += re.escape(literal)
        if name is not None:
            # a name used twice must read the same value both times
            regex += f"(?P={name})" if name in names else f"(?P<{name}>[^/]+)"
            names.append(name)
    found = re.fullmatch(regex, relative.as_posix())
    return found.groupdict() if found else None
