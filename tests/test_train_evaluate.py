import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import prepared_synthetic
from safetensors.torch import load_file

from cvm_cervix.evaluate import compute_metrics, evaluate_run, predictions_frame
from cvm_cervix.run import load_trained
from cvm_cervix.train import process_age, train_run
from cvm_cervix.train_data import expand_flip4x


def test_flip4x_is_identity_rot180_hflip_vflip():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).view(2, 3, 2, 2)
    out, labels = expand_flip4x(x, torch.tensor([4, 7]))
    assert out.shape == (8, 3, 2, 2) and labels.tolist() == [4, 7] * 4
    a = x[0, 0]  # [[0, 1], [2, 3]]
    assert out[0, 0].tolist() == [[0, 1], [2, 3]]
    assert out[2, 0].tolist() == [[3, 2], [1, 0]]  # rotated 180°
    assert out[4, 0].tolist() == [[1, 0], [3, 2]]  # left-right
    assert out[6, 0].tolist() == [[2, 3], [0, 1]]  # up-down
    assert torch.equal(out[2], torch.rot90(x[0], 2, dims=(1, 2))) and torch.equal(a, x[0, 0])


def test_virtual_flip4x_batches_equal_the_materialised_set():
    from cvm_cervix.step import virtual_batch

    x = torch.randint(0, 255, (5, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(5)
    full_x, full_y = expand_flip4x(x, y)
    idx = torch.tensor([0, 7, 13, 19, 4, 11])
    bx, by = virtual_batch(x, y, idx, 4, torch.device("cpu"))
    assert torch.equal(bx, full_x[idx]) and torch.equal(by, full_y[idx])
    bx, by = virtual_batch(x, y, torch.tensor([3, 1]), 1, torch.device("cpu"))
    assert torch.equal(bx, x[[3, 1]]) and by.tolist() == [3, 1]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    info = train_run(
        "shufflenet_v2_x0_5",
        tiny_dataset,
        out,
        img_size=32,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        seed=0,
        threads=2,
        progress=False,
    )
    return out, info


def test_training_writes_the_run(trained, tiny_dataset):
    out, info = trained
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"} <= set(history.columns)
    saved = json.loads((out / "train.json").read_text())
    assert saved["model"] == "shufflenet_v2_x0_5" and saved["num_classes"] == 11 and saved["lr"] == 1e-3
    assert saved["train_images"] == 44 and saved["device"] == "cpu" and saved["step"] == "eager"
    # the wait for the first step is measured from the start of training, and is part of the first epoch;
    # before it, the process's own start (here: the test session's)
    assert 0 < saved["first_step_seconds"] < saved["total_seconds"]
    assert 0 < saved["startup_seconds"] < process_age() - saved["total_seconds"]
    assert saved["params"] == sum(
        v.numel()
        for k, v in load_file(out / "weights.safetensors").items()
        if "running" not in k and "num_batches" not in k
    )
    best = int(history["val_acc"].idxmax())
    assert saved["best_epoch"] == history.loc[best, "epoch"]  # the kept weights are the best validation epoch
    assert saved["best_val_acc"] == pytest.approx(history["val_acc"].max())


def test_process_age_is_the_seconds_since_the_process_started():
    before = process_age()
    time.sleep(0.3)
    assert 0.25 <= process_age() - before <= 1.0  # /proc counts in hundredths of a second
    fresh = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.5); import cvm_cervix.train as t; print(t.process_age())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 0.5 <= float(fresh.stdout) < 60  # a new process: its own age, not the machine's uptime


def test_flip4x_quadruples_the_training_set(tiny_dataset, tmp_path):
    info = train_run(
        "shufflenet_v2_x0_5",
        tiny_dataset,
        tmp_path,
        img_size=32,
        epochs=1,
        batch_size=16,
        augment="flip4x",
        threads=2,
        progress=False,
    )
    assert info["train_images"] == 4 * 44 and info["val_images"] == 11


def test_training_is_reproducible_for_a_seed(tiny_dataset, tmp_path):
    infos = [
        train_run(
            "shufflenet_v2_x0_5",
            tiny_dataset,
            tmp_path / str(i),
            img_size=32,
            epochs=1,
            batch_size=8,
            seed=seed,
            threads=1,
            progress=False,
        )
        for i, seed in enumerate((3, 3, 4))
    ]
    a, b, c = (load_file(tmp_path / str(i) / "weights.safetensors") for i in range(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # another seed, other weights
    assert infos[0]["seed"] == 3 and infos[2]["seed"] == 4


def test_evaluation_outputs_and_metrics(trained, tiny_dataset, monkeypatch):
    out, info = trained
    metrics = evaluate_run(out, tiny_dataset, threads=2)
    classes = info["classes"]
    test = pd.read_csv(out / "predictions_test.csv")
    assert list(test.columns[:3]) == ["path", "label", "pred"]
    assert list(test.columns[3 : 3 + len(classes)]) == [f"prob_{c}" for c in classes]
    np.testing.assert_allclose(test[[f"prob_{c}" for c in classes]].sum(axis=1), 1.0, atol=1e-5)
    # beside them, the test-time flips: the mean probability over the four flip4x views
    tta = test[[f"tta_prob_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-5)
    from cvm_cervix.engine import predict
    from cvm_cervix.run import Images
    from cvm_cervix.step import flip_views

    x, _, _ = Images.open(tiny_dataset, 32).split("test")
    model, _ = load_trained(out)
    views = [predict(model, v, 8, torch.device("cpu"))["probs"] for v in flip_views(torch.from_numpy(x))]
    np.testing.assert_allclose(tta, np.mean(views, axis=0), atol=1e-5)
    assert not np.array_equal(views[0], views[2])  # the views do differ
    assert json.loads((out / "calibration.json").read_text())["tta"]["conformal"].keys() == {"0.9", "0.95"}
    assert len(test) == 11 and len(pd.read_csv(out / "predictions_val.csv")) == 11
    saved = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test"):
        m = saved[split]
        assert {
            "accuracy",
            "precision_macro",
            "recall_macro",
            "f1_macro",
            "per_class",
            "confusion",
            "ms_per_image",
        } <= set(m)
        assert 0 <= m["accuracy"] <= 1 and np.asarray(m["confusion"]).shape == (11, 11)
        assert np.asarray(m["confusion"]).sum() == 11
    assert saved["test"]["accuracy"] == pytest.approx((test["label"] == test["pred"]).mean())
    assert saved["size_mb"] == pytest.approx((out / "weights.safetensors").stat().st_size / 1e6)
    assert saved["size_mib"] == pytest.approx((out / "weights.safetensors").stat().st_size / 2**20)
    assert saved["precision"] == "float32"  # what the numbers were measured in: the run's own setting
    assert saved["params"] == info["params"] and metrics["test"] == saved["test"]
    model, _ = load_trained(out)
    assert model.head.out_features == 11
    # the test split timed from its image files too (decode, resize, inference), as the paper timed it
    e2e = saved["test"]
    assert e2e["end_to_end_seconds"] > 0 and "end_to_end_seconds" not in saved["val"]
    assert e2e["end_to_end_ms_per_image"] == pytest.approx(1000 * e2e["end_to_end_seconds"] / len(test))
    import cvm_cervix.evaluate as evaluate_module

    opened = []

    real = evaluate_module.load_image
    monkeypatch.setattr(evaluate_module, "load_image", lambda path, size: opened.append(path) or real(path, size))
    evaluate_run(out, tiny_dataset, threads=2)
    assert opened == test["path"].tolist()  # every test image, from its file, in order


def test_the_calibration_part_is_a_share_of_each_class_ordered_by_content():
    from cvm_cervix.run import calibration_rows

    rows = pd.DataFrame({"label": [0] * 4 + [1] * 3 + [2], "sha256": ["d", "a", "c", "b", "z", "x", "y", "q"]})
    part = calibration_rows(rows, 0.5)
    # class 0: the two first by sha256 (a, b); class 1: round(1.5) = 2 of 3 (x, y); class 2: its only image stays
    assert part.tolist() == [False, True, False, True, False, True, True, False]
    assert calibration_rows(rows.iloc[::-1].reset_index(drop=True), 0.5)[::-1].tolist() == part.tolist()
    assert not calibration_rows(rows, 0).any()
    assert calibration_rows(rows, 0.9).tolist() == [False, True, True, True, False, True, True, False]  # never all


def test_the_calibration_part_takes_no_part_in_model_selection(tmp_path_factory):
    from cvm_cervix.run import Images, calibration_rows

    data = prepared_synthetic(tmp_path_factory.mktemp("holdout"), "herlev", 20)  # 4 validation images per class
    out = tmp_path_factory.mktemp("run")
    info = train_run("shufflenet_v2_x0_5", data, out, img_size=32, epochs=2, batch_size=8, threads=2, progress=False)
    assert info["settings"]["calibration_holdout"] == 0.5 and info["val_images"] == 4  # of 8: 2 per class kept out
    history = pd.read_csv(out / "history.csv")
    _, y, rows = Images.open(data, 32).split("val")
    evaluate_run(out, data, threads=2)
    val = pd.read_csv(out / "predictions_val.csv")
    assert val["calibration"].tolist() == calibration_rows(rows, 0.5).tolist() and val["calibration"].sum() == 4
    # the epoch's validation accuracy is that of the other four: the run's best epoch, re-predicted
    chosen = val[~val["calibration"]]
    assert history["val_acc"].max() == pytest.approx((chosen["label"] == chosen["pred"]).mean())
    record = json.loads((out / "calibration.json").read_text())
    assert record["calibration_images"] == 4 and record["images"] == 4 and record["calibration_held_out"] is True
    assert "took no part in choosing the epoch" in record["assumption"]


def test_metrics_match_hand_counts():
    classes = ["a", "b", "c"]
    probs = np.eye(3)[[0, 0, 1, 1, 2, 0]]
    frame = predictions_frame(["p"] * 6, [0, 0, 1, 1, 2, 2], probs, classes)
    m = compute_metrics(frame, classes)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["confusion"] == [[2, 0, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert m["recall_macro"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 + 1) / 3)


def test_load_trained_rejects_a_non_run_folder(tmp_path):
    from cvm_cervix.errors import CvmError

    with pytest.raises(CvmError, match="not a training run folder"):
        load_trained(tmp_path)


def assert_same_training(a_dir, b_dir):
    """The same weights, bit for bit, and the same history apart from timings."""
    a, b = load_file(a_dir / "weights.safetensors"), load_file(b_dir / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timings = ["seconds", "train_seconds"]
    pd.testing.assert_frame_equal(
        pd.read_csv(a_dir / "history.csv").drop(columns=timings),
        pd.read_csv(b_dir / "history.csv").drop(columns=timings),
    )


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    import cvm_cervix.train as train_module

    kwargs = dict(img_size=32, epochs=3, batch_size=8, lr=1e-3, seed=5, threads=1, progress=False)
    straight = train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "straight", **kwargs)
    assert not (tmp_path / "straight" / "checkpoint.pt").exists()  # removed on completion

    real_predict, calls = train_module.predict, []

    def crash_in_epoch_3(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("time limit")
        return real_predict(*args, **kw)

    monkeypatch.setattr(train_module, "predict", crash_in_epoch_3)
    with pytest.raises(RuntimeError, match="time limit"):
        train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "resumed", **kwargs)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "resumed" / "weights.safetensors").exists()
    monkeypatch.setattr(train_module, "predict", real_predict)

    resumed = train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "resumed", **kwargs)
    assert_same_training(tmp_path / "straight", tmp_path / "resumed")
    assert resumed["best_epoch"] == straight["best_epoch"]


def test_a_checkpoint_of_other_settings_is_ignored(tiny_dataset, tmp_path):
    torch.save({"settings": {"model": "other"}, "epoch": 1}, tmp_path / "checkpoint.pt")
    info = train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path, img_size=32, epochs=1, threads=1, progress=False)
    assert info["epochs"] == 1 and not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("signame, after_steps, epoch, step", [("SIGUSR1", 8, 2, 2), ("SIGTERM", 2, 1, 2)])
def test_a_signal_mid_epoch_checkpoints_and_the_rerun_ends_identically(
    tiny_dataset, tmp_path, monkeypatch, signame, after_steps, epoch, step
):
    """SLURM's time-limit and preemption signals: finish the step, checkpoint, fail; the retry resumes."""
    import os
    import signal

    import cvm_cervix.step as step_module
    from cvm_cervix.errors import CvmError

    kwargs = dict(img_size=32, epochs=2, batch_size=8, lr=1e-3, seed=7, threads=1, progress=False)
    straight = train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "straight", **kwargs)

    real, calls = step_module.virtual_batch, []

    def signalled(*args, **kw):  # the signal arrives while step `after_steps` is being computed
        calls.append(1)
        if len(calls) == after_steps:
            os.kill(os.getpid(), getattr(signal, signame))
        return real(*args, **kw)

    monkeypatch.setattr(step_module, "virtual_batch", signalled)
    with pytest.raises(CvmError, match=f"stopped by {signame} in epoch {epoch} after step {step} of 6"):
        train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "resumed", **kwargs)
    assert len(calls) == after_steps  # the step in flight finished, no further step began
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == epoch - 1 and checkpoint["partial"]["step"] == step  # 44 images: 6 steps of 8
    assert signal.getsignal(getattr(signal, signame)) in (signal.SIG_DFL, signal.default_int_handler)
    monkeypatch.setattr(step_module, "virtual_batch", real)

    resumed = train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "resumed", **kwargs)
    assert_same_training(tmp_path / "straight", tmp_path / "resumed")
    assert resumed["best_epoch"] == straight["best_epoch"] and not (tmp_path / "resumed" / "checkpoint.pt").exists()


