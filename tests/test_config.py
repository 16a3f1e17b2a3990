import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from cvm_cervix.config import validate_config
from cvm_cervix.errors import CvmError
from cvm_cervix.runs import Run, all_runs, experiment_runs, used_datasets


def minimal(tmp_path):
    return {
        "datasets": {"syn": {"kind": "synthetic"}},
        "experiments": {"main": {"dataset": "syn", "models": ["cvm_cervix", "resnet18"]}},
    }


def test_defaults_fill_every_section(tmp_path):
    cfg = validate_config(minimal(tmp_path))
    assert cfg["train"]["lr"] == 0.0002 and cfg["train"]["batch_size"] == 16 and cfg["train"]["epochs"] == 100
    assert cfg["datasets"]["syn"]["split_fractions"] == [0.6, 0.2, 0.2]
    assert cfg["datasets"]["syn"]["per_class"] == 40
    assert cfg["experiments"]["main"]["augment"] == ["none"]
    assert cfg["results"] == "results"


def test_runs_expand_models_augments_and_seeds(tmp_path):
    cfg = minimal(tmp_path)
    cfg["train"] = {"seeds": [0, 1]}
    cfg["experiments"]["main"]["augment"] = ["none", "flip4x"]
    cfg["experiments"]["again"] = {"dataset": "syn", "models": ["resnet18"]}
    validate_config(cfg)
    runs = all_runs(cfg)
    assert len(runs) == 2 * 2 * 2  # duplicates across experiments are trained once
    assert Run("syn", "resnet18", "flip4x", 1) in runs
    assert len(experiment_runs(cfg, "again")) == 2
    assert Run("syn", "cvm_cervix", "none", 0).path == "runs/syn/cvm_cervix/none/seed0"


