"""The workflow's jobs as one table: which files of the results folder each rule makes, and which it reads.

The chain synthesize → prepare → cache (→ normalize) → (weights, another run) → train → evaluate → compress,
analyse, transfer, statistics is written here once. The rule files take every job's inputs from
:func:`needs` (``unpack(inputs_of("train"))`` in ``common.smk``), and the status of a results folder
(``status.py``) walks the same table back from a missing file to the first job whose output is
missing. A new rule, or a new input of one, is one edit here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .paths import path, run_values
from .plan import Plan
from .runs import Run, base_dataset, dataset_spec, run_settings


@dataclass(frozen=True)
class Need:
    """One file a job reads: a template of the plan's table filled in, or a file outside the results."""

    name: str  # the rule's input name; the Needs of a name marked ``many`` make one list
    key: str | None  # the template in plan.PATHS (None: ``file`` is outside the results folder)
    values: dict = field(default_factory=dict)
    file: str = ""
    many: bool = False

    def path(self, results: str) -> str:
        return self.file if self.key is None else path(self.key, results, **self.values)


# What each rule makes (keys of plan.PATHS): a missing file is traced to the rule that makes it. The three
# compress rules (one per kind of artifact) are one job here, as they share their inputs and their log.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "synthesize": ("synthetic",),
    "listing": ("listing",),
    "prepare": ("manifest", "classes", "summary", "splits", "crops"),
    "cache": ("cache",),
    "normalize": ("stain_reference", "stain_cache"),
    "weights": ("pretrained",),
    "plan": ("plan",),
    "train": ("weights", "history", "train_info"),
    "evaluate": ("predictions_val", "predictions_test", "metrics", "calibration"),
    "compress": (
        "compressed_metrics",
        "compressed_predictions",
        "artifact_safetensors",
        "artifact_onnx",
        "artifact_torch",
    ),
    "analyse": ("features", "tsne", "gallery", "gallery_images"),
    "robustness": ("robustness",),
    "transfer_predict": ("transfer_predictions",),
    "transfer_matrix": ("transfer_matrix",),
    "stats": ("stats",),
}
PRODUCER = {key: rule for rule, keys in OUTPUTS.items() for key in keys}


def _run(values: dict) -> Run:
    return Run(values["dataset"], values["model"], values["recipe"], int(values["seed"]))


def _size(plan: Plan) -> int:
    return plan.config["train"]["img_size"]


def _prepare(plan: Plan, v: dict) -> list[Need]:
    """Synthetic data is rendered first (once for all its splits); a combined set reads its parts' manifests."""
    spec = dataset_spec(plan.config, v["dataset"])
    given = [Need("split_file", None, file=spec["split_file"])] if spec.get("split_file") else []
    if spec["kind"] == "synthetic":
        return [Need("root", "synthetic", {"dataset": base_dataset(plan.config, v["dataset"])}), *given]
    if spec["kind"] == "combined":
        return [
            *(Need(f"part_{p}", "manifest", {"dataset": p}) for p in spec["parts"]),
            *(Need(f"splits_{p}", "splits", {"dataset": p}) for p in spec["parts"]),
            *given,
        ]
    return given


def _data(plan: Plan, dataset: str, classes: bool = False) -> list[Need]:
    out = [Need("manifest", "manifest", {"dataset": dataset})]
    out += [Need("classes", "classes", {"dataset": dataset})] if classes else []
    return out + [Need("cache", "cache", {"dataset": dataset, "size": _size(plan)})]


def _trained(run: Run) -> list[Need]:
    return [Need("weights", "weights", run_values(run)), Need("info", "train_info", run_values(run))]