def test_a_diverged_run_stops_at_its_first_non_finite_loss_and_writes_no_result(tiny_dataset, tmp_path):
    from cvm_cervix.errors import CvmError

    with pytest.raises(CvmError) as err:
        train_run(
            "shufflenet_v2_x0_5", tiny_dataset, tmp_path, img_size=32, epochs=2, batch_size=8, lr=1e30, progress=False
        )
    message = str(err.value)
    assert message.startswith("training diverged: the loss is not a finite number at epoch 1, step ")
    assert "lower train.lr" in message and "\n" not in message
    assert not (tmp_path / "weights.safetensors").exists() and not (tmp_path / "train.json").exists()


def _reference_epoch(model, optimizer, images, labels, batches):
    """The training loop as it was written before the step became an object: the eager reference."""
    from cvm_cervix.engine import scale
    from cvm_cervix.step import virtual_batch

    loss_fn, loss_sum, correct = torch.nn.CrossEntropyLoss(), torch.zeros(()), torch.zeros((), dtype=torch.long)
    for idx in batches:
        batch, target = virtual_batch(images, labels, idx, 1, torch.device("cpu"))
        batch = scale(batch)
        flip = torch.rand(len(idx)) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        logits = model(batch)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == target).sum()
    return loss_sum, correct


def test_the_step_function_is_the_reference_loop_bit_for_bit():
    from cvm_cervix.models import create_model
    from cvm_cervix.step import make_step
    from cvm_cervix.train import train_epoch

    images = torch.randint(0, 255, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 5, (40,))
    batches = [torch.randperm(40, generator=torch.Generator().manual_seed(1))[i : i + 8] for i in range(0, 40, 8)]
    results = []
    for which in ("reference", "step"):
        torch.manual_seed(0)
        model = create_model("resnet18", 5, 32).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        torch.manual_seed(5)  # the flips' random state
        if which == "reference":
            sums = _reference_epoch(model, optimizer, images, labels, batches)
        else:
            scaler = torch.amp.GradScaler("cuda", enabled=False)
            # cuda_graph asked for on the CPU: the eager step, said in the log
            step = make_step(model, optimizer, scaler, images, labels, 1, torch.device("cpu"), False, mode="cuda_graph")
            assert not step.captured and not step.drops_last()
            loss_sum, correct, seen, done, first_bad = train_epoch(
                model, optimizer, scaler, images, labels, batches, 1, torch.device("cpu"), False, step=step
            )
            assert (seen, done, int(first_bad)) == (40, 5, -1)
            sums = (loss_sum, correct)
        results.append((sums, {k: v.clone() for k, v in model.state_dict().items()}))
    (ref_sums, ref_state), (sums, state) = results
    assert torch.equal(ref_sums[0], sums[0]) and torch.equal(ref_sums[1], sums[1])
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)  # weights and BatchNorm statistics


