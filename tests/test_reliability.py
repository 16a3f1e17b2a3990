"""Nothing silently wrong: exact loading, resumes on the same data, depth conversion, hostile files, litter."""

import csv
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_image
from PIL import Image
from safetensors.torch import load_file, save_file

from cvm_cervix._io import atomic_path, partial_path, remove_stale_partials, write_json
from cvm_cervix.cli import main as cli
from cvm_cervix.data import build_cache, list_dataset, load_image, prepare_dataset, read_manifest
from cvm_cervix.errors import CvmError
from cvm_cervix.models import create_model
from cvm_cervix.run import load_trained, save_weights
from cvm_cervix.train import train_run

MODEL = "shufflenet_v2_x0_5"


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_run(MODEL, tiny_dataset, out, img_size=32, epochs=1, batch_size=8, seed=0, threads=2, progress=False)
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# --- 1. a trained run loads exactly or not at all -------------------------------------------------------------


def test_weights_of_another_class_count_are_refused(run_copy):
    other = create_model(MODEL, 5, 32)
    save_weights(other, run_copy / "weights.safetensors", {"model": MODEL, "num_classes": 5, "img_size": 32})
    with pytest.raises(CvmError) as err:
        load_trained(run_copy)
    assert "weights.safetensors" in str(err.value) and "train.json" in str(err.value)
    assert "num_classes '5'" in str(err.value)


def test_weights_without_metadata_are_checked_tensor_by_tensor(run_copy):
    other = create_model(MODEL, 5, 32)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(run_copy / "weights.safetensors"))
    with pytest.raises(CvmError, match=r"2 of another shape \(first: head\.bias \(5,\) instead of \(11,\)\)"):
        load_trained(run_copy)


def test_weights_of_another_model_are_refused(run_copy):
    other = create_model("resnet18", 11, 32)
    save_weights(other, run_copy / "weights.safetensors", {"model": "resnet18", "num_classes": 11, "img_size": 32})
    with pytest.raises(CvmError, match="saved for model 'resnet18'"):
        load_trained(run_copy)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(run_copy / "weights.safetensors"))
    with pytest.raises(CvmError, match="tensors missing"):
        load_trained(run_copy)


def test_a_missing_tensor_is_refused(run_copy):
    state = load_file(run_copy / "weights.safetensors")
    state.pop("head.bias")
    save_file(state, str(run_copy / "weights.safetensors"), metadata={"model": MODEL, "num_classes": "11"})
    with pytest.raises(CvmError, match="1 tensors missing \\(first: head.bias\\)"):
        load_trained(run_copy)


def test_predict_with_mismatched_weights_is_one_line(run_copy, tiny_dataset, capsys):
    save_weights(create_model(MODEL, 5, 32), run_copy / "weights.safetensors", {"model": MODEL, "num_classes": 5})
    image = read_manifest(tiny_dataset / "manifest.csv")["path"].iloc[0]
    assert cli(["predict", image, "--run", str(run_copy), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "train.json" in err[0]


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "is not valid JSON"),
        ('{"model": "shufflenet_v2_x0_5", "img_size": 32}', "lacks key 'num_classes'"),
        ('{"model": "shufflenet_v2_x0_5", "num_classes": 11.0}', "lacks key 'num_classes'"),
        ("[1, 2]", "does not hold a JSON object"),
    ],
)
def test_corrupt_or_incomplete_train_json_is_one_line(run_copy, content, words, capsys):
    (run_copy / "train.json").write_text(content)
    with pytest.raises(CvmError, match=words):
        load_trained(run_copy)
    assert cli(["predict", str(run_copy), "--run", str(run_copy), "--device", "cpu"]) == 1
    assert words in capsys.readouterr().err


def test_class_list_must_match_the_class_count(run_copy):
    info = json.loads((run_copy / "train.json").read_text())
    info["classes"] = info["classes"][:3]
    write_json(run_copy / "train.json", info)
    with pytest.raises(CvmError, match="3 classes listed but num_classes is 11"):
        load_trained(run_copy)


