"""`cvm-cervix export`: a trained run as a folder to share, which `predict` reads to the same predictions."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import prepared_synthetic, write_image

from cvm_cervix.cli import main as cli
from cvm_cervix.errors import CvmError
from cvm_cervix.export import export_run
from cvm_cervix.intended_use import INTENDED_USE, SYNTHETIC
from cvm_cervix.stats import accuracy_f1_intervals


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder as the workflow lays it out: a prepared synthetic set and one evaluated run."""
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    base = tmp_path_factory.mktemp("export")
    data = prepared_synthetic(base / "prep", "herlev", 12)
    results = base / "results"
    shutil.copytree(data, results / "data" / "syn")
    run = results / "runs" / "syn" / "shufflenet_v2_x0_5" / "none" / "seed0"
    train_run(
        "shufflenet_v2_x0_5",
        results / "data" / "syn",
        run,
        img_size=32,
        epochs=2,
        batch_size=8,
        threads=2,
        progress=False,
    )
    evaluate_run(run, results / "data" / "syn", threads=2)
    return results, run


def test_an_exported_folder_predicts_what_its_run_predicts(results, tmp_path):
    _, run = results
    out = tmp_path / "shared" / "model"
    assert cli(["export", str(run), "-o", str(out), "--onnx"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "calibration.json",
        "config.json",
        "model.onnx",
        "model.safetensors",
    ]
    assert not list(out.parent.glob(".*partial*"))  # written whole, under a temporary name

    config = json.loads((out / "config.json").read_text())
    train = json.loads((run / "train.json").read_text())
    assert config["architecture"] == "shufflenet_v2_x0_5" and config["num_classes"] == 2
    assert config["label_names"] == train["classes"] == ["Normal", "Abnormal"]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["cvm_cervix"]["normalization"] == train["normalization"]
    assert config["cvm_cervix"]["run"]["data_digest"] == train["data_digest"]
    assert config["cvm_cervix"]["synthetic"] is True
    assert (out / "model.safetensors").read_bytes() == (run / "weights.safetensors").read_bytes()

    images = tmp_path / "cells"
    for i in range(5):
        write_image(images / f"cell{i}.png", seed=i, size=(40, 30))
    csv = {}
    for name, source, precision in (("run", run, "fp32"), ("export", out, "fp32"), ("onnx", out, "onnx")):
        csv[name] = tmp_path / f"{name}.csv"
        cli(["predict", str(images), "--run", str(source), "--precision", precision, "-o", str(csv[name])])
    run_preds, exported = pd.read_csv(csv["run"]), pd.read_csv(csv["export"])
    pd.testing.assert_frame_equal(run_preds, exported)  # the same file, the same model: the same numbers
    onnx = pd.read_csv(csv["onnx"])
    assert (onnx["pred"] == run_preds["pred"]).all()
    assert np.abs(onnx.filter(like="prob_").to_numpy() - run_preds.filter(like="prob_").to_numpy()).max() < 1e-4


def test_the_model_card_states_the_runs_own_numbers(results, tmp_path):
    _, run = results
    out = export_run(run, tmp_path / "card")
    card = (out / "README.md").read_text()
    test = pd.read_csv(run / "predictions_test.csv")
    accuracy = (test["label"] == test["pred"]).mean()
    lo, hi = accuracy_f1_intervals(test["label"], test["pred"], ["Normal", "Abnormal"], 1000, seed=0)["accuracy"]
    correct = int((test["label"] == test["pred"]).sum())
    assert (
        f"| accuracy ({correct} of {len(test)}) | {100 * accuracy:.1f}% | {100 * lo:.1f}% to {100 * hi:.1f}% (Wilson) |"
        in card
    )
    assert f"Test results ({len(test)} images)" in card
    assert "(SYNTHETIC data)" in card.splitlines()[card.splitlines().index("---", 1) + 1]
    assert SYNTHETIC in card and INTENDED_USE in card
    abnormal = test["label"] == "Abnormal"
    sensitivity = ((test["pred"] == "Abnormal") & abnormal).sum() / abnormal.sum()
    found = ((test["pred"] == "Abnormal") & abnormal).sum()
    assert f"| abnormal sensitivity (Abnormal; {found} of {abnormal.sum()}) | {100 * sensitivity:.1f}% |" in card
    split = json.loads((run.parents[4] / "data" / "syn" / "summary.json").read_text())["split"]
    assert f"split: `{split}`" in card


def test_export_refuses_what_it_cannot_finish_and_writes_nothing(results, tmp_path):
    _, run = results
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(CvmError, match="exists and is not an empty folder"):
        export_run(run, taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    lone = tmp_path / "lone"  # a run folder outside its results folder: no dataset summary to describe
    shutil.copytree(run, lone)
    with pytest.raises(CvmError, match="no data/syn/summary.json above"):
        export_run(lone, tmp_path / "out1")
    (lone / "metrics.json").unlink()
    with pytest.raises(CvmError, match="has no metrics.json: .*run the workflow's evaluate step"):
        export_run(lone, tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()

    exported = export_run(run, tmp_path / "once")
    with pytest.raises(CvmError, match="is an exported folder already"):
        export_run(exported, tmp_path / "twice")
    with pytest.raises(CvmError, match="static int8 needs the run's training images"):
        from cvm_cervix.compress import Predictor

        Predictor(exported, "int8")
    config = json.loads((exported / "config.json").read_text())
    del config["cvm_cervix"]["run"]["classes"]
    (exported / "config.json").write_text(json.dumps(config))
    with pytest.raises(CvmError, match="config.json lacks key 'classes'.*export the run again"):
        from cvm_cervix.run import TrainedRun

        TrainedRun.open(exported)


def test_an_export_is_checked_like_a_run_folder(results, tmp_path):
    """Its weights' digest is in config.json (weights swapped between two exports are refused), and a
    hand-edited config.json with an impossible normalisation or a class named twice is refused by name."""
    from cvm_cervix.compress import Predictor

    _, run = results
    first, second = export_run(run, tmp_path / "first"), tmp_path / "second"
    config = json.loads((first / "config.json").read_text())
    from cvm_cervix._io import sha256_file

    assert config["cvm_cervix"]["weights_sha256"] == sha256_file(first / "model.safetensors")
    shutil.copytree(first, second)
    weights = second / "model.safetensors"  # another model of the same shape: one tensor changed
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1
    save_file(
        tensors, weights, metadata=json.loads(weights.read_bytes()[8:].split(b"}}", 1)[0] + b"}}")["__metadata__"]
    )
    with pytest.raises(CvmError, match="is not the weights .*config.json was exported with"):
        Predictor(second)

    def edited(change) -> CvmError:
        folder = tmp_path / f"edit{len(list(tmp_path.iterdir()))}"
        shutil.copytree(first, folder)
        cfg = json.loads((folder / "config.json").read_text())
        change(cfg["cvm_cervix"])
        (folder / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(CvmError) as err:
            Predictor(folder)
        return err.value

    branch = next(iter(config["cvm_cervix"]["normalization"]))
    err = edited(lambda c: c["normalization"][branch].update(std=[0, 0, 0]))
    assert f"normalization std of {branch!r} is [0, 0, 0]; it must be three finite numbers, each above 0" in str(err)
    err = edited(lambda c: c["normalization"][branch].update(mean=["a", 0.5, 0.5]))
    assert f"normalization mean of {branch!r} is ['a', 0.5, 0.5]; it must be three finite numbers" in str(err)
    classes = config["cvm_cervix"]["run"]["classes"]
    err = edited(lambda c: c["run"].update(classes=[classes[0]] * len(classes)))
    assert f"class {classes[0]!r} is listed twice" in str(err)


def test_the_model_card_shows_hostile_class_names_as_text(results):
    import dataclasses

    from cvm_cervix.export import _summary, card_numbers, model_card
    from cvm_cervix.run import TrainedRun

    _, run = results
    trained = TrainedRun.open(run)
    numbers = card_numbers(trained)
    hostile = ["a|b", "two\n# lines", "<img src=x onerror=alert(1)>"]
    names = hostile + trained.classes[len(hostile) :]
    renamed = dataclasses.replace(trained, record=dataclasses.replace(trained.record, classes=tuple(names)))
    numbers["per_class"] = {n: row for n, row in zip(names, numbers["per_class"].values())}
    card = model_card(renamed, _summary(trained), numbers)
    assert "<img" not in card and "&lt;img src=x onerror=alert(1)&gt;" in card
    assert "\n# lines" not in card and "| a\\|b |" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and line.endswith(" |")]
    assert all(line.replace("\\|", "").count("|") in (4, 6) for line in rows), rows  # no cell split or added


def test_export_to_a_link_or_below_a_file_is_one_line(results, tmp_path):
    _, run = results
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(CvmError, match="link is a symbolic link; give -o a new folder name"):
        export_run(run, tmp_path / "link")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CvmError, match="file is a file, so .*file/sub cannot be made"):
        export_run(run, tmp_path / "file" / "sub")
    assert (tmp_path / "file").read_text() == "x" and not any((tmp_path / "empty").iterdir())


def test_a_timm_architecture_exports_weights_plain_timm_loads_to_the_same_predictions(results, tmp_path):
    """DeiT-tiny trained here, exported: timm.create_model with the file as its pretrained weights (and the
    input normalised as timm's data config says) predicts what the run predicts; the card gives the call."""
    import timm

    from cvm_cervix.compress import Predictor
    from cvm_cervix.data import load_cache
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.export import TIMM_WEIGHTS, export_run
    from cvm_cervix.train import train_run

    base, _ = results
    data = base / "data" / "syn"
    run = base / "runs" / "syn" / "deit_tiny" / "none" / "seed0"
    train_run("deit_tiny", data, run, img_size=32, epochs=1, batch_size=8, threads=2, progress=False)
    evaluate_run(run, data, threads=2)
    out = export_run(run, tmp_path / "deit")
    card = (out / "README.md").read_text()
    classes = json.loads((out / "config.json").read_text())["label_names"]
    assert f"timm.create_model('deit_tiny_patch16_224', num_classes={len(classes)}, img_size=32" in card
    model = timm.create_model(
        "deit_tiny_patch16_224",
        num_classes=len(classes),
        img_size=32,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out / TIMM_WEIGHTS), num_classes=len(classes)),
    ).eval()
    images = torch.from_numpy(np.asarray(load_cache(data / "cache_32.npy"))[:16])
    config = timm.data.resolve_model_data_config(model)
    mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        theirs = model((images.float() / 255 - mean) / std).softmax(1).numpy()
    ours, _ = Predictor(out, "fp32", "cpu")(images)
    assert np.allclose(ours, theirs, atol=1e-5)
    # a network plain timm does not hold (torchvision's ShuffleNet here) exports no such file
    assert not (export_run(results[1], tmp_path / "shufflenet") / TIMM_WEIGHTS).exists()


def test_the_cards_front_matter_is_huggingface_hubs(results, tmp_path):
    from huggingface_hub import ModelCard

    from cvm_cervix.export import export_run

    card = ModelCard.load(export_run(results[1], tmp_path / "card") / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "cvm-cervix" and data["pipeline_tag"] == "image-classification"
    assert "synthetic-data" in data["tags"] and data["datasets"] == ["syn"]
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert {m["type"] for m in metrics} == {"accuracy", "f1"} and all(0 <= m["value"] <= 1 for m in metrics)
    assert "## Licence" in card.text