def test_a_step_is_captured_only_where_a_graph_can_replay_it():
    """A graph gathers each batch on the GPU: images kept in host memory (too large for the card) would be
    gathered once, at capture, and every replay would train on that batch; such a run stays eager."""
    from types import SimpleNamespace

    from cvm_cervix.step import CapturedStep, why_not_captured

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    no_scaler, scaler = SimpleNamespace(is_enabled=lambda: False), SimpleNamespace(is_enabled=lambda: True)
    on_gpu, on_host = SimpleNamespace(device=cuda), torch.zeros((4, 3, 8, 8), dtype=torch.uint8)
    assert why_not_captured(cuda, no_scaler, on_gpu) is None
    assert why_not_captured(cpu, no_scaler, on_host) == "no CUDA device"
    assert "loss scaler" in why_not_captured(cuda, scaler, on_gpu)
    assert "host memory" in why_not_captured(cuda, no_scaler, on_host)
    with pytest.raises(ValueError, match="cannot be captured here: the training images are kept in host memory"):
        CapturedStep(None, None, no_scaler, on_host, None, 1, cuda, False, batch_size=4)


def test_a_captured_step_takes_whole_batches_only():
    from cvm_cervix.train_data import TrainData

    data = TrainData(
        torch.zeros((10, 3, 4, 4), dtype=torch.uint8),
        torch.zeros(10, dtype=torch.long),
        torch.zeros((2, 3, 4, 4), dtype=torch.uint8),
        np.zeros(2),
        1,
        torch.device("cpu"),
        "",
    )
    order = torch.arange(10)
    assert [len(s) for s in data.steps(order, 4)] == [4, 4, 2]
    assert [len(s) for s in data.steps(order, 4, drop_last=True)] == [4, 4]
    assert [len(s) for s in data.steps(torch.arange(9), 4)] == [4, 4]  # a batch of one: BatchNorm cannot train on it