def _train(plan: Plan, v: dict) -> list[Need]:
    """The data (its images mapped to one stain, with the reference, where the run asks for it); with ImageNet
    weights, the weights step; with ``init_from``, the run it starts from."""
    run = _run(v)
    out = _data(plan, run.dataset, classes=True)
    method = run_settings(plan.config, run).get("stain_normalization", "none")
    if method != "none":
        values = {"dataset": run.dataset, "size": _size(plan), "method": method}
        out = [n for n in out if n.name != "cache"]
        out += [Need("cache", "stain_cache", values), Need("stain_reference", "stain_reference", values)]
    if plan.needs_pretrained(run):
        out.append(Need("pretrained", "pretrained", {"model": run.model}))
    source = plan.init_source(run)
    if source is not None:
        out += [
            Need("init_weights", "weights", run_values(source)),
            Need("init_info", "train_info", run_values(source)),
        ]
    return out


def _compress(plan: Plan, v: dict) -> list[Need]:
    run = _run(v)
    return [
        *_trained(run),
        Need("metrics", "metrics", run_values(run)),
        Need("predictions", "predictions_test", run_values(run)),
        *_data(plan, run.dataset),
    ]


def _analyse(plan: Plan, v: dict) -> list[Need]:
    run = _run(v)
    return [*_trained(run), Need("metrics", "metrics", run_values(run)), *_data(plan, run.dataset)]


def _transfer_predict(plan: Plan, v: dict) -> list[Need]:
    return [*_trained(_run(v)), *_data(plan, v["target"], classes=True)]


def _plan_stamp(plan: Plan) -> Need:
    """The plan's stamp: the aggregations read it, so a new plan (or a stale report) makes them again."""
    return Need("plan", "plan", {"digest": plan.stamp})


def _stats(plan: Plan, v: dict) -> list[Need]:
    runs = plan.stats_runs(v["experiment"])
    return [
        *(Need("predictions", "predictions_test", run_values(r), many=True) for r in runs),
        *(Need("predictions_val", "predictions_val", run_values(r), many=True) for r in runs),
        *(Need("manifests", "manifest", {"dataset": d}, many=True) for d in sorted({r.dataset for r in runs})),
        *(
            Need("robustness", "robustness", run_values(r), many=True)
            for r in plan.stats_robustness_runs(v["experiment"])
        ),
        _plan_stamp(plan),
    ]


def _transfer_matrix(plan: Plan, v: dict) -> list[Need]:
    cells = [
        Need("predictions", "transfer_predictions", {**run_values(run), "target": target}, many=True)
        for _, run, target in plan.transfer_cells()
    ]
    return [*cells, _plan_stamp(plan)]


_NEEDS: dict[str, Callable[[Plan, dict], list[Need]]] = {
    "synthesize": lambda plan, v: [],
    "prepare": _prepare,
    "cache": lambda plan, v: [Need("manifest", "manifest", {"dataset": v["dataset"]})],
    "normalize": lambda plan, v: [
        Need("manifest", "manifest", {"dataset": v["dataset"]}),
        Need("cache", "cache", {"dataset": v["dataset"], "size": v["size"]}),
    ],
    "weights": lambda plan, v: [],
    "listing": lambda plan, v: [],
    "plan": lambda plan, v: [],
    "train": _train,
    "evaluate": lambda plan, v: [*_trained(_run(v)), *_data(plan, v["dataset"])],
    "compress": _compress,
    "analyse": _analyse,
    "robustness": lambda plan, v: [*_trained(_run(v)), *_data(plan, v["dataset"])],
    "transfer_predict": _transfer_predict,
    "transfer_matrix": _transfer_matrix,
    "stats": _stats,
}
assert set(_NEEDS) == set(OUTPUTS), "every rule of the table says what it reads"


def needs(plan: Plan, rule: str, **values) -> list[Need]:
    """The files the ``rule`` job with these wildcard ``values`` reads, in the order its chain is traced."""
    return _NEEDS[rule](plan, values)


def inputs(plan: Plan, rule: str, results: str, **values) -> dict[str, str | list[str]]:
    """The ``rule`` job's inputs by name, as a rule file's ``unpack`` takes them."""
    out: dict[str, str | list[str]] = {}
    for need in needs(plan, rule, **values):
        if need.many:
            out.setdefault(need.name, []).append(need.path(results))  # type: ignore[union-attr]
        else:
            out[need.name] = need.path(results)
    return out
