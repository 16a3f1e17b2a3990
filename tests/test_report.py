import json

import pytest

from cvm_cervix.models import PAPER_MODELS, model_names
from cvm_cervix.report import aggregate_runs, paper_metrics, paper_results


def test_paper_numbers_are_well_formed():
    paper = paper_results()
    combined = paper["results"]["combined"]
    assert sorted(combined) == sorted(PAPER_MODELS)  # Table 3: all 23 models
    for key, models in paper["results"].items():
        for model, augments in models.items():
            assert model in model_names()
            for augment, splits in augments.items():
                assert augment in ("none", "flip4x") and set(splits) <= {"val", "test"}
                for numbers in splits.values():
                    assert set(numbers) == {"precision", "recall", "f1", "accuracy"}
                    assert all(isinstance(v, float) and 50 < v <= 100 for v in numbers.values())
    for item in paper["confusions"]:
        assert isinstance(item["label"], str) and isinstance(item["pred"], str) and item["count"] > 0
    assert sum(v[0] for v in paper["splits"]["combined"].values()) == 5308  # Table 1 totals
    assert sum(v[2] for v in paper["splits"]["pbc"].values()) == 3415


def test_paper_lookup():
    assert paper_metrics("combined", "cvm_cervix", "none", "test")["accuracy"] == 91.72
    assert paper_metrics("combined", "cvm_cervix", "flip4x", "test")["accuracy"] == 93.48
    assert paper_metrics("herlev", "cvm_cervix", "flip4x", "val")["f1"] == 95.80
    assert paper_metrics("combined", "resnet18", "none", "val") is None  # Table 3 is test only
    assert paper_metrics(None, "cvm_cervix", "none", "test") is None


def _fake_run(path, seed, acc, f1):
    path.mkdir(parents=True)
    split = {"accuracy": acc, "precision_macro": acc, "recall_macro": acc, "f1_macro": f1, "ms_per_image": 2.0}
    (path / "metrics.json").write_text(json.dumps({"seed": seed, "val": split, "test": split, "size_mb": 1.5}))
    (path / "train.json").write_text(json.dumps({"params": 2_000_000, "seconds_per_epoch": 10.0 + seed,
                                                 "total_seconds": 100.0, "device": "cpu", "device_name": "CPU",
                                                 "epochs": 10, "train_images": 50, "best_epoch": 3}))
    return path


def test_seeds_aggregate_to_mean_and_sample_sd(tmp_path):
    runs = [_fake_run(tmp_path / f"s{i}", i, acc, f1) for i, (acc, f1) in enumerate([(0.80, 0.7), (0.90, 0.8), (0.85, 0.9)])]
    agg = aggregate_runs(runs)
    assert agg["seeds"] == [0, 1, 2]
    assert agg["test"]["accuracy"]["mean"] == pytest.approx(85.0)
    assert agg["test"]["accuracy"]["sd"] == pytest.approx(5.0)  # sample sd of 80, 90, 85
    assert agg["test"]["f1"]["mean"] == pytest.approx(80.0)
    assert agg["cost"]["seconds_per_epoch"]["mean"] == pytest.approx(11.0)
    assert agg["cost"]["params_m"] == 2.0
    single = aggregate_runs(runs[:1])
    assert single["test"]["accuracy"]["sd"] is None and single["test"]["accuracy"]["n"] == 1
