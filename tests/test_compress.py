import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cvm_cervix.cli import main as cli
from cvm_cervix.compress import Predictor, compress_run
from cvm_cervix.data import read_manifest
from cvm_cervix.errors import CvmError


@pytest.fixture(scope="module")
def deit_run(tiny_dataset, tmp_path_factory):
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    out = tmp_path_factory.mktemp("deit")
    train_run("deit_tiny", tiny_dataset, out, img_size=32, epochs=2, batch_size=8, lr=1e-3, threads=2, progress=False)
    evaluate_run(out, tiny_dataset, threads=2)
    return out


@pytest.mark.parametrize("precision, size_ratio", [("fp16", 0.5), ("bf16", 0.5), ("int8", 0.3), ("onnx", 1.0)])
def test_compressed_sizes_and_agreement(deit_run, tiny_dataset, precision, size_ratio):
    metrics = compress_run(deit_run, tiny_dataset, precision, threads=2)
    saved = json.loads((deit_run / "compressed" / precision / "metrics.json").read_text())
    assert saved == metrics
    fp32_mb = (deit_run / "weights.safetensors").stat().st_size / 1e6
    assert metrics["size_mb"] == pytest.approx(fp32_mb * size_ratio, rel=0.1)
    assert metrics["agreement_with_fp32"] >= 0.8  # the same class for most test images
    fp32 = json.loads((deit_run / "metrics.json").read_text())["test"]
    assert metrics["delta_accuracy"] == pytest.approx(metrics["accuracy"] - fp32["accuracy"])
    preds = pd.read_csv(deit_run / "compressed" / precision / "predictions_test.csv")
    assert len(preds) == fp32["n"]


def test_predictor_probabilities_track_fp32(deit_run, tiny_dataset):
    from cvm_cervix.data import load_cache

    manifest = read_manifest(tiny_dataset / "manifest.csv")
    images = torch.from_numpy(np.asarray(load_cache(tiny_dataset / "cache_32.npy")[:16]).copy())
    ref, _ = Predictor(deit_run, "fp32", "cpu")(images)
    for precision, tol in (("onnx", 1e-4), ("fp16", 2e-2), ("bf16", 5e-2), ("int8", 5e-2)):
        probs, _ = Predictor(deit_run, precision, "cpu")(images)
        assert probs.shape == ref.shape and np.abs(probs - ref).max() < tol, precision
    with pytest.raises(CvmError, match="unknown precision 'fp8'"):
        Predictor(deit_run, "fp8")
    assert len(manifest) == 66


def test_predict_cli_on_a_folder(deit_run, tiny_dataset, tmp_path, capsys):
    manifest = read_manifest(tiny_dataset / "manifest.csv")
    folder = tmp_path / "new"
    folder.mkdir()
    for path in manifest["path"][:5]:
        (folder / path.rsplit("/", 1)[1]).write_bytes(open(path, "rb").read())
    out = tmp_path / "pred.csv"
    assert cli(["predict", str(folder), "--run", str(deit_run), "-o", str(out), "--threads", "2"]) == 0
    frame = pd.read_csv(out)
    classes = json.loads((deit_run / "train.json").read_text())["classes"]
    assert list(frame.columns) == ["path", "pred", "confidence"] + [f"prob_{c}" for c in classes]
    assert len(frame) == 5 and set(frame["pred"]) <= set(classes)
    np.testing.assert_allclose(frame[[f"prob_{c}" for c in classes]].sum(axis=1), 1, atol=1e-4)
    assert "5 predictions written" in capsys.readouterr().out
    had_onnx = (deit_run / "compressed" / "onnx").exists()
    assert cli(["predict", str(folder), "--run", str(deit_run), "--precision", "onnx"]) == 0
    onnx = pd.read_csv(io.StringIO(capsys.readouterr().out))  # CSV on standard output
    assert onnx["pred"].tolist() == frame["pred"].tolist()
    assert (deit_run / "compressed" / "onnx").exists() == had_onnx  # predict leaves the run untouched


def test_predict_cli_errors(deit_run, tmp_path, capsys):
    assert cli(["predict", str(tmp_path / "missing.png"), "--run", str(deit_run)]) == 1
    assert "missing.png does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["predict", str(tmp_path / "empty"), "--run", str(deit_run)]) == 1
    assert "no images found" in capsys.readouterr().err
    assert cli(["predict", str(tmp_path / "empty"), "--run", str(tmp_path)]) == 1
    assert "not a training run folder" in capsys.readouterr().err