def test_the_deterministic_switch_holds_for_the_run_and_is_recorded(tiny_dataset, tmp_path, monkeypatch):
    """train.deterministic: deterministic algorithms while the run trains (recorded in train.json), the
    process's setting as it was afterwards; two such runs give the same weights."""
    import torch
    from safetensors.torch import load_file

    import cvm_cervix.train as train_module

    seen, real = [], train_module.train_epoch

    def watch(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", watch)
    kwargs = dict(img_size=32, epochs=1, batch_size=8, threads=1, progress=False, deterministic=True)
    info = train_module.train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "a", **kwargs)
    train_module.train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "b", **kwargs)
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()
    assert info["deterministic"] is True
    a, b = load_file(tmp_path / "a" / "weights.safetensors"), load_file(tmp_path / "b" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = train_module.train_run(
        "shufflenet_v2_x0_5", tiny_dataset, tmp_path / "c", **{**kwargs, "deterministic": False}
    )
    assert plain["deterministic"] is False and seen[-1] is False


def test_tensorboard_events_are_the_history_of_each_epoch(tiny_dataset, tmp_path, monkeypatch):
    """train.tensorboard: loss, accuracy and learning rate per epoch in the run folder's tensorboard/,
    the same numbers as history.csv; off by default (no folder); a missing package is one line."""
    import builtins

    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cvm_cervix.errors import CvmError
    from cvm_cervix.train import train_run

    kwargs = dict(img_size=32, epochs=2, batch_size=8, lr=3e-4, threads=1, progress=False)
    info = train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "on", tensorboard=True, **kwargs)
    assert info["tensorboard"] is True
    events = EventAccumulator(str(tmp_path / "on" / "tensorboard"))
    events.Reload()
    history = pd.read_csv(tmp_path / "on" / "history.csv")
    tags = {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate"}
    assert set(events.Tags()["scalars"]) == tags
    for column, tag in (("train_loss", "loss/train"), ("val_acc", "accuracy/val"), ("train_acc", "accuracy/train")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx(history[column].tolist(), rel=1e-6), tag
    assert [s.value for s in events.Scalars("learning_rate")] == pytest.approx([3e-4, 3e-4])

    train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "off", **{**kwargs, "epochs": 1})
    assert not (tmp_path / "off" / "tensorboard").exists()

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(CvmError, match=r"needs the tensorboard package.*pip install 'cvm-cervix\[tensorboard\]'"):
        train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "missing", tensorboard=True, **kwargs)
    assert not (tmp_path / "missing" / "weights.safetensors").exists()


