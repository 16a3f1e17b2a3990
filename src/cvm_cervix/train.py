"""Training loop: AdamW, cross-entropy, random horizontal flip on the device, best-validation weights."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ._io import exclusive_lock, read_json, sha256_file
from .checkpoint import Checkpoint, TrainingState
from .engine import predict, resolve_device, seed_everything, to_device_images
from .errors import CvmError
from .models import create_model, input_normalizations, load_exact
from .plan import RUN_FILES
from .run import Images, TrainedRun, dataset_files, write_run
from .step import TrainStep, flip4x, make_step, virtual_batch, why_not_captured  # noqa: F401 (used by tests through this module)

log = logging.getLogger(__name__)


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


def expand_flip4x(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ×4 training set materialised: every image in each of the four :func:`flip4x` forms.

    Training does not call this: it draws indices over the virtual ×4 set and transforms per batch,
    so the enlarged set never occupies four times the memory.
    """
    n = len(images)
    kinds = torch.arange(4 * n, device=images.device) // n
    return flip4x(images.repeat(4, 1, 1, 1), kinds), labels.repeat(4)


def _storage_device(dev: torch.device, nbytes: int) -> torch.device:
    """Keep the uint8 images on the GPU when they take under half its free memory, else on the host."""
    if dev.type != "cuda":
        return dev
    free, _ = torch.cuda.mem_get_info(dev)
    return dev if nbytes < 0.5 * free else torch.device("cpu")


