"""The CUDA paths: training, evaluation, 16-bit compression and device slots on a real GPU.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
``PYTHONPATH=src python3 -m pytest tests/test_cuda.py``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_training_on_cuda_in_float32_and_mixed_precision(tiny_dataset, tmp_path):
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.run import load_trained
    from cvm_cervix.train import train_run

    infos = {}
    for amp in (False, True):
        out = tmp_path / f"amp{int(amp)}"
        infos[amp] = train_run(
            "cvm_cervix",
            tiny_dataset,
            out,
            img_size=32,
            epochs=2,
            batch_size=8,
            seed=0,
            device="cuda",
            amp=amp,
            progress=False,
        )
        assert infos[amp]["device"].startswith("cuda")
        model, info = load_trained(out, "cuda")
        assert next(model.parameters()).is_cuda
        metrics = evaluate_run(out, tiny_dataset, device="cuda")
        assert metrics["precision"] == (
            "float32" if not amp else ("bfloat16 autocast" if torch.cuda.is_bf16_supported() else "float16 autocast")
        )
        history = (out / "history.csv").read_text().splitlines()
        assert len(history) == 3 and "nan" not in history[-1].lower()
    assert infos[False]["amp"] is False and infos[True]["amp"] is True
    assert infos[False]["amp_dtype"] is None and infos[True]["amp_dtype"] in ("bfloat16", "float16")


def test_float16_mixed_precision_trains_with_a_loss_scaler_as_the_paper_did(tiny_dataset, tmp_path, monkeypatch):
    """train.amp_dtype: float16 (the paper's card had no bfloat16): autocast in float16 with the loss
    scaler on, recorded in train.json, and evaluated in float16 autocast too."""
    import cvm_cervix.train as train_module
    from cvm_cervix.evaluate import evaluate_run

    scalers = []
    real = train_module.loss_scaler

    def watch(dtype):
        scalers.append(real(dtype))
        return scalers[-1]

    monkeypatch.setattr(train_module, "loss_scaler", watch)
    out = tmp_path / "fp16"
    info = train_module.train_run(
        "cvm_cervix",
        tiny_dataset,
        out,
        img_size=32,
        epochs=2,
        batch_size=8,
        device="cuda",
        amp=True,
        amp_dtype="float16",
        progress=False,
    )
    assert info["amp"] is True and info["amp_dtype"] == "float16"
    assert scalers[0].is_enabled() and scalers[0].get_scale() > 0
    assert evaluate_run(out, tiny_dataset, device="cuda")["precision"] == "float16 autocast"
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "nan" not in history[-1].lower()


def test_mixed_precision_inference_agrees_with_float32(tiny_dataset):
    from cvm_cervix.data import load_cache, read_manifest
    from cvm_cervix.engine import predict
    from cvm_cervix.models import create_model

    torch.manual_seed(0)
    model = create_model("cvm_cervix", 11, 32).cuda().eval()
    cache = load_cache(tiny_dataset / "cache_32.npy", len(read_manifest(tiny_dataset / "manifest.csv")))
    images = torch.from_numpy(np.ascontiguousarray(cache)).cuda()
    fp32 = predict(model, images, 16, torch.device("cuda"), amp=False)["probs"]
    mixed = predict(model, images, 16, torch.device("cuda"), amp=True)["probs"]
    cpu = predict(model.cpu(), images.cpu(), 16, torch.device("cpu"), amp=False)["probs"]
    assert fp32.shape == mixed.shape == (len(cache), 11)
    np.testing.assert_allclose(fp32, cpu, atol=1e-4)  # float32 on the GPU is float32 (TF32 is off)
    assert np.abs(fp32 - mixed).max() < 0.05


def test_half_precision_artifacts_run_on_cuda(tiny_dataset, tmp_path):
    from cvm_cervix.compress import compress_run
    from cvm_cervix.train import train_run

    run = tmp_path / "run"
    train_run(
        "cvm_cervix", tiny_dataset, run, img_size=32, epochs=1, batch_size=8, device="cuda", amp=False, progress=False
    )
    for precision in ("fp16", "bf16"):
        metrics = compress_run(run, tiny_dataset, precision, device="cuda")
        assert metrics["device"].startswith("cuda") and metrics["fp32"]["device"].startswith("cuda")
        assert metrics["agreement_with_fp32"] > 0.9
        assert metrics["size_mib"] < 0.6 * metrics["fp32_size_mib"]


def test_a_claimed_slot_makes_one_gpu_visible(tmp_path):
    code = (
        "import json, torch; from cvm_cervix.devices import claim_gpu; "
        f"s = claim_gpu('auto', 2, {str(tmp_path)!r}); "
        "import os; print(json.dumps([s.device, os.environ['CUDA_VISIBLE_DEVICES'], torch.cuda.device_count()]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code + "; import time; time.sleep(3)"], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    for device, visible, count in outs:
        assert device == visible and count == 1
    assert len(list(tmp_path.iterdir())) >= 2  # two slots of K = 2 taken at once


def snapshot(model: torch.nn.Module) -> dict:
    """The model's state, copied to the CPU in float32 (a copy: on the CPU ``.float().cpu()`` would alias it)."""
    return {k: v.to("cpu", torch.float32, copy=True) for k, v in model.state_dict().items()}


def captured_and_eager(steps: int, amp: bool) -> dict:
    """The same training steps, captured as a CUDA graph and eager, from the same weights, batches and random
    state: per kind, the loss of every step and the final state (float, on the CPU); "start": the initial state."""
    from cvm_cervix.models import create_model
    from cvm_cervix.step import CapturedStep, TrainStep

    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8, generator=g).to(dev)
    labels = torch.randint(0, 5, (64,), generator=g).to(dev)
    batches = [torch.randint(0, 64, (16,), generator=g).to(dev) for _ in range(steps)]
    runs = {}
    for kind in ("eager", "captured"):
        torch.manual_seed(0)
        model = create_model("cvm_cervix", 5, 32).to(dev).train()
        if kind == "eager":  # both kinds start from these weights (the same seed)
            runs["start"] = snapshot(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, capturable=True)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        torch.cuda.manual_seed(7)
        step = (
            CapturedStep(model, optimizer, scaler, images, labels, 1, dev, amp, batch_size=16)
            if kind == "captured"
            else TrainStep(model, optimizer, scaler, images, labels, 1, dev, amp)
        )
        losses = []
        for idx in batches:
            before = float(step.loss_sum)
            step(idx)
            losses.append((float(step.loss_sum) - before) / 16)
        assert int(step.steps) == steps and int(step.first_bad) == -1
        assert (getattr(step, "graph", None) is not None) == (kind == "captured")
        runs[kind] = (np.array(losses), snapshot(model))
    return runs