def test_compressed_artifacts_from_another_run_are_refused(run_copy, tmp_path):
    from cvm_cervix.compress import Predictor, export

    export(run_copy, "fp16", run_copy / "compressed" / "fp16")
    assert Predictor(run_copy, "fp16", "cpu").model.head.weight.dtype == torch.float16  # the right one loads
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    save_weights(create_model(MODEL, 5, 32), other / "weights.safetensors", {"model": MODEL, "num_classes": 5})
    info = json.loads((other / "train.json").read_text())
    write_json(other / "train.json", {**info, "num_classes": 5, "classes": info["classes"][:5]})
    export(other, "fp16", other / "compressed" / "fp16")
    export(other, "onnx", other / "compressed" / "onnx")
    for precision, artifact in (("fp16", "weights.safetensors"), ("onnx", "model.onnx")):
        (run_copy / "compressed" / precision).mkdir(parents=True, exist_ok=True)
        shutil.copy(other / "compressed" / precision / artifact, run_copy / "compressed" / precision / artifact)
        with pytest.raises(CvmError, match=f"{artifact} was saved for num_classes '5'"):
            Predictor(run_copy, precision, "cpu")


# --- 2. a checkpoint resumes only on the same data -----------------------------------------------------------


def _interrupt_after_epoch(monkeypatch, epoch):
    import cvm_cervix.train as train_module

    real, calls = train_module.predict, []

    def crash(*args, **kw):
        calls.append(1)
        if len(calls) > epoch:
            raise RuntimeError("time limit")
        return real(*args, **kw)

    monkeypatch.setattr(train_module, "predict", crash)
    return lambda: monkeypatch.setattr(train_module, "predict", real)


