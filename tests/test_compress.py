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


@pytest.mark.parametrize(
    "precision, low, high",
    [("fp16", 0.45, 0.55), ("bf16", 0.45, 0.55), ("int8", 0.2, 1 / 3), ("int8_dynamic", 0.2, 0.4), ("onnx", 0.9, 1.1)],
)
def test_compressed_sizes_and_agreement(deit_run, tiny_dataset, precision, low, high):
    metrics = compress_run(deit_run, tiny_dataset, precision, threads=2)
    saved = json.loads((deit_run / "compressed" / precision / "metrics.json").read_text())
    assert saved == metrics
    fp32_mib = (deit_run / "weights.safetensors").stat().st_size / 2**20
    assert metrics["fp32_size_mib"] == pytest.approx(fp32_mib)
    assert low * fp32_mib < metrics["size_mib"] < high * fp32_mib
    assert metrics["size_mib"] == pytest.approx(
        (deit_run / "compressed" / precision / metrics["artifact"]).stat().st_size / 2**20
    )
    assert metrics["agreement_with_fp32"] >= 0.8  # the same class for most test images
    fp32 = json.loads((deit_run / "metrics.json").read_text())["test"]
    # the baseline is the run evaluated in float32 by the compress step (on the CPU: metrics.json's numbers)
    assert metrics["fp32"]["accuracy"] == pytest.approx(fp32["accuracy"]) and metrics["fp32"]["device"] == "cpu"
    assert metrics["delta_accuracy"] == pytest.approx(metrics["accuracy"] - fp32["accuracy"])
    preds = pd.read_csv(deit_run / "compressed" / precision / "predictions_test.csv")
    assert len(preds) == fp32["n"]


def test_predictor_probabilities_track_fp32(deit_run, tiny_dataset):
    from cvm_cervix.data import load_cache

    manifest = read_manifest(tiny_dataset / "manifest.csv")
    images = torch.from_numpy(np.asarray(load_cache(tiny_dataset / "cache_32.npy")[:16]).copy())
    ref, _ = Predictor(deit_run, "fp32", "cpu")(images)
    for precision, tol in (("onnx", 1e-4), ("fp16", 2e-2), ("bf16", 5e-2), ("int8_dynamic", 5e-2)):
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
    # temperature-scaled where the run's calibration.json has a temperature, and the columns say so
    prefix = "prob_T_" if json.loads((deit_run / "calibration.json").read_text())["temperature"] else "prob_"
    assert list(frame.columns) == ["path", "pred", "confidence"] + [f"{prefix}{c}" for c in classes]
    assert len(frame) == 5 and set(frame["pred"]) <= set(classes)
    np.testing.assert_allclose(frame[[f"{prefix}{c}" for c in classes]].sum(axis=1), 1, atol=1e-4)
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


def test_predict_never_writes_over_what_it_reads(deit_run, tiny_dataset, tmp_path, capsys):
    """-o naming the run's own weights (or any file of the run), through a link too, or an input image."""
    weights = (deit_run / "weights.safetensors").read_bytes()
    image = next((tiny_dataset.parent).rglob("*.png"))
    link = tmp_path / "out.csv"
    link.symlink_to(deit_run / "weights.safetensors")
    for out in (deit_run / "weights.safetensors", link, deit_run / "new.csv"):
        assert cli(["predict", str(image), "--run", str(deit_run), "-o", str(out)]) == 1
        assert "the run it predicts with: writing there could replace the model it reads" in capsys.readouterr().err
    copy = tmp_path / "cell.png"
    copy.write_bytes(image.read_bytes())
    assert cli(["predict", str(copy), "--run", str(deit_run), "-o", str(copy)]) == 1
    assert "is one of the images to predict" in capsys.readouterr().err
    assert (deit_run / "weights.safetensors").read_bytes() == weights and not (deit_run / "new.csv").exists()
    assert copy.read_bytes() == image.read_bytes()


@pytest.fixture(scope="module")
def conv_run(tiny_dataset, tmp_path_factory):
    """A convolutional model, trained long enough for confident predictions."""
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    out = tmp_path_factory.mktemp("conv")
    train_run("resnet18", tiny_dataset, out, img_size=32, epochs=4, batch_size=8, lr=1e-3, threads=2, progress=False)
    evaluate_run(out, tiny_dataset, threads=2)
    return out