def test_the_captured_step_follows_the_eager_one():
    """200 float32 steps captured and eager: the loss trajectories agree within 1e-3, the final weights and
    BatchNorm statistics within 1e-3 absolute plus 1e-3 relative."""
    runs = captured_and_eager(200, amp=False)
    assert runs["captured"][0].shape == (200,)
    np.testing.assert_allclose(runs["captured"][0], runs["eager"][0], atol=1e-3)
    for k, v in runs["eager"][1].items():
        # relative too: a BatchNorm running variance can be far above 1
        np.testing.assert_allclose(runs["captured"][1][k].numpy(), v.numpy(), rtol=1e-3, atol=1e-3, err_msg=k)


def test_the_captured_step_follows_the_eager_one_under_bf16_autocast():
    """The step training runs on a GPU by default (bf16 autocast) entered and left inside the graph: its
    casts of the weights must be made again on every replay, not kept from the capture. 100 steps on 64
    images: the eager loss falls (so a step stuck on the captured weights would show), the captured run's
    last 20 losses agree with the eager ones within 0.05 on average, and its weights (BatchNorm's running
    statistics aside) lie within a fifth of the distance the eager run's moved from the start (bf16 keeps
    about 3 significant digits, so not 1e-3). On the CPU, float32, the eager loss falls from 0.93 to 0.12
    (means of the first and last 20 steps) and the weights move 10.5 (Euclidean norm)."""
    if not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16: float16 autocast needs a loss scaler, and the step stays eager")
    runs = captured_and_eager(100, amp=True)
    (eager, end), (captured, captured_end), start = runs["eager"], runs["captured"], runs["start"]
    assert eager[-20:].mean() < eager[:20].mean() - 0.1
    assert abs(captured[-20:].mean() - eager[-20:].mean()) < 0.05
    weights = [k for k in start if "running_" not in k and "num_batches_tracked" not in k]  # not BatchNorm's
    moved = sum(float((end[k] - start[k]).square().sum()) for k in weights) ** 0.5
    apart = sum(float((captured_end[k] - end[k]).square().sum()) for k in weights) ** 0.5
    assert apart < 0.2 * moved, (apart, moved)


def test_a_run_with_the_captured_step_trains_and_records_it(tiny_dataset, tmp_path):
    from cvm_cervix.train import train_run

    info = train_run(
        "cvm_cervix",
        tiny_dataset,
        tmp_path,
        img_size=32,
        epochs=2,
        batch_size=8,
        seed=0,
        device="cuda",
        amp=True,
        step="cuda_graph",
        progress=False,
    )
    assert info["step"] == ("cuda_graph" if torch.cuda.is_bf16_supported() else "eager")
    assert "nan" not in (tmp_path / "history.csv").read_text().lower()


def test_a_signal_stops_a_captured_run_after_the_step_in_flight_and_the_rerun_finishes(
    tiny_dataset, tmp_path, monkeypatch
):
    """SLURM's time-limit signal during a replayed (captured) step: that step finishes, the run checkpoints
    mid-epoch and fails; the rerun captures anew and ends the run from there."""
    import signal

    import cvm_cervix.step as step_module
    from cvm_cervix.errors import CvmError
    from cvm_cervix.train import train_run

    if not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16: float16 autocast needs a loss scaler, and the step stays eager")
    real, calls = step_module.CapturedStep.__call__, []

    def signalled(self, idx):  # the 6th step: after 3 eager warm-up steps and the capture, a replay
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(self, idx)

    monkeypatch.setattr(step_module.CapturedStep, "__call__", signalled)
    kwargs = dict(
        img_size=32, epochs=2, batch_size=4, seed=0, device="cuda", amp=True, step="cuda_graph", progress=False
    )
    with pytest.raises(CvmError, match="stopped by SIGUSR1 in epoch 1 after step 6 of 11"):  # 44 images: 11 of 4
        train_run("cvm_cervix", tiny_dataset, tmp_path, **kwargs)
    assert len(calls) == 6
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["partial"]["step"] == 6
    monkeypatch.setattr(step_module.CapturedStep, "__call__", real)

    info = train_run("cvm_cervix", tiny_dataset, tmp_path, **kwargs)
    assert info["step"] == "cuda_graph" and info["resumed"] and not (tmp_path / "checkpoint.pt").exists()
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "nan" not in history[-1].lower()