def test_a_checkpoint_on_other_data_starts_afresh(tiny_dataset, tmp_path, monkeypatch, caplog):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    kwargs = dict(img_size=32, epochs=2, batch_size=8, lr=1e-3, seed=1, threads=1, progress=False)
    restore = _interrupt_after_epoch(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="time limit"):
        train_run(MODEL, data, tmp_path / "run", **kwargs)
    restore()
    assert (tmp_path / "run" / "checkpoint.pt").is_file()

    manifest = read_manifest(data / "manifest.csv")  # a re-split: a training image becomes a test image
    a = manifest.index[manifest["split"] == "train"][0]
    b = manifest.index[(manifest["split"] == "test") & (manifest["label"] == manifest.loc[a, "label"])][0]
    manifest.loc[[a, b], "split"] = ["test", "train"]
    manifest.to_csv(data / "manifest.csv", index=False)

    with caplog.at_level(logging.INFO, logger="cvm_cervix.train"):
        resumed = train_run(MODEL, data, tmp_path / "run", **kwargs)
    assert "starting afresh" in caplog.text and "other data" in caplog.text
    assert "resuming" not in caplog.text
    fresh = train_run(MODEL, data, tmp_path / "fresh", **kwargs)
    a, b = load_file(tmp_path / "run" / "weights.safetensors"), load_file(tmp_path / "fresh" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["data_digest"] == fresh["data_digest"]


def test_a_changed_cache_also_starts_afresh(tiny_dataset, tmp_path, monkeypatch, caplog):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    kwargs = dict(img_size=32, epochs=2, batch_size=8, seed=1, threads=1, progress=False)
    restore = _interrupt_after_epoch(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        train_run(MODEL, data, tmp_path / "run", **kwargs)
    restore()
    cache = np.load(data / "cache_32.npy")
    cache[0] = 255 - cache[0]
    np.save(data / "cache_32.npy", cache)
    with caplog.at_level(logging.INFO, logger="cvm_cervix.train"):
        train_run(MODEL, data, tmp_path / "run", **kwargs)
    assert "starting afresh" in caplog.text


def test_an_unreadable_checkpoint_starts_afresh(tiny_dataset, tmp_path, caplog):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    with caplog.at_level(logging.INFO, logger="cvm_cervix.train"):
        info = train_run(MODEL, tiny_dataset, tmp_path, img_size=32, epochs=1, threads=1, progress=False)
    assert info["epochs"] == 1 and "cannot be read" in caplog.text


# --- 3. high-depth and transparent images --------------------------------------------------------------------


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = load_image(path, 64)
    assert pixels.shape == (3, 64, 64)
    np.testing.assert_allclose(pixels[0].astype(float), ramp / 257, atol=1.0)
    assert (pixels[0] == pixels[1]).all() and (pixels[0] == pixels[2]).all()
    assert (pixels == 255).mean() < 0.01  # convert("RGB") made almost every pixel 255


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pixels = load_image(tmp_path / "a.png", 8)
    assert pixels[:, 0, 0].tolist() == [200, 0, 0] and pixels[:, 7, 0].tolist() == [255, 255, 255]


def test_the_summary_names_converted_images(imagefolder, tmp_path):
    Image.fromarray(np.full((24, 24), 40000, np.uint16)).save(imagefolder / "alpha" / "deep.png")
    Image.fromarray(np.zeros((24, 24, 4), np.uint8), "RGBA").save(imagefolder / "beta" / "clear.png")
    summary = prepare_dataset("f", {"kind": "imagefolder"}, tmp_path / "out", root=imagefolder, threads=1)
    how = {os.path.basename(c["path"]): c["how"] for c in summary["converted"]}
    assert set(how) == {"deep.png", "clear.png"}
    assert "16-bit grey scaled to 8 bits" in how["deep.png"] and "alpha composited on white" in how["clear.png"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["converted"] == summary["converted"]
    assert "converted" not in read_manifest(tmp_path / "out" / "manifest.csv").columns


# --- 5. paths from data files stay inside the results --------------------------------------------------------


def _cric_table(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    write_image(root / "a.png", seed=1, size=(120, 160))
    with open(root / "classifications.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image_id", "image_filename", "image_doi", "cell_id", "bethesda_system", "nucleus_x", "nucleus_y"]
        )
        for cell, cls, x, y in rows:
            writer.writerow([1, "a.png", "doi", cell, cls, x, y])
    return root


@pytest.mark.parametrize(
    "cell, cls, words",
    [
        ("../../escaped", "HSIL", "cell_id: '../../escaped' cannot be a file name"),
        ("/tmp/absolute", "HSIL", "cell_id: '/tmp/absolute' cannot be a file name"),
        ("7\0x", "HSIL", "cell_id"),
        ("8", "../../outside", "bethesda_system: '../../outside' cannot be a file name"),
        ("9", "..", "bethesda_system: '..' cannot be a file name"),
    ],
)
def test_cric_values_cannot_leave_the_crops_folder(tmp_path, cell, cls, words):
    root = _cric_table(tmp_path / "deep" / "cric", [(1, "NILM", 60, 50), (cell, cls, 30, 30)])
    work = tmp_path / "deep" / "work"
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(CvmError, match=words) as err:
        list_dataset("cric", root, {"layout": "full"}, work)
    assert "classifications.csv line 3" in str(err.value)
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(work in p.parents or p == work for p in created), created


@pytest.mark.parametrize(
    "x, y, words",
    [
        ("12.5", "30", "nucleus_x '12.5'"),
        ("30", "", "nucleus_y ''"),
        ("-4", "30", "nucleus_x '-4'"),
        ("30", "9999", "between 1 and 120"),
    ],
)
def test_cric_coordinates_must_be_pixels(tmp_path, x, y, words):
    root = _cric_table(tmp_path / "cric", [(1, "NILM", x, y)])
    with pytest.raises(CvmError, match=words):
        list_dataset("cric", root, {"layout": "full"}, tmp_path / "work")


def test_cli_refuses_a_negative_crop_size_and_a_zero_batch(tmp_path, capsys):
    with pytest.raises(SystemExit) as code:
        cli(["manifest", str(tmp_path), "--kind", "cric", "--crop-size", "-5"])
    assert code.value.code == 2 and "'-5' is not a whole number of at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as code:
        cli(["predict", str(tmp_path), "--run", str(tmp_path), "--batch-size", "0"])
    assert code.value.code == 2 and "'0' is not a whole number of at least 1" in capsys.readouterr().err


def test_cli_refuses_an_unwritable_output_before_any_work(run, tiny_dataset, tmp_path, capsys):
    image = read_manifest(tiny_dataset / "manifest.csv")["path"].iloc[0]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # a folder where one cannot be made, even as root (under /proc), is one line too, not a traceback
    for target in (blocker / "sub" / "out.csv", tmp_path, Path("/proc/cvm_cervix_test/out.csv")):
        assert cli(["predict", image, "--run", str(run), "--device", "cpu", "-o", str(target)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: -o {target}")


def test_predict_writes_through_a_fifo_and_a_symlink_and_names_any_file(run, tiny_dataset, tmp_path, capsys):
    import threading

    image = read_manifest(tiny_dataset / "manifest.csv")["path"].iloc[0]
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("text", fifo.read_text()))
    reader.start()
    assert cli(["predict", image, "--run", str(run), "--device", "cpu", "-o", str(fifo)]) == 0
    reader.join(30)
    assert fifo.is_fifo() and got["text"].startswith("path,pred,confidence,prob_")  # the reader got the rows
    target = tmp_path / "kept" / "real.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert cli(["predict", image, "--run", str(run), "--device", "cpu", "-o", str(link)]) == 0
    assert link.is_symlink() and target.read_text().startswith("path,pred,confidence")  # the link stays a link
    odd = os.fsdecode(bytes(tmp_path) + b"/r\xe9sultats.csv")  # a name that is not UTF-8
    capsys.readouterr()
    assert cli(["predict", image, "--run", str(run), "--device", "cpu", "-o", odd]) == 0
    assert "r\\xe9sultats.csv" in capsys.readouterr().out and Path(odd).is_file()


def test_a_file_name_that_is_not_utf8_is_one_line_naming_it(imagefolder, capsys):
    bad = os.fsdecode(bytes(imagefolder / "alpha") + b"/\xe9t\xe9.png")
    os.rename(imagefolder / "alpha" / "alpha_0.png", bad)
    assert cli(["manifest", "--kind", "imagefolder", str(imagefolder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alpha/\\xe9t\\xe9.png: its file name is not valid UTF-8" in err[0]


# --- 9. no litter, no shared temporary names ------------------------------------------------------------------


def test_a_dead_writers_temporaries_are_removed_on_the_next_write(imagefolder, tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    out = tmp_path / "cache_24.npy"
    stale = partial_path(out)
    stale = stale.with_name(stale.name.replace(f".{os.getpid()}.", f".{dead}."))
    stale.write_bytes(b"half a cache")
    live = partial_path(out)  # this process is alive: a concurrent writer's file stays
    live.write_bytes(b"in progress")
    other_host = tmp_path / f".{out.name}.otherhost.{dead}.abcd1234.partial.npy"
    other_host.write_bytes(b"someone else's")
    paths = sorted(str(p) for p in imagefolder.rglob("*.png"))
    build_cache(paths, 24, out, threads=1)
    assert out.is_file() and not stale.exists() and live.exists() and other_host.exists()
    assert remove_stale_partials(out) == []


def test_temporary_names_differ_between_writers(tmp_path):
    names = {partial_path(tmp_path / "report.html").name for _ in range(20)}
    assert len(names) == 20 and all(n.startswith(".report.html.") and n.endswith(".partial.html") for n in names)


def test_an_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_weights_have_the_same_permissions_as_other_outputs(tmp_path):
    save_weights(create_model(MODEL, 3, 32), tmp_path / "weights.safetensors")
    write_json(tmp_path / "train.json", {})
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "weights.safetensors") == mode(tmp_path / "train.json")
    assert mode(tmp_path / "weights.safetensors") & stat.S_IRGRP  # not 0600


def test_the_same_weights_and_metadata_give_the_same_bytes(tmp_path):
    """safetensors writes its metadata in a random order each save; the weights files of two identical
    trainings must still be the same bytes (a fine-tuned run records its start's sha256)."""
    from safetensors import safe_open

    model = create_model("shufflenet_v2_x0_5", 3, 32)
    meta = {"model": "shufflenet_v2_x0_5", "num_classes": 3, "img_size": 32, "dataset": "syn", "seed": 0}
    files = [tmp_path / f"{i}.safetensors" for i in range(6)]
    for file in files:
        save_weights(model, file, meta)
    assert len({f.read_bytes() for f in files}) == 1
    with safe_open(files[0], framework="pt") as handle:
        assert handle.metadata() == {k: str(v) for k, v in meta.items()}
        assert all(torch.equal(handle.get_tensor(k), v) for k, v in model.state_dict().items())
    assert files[0].read_bytes()[8:80].startswith(b'{"__metadata__":{"dataset":"syn","img_size":"32","model"')


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_asked_for_on_the_command_line_is_named_as_the_option(run, tiny_dataset, capsys):
    image = read_manifest(tiny_dataset / "manifest.csv")["path"].iloc[0]
    assert cli(["predict", image, "--run", str(run), "--device", "cuda"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: --device is 'cuda' but no CUDA device is visible; use --device auto or cpu"


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda f: f.assign(split=f["split"].replace({"test": "Test"})), "split 'Test' is not one of train, val, test"),
        (
            lambda f: f.assign(label=f["label"].where(f.index != 3, 99)),
            "line 5: label '99' is not a class number (classes.json has 11 classes)",
        ),
        (
            lambda f: f.assign(label=f["label"].where(f.index != 0, f["label"].iloc[-1])),
            "line 2: class 'ASC-H' has label 10",
        ),
    ],
)
def test_a_hand_edited_manifest_is_one_line_naming_the_row(tiny_dataset, tmp_path, edit, words):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    frame = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    edit(frame).to_csv(data / "manifest.csv", index=False)
    with pytest.raises(CvmError) as err:
        read_manifest(data / "manifest.csv")
    assert words in str(err.value) and str(data / "manifest.csv") in str(err.value) and "\n" not in str(err.value)


JOB = """
import atexit, logging, sys
from types import SimpleNamespace
from cvm_cervix._snakemake import run_script
from cvm_cervix.errors import CvmError

atexit.register(lambda: print("teardown ran", file=sys.__stderr__))
sm = SimpleNamespace(log=[sys.argv[1]], resources=SimpleNamespace(), config={})

def main(sm):
    print("to the log")
    logging.getLogger("cvm").info("logged")
    if sys.argv[2] == "fail":
        raise CvmError("the input is bad: fix it")

run_script(sm, main)
"""


@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_a_job_ends_with_its_log_written_and_its_status(tmp_path, outcome):
    log = tmp_path / "job.log"
    proc = subprocess.run([sys.executable, "-c", JOB, str(log), outcome], capture_output=True, text=True, timeout=120)
    text = log.read_text()
    assert "to the log" in text and "INFO cvm: logged" in text  # flushed before the job left
    if outcome == "ok":  # done: it leaves without the interpreter's teardown
        assert proc.returncode == 0 and "teardown ran" not in proc.stderr
    else:  # a failure takes the ordinary way out, with its one line
        assert proc.returncode == 1 and "error: the input is bad: fix it" in proc.stderr and "error: the input" in text