def test_static_int8_quantises_convolutions_and_linear_layers(conv_run, tiny_dataset):
    import onnx
    from onnx import TensorProto, numpy_helper

    metrics = compress_run(conv_run, tiny_dataset, "int8", threads=2)
    graph = onnx.load(str(conv_run / "compressed" / "int8" / "model.onnx")).graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}

    def weight_dtype(node):  # the weight input of a Conv/Gemm: 8-bit behind a DequantizeLinear
        dq = producers.get(node.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", node.name
        return inits[dq.input[0]].data_type

    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in producers]
    convs = [n for n in layers if n.op_type == "Conv"]
    assert len(convs) == 20 and any(n.op_type in ("Gemm", "MatMul") for n in layers)  # resnet18: 20 convolutions
    # uint8 weights with uint8 activations (U8U8): no 16-bit saturation on x86 CPUs without VNNI
    assert {weight_dtype(n) for n in layers} == {TensorProto.UINT8}
    assert not [
        i for i in graph.initializer if i.data_type == TensorProto.FLOAT and numpy_helper.to_array(i).size > 4096
    ]
    fp32 = (conv_run / "weights.safetensors").stat().st_size
    assert metrics["size_mib"] * 2**20 < fp32 / 3
    assert metrics["agreement_with_fp32"] > 0.5  # most test images get float32's class
    assert metrics["calibration"]["split"] == "train" and metrics["calibration"]["images"] == 44
    assert metrics["calibration"]["method"] in ("minmax", "percentile", "entropy") and metrics["kept"] in (True, False)
    assert metrics["validation"]["images"] > 0 and len(metrics["tried"]) >= 3
    assert "static int8" in metrics["note"] and metrics["device"] == "cpu"
    # the final softmax stays float: its probabilities are a distribution, not steps of 1/255
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    assert len(softmax) == 1 and producers.get(softmax[0].output[0]) is softmax[0]
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == softmax[0].output[0] for n in graph.node)
    import pandas as pd

    probs = pd.read_csv(conv_run / "compressed" / "int8" / "predictions_test.csv").filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(probs * 255, np.round(probs * 255), atol=1e-4)


def test_calibration_is_drawn_from_the_training_split_only(conv_run, tiny_dataset, monkeypatch):
    import cvm_cervix.int8 as int8
    from cvm_cervix.data import load_cache
    from cvm_cervix.int8 import calibration_rows

    manifest = read_manifest(tiny_dataset / "manifest.csv")
    rows = calibration_rows(manifest, 30, seed=3)
    assert len(rows) == 30 and len(set(rows)) == 30 and (manifest.loc[rows, "split"] == "train").all()
    assert (calibration_rows(manifest, 10_000) == manifest.index[manifest["split"] == "train"]).all()
    seen = []
    real = int8._Calibration
    monkeypatch.setattr(int8, "_Calibration", lambda images: seen.append(np.asarray(images)) or real(images))
    compress_run(conv_run, tiny_dataset, "int8", threads=2, calibration_images=20)
    cache = np.asarray(load_cache(tiny_dataset / "cache_32.npy"))
    flat = {cache[i].tobytes(): manifest.loc[i, "split"] for i in range(len(cache))}
    # one calibration per method tried (int8.CALIBRATION_METHODS), each on the same 20 training images
    assert len(seen) == len(int8.CALIBRATION_METHODS) and all(len(images) == 20 for images in seen)
    assert {flat[image.tobytes()] for images in seen for image in images} == {"train"}


