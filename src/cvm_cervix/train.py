"""Training loop: AdamW, cross-entropy, random horizontal flip on the device, best-validation weights."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from ._io import read_json
from .checkpoint import Checkpoint, StopSignals, TrainingState
from .engine import amp_dtype, loss_scaler, predict, resolve_device, seed_everything
from .errors import CvmError
from .models import fusion_head, get_model_spec, input_normalizations
from .owner import finished_elsewhere, keep_if_orphaned, run_folder_lock
from .paths import file_name
from .record import RunRecord, run_identity
from .run import dataset_files, write_run
from .settings import TrainSettings
from .start import build_model
from .step import STAIN_SIGMA, TrainStep, make_step, why_not_captured
from .tracking import epoch_events
from .train_data import TrainData

log = logging.getLogger(__name__)


def train_epoch(
    model: torch.nn.Module,
    optimizer,
    scaler,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps,
    copies: int,
    device: torch.device,
    amp: str | None,
    on_progress=None,
    progress_every: float = 5.0,
    stop=None,
    totals: tuple | None = None,
    step: TrainStep | None = None,
    on_first_step=None,
) -> tuple:
    """One epoch over the index batches ``steps``; returns (summed loss, correct count, images seen, steps done,
    the first step whose loss was not finite or -1).

    ``step`` runs each batch (default: the eager :class:`~cvm_cervix.step.TrainStep` of ``model``;
    the run's own, perhaps captured, otherwise). Loss and accuracy accumulate on the device: nothing
    is read back per step, so the GPU's queue never drains while the host waits.
    ``on_progress(loss=..., acc=...)`` is called at most every ``progress_every`` seconds (each call
    reads the running sums back once). ``stop()`` is asked after every step: when it says so, the
    epoch ends there (the caller checkpoints mid-epoch). ``totals`` continues the sums of an epoch
    resumed mid-way. ``on_first_step()`` is called once, after the first step.
    """
    step = step or TrainStep(model, optimizer, scaler, images, labels, copies, device, amp)
    step.reset(totals[:2] if totals is not None else None)
    seen = int(totals[2]) if totals is not None else 0
    last, done = time.monotonic(), 0
    for idx in steps:
        step(idx)
        seen += len(idx)
        done += 1
        if done == 1 and on_first_step is not None:
            on_first_step()
        if on_progress is not None and time.monotonic() - last >= progress_every:
            on_progress(loss=f"{float(step.loss_sum) / seen:.3f}", acc=f"{int(step.correct) / seen:.3f}")
            last = time.monotonic()
        if stop is not None and stop():
            break
    return step.loss_sum, step.correct, seen, done, step.first_bad


def epoch_lr(lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (from 1): ``none`` keeps ``lr``; ``cosine`` is PyTorch's
    CosineAnnealingLR stepped once per epoch (``T_max`` = epochs, ``eta_min`` 0). Its closed form here, not
    the scheduler object: a run resumed from a checkpoint at any epoch gets its lr with no state to keep."""
    if schedule == "none":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
    raise CvmError(f"train.lr_schedule is {schedule!r}; use none or cosine")


def validate(
    model: torch.nn.Module, data: TrainData, batch_size: int, dev: torch.device, amp: str | None
) -> tuple[float, float]:
    """(loss, accuracy) on the validation split."""
    out = predict(model, data.x_val, max(batch_size, 64), dev, amp)
    probs = torch.from_numpy(out["probs"])
    y_val = torch.tensor(data.y_val)
    loss = float(torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y_val))
    return loss, float((probs.argmax(1) == y_val).float().mean())


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc; None elsewhere): what a job spent before
    training began (the interpreter, imports, waiting for a GPU slot)."""
    try:
        # /proc/self/stat: the start time in clock ticks after boot is field 22, the 20th after the name's ")"
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def fusion_head_record(model_name: str, settings: TrainSettings, model: torch.nn.Module) -> dict | None:
    """The fusion MLP as built (its hidden width resolved), rebuilt from it when the run is loaded; None
    for a model with a linear head."""
    if not get_model_spec(model_name).mlp_head:
        return None
    return fusion_head(settings.fusion_head(), model.num_features)


def run_outputs(out_dir, outputs: dict | None) -> dict[str, Path]:
    """The run's files: those given (a rule's outputs), else the usual names in ``out_dir``."""
    given = {k: Path(v) for k, v in (outputs or {}).items()}
    if out_dir is None and "weights" not in given:
        raise ValueError("train_run needs out_dir or outputs['weights']")
    folder = Path(out_dir) if out_dir is not None else given["weights"].parent
    # the rule's names for the files (info) and the plan's (train_info)
    keys = {"weights": "weights", "history": "history", "info": "train_info", "checkpoint": "checkpoint"}
    return {key: given.get(key, folder / file_name(plan_key)) for key, plan_key in keys.items()}


def train_run(
    model_name: str,
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    settings: TrainSettings | None = None,
    *,
    seed: int = 0,
    augment: str = "none",
    threads: int | None = None,
    progress: bool = True,
    cache: str | os.PathLike | None = None,
    classes: str | os.PathLike | None = None,
    outputs: dict | None = None,
    stain_reference: str | os.PathLike | None = None,
    **changes,
) -> dict:
    """Train ``model_name`` with ``settings`` (:class:`TrainSettings`; the schema's defaults when None,
    with ``changes`` to its fields put in: ``img_size=32, epochs=1``) on the prepared dataset
    ``dataset_dir`` (its folder or its manifest; ``cache`` and ``classes`` beside it unless given);
    write the run into ``out_dir`` or to ``outputs`` (``weights``, ``history``, ``info``: the files a
    rule declares).

    Writes ``weights.safetensors`` (the best validation epoch), ``history.csv`` and ``train.json``;
    returns the content of ``train.json``. A ``checkpoint.pt`` left beside them by an interrupted
    run with the same settings is resumed from (bit-identical on the CPU). ``settings.step``:
    ``eager`` or ``cuda_graph`` (the step captured as a CUDA graph, whole batches only; ``step.py``);
    ``settings.init_from``: the run folder (or its ``train.json``) whose weights it starts from.
    ``settings.stain_normalization``: ``cache`` is the dataset's cache mapped to one stain and
    ``stain_reference`` the reference file the workflow's normalize step wrote with it (checked against it).
    """
    job_start, startup = time.perf_counter(), process_age()
    settings = (settings or TrainSettings()).replace(**changes)
    files = run_outputs(out_dir, outputs)
    if settings.deterministic:  # cuBLAS reads this when CUDA starts: before any tensor reaches the GPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Two trainings of one run folder never run at once: after a kill -9 of Snakemake its training job
    # may still run, and a second one would resume from (and race on) the live job's checkpoint. The
    # second one waits for the first instead of failing: a failed job's outputs are removed by Snakemake,
    # and here they are the very files the first one is about to write.
    with (
        run_folder_lock(files["weights"].with_name(".train.lock"), files["weights"].parent) as waited,
        _deterministic(settings.deterministic),
    ):
        return _train(
            model_name,
            dataset_dir,
            files,
            settings,
            seed=seed,
            augment=augment,
            threads=threads,
            progress=progress,
            cache=cache,
            classes=classes,
            stain_reference=stain_reference,
            job_start=job_start,
            startup=startup,
            waited=waited,
        )


def stain_of(method: str, reference: str | os.PathLike | None, cache: Path) -> dict | None:
    """The stain reference a run with ``train.stain_normalization`` ``method`` records: read from the file the
    normalize step wrote, which must be of that method and of the very ``cache`` the run trains on."""
    if method == "none":
        return None
    from ._io import sha256_file
    from .stain_norm import StainReference

    fix = "run the workflow's normalize step again (or remove the file: the workflow makes it anew)"
    if reference is None:
        raise CvmError(
            f"train.stain_normalization is {method} but no stain reference was given; pass the files the "
            f"normalize step writes (data/<dataset>/{file_name('stain_reference', method=method, size='<size>')} "
            f"and {file_name('stain_cache', method=method, size='<size>')}), as the workflow does"
        )
    data = read_json(reference)
    stain = StainReference.from_json(data, reference, fix)
    if stain.method != method:
        raise CvmError(f"{reference} is a {stain.method} stain reference; the run asks for {method}")
    if not Path(cache).is_file() or sha256_file(cache) != data.get("cache_sha256"):
        raise CvmError(
            f"{cache} is not the image cache {reference} was mapped into (its sha256 differs): the run would "
            f"train on images the reference does not describe; pass the normalised cache written with it, or {fix}"
        )
    return stain.to_json()


@contextlib.contextmanager
def _deterministic(on: bool):
    """PyTorch's deterministic algorithms for the block (an operation without one is an error naming it),
    then the setting as it was: a library call does not leave the process changed."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on or before)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _train(
    model_name,
    dataset_dir,
    files,
    settings: TrainSettings,
    *,
    seed,
    augment,
    threads,
    progress,
    cache,
    classes,
    job_start,
    stain_reference=None,
    startup,
    waited=False,
) -> dict:
    if settings.init_from:  # a run that starts from another run's weights starts from nothing else
        settings = settings.replace(pretrained=False, weights="", init_from=str(settings.init_from))
    img_size, epochs, batch_size, lr = settings.img_size, settings.epochs, settings.batch_size, settings.lr
    amp, pretrained, weights, step = settings.amp, settings.pretrained, settings.weights or None, settings.step
    train_fraction, init_from = settings.train_fraction, settings.init_from
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    dev = resolve_device(settings.device)
    use_amp = amp_dtype(dev, amp, settings.amp_dtype)  # "float16", "bfloat16" or None (float32)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not settings.deterministic

    head = settings.fusion_head() if get_model_spec(model_name).mlp_head else None
    manifest, cache = dataset_files(dataset_dir, img_size, cache)
    stain = stain_of(settings.stain_normalization, stain_reference, cache)
    class_names = read_json(classes or manifest.with_name(file_name("classes")))
    data = TrainData.load(manifest, cache, img_size, augment, train_fraction, seed, dev, settings.calibration_holdout)
    model, init = build_model(
        model_name,
        class_names,
        img_size,
        dev,
        pretrained=pretrained,
        weights=weights,
        cache_dir=settings.weights_cache or None,
        init_from=init_from,
        head=head,
    )
    scaler = loss_scaler(use_amp)
    if step == "cuda_graph" and settings.lr_schedule != "none":  # a graph replays the lr it was captured with
        log.warning(
            "train.step cuda_graph: train.lr_schedule %s changes the lr; the step runs eagerly", settings.lr_schedule
        )
        step = "eager"
    captured = step == "cuda_graph" and why_not_captured(dev, scaler, data.x_train) is None
    # capturable: AdamW keeps its step count on the device, as a graph replay needs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=settings.weight_decay, **({"capturable": True} if captured else {})
    )
    # torch.compile wraps the module for the step only: weights, checkpoints and evaluation use ``model``.
    step_model = torch.compile(model) if settings.compile else model
    run_step = make_step(
        step_model,
        optimizer,
        scaler,
        data.x_train,
        data.y_train,
        data.copies,
        dev,
        use_amp,
        mode=step,
        batch_size=batch_size,
        stain=STAIN_SIGMA if augment == "stain" else 0.0,
    )
    state = TrainingState(model, optimizer, scaler, torch.Generator(device="cpu").manual_seed(seed), dev)
    # what a checkpoint must match to be resumed: the settings that decide the result, as they took effect
    head_built = fusion_head_record(model_name, settings, model)
    resumable = run_identity(
        model=model_name,
        seed=seed,
        augment=augment,
        classes=class_names,
        settings=settings,
        device_type=dev.type,
        amp_dtype=use_amp,  # the 16-bit type: a checkpoint of float16 never resumes as bfloat16
        captured=run_step.captured,
        normalization=input_normalizations(model),
        fusion_head=head_built,
        init=init,
        data_digest=data.digest,
        train_images=data.n,
    )
    finished = finished_elsewhere(files, resumable, epochs, waited)
    if finished is not None:
        return finished
    checkpoint = Checkpoint(files["checkpoint"], resumable)
    checkpoint.resume(state, epochs)
    started = time.perf_counter() - state.elapsed

    first_step: dict = {}

    def mark_first_step():  # how long a job waits for its first step: data, model, cuDNN autotuning, capture
        if "seconds" not in first_step:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            first_step["seconds"] = time.perf_counter() - job_start

    stop = StopSignals()
    with stop, epoch_events(settings.tensorboard, files["weights"].parent) as events:
        for epoch in range(state.epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(lr, settings.lr_schedule, epoch, epochs)
            model.train()
            partial = state.partial if state.partial and state.partial["epoch"] == epoch else None
            if partial:  # resumed mid-epoch: the same order, from the next step
                order, skip = partial["order"].to(data.store), partial["step"]
                totals = (partial["loss_sum"], partial["correct"], partial["seen"])
                t0 -= partial["seconds"]
            else:
                order, skip, totals = torch.randperm(data.n, generator=state.generator).to(data.store), 0, None
            steps = data.steps(order, batch_size, drop_last=run_step.drops_last())
            bar = tqdm(
                steps[skip:],
                desc=f"epoch {epoch}/{epochs}",
                file=sys.stderr,
                disable=not progress,
                mininterval=5.0,
                leave=True,
            )
            loss_sum, correct, seen, done, first_bad = train_epoch(
                step_model,
                optimizer,
                scaler,
                data.x_train,
                data.y_train,
                bar,
                data.copies,
                dev,
                use_amp,
                on_progress=bar.set_postfix if progress else None,
                stop=stop,
                totals=totals,
                step=run_step,
                on_first_step=mark_first_step,
            )
            if stop() and skip + done < len(steps):
                checkpoint.save(
                    state,
                    started,
                    epoch=epoch - 1,
                    partial={
                        "epoch": epoch,
                        "step": skip + done,
                        "order": order.cpu(),
                        "loss_sum": loss_sum.cpu(),
                        "correct": correct.cpu(),
                        "seen": seen,
                        "seconds": time.perf_counter() - t0,
                    },
                )
                raise CvmError(
                    f"training stopped by {stop.received} in epoch {epoch} after step {skip + done} of "
                    f"{len(steps)}; {checkpoint.path} holds the run: run the job again to resume"
                )
            loss_sum, correct = float(loss_sum), int(correct)  # the epoch's one read-back from the device
            if int(first_bad) >= 0:  # a diverged run is not a result: stop before anything is written
                raise CvmError(
                    f"training diverged: the loss is not a finite number at epoch {epoch}, step "
                    f"{skip + int(first_bad) + 1} of {len(steps)} (lr {lr}); lower train.lr (or the "
                    f"variant's lr) and run again (no result of this run was written)"
                )
            train_seconds = time.perf_counter() - t0
            val_loss, val_acc = validate(model, data, batch_size, dev, use_amp)
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "seconds": time.perf_counter() - t0,
                "train_seconds": train_seconds,
            }
            state.record(row)
            if events:
                events.epoch(row, optimizer.param_groups[0]["lr"])
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  %.1fs",
                epoch,
                epochs,
                row["train_loss"],
                row["train_acc"],
                val_loss,
                val_acc,
                row["seconds"],
            )
            if epoch < epochs:
                checkpoint.save(state, started)
                if stop():  # a signal during validation: the epoch is saved whole
                    raise CvmError(
                        f"training stopped by {stop.received} after epoch {epoch}; {checkpoint.path} "
                        "holds the run: run the job again to resume"
                    )
    total = time.perf_counter() - started

    state.load_best()
    record = RunRecord(
        model=model_name,
        dataset=manifest.parent.name,
        augment=augment,
        seed=seed,
        classes=tuple(class_names),
        settings=settings,
        device=str(dev),
        device_name=(
            torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
        ),
        amp=bool(use_amp),
        amp_dtype=use_amp,
        step="cuda_graph" if run_step.captured else "eager",
        normalization=input_normalizations(model),
        fusion_head=head_built,
        init=init,
        data_digest=data.digest,
        train_images=int(data.n),
        val_images=int(len(data.x_val)),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        params=int(sum(p.numel() for p in model.parameters())),
        best_epoch=state.best_epoch,
        best_val_acc=state.best[0],
        total_seconds=total,
        first_step_seconds=first_step.get("seconds"),
        startup_seconds=startup,
        resumed=tuple(state.resumes),
        stain_reference=stain,
    )
    info = record.to_json()
    assert info["identity"] == resumable  # one definition: the record's identity is what training matched
    write_run(
        model,
        info,
        pd.DataFrame(state.history),
        weights=files["weights"],
        history_csv=files["history"],
        info_json=files["info"],
    )
    checkpoint.remove()
    keep_if_orphaned(files)
    return info
