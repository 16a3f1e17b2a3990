"""Config validation: the schema, then what the schema cannot say (the runs a config asks for are in ``runs.py``).

Validation is JSON-schema based like ``snakemake.utils.validate`` (defaults fill missing keys), but
reports the first problem as one line naming the key, since a user fixes one key at a time.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import jsonschema

from .configfile import SCHEMA, count_values, excerpt, load_schema
from .errors import CvmError
from .runs import (
    _with_parts,
    dataset_spec,
    named_run,
    recipe,
    split_recipe,
)

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # the schema's $defs.name


def _is_strict_integer(checker, instance) -> bool:
    # JSON Schema counts 2.0 as an integer; here it would reach range() or a file name as "2.0".
    return isinstance(instance, int) and not isinstance(instance, bool)


def _with_defaults(cls):
    properties = cls.VALIDATORS["properties"]

    def fill(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from properties(validator, props, instance, schema)

    types = cls.TYPE_CHECKER.redefine("integer", _is_strict_integer)
    return jsonschema.validators.extend(cls, {"properties": fill}, type_checker=types)


def validate_config(
    config: dict, schema_path: str | os.PathLike = SCHEMA, source: str = "the config", require_roots: bool = True
) -> dict:
    """Fill defaults into ``config`` in place and check it against the schema and itself.

    Raises :class:`CvmError` naming the first bad key. With ``require_roots=False`` a missing
    dataset root is only warned about, so a plan can be made before the data is there.
    Returns ``config``.
    """
    count_values(config, source)  # before anything walks the values: an alias bomb stops here
    schema = load_schema(schema_path)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        raise CvmError(f"config key '{_key(err)}' in {source}: {_why(err)}")
    check_config(config, source, require_roots)
    if config.get("only") is not None:
        select_experiments(config, config["only"], source)
    return config


def select_experiments(config: dict, only, source: str = "the config") -> None:
    """Keep only the experiments ``only`` names (``EXPERIMENT``, ``EXPERIMENT/MODEL``, ``transfer``), in place,
    with the runs they start from (``init_from``) and the transfer's sources: one part of the plan
    trained and reported alone (``--config only=comparison/vgg19``)."""
    items = [str(x).strip() for x in (only.split(",") if isinstance(only, str) else only)]
    items = [x for x in items if x]
    if not items:
        raise CvmError(
            f"config key 'only' in {source}: names nothing; give experiments "
            f"({', '.join(config['experiments'])}), EXPERIMENT/MODEL or transfer"
        )
    keep: dict[str, set | None] = {}  # experiment -> the models kept (None: all of them)

    def add(experiment: str, model: str | None, what: str) -> bool:
        exp = config["experiments"].get(experiment)
        if exp is None:
            raise CvmError(
                f"config key 'only' in {source}: {what} names no experiment of the config "
                f"({', '.join(config['experiments'])})"
            )
        if model is not None and model not in exp["models"]:
            raise CvmError(
                f"config key 'only' in {source}: {what}: experiment {experiment!r} has no model {model!r} "
                f"(its models: {', '.join(exp['models'])})"
            )
        old = keep.get(experiment, set())
        new = None if model is None or old is None else old | {model}
        changed = experiment not in keep or new != old
        keep[experiment] = new
        return changed

    transfer = False
    for item in items:
        if item == "transfer":
            if not config.get("transfer"):
                raise CvmError(f"config key 'only' in {source}: 'transfer' asked for, but the config has no transfer")
            transfer = True
            for ref in config["transfer"]["sources"]:
                experiment, model, _ = ref.split("/")
                add(experiment, model, f"transfer source {ref!r}")
            continue
        experiment, _, model = item.partition("/")
        add(experiment, model or None, repr(item))
    changed = True
    while changed:  # the runs the kept ones start from
        changed = False
        for experiment in list(keep):
            for variant in config["experiments"][experiment].get("variants") or []:
                ref = (config.get("variants") or {}).get(variant, {}).get("init_from")
                if ref:
                    source_exp, model, _ = ref.split("/")
                    changed |= add(source_exp, model, f"init_from {ref!r}")
    config["experiments"] = {
        name: {**exp, "models": [m for m in exp["models"] if keep[name] is None or m in keep[name]]}
        for name, exp in config["experiments"].items()
        if name in keep
    }
    used = {v for exp in config["experiments"].values() for v in exp.get("variants") or []}
    if config.get("variants"):  # recipes no kept experiment uses go too (they may point at dropped runs)
        config["variants"] = {name: v for name, v in config["variants"].items() if name in used}
    if not transfer:
        config.pop("transfer", None)


def _key(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        path = ".".join(filter(None, [path, extra[0] if extra else ""]))
    elif err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        path = ".".join(filter(None, [path, missing[0] if missing else ""]))
    return path or "<top level>"


def _why(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"unknown key; allowed here: {allowed} (see config/README.md)"
    if err.validator == "required":
        return "is required but missing (see config/README.md)"
    if err.validator == "enum":
        return f"{excerpt(err.instance)} is not one of {', '.join(map(str, err.validator_value))}"
    if err.validator == "type":
        whole = " (a whole number without a decimal point)" if err.validator_value == "integer" else ""
        return f"{excerpt(err.instance)} should be of type {err.validator_value}{whole}"
    if err.validator == "pattern" and err.validator_value == NAME_PATTERN:
        return (
            f"name {excerpt(err.instance)} is not allowed: it becomes a folder and a wildcard, so use letters, digits, "
            "'_' and '-' (at most 64, starting with a letter or digit)"
        )
    if err.validator == "minimum":
        return f"{excerpt(err.instance)} is below the minimum {err.validator_value}"
    if err.validator == "maximum":
        return f"{excerpt(err.instance)} is above the maximum {err.validator_value}"
    if err.validator == "uniqueItems":
        seen, twice = [], None
        for item in err.instance:
            if item in seen:
                twice = item
                break
            seen.append(item)
        return f"lists {excerpt(twice)} twice; give each entry once (a run counted twice would pass as two seeds)"
    return excerpt(err.message, 300)


def _non_finite(value, key: str = ""):
    """The key of the first NaN or infinite number in ``value`` (YAML's .nan, .inf), else None."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return key
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None


def check_config(config: dict, source: str = "the config", require_roots: bool = True) -> None:
    """Checks a schema cannot express: references between keys, model names, dataset roots."""
    from .models import get_model_spec, model_names

    bad = _non_finite(config)
    if bad is not None:
        raise CvmError(
            f"config key '{bad}' in {source}: {_lookup(config, bad)!r} is not a finite number; give a number"
        )
    results = Path(str(config.get("results", "results")))
    if results.exists() and not results.is_dir():
        raise CvmError(
            f"config key 'results' in {source}: {results} is a file, not a folder; name a folder "
            "(it is made if missing)"
        )
    if config.get("train", {}).get("step") == "cuda_graph" and config["train"].get("compile"):
        raise CvmError(
            f"config key 'train.step' in {source}: cuda_graph captures the step itself; it does not combine "
            "with train.compile: true (set one of them)"
        )
    if config.get("train", {}).get("batch_size", 16) < 2:
        raise CvmError(
            f"config key 'train.batch_size' in {source}: a batch of one image cannot train the models' "
            "BatchNorm layers; use 2 or more (the paper: 16)"
        )

    datasets = config["datasets"]
    img_size = config.get("train", {}).get("img_size", 224)
    known = set(model_names())
    used = set()
    for name, exp in config["experiments"].items():
        if exp["dataset"] not in datasets:
            raise CvmError(
                f"config key 'experiments.{name}.dataset' in {source}: dataset {exp['dataset']!r} "
                f"is not defined under 'datasets' (defined: {', '.join(sorted(datasets))})"
            )
        for model in exp["models"]:
            if model not in known:
                raise CvmError(
                    f"config key 'experiments.{name}.models' in {source}: unknown model {model!r}; "
                    "`cvm-cervix models` lists the registered names"
                )
            spec = get_model_spec(model)
            if img_size < spec.min_img_size:
                raise CvmError(
                    f"config key 'train.img_size' in {source}: {img_size} is too small for model {model!r} "
                    f"(experiment {name!r}) which needs at least {spec.min_img_size}; raise img_size or drop the model"
                )
            m = spec.img_size_multiple
            if img_size % m:
                raise CvmError(
                    f"config key 'train.img_size' in {source}: model {model!r} (experiment {name!r}) needs a multiple "
                    f"of {m}, not {img_size}; use {img_size // m * m or m} or {(img_size // m + 1) * m}, "
                    "or drop the model"
                )
        used.add(exp["dataset"])
        baseline = exp.get("baseline")
        if baseline is not None and (baseline not in config["experiments"] or baseline == name):
            raise CvmError(
                f"config key 'experiments.{name}.baseline' in {source}: {baseline!r} is not another experiment "
                f"(experiments: {', '.join(e for e in config['experiments'] if e != name)})"
            )
    for model, path in config.get("train", {}).get("weights", {}).items():
        if model not in known:
            raise CvmError(f"config key 'train.weights.{model}' in {source}: unknown model {model!r}")
        if not Path(path).is_file():
            raise CvmError(
                f"config key 'train.weights.{model}' in {source}: file {path!r} does not exist; "
                "give the path of a .safetensors or .pt file (relative to the working directory)"
            )
    for name, exp in config["experiments"].items():
        if exp.get("split_seeds") and datasets[exp["dataset"]].get("split_file"):
            raise CvmError(
                f"config key 'experiments.{name}.split_seeds' in {source}: dataset {exp['dataset']!r} takes "
                "its one split from its split_file; drop split_seeds or the split_file"
            )
    for name, spec in datasets.items():
        if spec.get("split_file") and not Path(spec["split_file"]).is_file():
            raise CvmError(
                f"config key 'datasets.{name}.split_file' in {source}: file {spec['split_file']!r} does not "
                "exist; give a splits.csv written by a prepare step (results/data/<dataset>/splits.csv), "
                "relative to the working directory"
            )
    variants = config.get("variants", {})
    for name, exp in config["experiments"].items():
        for variant in exp.get("variants") or ["default"]:
            if variant != "default" and variant not in variants:
                raise CvmError(
                    f"config key 'experiments.{name}.variants' in {source}: variant {variant!r} is not "
                    f"defined under 'variants' (defined: {', '.join(sorted(variants)) or 'none'}; "
                    "'default' trains as 'train' says)"
                )

    def check_run_ref(ref: str, key: str) -> tuple[str, str, str]:
        experiment, model, augment = ref.split("/")
        exp = config["experiments"].get(experiment)
        if exp is None:
            raise CvmError(f"{key}: no experiment {experiment!r} (give EXPERIMENT/MODEL/AUGMENT of a trained run)")
        if model not in exp["models"] or augment not in [
            recipe(a, v) for a in exp["augment"] for v in exp.get("variants") or ["default"]
        ]:
            raise CvmError(
                f"{key}: experiment {experiment!r} has no run of model {model!r} with augment "
                f"{augment!r} (its models: {', '.join(exp['models'])}; augment: {', '.join(exp['augment'])})"
            )
        return experiment, model, augment

    for variant, spec in variants.items():
        if not spec.get("init_from"):
            continue
        key = f"config key 'variants.{variant}.init_from' in {source}"
        experiment, model, augment = check_run_ref(spec["init_from"], key)
        if split_recipe(augment)[1] != "default":
            raise CvmError(f"{key}: start from a plain run ({split_recipe(augment)[0]!r}), not from another variant")
        users = [n for n, e in config["experiments"].items() if variant in (e.get("variants") or [])]
        for user in users:
            other = [m for m in config["experiments"][user]["models"] if m != model]
            if other:
                raise CvmError(
                    f"config key 'experiments.{user}.models' in {source}: variant {variant!r} starts "
                    f"from a {model} run, so it can only train {model} (not {other[0]})"
                )
    transfer = config.get("transfer")
    if transfer:
        from .labels import check_mapped, resolve_mapping

        mapping = resolve_mapping(config, transfer.get("mapping", "normal_abnormal"))
        for ref in transfer["sources"]:
            check_run_ref(ref, f"config key 'transfer.sources' in {source}")
        for target in transfer["targets"]:
            if target not in datasets:
                raise CvmError(
                    f"config key 'transfer.targets' in {source}: dataset {target!r} is not defined under "
                    f"'datasets' (defined: {', '.join(sorted(datasets))})"
                )
        for dataset in {named_run(config, r).dataset for r in transfer["sources"]} | set(transfer["targets"]):
            classes = known_classes(config, dataset)
            if classes is not None:  # otherwise checked when the transfer job reads classes.json
                check_mapped(
                    classes,
                    mapping,
                    transfer.get("mapping", "normal_abnormal"),
                    f"config key 'transfer' in {source}, dataset {dataset!r}",
                )
    reference = config.get("analysis", {}).get("reference")
    if reference is not None and reference not in known:
        raise CvmError(
            f"config key 'analysis.reference' in {source}: unknown model {reference!r}; "
            "`cvm-cervix models` lists the registered names"
        )
    for name in sorted(_with_parts(datasets, used)):
        spec = datasets[name]
        if spec["kind"] == "combined":
            for part in spec.get("parts") or []:
                if part not in datasets or part == name:
                    raise CvmError(
                        f"config key 'datasets.{name}.parts' in {source}: {part!r} is not another "
                        "dataset defined under 'datasets'"
                    )
            if not spec.get("parts"):
                raise CvmError(f"config key 'datasets.{name}.parts' in {source}: a combined dataset needs its parts")
        elif spec["kind"] != "synthetic":
            root, problem = spec.get("root"), None
            if not root:
                problem = (
                    f"config key 'datasets.{name}.root' in {source}: not set; give the folder the "
                    f"{spec['kind']} dataset was unpacked into"
                )
            elif not Path(root).is_dir():
                problem = (
                    f"config key 'datasets.{name}.root' in {source}: folder {root!r} does not exist; "
                    "point it at the unpacked dataset"
                )
            if problem and require_roots:
                raise CvmError(problem)
            if problem:
                warnings.warn(f"{problem} (planning anyway; its prepare job will stop)", stacklevel=2)


def _lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def known_classes(config: dict, dataset: str) -> list[str] | None:
    """A dataset's class names where the config alone says them (synthetic sets, the fixed layouts)."""
    from .data import CLASS_SETS
    from .data._adapters import CRIC_CLASSES, HERLEV_FOLDERS, PBC_CLASSES, SIPAKMED_CLASSES

    spec = dataset_spec(config, dataset)
    kind = spec["kind"]
    if kind == "synthetic":
        return list(CLASS_SETS[spec["classes"]])
    if kind == "combined":
        parts = [known_classes(config, p) for p in spec.get("parts") or []]
        return None if any(p is None for p in parts) else list(dict.fromkeys(c for p in parts for c in p))
    fixed = {
        "sipakmed": SIPAKMED_CLASSES,
        "cric": CRIC_CLASSES,
        "pbc": PBC_CLASSES,
        "herlev": ["Normal", "Abnormal"] if int(spec.get("task", 2)) == 2 else list(HERLEV_FOLDERS),
    }
    return list(fixed[kind]) if kind in fixed else None