def train_epoch(
    model: torch.nn.Module,
    optimizer,
    scaler,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps,
    copies: int,
    device: torch.device,
    amp: bool,
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


class StopSignals:
    """Turn SIGTERM and SIGUSR1 into a request to stop after the current step.

    SLURM sends them before a time limit (``--signal``) and on preemption; the training loop then
    writes its checkpoint and fails, so a retry resumes, losing at most the step in flight.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __call__(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        log.warning("%s received: stopping after the current step", self.received)

    def __enter__(self):
        for name in self.SIGNALS:
            try:
                self._previous[name] = signal.signal(getattr(signal, name), self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def __exit__(self, *exc):
        for name, previous in self._previous.items():
            signal.signal(getattr(signal, name), previous)
        return False


@dataclass
class TrainData:
    """The images a run trains and validates on, where they live, and how an epoch walks them."""

    x_train: torch.Tensor  # uint8, on ``store``
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: np.ndarray
    copies: int  # 1, or 4 for flip4x: a virtual ×4 set, index i is image i % n_base in form i // n_base
    store: torch.device  # the GPU when the images fit in half its free memory, else the host
    digest: str  # of the manifest's paths, labels and splits and of the cache: a checkpoint resumes on it only

    @property
    def n(self) -> int:
        return len(self.x_train) * self.copies

    @classmethod
    def load(
        cls,
        manifest: Path,
        cache: Path,
        img_size: int,
        augment: str,
        train_fraction: float,
        seed: int,
        dev: torch.device,
    ) -> TrainData:
        if augment not in ("none", "flip4x"):
            raise ValueError(f"unknown augment {augment!r}")
        images = Images.open(manifest, img_size, cache)
        x_train, y_train, _ = images.split("train")
        if train_fraction < 1:
            keep = fraction_rows(y_train, train_fraction, seed)
            x_train, y_train = x_train[keep], y_train[keep]
        x_val, y_val, _ = images.split("val")
        store = _storage_device(dev, x_train.nbytes + x_val.nbytes)
        if store != dev:
            log.info(
                "images stay in host memory (%.1f GB): too large for the GPU's free memory",
                (x_train.nbytes + x_val.nbytes) / 1e9,
            )
        x_train_d, y_train_d = to_device_images(x_train, store), torch.tensor(y_train, device=store)
        x_val_d = to_device_images(x_val, store)
        if store.type == "cpu" and dev.type == "cuda":
            x_train_d, x_val_d = x_train_d.pin_memory(), x_val_d.pin_memory()
        return cls(
            x_train_d,
            y_train_d,
            x_val_d,
            y_val,
            4 if augment == "flip4x" else 1,
            store,
            data_digest(images.manifest, images.cache),
        )

    def steps(self, order: torch.Tensor, batch_size: int, drop_last: bool = False) -> list[torch.Tensor]:
        """An epoch's index batches; a last batch of one is dropped (BatchNorm cannot train on it), and with
        ``drop_last`` any incomplete last batch (a captured step replays one shape)."""
        steps = [order[i : i + batch_size] for i in range(0, self.n, batch_size)]
        short = len(steps[-1]) < batch_size if drop_last else len(steps[-1]) == 1
        return steps[:-1] if len(steps) > 1 and short else steps


def build_model(
    model_name: str,
    classes: list[str],
    img_size: int,
    dev: torch.device,
    *,
    pretrained: bool,
    weights: str | None,
    cache_dir: str | None,
    init_from,
) -> tuple[torch.nn.Module, dict | None]:
    """The model a run starts from (ImageNet, a local file, another run or random), on ``dev``."""
    init = None
    if init_from:  # the other run's weights, not ImageNet's or a file's
        model, init = start_from_run(model_name, classes, img_size, init_from)
    else:
        model = create_model(
            model_name, len(classes), img_size, pretrained=pretrained, weights=weights, cache_dir=cache_dir
        )
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, init


def validate(
    model: torch.nn.Module, data: TrainData, batch_size: int, dev: torch.device, amp: bool
) -> tuple[float, float]:
    """(loss, accuracy) on the validation split."""
    out = predict(model, data.x_val, max(batch_size, 64), dev, amp)
    probs = torch.from_numpy(out["probs"])
    y_val = torch.tensor(data.y_val)
    loss = float(torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y_val))
    return loss, float((probs.argmax(1) == y_val).float().mean())


def train_run(
    model_name: str,
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    img_size: int,
    epochs: int,
    batch_size: int = 16,
    lr: float = 2e-4,
    weight_decay: float = 0.01,
    seed: int = 0,
    augment: str = "none",
    device: str = "auto",
    amp: bool = True,
    pretrained: bool = False,
    weights: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    compile: bool = False,
    cache_dir: str | None = None,
    train_fraction: float = 1.0,
    init_from: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    classes: str | os.PathLike | None = None,
    outputs: dict | None = None,
    step: str = "eager",
) -> dict:
    """Train ``model_name`` on the prepared dataset ``dataset_dir`` (its folder or its manifest; ``cache``
    and ``classes`` beside it unless given); write the run into ``out_dir`` or to ``outputs``
    (``weights``, ``history``, ``info``: the files a rule declares).

    Writes ``weights.safetensors`` (the best validation epoch), ``history.csv`` and ``train.json``;
    returns the content of ``train.json``. A ``checkpoint.pt`` left beside them by an interrupted
    run with the same settings is resumed from (bit-identical on the CPU). ``step``: ``eager`` or
    ``cuda_graph`` (the step captured as a CUDA graph, whole batches only; see ``step.py``).
    """
    job_start, startup = time.perf_counter(), process_age()
    files = _run_outputs(out_dir, outputs)
    # Two trainings of one run folder never run at once: after a kill -9 of Snakemake its training job
    # may still run, and a second one would resume from (and race on) the live job's checkpoint.
    with exclusive_lock(
        files["weights"].with_name(".train.lock"), f"run folder {files['weights'].parent} is being trained already"
    ):
        return _train(
            model_name,
            dataset_dir,
            files,
            img_size=img_size,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            augment=augment,
            device=device,
            amp=amp,
            pretrained=pretrained,
            weights=weights,
            threads=threads,
            progress=progress,
            compile=compile,
            cache_dir=cache_dir,
            train_fraction=train_fraction,
            init_from=init_from,
            cache=cache,
            classes=classes,
            step=step,
            job_start=job_start,
            startup=startup,
        )


def _train(
    model_name,
    dataset_dir,
    files,
    *,
    img_size,
    epochs,
    batch_size,
    lr,
    weight_decay,
    seed,
    augment,
    device,
    amp,
    pretrained,
    weights,
    threads,
    progress,
    compile,
    cache_dir,
    train_fraction,
    init_from,
    cache,
    classes,
    step,
    job_start,
    startup,
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    dev = resolve_device(device)
    use_amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    manifest, cache = dataset_files(dataset_dir, img_size, cache)
    class_names = read_json(classes or manifest.with_name(RUN_FILES["classes"]))
    data = TrainData.load(manifest, cache, img_size, augment, train_fraction, seed, dev)
    if init_from:
        pretrained, weights = False, None
    model, init = build_model(
        model_name,
        class_names,
        img_size,
        dev,
        pretrained=pretrained,
        weights=weights,
        cache_dir=cache_dir,
        init_from=init_from,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    captured = step == "cuda_graph" and why_not_captured(dev, scaler, data.x_train) is None
    # capturable: AdamW keeps its step count on the device, as a graph replay needs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=weight_decay, **({"capturable": True} if captured else {})
    )
    # torch.compile wraps the module for the step only: weights, checkpoints and evaluation use ``model``.
    step_model = torch.compile(model) if compile else model
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
    )
    state = TrainingState(model, optimizer, scaler, torch.Generator(device="cpu").manual_seed(seed), dev)
    settings = {
        "model": model_name,
        "classes": class_names,
        "img_size": img_size,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "augment": augment,
        "pretrained": pretrained,
        "weights": str(weights or ""),
        "train_images": int(data.n),
        "device": dev.type,
        "data": data.digest,
        "normalization": input_normalizations(model),
        "amp": use_amp,
        "train_fraction": train_fraction,
        "init_from": init,
        **({"step": "cuda_graph"} if run_step.captured else {}),
    }
    checkpoint = Checkpoint(files["checkpoint"], settings)
    checkpoint.resume(state, epochs)
    started = time.perf_counter() - state.elapsed

    first_step: dict = {}

    def mark_first_step():  # how long a job waits for its first step: data, model, cuDNN autotuning, capture
        if "seconds" not in first_step:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            first_step["seconds"] = time.perf_counter() - job_start

    stop = StopSignals()
    with stop:
        for epoch in range(state.epoch + 1, epochs + 1):
            t0 = time.perf_counter()
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
    info = run_record(
        model,
        state,
        model_name=model_name,
        dataset=manifest.parent.name,
        augment=augment,
        seed=seed,
        classes=class_names,
        img_size=img_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        pretrained=pretrained,
        weights=weights,
        data=data,
        train_fraction=train_fraction,
        init=init,
        dev=dev,
        amp=use_amp,
        compile=compile,
        total=total,
        step="cuda_graph" if run_step.captured else "eager",
        first_step=first_step.get("seconds"),
        startup=startup,
    )
    write_run(
        model,
        info,
        pd.DataFrame(state.history),
        weights=files["weights"],
        history_csv=files["history"],
        info_json=files["info"],
    )
    checkpoint.remove()
    return info


def run_record(
    model: torch.nn.Module,
    state: TrainingState,
    *,
    model_name: str,
    dataset: str,
    augment: str,
    seed: int,
    classes: list[str],
    img_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    pretrained: bool,
    weights,
    data: TrainData,
    train_fraction: float,
    init,
    dev: torch.device,
    amp: bool,
    compile: bool,
    total: float,
    step: str = "eager",
    first_step: float | None = None,
    startup: float | None = None,
) -> dict:
    """``train.json``: what was trained, how, on what, where, and how long it took."""
    return {
        "model": model_name,
        "dataset": dataset,
        "augment": augment,
        "seed": seed,
        "classes": classes,
        "num_classes": len(classes),
        "img_size": img_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "optimizer": "AdamW",
        "loss": "cross-entropy",
        "pretrained": pretrained,
        "weights_init": weights,
        # where and with what statistics the model normalises its input: rebuilt exactly when loaded
        "normalization": input_normalizations(model),
        "train_images": int(data.n),
        "val_images": int(len(data.x_val)),
        "train_fraction": train_fraction,
        "init_from": init,  # the run it started from: its folder, weights' sha256, whether the head was kept
        "best_epoch": state.best_epoch,
        "best_val_acc": state.best[0],
        "params": int(sum(p.numel() for p in model.parameters())),
        "device": str(dev),
        "device_name": (
            torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
        ),
        "amp": amp,
        "compile": bool(compile),
        "step": step,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "data_digest": data.digest,
        "total_seconds": total,
        "seconds_per_epoch": total / epochs,
        # from the start of training (data, model, cuDNN autotuning, capture) to the end of its first step
        # (None: resumed after the last one); before that, the process's own start (None where unknown)
        "first_step_seconds": first_step,
        "startup_seconds": startup,
        "resumed": state.resumes,  # each resumption from a checkpoint: after which epoch (and step within the next)
    }


def _run_outputs(out_dir, outputs: dict | None) -> dict[str, Path]:
    """The run's files: those given (a rule's outputs), else the usual names in ``out_dir``."""
    given = {k: Path(v) for k, v in (outputs or {}).items()}
    if out_dir is None and "weights" not in given:
        raise ValueError("train_run needs out_dir or outputs['weights']")
    folder = Path(out_dir) if out_dir is not None else given["weights"].parent
    files = {
        key: given.get(key, folder / RUN_FILES[name])
        for key, name in (
            ("weights", "weights"),
            ("history", "history"),
            ("info", "info"),
            ("checkpoint", "checkpoint"),
        )
    }
    return files


def fraction_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of each class's rows (rounded, at least one), drawn with ``seed``, in order."""
    rng = np.random.default_rng([seed, 7919])  # the same subset for every initialisation of a seed
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep.append(rng.permutation(rows)[: max(1, round(fraction * len(rows)))])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=int)


