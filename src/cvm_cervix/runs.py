"""The runs a validated config asks for: datasets and their splits, experiments, seeds, recipes, settings.

Plain functions of the config (no validation: ``config.py`` does that, then re-exports these), read by
the plan, the report and the rule files.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Run:
    """One training run: the unit the workflow trains, evaluates and reports."""

    dataset: str
    model: str
    recipe: str  # the augment, and '+variant' for a variant's runs: none, flip4x, none+amp
    seed: int

    @property
    def path(self) -> str:
        return f"runs/{self.dataset}/{self.model}/{self.recipe}/seed{self.seed}"


def _with_parts(datasets: dict, names: Iterable[str]) -> set[str]:
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in out or name not in datasets:
            continue
        out.add(name)
        todo.extend(datasets[name].get("parts") or [])
    return out


SPLIT_MARK = ".split"  # "herlev.split3": dataset herlev split with seed 3 (a dot is not allowed in a name)


def split_dataset(config: dict, dataset: str, split_seed: int) -> str:
    """The prepared dataset of ``dataset`` split with ``split_seed``: the dataset itself at its own
    ``split_seed``, else ``<dataset>.split<seed>`` (an experiment's ``split_seeds``)."""
    own = config["datasets"][dataset].get("split_seed", 0)
    return dataset if split_seed == own else f"{dataset}{SPLIT_MARK}{split_seed}"


def dataset_spec(config: dict, name: str) -> dict:
    """The spec of a prepared dataset: a dataset of the config, or ``<dataset>.split<seed>``, the same
    images (any ``max_per_class``/``class_limits`` draw kept: ``sample_seed``) split with another seed."""
    datasets = config["datasets"]
    if name in datasets:
        return datasets[name]
    base, mark, seed = name.rpartition(SPLIT_MARK)
    if not mark or base not in datasets or not seed.isdigit():
        raise KeyError(f"no dataset {name!r} in the config (defined: {', '.join(sorted(datasets))})")
    spec = datasets[base]
    return {**spec, "split_seed": int(seed), "sample_seed": spec.get("split_seed", 0), "split_of": base}


def base_dataset(config: dict, name: str) -> str:
    """The dataset of the config a prepared dataset comes from (itself, or what ``.split<seed>`` splits)."""
    return dataset_spec(config, name).get("split_of", name)


def experiment_splits(config: dict, experiment: str) -> list[tuple[int, str]]:
    """(split seed, prepared dataset) of each split the experiment repeats its runs over: its
    ``split_seeds``, else its dataset's one ``split_seed`` (the paper's single split)."""
    exp = config["experiments"][experiment]
    seeds = exp.get("split_seeds") or [config["datasets"][exp["dataset"]].get("split_seed", 0)]
    return [(s, split_dataset(config, exp["dataset"], s)) for s in seeds]


def experiment_dataset(config: dict, experiment: str) -> str:
    """The prepared dataset of the experiment's first split: where its runs are shown in detail."""
    return experiment_splits(config, experiment)[0][1]


def used_datasets(config: dict) -> list[str]:
    """Every prepared dataset the experiments and the transfer need: the parts of combined ones, and
    one per split seed of an experiment's ``split_seeds``."""
    names = [d for e in config["experiments"] for _, d in experiment_splits(config, e)]
    names += list((config.get("transfer") or {}).get("targets", []))
    split = {n for n in names if n not in config["datasets"]}
    parts = {p for n in split for p in dataset_spec(config, n).get("parts") or []}  # a split of a combined set
    return sorted(_with_parts(config["datasets"], (set(names) - split) | parts) | split)


def named_run(config: dict, ref: str, seed: int | None = None) -> Run:
    """``EXPERIMENT/MODEL/AUGMENT`` -> that experiment's run (first split) at ``seed`` if it has it, else at
    its first seed."""
    experiment, model, augment = ref.split("/")
    seeds = experiment_seeds(config, experiment)
    return Run(experiment_dataset(config, experiment), model, augment, seed if seed in seeds else seeds[0])


def transfer_pairs(config: dict) -> list[tuple[str, Run, str]]:
    """(source name, source run, target dataset) of every cell of the transfer matrix."""
    spec = config.get("transfer") or {}
    return [
        (ref, named_run(config, ref), target) for ref in spec.get("sources", []) for target in spec.get("targets", [])
    ]


def experiment_seeds(config: dict, experiment: str) -> list[int]:
    """The experiment's own ``seeds``, else ``train.seeds`` (e.g. 3 seeds for the main result, 1 for 22 models)."""
    return list(config["experiments"][experiment].get("seeds") or config["train"]["seeds"])


# How a run's training split is augmented: none; flip4x (the split ×4 by rotation 180°, left-right and up-down
# flips); stain (each step's batch jittered in HED stain space, step.hed_jitter). The schema lists the same.
AUGMENTS = ("none", "flip4x", "stain")


def recipe(augment: str, variant: str = "default") -> str:
    """A run's recipe, the path segment after the model: ``none``, ``flip4x``, ``none+amp``, ..."""
    return augment if variant == "default" else f"{augment}+{variant}"


def split_recipe(value: str) -> tuple[str, str]:
    """``"none+amp"`` -> ``("none", "amp")``; ``"flip4x"`` -> ``("flip4x", "default")``."""
    augment, _, variant = value.partition("+")
    return augment, variant or "default"


def experiment_runs(config: dict, experiment: str) -> list[Run]:
    """Every run of the experiment: models × augments × variants × splits × seeds, in that order."""
    exp = config["experiments"][experiment]
    return [
        Run(dataset, model, recipe(augment, variant), seed)
        for model, augment, variant, (_, dataset), seed in itertools.product(
            exp["models"],
            exp["augment"],
            exp.get("variants") or ["default"],
            experiment_splits(config, experiment),
            experiment_seeds(config, experiment),
        )
    ]


def init_source(config: dict, run: Run) -> Run | None:
    """The run whose trained weights ``run`` starts from (its variant's ``init_from``), or None."""
    _, variant = split_recipe(run.recipe)
    spec = config.get("variants", {}).get(variant, {})
    return named_run(config, spec["init_from"], run.seed) if spec.get("init_from") else None


def start_label(config: dict, run: Run) -> str:
    """Where ``run``'s weights start: ``from EXPERIMENT/MODEL/AUGMENT``, ``ImageNet`` or ``random weights``."""
    _, variant = split_recipe(run.recipe)
    init_from = config.get("variants", {}).get(variant, {}).get("init_from")
    if init_from:
        return f"from {init_from}"
    return "ImageNet" if run_settings(config, run)["pretrained"] else "random weights"


def run_settings(config: dict, run: Run, exclude: Iterable[str] = ()) -> dict:
    """The ``train`` settings of ``run``: the config's, with its variant's keys put in.

    ``init_from`` becomes the source run's path, so pointing it elsewhere retrains the run.
    """
    settings = {k: v for k, v in as_dict(config["train"]).items() if k not in set(exclude)}
    _, variant = split_recipe(run.recipe)
    overrides = dict(as_dict(config.get("variants", {}).get(variant, {})))
    if overrides.get("init_from"):
        overrides["init_from"] = init_source(config, run).path
    return {**settings, **overrides}


def all_runs(config: dict) -> list[Run]:
    """The distinct runs all experiments need, in a stable order."""
    return sorted({run for name in config["experiments"] for run in experiment_runs(config, name)})


def as_dict(value: Any) -> Any:
    """Snakemake hands the config as nested dict subclasses; plain dicts dump cleanly to YAML/JSON."""
    if isinstance(value, dict):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_dict(v) for v in value]
    return value