@pytest.mark.parametrize(
    "mutate, key, words",
    [
        (lambda c: c.setdefault("train", {}).update(epochs="ten"), "train.epochs", "should be of type integer"),
        (lambda c: c.setdefault("train", {}).update(epoch=3), "train.epoch", "unknown key"),
        (lambda c: c["datasets"]["syn"].update(kind="zip"), "datasets.syn.kind", "is not one of"),
        (lambda c: c["experiments"]["main"].pop("models"), "experiments.main.models", "is required"),
        (
            lambda c: c["experiments"]["main"].update(models=["resnet9"]),
            "experiments.main.models",
            "unknown model 'resnet9'",
        ),
        (lambda c: c["experiments"]["main"].update(dataset="nope"), "experiments.main.dataset", "not defined"),
        (lambda c: c["experiments"]["main"].update(augment=["rot90"]), "experiments.main.augment.0", "is not one of"),
        (
            lambda c: (
                c.setdefault("train", {}).update(img_size=64),
                c["experiments"]["main"]["models"].append("inception_v3"),
            ),
            "train.img_size",
            "64 is too small for model 'inception_v3' (experiment 'main') which needs at least 75",
        ),
        # whole numbers given as floats, negative seeds, unknown reference, missing weights file
        (lambda c: c.setdefault("train", {}).update(epochs=2.0), "train.epochs", "2.0 should be of type integer"),
        (lambda c: c.setdefault("train", {}).update(img_size=32.0), "train.img_size", "a whole number"),
        (lambda c: c.setdefault("train", {}).update(seeds=[0, -3]), "train.seeds.1", "-3 is below the minimum 0"),
        (lambda c: c["datasets"]["syn"].update(split_seed=-1), "datasets.syn.split_seed", "below the minimum 0"),
        (
            lambda c: c["experiments"]["main"].update(split_seeds=[1, 1]),
            "experiments.main.split_seeds",
            "lists 1 twice",
        ),
        (
            lambda c: c["experiments"]["main"].update(split_seeds=[]),
            "experiments.main.split_seeds",
            "should be non-empty",
        ),
        (
            lambda c: (
                c["experiments"]["main"].update(split_seeds=[0, 1]),
                c["datasets"]["syn"].update(split_file=str(Path(__file__))),
            ),
            "experiments.main.split_seeds",
            "takes its one split from its split_file; drop split_seeds or the split_file",
        ),
        (lambda c: c.setdefault("analysis", {}).update(reference="cvm"), "analysis.reference", "unknown model 'cvm'"),
        (
            lambda c: c.setdefault("train", {}).update(weights={"resnet18": "gone.pt"}),
            "train.weights.resnet18",
            "file 'gone.pt' does not exist",
        ),
        # names that become folders and wildcards
        *[
            (
                lambda c, n=name: c["datasets"].update({n: {"kind": "synthetic"}}),
                "datasets",
                f"name {name!r} is not allowed",
            )
            for name in ("c++", "a(b", "x/y", "../..", "", "-lead")
        ],
        (
            lambda c: c["experiments"].update({"a b": {"dataset": "syn", "models": ["resnet18"]}}),
            "experiments",
            "name 'a b' is not allowed",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path, mutate, key, words):
    cfg = minimal(tmp_path)
    mutate(cfg)
    with pytest.raises(CvmError) as err:
        validate_config(cfg, source="my.yaml")
    message = str(err.value)
    assert f"config key '{key}' in my.yaml" in message and words in message
    assert "\n" not in message


def test_missing_dataset_root_is_reported(tmp_path):
    cfg = {
        "datasets": {"real": {"kind": "imagefolder", "root": str(tmp_path / "absent")}},
        "experiments": {"e": {"dataset": "real", "models": ["resnet18"]}},
    }
    with pytest.raises(CvmError, match=r"datasets\.real\.root.*does not exist"):
        validate_config(cfg)
    cfg["datasets"]["real"]["root"] = ""
    with pytest.raises(CvmError, match=r"datasets\.real\.root.*not set"):
        validate_config(cfg)
    with pytest.warns(UserWarning, match=r"datasets\.real\.root.*not set.*planning anyway"):
        validate_config(cfg, require_roots=False)


def test_combined_parts_must_exist_and_are_used(tmp_path):
    (tmp_path / "a").mkdir()
    cfg = {
        "datasets": {
            "a": {"kind": "imagefolder", "root": str(tmp_path / "a")},
            "both": {"kind": "combined", "parts": ["a", "b"]},
        },
        "experiments": {"e": {"dataset": "both", "models": ["resnet18"]}},
    }
    with pytest.raises(CvmError, match=r"datasets\.both\.parts.*'b'"):
        validate_config(cfg)
    cfg["datasets"]["b"] = {"kind": "synthetic"}
    validate_config(cfg)
    assert used_datasets(cfg) == ["a", "b", "both"]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid_apart_from_roots(name, tmp_path):
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    for spec in cfg["datasets"].values():
        if "root" in spec:
            spec["root"] = str(tmp_path)
    validate_config(copy.deepcopy(cfg))


def test_an_experiment_can_have_its_own_seeds(tmp_path):
    cfg = minimal(tmp_path)
    cfg["train"] = {"seeds": [0]}
    cfg["experiments"]["main"]["seeds"] = [0, 1, 2]
    cfg["experiments"]["other"] = {"dataset": "syn", "models": ["resnet18"]}
    validate_config(cfg)
    assert sorted({r.seed for r in experiment_runs(cfg, "main")}) == [0, 1, 2]
    assert [r.seed for r in experiment_runs(cfg, "other")] == [0]
    assert len(all_runs(cfg)) == 2 * 3  # resnet18 seed 0 is shared by both experiments
    cfg["experiments"]["main"]["seeds"] = [1, 1]
    with pytest.raises(CvmError, match="experiments.main.seeds"):
        validate_config(cfg)


def test_the_clinical_view_counts_every_bethesda_abnormality(tmp_path):
    abnormal = validate_config(minimal(tmp_path))["analysis"]["abnormal_classes"]
    assert {"ASC-US", "LSIL", "ASC-H", "HSIL", "SCC", "Koilocytotic", "Dyskeratotic", "Abnormal"} <= set(abnormal)
    assert not {"NILM", "Metaplastic", "Parabasal", "Superficial-Intermediate", "Normal"} & set(abnormal)


def _default():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    "only, experiments, runs, transfer",
    [
        ("comparison", {"comparison": 5}, 5 * 3, False),  # three seeds each (the ranking)
        ("comparison/resnet18", {"comparison": 1}, 3, False),
        ("comparison/resnet18, comparison/xception", {"comparison": 2}, 2 * 3, False),
        # a fine-tuned run needs the run it starts from: main's CVM-Cervix comes along (its three seeds)
        ("finetune", {"main": 1, "finetune": 1}, 3 + 4, False),
        (["transfer"], {"main": 1, "herlev": 1}, 3 + 3, True),  # herlev: three splits (split_seeds)
        (["main", "fusion"], {"main": 1, "fusion": 4}, 3 + 3, False),
    ],
)
def test_only_keeps_the_named_part_of_the_plan_and_what_it_starts_from(only, experiments, runs, transfer):
    cfg = validate_config({**_default(), "only": only})
    assert {name: len(exp["models"]) for name, exp in cfg["experiments"].items()} == experiments
    assert len(all_runs(cfg)) == runs and bool(cfg.get("transfer")) == transfer
    again = validate_config(copy.deepcopy(cfg))  # validating the selection again selects the same
    assert again["experiments"] == cfg["experiments"]


@pytest.mark.parametrize(
    "only, words",
    [
        ("nope", "'nope' names no experiment of the config (main, comparison"),
        ("comparison/vgg19", "experiment 'comparison' has no model 'vgg19' (its models: cvm_cervix"),
        (" , ", "names nothing"),
    ],
)
def test_only_naming_nothing_known_is_one_line(only, words):
    with pytest.raises(CvmError, match=r"config key 'only' in the config: ") as err:
        validate_config({**_default(), "only": only})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_an_image_size_botnet_cannot_take_is_one_line():
    cfg = {
        "datasets": {"syn": {"kind": "synthetic"}},
        "train": {"img_size": 80},
        "experiments": {"e": {"dataset": "syn", "models": ["botnet"]}},
    }
    with pytest.raises(
        CvmError, match=r"model 'botnet' \(experiment 'e'\) needs a multiple of 32, not 80; use 64 or 96"
    ):
        validate_config(cfg)


def test_papers_cric_limits_are_its_table_1():
    """config/paper.yaml balances CRIC as Table 1 does: each class's train + val + test of the paper."""
    from cvm_cervix.report import paper_results

    cric = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["datasets"]["cric"]
    table = paper_results()["splits"]["combined"]
    assert cric["class_limits"] == {cls: sum(table[cls]) for cls in cric["class_limits"]}
    assert sorted(cric["class_limits"]) == sorted(["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"])
    assert sum(cric["class_limits"].values()) == 4789 and cric["short_classes"] == "take_all"


@pytest.mark.parametrize(
    "mutate, words",
    [
        (
            lambda c: c["train"].update(lr=float("inf")),
            "config key 'train.lr' in the config: inf is not a finite number",
        ),
        (
            lambda c: c["variants"]["random_f25"].update(train_fraction=float("nan")),
            "config key 'variants.random_f25.train_fraction' in the config: nan is not a finite number",
        ),
        (
            lambda c: c["experiments"]["comparison"].update(models=["resnet18", "xception", "resnet18"]),
            "'experiments.comparison.models' in the config: lists 'resnet18' twice",
        ),
        (
            lambda c: c["experiments"]["main"].update(augment=["none", "none"]),
            "'experiments.main.augment' in the config: lists 'none' twice",
        ),
        (lambda c: c["experiments"]["main"].update(compress=["fp16", "fp16"]), "lists 'fp16' twice"),
        (
            lambda c: c["train"].update(seeds=[2**64]),
            "'train.seeds.0' in the config: 18446744073709551616 is above the maximum 4294967295",
        ),
        (lambda c: c["datasets"]["synthetic_pbc"].update(split_seed=2**32), "is above the maximum 4294967295"),
        (
            lambda c: c["train"].update(batch_size=1),
            "'train.batch_size' in the config: a batch of one image cannot train",
        ),
        (lambda c: c.update(results=str(REPO / "README.md")), "is a file, not a folder"),
        (
            lambda c: c["experiments"]["main"].update(baseline="main"),
            "'experiments.main.baseline' in the config: 'main' is not another experiment",
        ),
        (
            lambda c: c["train"].update(head_hidden=2_000_000_000),
            "'train.head_hidden' in the config: 2000000000 is above the maximum 65536",
        ),
        (
            lambda c: c["experiments"]["main"].update(baseline="mian"),
            "'experiments.main.baseline' in the config: 'mian' is not another experiment",
        ),
    ],
)
def test_values_that_would_be_quietly_wrong_or_a_traceback_are_one_line(mutate, words):
    cfg = _default()
    mutate(cfg)
    with pytest.raises(CvmError) as err:
        validate_config(cfg)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_split_file_that_does_not_exist_and_a_captured_step_with_compile_are_named(tmp_path):
    cfg = minimal(tmp_path)
    cfg["datasets"]["syn"]["split_file"] = str(tmp_path / "nowhere" / "splits.csv")
    with pytest.raises(
        CvmError,
        match=r"'datasets\.syn\.split_file' in the config: file .*nowhere/splits\.csv.* does "
        r"not exist; give a splits\.csv written by a prepare step",
    ):
        validate_config(cfg)
    cfg = minimal(tmp_path)
    cfg["train"] = {"step": "cuda_graph", "compile": True}
    with pytest.raises(
        CvmError, match=r"'train\.step' in the config: cuda_graph .* does not combine with train\.compile"
    ):
        validate_config(cfg)
    cfg["train"] = {"step": "graphs"}
    with pytest.raises(CvmError, match=r"train\.step"):
        validate_config(cfg)


def test_planning_and_the_light_jobs_import_no_torch():
    """What every Snakemake start runs (common.smk: checking the config, which reads the model catalog,
    and the plan) and what the statistics, report and transfer-matrix jobs import load no torch, timm or
    torchvision: importing them cost about 10 s of each start and each such job on 2 cores."""
    import subprocess
    import sys

    code = f"""
import sys, warnings, yaml
warnings.simplefilter("ignore")
from cvm_cervix.config import validate_config
from cvm_cervix.plan import Plan
from cvm_cervix.models import get_model_spec, model_names
import cvm_cervix.data, cvm_cervix.labels, cvm_cervix.precisions, cvm_cervix.stats
import cvm_cervix.report, cvm_cervix.transfer
config = yaml.safe_load(open({str(REPO / "config" / "paper.yaml")!r}))
validate_config(config, require_roots=False)
Plan(config)
assert len(model_names()) == 24 and get_model_spec("botnet").img_size_multiple == 32
print(sorted(m for m in ("torch", "timm", "torchvision", "onnx", "onnxruntime") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"
    # and the model builders still come with the package when asked for
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cvm_cervix.models import create_model; "
            "print(create_model.__module__, 'torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.split() == ["cvm_cervix.models._registry", "True"], proc.stderr[-2000:]


def test_a_runs_settings_are_one_object_tied_to_the_schema():
    """Every key of the schema's train section is a field of TrainSettings (or names runs: seeds, or
    every model's weights), with the schema's default; every variant key is a field too."""
    from cvm_cervix.configfile import load_schema
    from cvm_cervix.plan import Plan
    from cvm_cervix.settings import NOT_RUN_SETTINGS, NOT_SETTINGS, PLACE, RESULT, TrainSettings

    schema = load_schema()
    train = schema["properties"]["train"]["properties"]
    fields = set(TrainSettings.names())
    assert set(train) - set(NOT_SETTINGS) <= fields
    defaults = TrainSettings()
    for key in set(train) - set(NOT_SETTINGS):
        assert getattr(defaults, key) == train[key]["default"], key
    variant_keys = set(schema["properties"]["variants"]["additionalProperties"]["properties"])
    assert variant_keys <= fields, variant_keys - fields
    assert set(TrainSettings.names(PLACE)) == {"device", "compile", "deterministic", "tensorboard", "weights_cache"}
    assert set(TrainSettings.names(RESULT)) | set(TrainSettings.names(PLACE)) == fields
    # the rule's params are the fields that decide the result: a place field never retrains a run
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate_config(config)
    plan = Plan(config)
    params = plan.train_params(plan.runs[0])
    assert not set(params) & set(NOT_RUN_SETTINGS) and set(params) <= fields
    settings = TrainSettings.of(config["train"], params)
    assert settings.img_size == config["train"]["img_size"] and settings.device == config["train"]["device"]
    with pytest.raises(TypeError, match="lrr"):
        settings.replace(lrr=1)