def test_int8_prediction_needs_the_calibrated_artifact(deit_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(deit_run, run)
    shutil.rmtree(run / "compressed", ignore_errors=True)
    with pytest.raises(CvmError, match="run the workflow's compress step with int8 first"):
        Predictor(run, "int8", "cpu")


def test_recommendation_picks_the_smallest_and_fastest_within_one_point():
    from cvm_cervix.precisions import recommend

    rows = [
        {"precision": "fp32", "size_mib": 100, "accuracy": 0.90, "ms_per_image": 5.0, "device": "cuda:0"},
        {"precision": "fp16", "size_mib": 50, "accuracy": 0.895, "ms_per_image": 2.0, "device": "cuda:0"},
        {"precision": "int8", "size_mib": 26, "accuracy": 0.891, "ms_per_image": 3.0, "device": "cpu"},
        {"precision": "int8_dynamic", "size_mib": 20, "accuracy": 0.85, "ms_per_image": 1.0, "device": "cpu"},
        {"precision": "onnx", "size_mib": 100, "accuracy": 0.90, "ms_per_image": 4.0, "device": "cpu"},
    ]
    rec = recommend(rows)
    assert rec["smallest"]["precision"] == "int8"  # int8_dynamic is smaller but 5 points worse
    assert rec["fastest"]["cuda"]["precision"] == "fp16" and rec["fastest"]["cpu"]["precision"] == "int8"


def test_static_int8_leaves_everything_but_convolutions_and_linear_layers_float(deit_run, tiny_dataset):
    """ONNX Runtime's default list also quantises residual additions, LayerNorm, GELU and attention's
    products of two activations; that cost a CVM-Cervix trained on real blood cells 21 points."""
    import onnx

    compress_run(deit_run, tiny_dataset, "int8", threads=2)
    graph = onnx.load(str(deit_run / "compressed" / "int8" / "model.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    weights = {i.name for i in graph.initializer}
    layers = ("Conv", "Gemm", "MatMul")

    def quantised_input(name):  # an activation quantised on its way in (not a weight, not a layer's own output)
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in weights:
            return False
        q = producers.get(dq.input[0])
        source = producers.get(q.input[0]) if q is not None else None
        return source is None or source.op_type not in layers

    run_in_int8 = {
        n.op_type
        for n in graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(quantised_input(i) for i in n.input)
    }
    assert run_in_int8 == {"Conv", "MatMul"} or run_in_int8 == {"Conv", "Gemm", "MatMul"}, run_in_int8

    def from_weight(name):  # a weight reaches its layer through a DequantizeLinear of an initializer
        node = producers.get(name)
        return name in weights or (node is not None and node.op_type == "DequantizeLinear" and node.input[0] in weights)

    attention = [n for n in graph.node if n.op_type == "MatMul" and not any(from_weight(i) for i in n.input)]
    assert len(attention) == 2 * 12  # deit_tiny: query·key and weights·value in each of 12 blocks, all float
    assert not any(
        producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for n in attention for i in n.input
    )


@pytest.fixture(scope="module")
def haswell():
    """An x86 CPU with AVX2 and neither AVX-512 nor VNNI, emulated (qemu-user's Haswell): where ONNX Runtime's
    U8S8 products saturate. Installed with apt-get when missing and run as root; elsewhere skipped, unless
    CVM_CPU_EMULATION_TEST is set (CI), where a skip would hide the check."""
    import os
    import shutil
    import subprocess

    if shutil.which("qemu-x86_64") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-user"], capture_output=True)
    if shutil.which("qemu-x86_64") is None:
        if os.environ.get("CVM_CPU_EMULATION_TEST"):
            pytest.fail("qemu-x86_64 (Debian's qemu-user) is needed to test int8 on an AVX2 CPU without VNNI")
        pytest.skip("qemu-x86_64 not available: int8 on an AVX2 CPU without VNNI not tested")
    return ["qemu-x86_64", "-cpu", "Haswell"]


ORT_PREDICT = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
images = np.load(sys.argv[2])
probs = np.concatenate([session.run(None, {"images": images[i : i + 48]})[0] for i in range(0, len(images), 48)])
np.save(sys.argv[3], probs.argmax(1))
"""


@pytest.mark.slow
@pytest.mark.parametrize("size, seed", [(32, 0), (48, 1)])
def test_static_int8_of_cvm_cervix_trained_on_real_cells_stays_within_two_points_of_float32(
    real_blood_cells, tmp_path, size, seed, haswell
):
    """A result that depends on trained weights, on real images: CVM-Cervix trained as the workflow trains it
    on 720 real blood cells (8 classes, 4 epochs, at two sizes and seeds: about 73-75% test accuracy in
    float32, far above chance), then static int8 on the same 240 test images: within 2 points of float32,
    chosen on validation. At 32 px it also runs on an emulated AVX2 CPU without VNNI, where ONNX Runtime's
    U8S8 products saturate (there, the former int8 lost 10 points): the same predictions to the image."""
    import subprocess
    import sys

    from cvm_cervix.data import build_cache
    from cvm_cervix.train import train_run

    cache = real_blood_cells / f"cache_{size}.npy"
    if not cache.exists():
        build_cache(read_manifest(real_blood_cells / "manifest.csv")["path"].tolist(), size, cache, threads=2)
    run = tmp_path / "run"
    train_run(
        "cvm_cervix",
        real_blood_cells,
        run,
        img_size=size,
        epochs=4,
        batch_size=16,
        threads=2,
        progress=False,
        seed=seed,
    )
    metrics = compress_run(run, real_blood_cells, "int8", threads=2)
    assert metrics["n"] == 240 and metrics["fp32"]["accuracy"] > 0.5  # the model learned: chance is 1/8
    assert metrics["delta_accuracy"] >= -0.02 - 1e-9, metrics
    assert metrics["agreement_with_fp32"] >= 0.95, metrics
    assert metrics["kept"] and metrics["calibration"]["images"] == 720  # every training image at these sizes
    assert metrics["validation"]["fp32_accuracy"] - metrics["validation"]["accuracy"] <= 0.02 + 1e-9
    assert {r["method"] for r in metrics["tried"]} == {"minmax", "percentile", "entropy"}
    assert metrics["size_mib"] < metrics["fp32_size_mib"] / 3
    if size != 32:
        return
    manifest = read_manifest(real_blood_cells / "manifest.csv")
    test_images = np.load(cache)[manifest.index[manifest["split"] == "test"].to_numpy()]
    np.save(tmp_path / "test.npy", test_images)
    script = tmp_path / "predict.py"
    script.write_text(ORT_PREDICT)
    model = run / "compressed" / "int8" / "model.onnx"
    args = [str(script), str(model), str(tmp_path / "test.npy")]
    subprocess.run([sys.executable, *args, str(tmp_path / "native.npy")], check=True, capture_output=True)
    emulated = subprocess.run(
        [*haswell, sys.executable, *args, str(tmp_path / "avx2.npy")], capture_output=True, text=True
    )
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    native, avx2 = np.load(tmp_path / "native.npy"), np.load(tmp_path / "avx2.npy")
    assert (native == avx2).all(), f"{int((native != avx2).sum())} of {len(native)} predictions differ on AVX2"
    labels = manifest.loc[manifest["split"] == "test", "label"].to_numpy()
    assert np.mean(avx2 == labels) == pytest.approx(metrics["accuracy"])


def test_int8_beyond_its_bound_leaves_the_most_sensitive_layers_float_then_is_not_kept(
    conv_run, tiny_dataset, tmp_path
):
    """An impossible bound (int8 must beat float32 by 100 points): the sensitivity pass leaves the layers most hurt
    by quantisation float, 10% then 25% of them, and int8 is then not kept, with the reason; a precision not
    kept is never recommended."""
    from cvm_cervix.int8 import FLOAT_SHARES, quantize_int8
    from cvm_cervix.precisions import recommend
    from cvm_cervix.run import Images, TrainedRun

    trained = TrainedRun.open(conv_run)
    images = Images.open(tiny_dataset, 32)
    x_val, y_val, _ = images.split("val")
    train = images.manifest.index[images.manifest["split"] == "train"].to_numpy()
    chosen = quantize_int8(trained, images.cache[train], tmp_path / "int8.onnx", (x_val, y_val), bound=-1.0)
    floats = [len(r["float_layers"]) for r in chosen["tried"]]
    assert floats[:3] == [0, 0, 0] and len(floats) == 3 + len(FLOAT_SHARES) and floats[3] < floats[4], floats
    assert not chosen["kept"] and chosen["why"].startswith("static int8 loses")
    assert (tmp_path / "int8.onnx").is_file()
    rows = [
        {"precision": "fp32", "size_mib": 40, "accuracy": 0.9, "ms_per_image": 5.0, "device": "cpu"},
        {"precision": "int8", "size_mib": 10, "accuracy": 0.9, "ms_per_image": 1.0, "device": "cpu", "kept": False},
    ]
    assert (
        recommend(rows)["smallest"]["precision"] == "fp32" and recommend(rows)["fastest"]["cpu"]["precision"] == "fp32"
    )