def test_a_run_with_its_own_fusion_head_is_recorded_and_loads_as_it_trained(tiny_dataset, tmp_path):
    from cvm_cervix.run import TrainedRun
    from cvm_cervix.train import train_run

    info = train_run(
        "cvm_cervix",
        tiny_dataset,
        tmp_path / "relu",
        img_size=32,
        epochs=1,
        batch_size=8,
        threads=2,
        progress=False,
        head_activation="relu",
        head_hidden=64,
        head_dropout=0.2,
    )
    assert info["fusion_head"] == {"activation": "relu", "hidden": 64, "dropout": 0.2}
    model = TrainedRun.open(tmp_path / "relu").model()
    assert isinstance(model.head.act, torch.nn.ReLU) and model.head.fc1.out_features == 64
    plain = train_run(
        "resnet18", tiny_dataset, tmp_path / "linear", img_size=32, epochs=1, batch_size=8, progress=False
    )
    assert plain["fusion_head"] is None


def test_the_cosine_schedule_is_pytorchs_per_epoch_and_none_keeps_the_rate(tiny_dataset, tmp_path, monkeypatch):
    from cvm_cervix.errors import CvmError
    from cvm_cervix.train import epoch_lr, train_run

    epochs, lr = 5, 1e-3
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    expected = []
    for _ in range(epochs):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert [epoch_lr(lr, "cosine", e, epochs) for e in range(1, epochs + 1)] == pytest.approx(expected, rel=1e-9)
    assert {epoch_lr(lr, "none", e, epochs) for e in range(1, epochs + 1)} == {lr}
    with pytest.raises(CvmError, match="use none or cosine"):
        epoch_lr(lr, "step", 1, epochs)

    seen = []
    real_step = torch.optim.AdamW.step

    def watch(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", watch)
    info = train_run(
        "shufflenet_v2_x0_5",
        tiny_dataset,
        tmp_path / "cos",
        img_size=32,
        epochs=3,
        batch_size=64,
        lr=lr,
        lr_schedule="cosine",
        threads=1,
        progress=False,
    )
    assert info["lr_schedule"] == "cosine"
    steps = len(seen) // 3
    assert seen[::steps] == pytest.approx([epoch_lr(lr, "cosine", e, 3) for e in (1, 2, 3)])


def test_the_stain_jitter_keeps_shapes_and_ranges_and_is_the_identity_at_strength_zero():
    from cvm_cervix.step import hed_jitter

    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(hed_jitter(images, 0.0), images.clamp_min(1e-6), atol=1e-5)
    out = hed_jitter(images, 0.05, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype and 0 <= out.min() and out.max() <= 1
    change = (out - images).abs().mean(dim=(1, 2, 3))
    assert (change > 1e-3).all()  # every image changed, each its own way
    assert len(set(change.round(decimals=5).tolist())) == 6
    # stronger jitter, larger change (the same draws scaled)
    stronger = hed_jitter(images, 0.2, torch.Generator().manual_seed(1))
    assert (stronger - images).abs().mean() > (out - images).abs().mean()


def test_a_stain_recipe_trains_with_the_jitter_in_the_step(tiny_dataset, tmp_path, monkeypatch):
    import cvm_cervix.step as step

    calls = []
    real = step.hed_jitter
    monkeypatch.setattr(step, "hed_jitter", lambda x, sigma: calls.append(sigma) or real(x, sigma))
    info = train_run(
        "shufflenet_v2_x0_5", tiny_dataset, tmp_path, img_size=32, epochs=1, batch_size=8, augment="stain",
        threads=2, progress=False,
    )  # fmt: skip
    assert info["augment"] == "stain" and calls and set(calls) == {step.STAIN_SIGMA}
    assert info["train_images"] == 44  # the images themselves: the jitter is drawn anew every step
