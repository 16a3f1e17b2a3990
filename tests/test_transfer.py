"""Class mappings between datasets, the transfer matrix's numbers, variants and fine-tuning from a run."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, prepared_synthetic

from cvm_cervix.config import validate_config
from cvm_cervix.data import CLASS_SETS
from cvm_cervix.data._adapters import CRIC_CLASSES, HERLEV_FOLDERS, PBC_CLASSES, SIPAKMED_CLASSES
from cvm_cervix.errors import CvmError
from cvm_cervix.labels import resolve_mapping
from cvm_cervix.runs import Run, all_runs, init_source, recipe, run_settings, split_recipe
from cvm_cervix.transfer import transfer_scores


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def validated(config: dict) -> dict:
    validate_config(config, require_roots=False)
    return config


# --- mappings -------------------------------------------------------------------------------------------


def test_the_builtin_mapping_covers_every_class_of_every_cervical_layout():
    mapping = resolve_mapping(validated(default_config()), "normal_abnormal")
    layouts = {
        "sipakmed": SIPAKMED_CLASSES,
        "cric": CRIC_CLASSES,
        "herlev (7)": list(HERLEV_FOLDERS),
        "herlev (2)": ["Normal", "Abnormal"],
        "synthetic combined": list(CLASS_SETS["combined"]),
        "synthetic herlev": list(CLASS_SETS["herlev"]),
    }
    for name, classes in layouts.items():
        missing = [c for c in classes if c not in mapping]
        assert not missing, (name, missing)
    expected_abnormal = {
        "ASC-US",
        "LSIL",
        "ASC-H",
        "HSIL",
        "SCC",
        "Koilocytotic",
        "Dyskeratotic",
        "Abnormal",
        "light_dysplastic",
        "moderate_dysplastic",
        "severe_dysplastic",
        "carcinoma_in_situ",
    }
    assert {c for c, v in mapping.items() if v == "abnormal"} == expected_abnormal
    assert {c for c, v in mapping.items() if v == "normal"} == {
        "NILM",
        "Metaplastic",
        "Parabasal",
        "Superficial-Intermediate",
        "Normal",
        "normal_superficiel",
        "normal_intermediate",
        "normal_columnar",
    }
    # Herlev's seven folders map as its own two-class task groups them
    assert all(mapping[folder] == two.lower() for folder, two in HERLEV_FOLDERS.items())
    assert not set(PBC_CLASSES) & set(mapping)  # blood cells are no cervical class


def test_a_class_without_a_mapping_is_one_line_naming_it():
    config = default_config()
    config["transfer"]["targets"].append("synthetic_pbc")
    with pytest.raises(CvmError) as err:
        validated(config)
    message = str(err.value)
    assert (
        "dataset 'synthetic_pbc'" in message and "class 'basophil' has no class in mapping 'normal_abnormal'" in message
    )
    assert "nor 7 more" in message and "mappings.normal_abnormal" in message and "\n" not in message

    config = default_config()  # a finer mapping of the user's, missing one class
    config["mappings"] = {
        "fine": {c: c for c in CLASS_SETS["combined"] if c != "LSIL"} | {"Normal": "NILM", "Abnormal": "HSIL"}
    }
    config["transfer"]["mapping"] = "fine"
    with pytest.raises(CvmError, match="dataset 'synthetic_combined': class 'LSIL' has no class in mapping 'fine'"):
        validated(config)
    config["mappings"]["fine"]["LSIL"] = "LSIL"
    assert resolve_mapping(validated(config), "fine")["Abnormal"] == "HSIL"
    # adding to the built-in one keeps it
    config = default_config()
    config["mappings"] = {"normal_abnormal": {"basophil": "normal"}}
    mapping = resolve_mapping(validated(config), "normal_abnormal")
    assert mapping["basophil"] == "normal" and mapping["HSIL"] == "abnormal"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["transfer"].update(sources=["nope/cvm_cervix/none"]), "transfer.sources.*no experiment 'nope'"),
        (lambda c: c["transfer"].update(sources=["main/resnet18/none"]), "has no run of model 'resnet18'"),
        (lambda c: c["transfer"].update(targets=["elsewhere"]), "dataset 'elsewhere' is not defined"),
        (lambda c: c["transfer"].update(mapping="fine"), "no mapping 'fine'"),
        (lambda c: c["experiments"]["finetune"].update(variants=["typo"]), "variant 'typo' is not defined"),
        (
            lambda c: c["variants"].update(x={"init_from": "main/cvm_cervix/flip4x"}),
            "variants.x.init_from.*augment 'flip4x'",
        ),
        (
            lambda c: c["experiments"]["finetune"].update(models=["cvm_cervix", "resnet18"]),
            "variant 'random_f25' starts|variant 'from_combined' starts",
        ),
        (lambda c: c["variants"].update(default={"amp": True}), "variants"),
        (lambda c: c["variants"].update(y={"train_fraction": 0}), "train_fraction"),
    ],
)
def test_bad_variants_and_transfer_settings_are_one_line(change, message):
    config = default_config()
    change(config)
    with pytest.raises(CvmError, match=message) as err:
        validated(config)
    assert "\n" not in str(err.value)


# --- the numbers --------------------------------------------------------------------------------------------


def test_transfer_scores_count_as_a_clinician_would():
    frame = pd.DataFrame(
        {
            "label_shared": ["abnormal"] * 4 + ["normal"] * 6,
            "pred_shared": ["abnormal", "abnormal", "abnormal", "normal"] + ["normal"] * 5 + ["abnormal"],
        }
    )
    scores = transfer_scores(frame)
    assert scores["n"] == 10 and scores["n_abnormal"] == 4
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["sensitivity"] == pytest.approx(0.75) and scores["specificity"] == pytest.approx(5 / 6)
    for key in ("accuracy", "sensitivity", "specificity"):
        low, high = scores[f"{key}_ci"]
        assert 0 <= low < scores[key] < high <= 1
    assert scores["sensitivity_count"] == [3, 4] and scores["specificity_count"] == [5, 6]
    # Wilson for 8 of 10: [49.0%, 94.3%]
    assert scores["accuracy_ci"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    finer = transfer_scores(pd.DataFrame({"label_shared": ["a", "b"], "pred_shared": ["a", "a"]}))
    assert finer["accuracy"] == 0.5 and "sensitivity" not in finer  # no abnormal class: accuracy only


# --- variants ---------------------------------------------------------------------------------------------------


def test_variants_are_runs_of_their_own_with_their_settings():
    config = validated(default_config())
    assert recipe("none", "default") == "none" and split_recipe("flip4x+from_combined") == ("flip4x", "from_combined")
    runs = [r for r in all_runs(config) if r.dataset == "synthetic_herlev" and r.model == "cvm_cervix"]
    assert sorted(r.recipe for r in runs) == [
        "flip4x",
        "none",
        "none+from_combined",
        "none+from_combined_f25",
        "none+random_f25",
    ]
    run = Run("synthetic_herlev", "cvm_cervix", "none+from_combined_f25", 0)
    assert run.path == "runs/synthetic_herlev/cvm_cervix/none+from_combined_f25/seed0"
    assert init_source(config, run) == Run("synthetic_combined", "cvm_cervix", "none", 0)
    settings = run_settings(config, run)
    assert (
        settings["train_fraction"] == 0.25 and settings["init_from"] == "runs/synthetic_combined/cvm_cervix/none/seed0"
    )
    assert "train_fraction" not in run_settings(config, Run("synthetic_herlev", "cvm_cervix", "none", 0))
    # a seed the source experiment does not have: its first seed
    other = copy.deepcopy(config)
    other["experiments"]["finetune"]["seeds"] = [5]
    assert init_source(other, Run("synthetic_herlev", "cvm_cervix", "none+from_combined", 5)).seed == 0


def test_the_paper_config_has_the_precision_and_finetuning_experiments():
    config = validated(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    runs = all_runs(config)
    amp = Run("combined", "cvm_cervix", "none+amp", 0)
    assert amp in runs and Run("combined", "cvm_cervix", "none", 0) in runs
    assert run_settings(config, amp)["amp"] is True and config["train"]["amp"] is False
    finetune = [r for r in runs if r.dataset == "herlev" and r.recipe != "flip4x"]
    assert len(finetune) == 9
    assert run_settings(config, Run("herlev", "cvm_cervix", "none+random_f10", 0))["pretrained"] is False
    assert run_settings(config, Run("herlev", "cvm_cervix", "none+imagenet_f10", 0))["pretrained"] is True
    from cvm_cervix.runs import start_label

    starts = {
        v: start_label(config, Run("herlev", "cvm_cervix", recipe("none", v), 0))
        for v in ("default", "random_f25", "from_combined_f10")
    }
    assert starts == {
        "default": "ImageNet",
        "random_f25": "random weights",
        "from_combined_f10": "from main/cvm_cervix/none",
    }


# --- training from another run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    return {
        name: prepared_synthetic(tmp_path_factory.mktemp(name), classes, per_class, name)
        for name, classes, per_class in (("combined", "combined", 6), ("herlev", "herlev", 10))
    }


def test_a_run_started_from_another_keeps_its_backbone(two_datasets, tmp_path):
    from cvm_cervix.run import read_weights
    from cvm_cervix.train import train_run

    common = dict(img_size=32, epochs=1, batch_size=8, device="cpu", progress=False, seed=0)
    source = tmp_path / "source"
    train_run("shufflenet_v2_x0_5", two_datasets["combined"], source, lr=1e-3, **common)
    src, _ = read_weights(source / "weights.safetensors")
    # lr 0: nothing moves, so every backbone weight is the source's; the 2-class head is new
    info = train_run(
        "shufflenet_v2_x0_5", two_datasets["herlev"], tmp_path / "tuned", lr=0.0, init_from=source, **common
    )
    tuned, _ = read_weights(tmp_path / "tuned" / "weights.safetensors")
    convs = [k for k in src if k.startswith("backbone.") and k.endswith(".weight") and src[k].dim() == 4]
    assert convs and all(torch.equal(tuned[k], src[k]) for k in convs)
    assert tuned["head.weight"].shape == (2, src["head.weight"].shape[1])
    assert info["init_from"]["head"] == "replaced (other classes)" and info["init_from"]["run"] == str(source)
    # from scratch the same weights differ
    scratch = train_run("shufflenet_v2_x0_5", two_datasets["herlev"], tmp_path / "scratch", lr=0.0, **common)
    fresh, _ = read_weights(tmp_path / "scratch" / "weights.safetensors")
    assert not torch.equal(fresh[convs[0]], src[convs[0]]) and scratch["init_from"] is None
    # same classes: the head is kept too
    same = train_run(
        "shufflenet_v2_x0_5", two_datasets["combined"], tmp_path / "same", lr=0.0, init_from=source, **common
    )
    kept, _ = read_weights(tmp_path / "same" / "weights.safetensors")
    assert same["init_from"]["head"] == "kept" and torch.equal(kept["head.weight"], src["head.weight"])
    with pytest.raises(CvmError, match="that run is shufflenet_v2_x0_5 at 32 px, so it cannot start resnet18"):
        train_run("resnet18", two_datasets["herlev"], tmp_path / "other", lr=0.0, init_from=source, **common)


def test_a_training_fraction_keeps_that_share_of_each_class(two_datasets, tmp_path):
    from cvm_cervix.train import train_run
    from cvm_cervix.train_data import fraction_rows

    labels = np.repeat([0, 1, 2], [10, 4, 1])
    rows = fraction_rows(labels, 0.25, seed=3)
    assert np.bincount(labels[rows]).tolist() == [2, 1, 1]  # rounded, at least one per class
    assert np.array_equal(rows, fraction_rows(labels, 0.25, seed=3))
    many = np.repeat([0, 1], 40)
    assert not np.array_equal(fraction_rows(many, 0.25, seed=3), fraction_rows(many, 0.25, seed=4))
    info = train_run(
        "shufflenet_v2_x0_5",
        two_datasets["herlev"],
        tmp_path / "f",
        img_size=32,
        epochs=1,
        batch_size=4,
        device="cpu",
        progress=False,
        train_fraction=0.5,
    )
    assert info["train_fraction"] == 0.5 and info["train_images"] == 6  # 6 per class in training, half: 3 + 3