def start_from_run(model_name: str, classes: list[str], img_size: int, source: str | os.PathLike):
    """``model_name`` initialised from the trained run ``source`` (its folder or ``train.json``); returns the
    model and a record of it."""
    trained = TrainedRun.open(source)  # every check a trained run gets: metadata, shapes, normalisation
    info = trained.info
    if info["model"] != model_name or int(info["img_size"]) != img_size:
        raise CvmError(
            f"{trained.info_path}: that run is {info['model']} at {info['img_size']} px, so it cannot "
            f"start {model_name} at {img_size} px; point init_from at a run of the same model and size"
        )
    state = trained.model("cpu").state_dict()  # built first: the new model's random head is the second draw
    model = create_model(model_name, len(classes), img_size, normalization=trained.normalization())
    same_classes = list(info["classes"]) == list(classes)
    if not same_classes:  # another label space: the backbone carries over, the head starts fresh
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("head.")})
    load_exact(model, state, f"{trained.weights_path} (init_from)")
    record = {
        "run": str(trained.dir),
        "weights_sha256": sha256_file(trained.weights_path),
        "classes": list(info["classes"]),
        "head": "kept" if same_classes else "replaced (other classes)",
    }
    log.info("starting from %s (head %s)", trained.dir, record["head"])
    return model, record


def data_digest(manifest: pd.DataFrame, cache: np.ndarray) -> str:
    """sha256 of what a run trains and validates on: the manifest's paths, labels and splits, and the cache.

    A checkpoint resumes only on the same digest: after a re-split, former training images
    could otherwise become test images.
    """
    digest = hashlib.sha256()
    digest.update(manifest[["path", "label", "split"]].to_csv(index=False).encode())
    digest.update(repr((cache.shape, str(cache.dtype))).encode())
    flat = cache.reshape(len(cache), -1) if len(cache) else cache
    for i in range(0, len(flat), 256):  # in slices: a memory-mapped cache is read, never copied whole
        digest.update(np.ascontiguousarray(flat[i : i + 256]).data)
    return digest.hexdigest()
