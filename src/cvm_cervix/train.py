"""Training loop: AdamW, cross-entropy, random horizontal flip on the device, best-validation weights."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ._io import atomic_path, read_json, sha256_file, write_csv, write_json
from .data import load_cache, read_manifest
from .engine import autocast, predict, resolve_device, scale, seed_everything, to_device_images
from .errors import CvmError
from .models import IMAGENET, create_model, input_normalizations, load_exact

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"  # written after every epoch, removed when the run completes


def flip4x(images: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """The paper's ×4 transforms per image: kind 0 original, 1 rotated 180°, 2 left-right, 3 up-down."""
    k = kinds.view(-1, 1, 1, 1)
    out = torch.where(k == 1, images.flip(-1, -2), images)
    out = torch.where(k == 2, images.flip(-1), out)
    return torch.where(k == 3, images.flip(-2), out)


def expand_flip4x(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ×4 training set materialised: every image in each of the four :func:`flip4x` forms.

    Training does not call this: it draws indices over the virtual ×4 set and transforms per batch,
    so the enlarged set never occupies four times the memory.
    """
    n = len(images)
    kinds = torch.arange(4 * n, device=images.device) // n
    return flip4x(images.repeat(4, 1, 1, 1), kinds), labels.repeat(4)


def virtual_batch(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, copies: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of the training set enlarged ``copies`` times (1, or 4 for flip4x), on ``device``.

    Index ``i`` is image ``i % n`` in :func:`flip4x` form ``i // n``: the same order as
    :func:`expand_flip4x`, without holding four copies in memory.
    """
    n = len(images)
    base = idx % n
    batch, target = images[base].to(device, non_blocking=True), labels[base].to(device)
    if copies == 4:
        batch = flip4x(batch, (idx // n).to(device))
    return batch, target


def _storage_device(dev: torch.device, nbytes: int) -> torch.device:
    """Keep the uint8 images on the GPU when they take under half its free memory, else on the host."""
    if dev.type != "cuda":
        return dev
    free, _ = torch.cuda.mem_get_info(dev)
    return dev if nbytes < 0.5 * free else torch.device("cpu")


def train_epoch(model: torch.nn.Module, optimizer, scaler, images: torch.Tensor, labels: torch.Tensor, steps,
                copies: int, device: torch.device, amp: bool, on_progress=None, progress_every: float = 5.0,
                stop=None, totals: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """One epoch over the index batches ``steps``; returns (summed loss, correct count, images seen, steps done,
    the first step whose loss was not finite or -1).

    Loss and accuracy accumulate on the device: nothing is read back per step, so the GPU's queue
    never drains while the host waits. ``on_progress(loss=..., acc=...)`` is called at most every
    ``progress_every`` seconds (each call reads the running sums back once). ``stop()`` is asked
    after every step: when it says so, the epoch ends there (the caller checkpoints mid-epoch).
    ``totals`` continues the sums of an epoch resumed mid-way.
    """
    loss_fn = torch.nn.CrossEntropyLoss()
    if totals is not None:
        loss_sum, correct, seen = totals[0].to(device), totals[1].to(device), int(totals[2])
    else:
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
    last, done = time.monotonic(), 0
    channels_last = device.type == "cuda"
    # the first step whose loss is NaN or infinite, kept on the device (no read-back per step)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    for idx in steps:
        batch, target = virtual_batch(images, labels, idx, copies, device)
        batch = scale(batch)
        flip = torch.rand(len(idx), device=device) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(batch)
            loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        seen += len(idx)
        bad = ~torch.isfinite(loss.detach()) & (first_bad < 0)
        first_bad = torch.where(bad, torch.full_like(first_bad, done), first_bad)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == target).sum()
        done += 1
        if on_progress is not None and time.monotonic() - last >= progress_every:
            on_progress(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{int(correct) / seen:.3f}")
            last = time.monotonic()
        if stop is not None and stop():
            break
    return loss_sum, correct, seen, done, first_bad


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


def split_arrays(manifest: pd.DataFrame, cache: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rows = manifest.index[manifest["split"] == split].to_numpy()
    return cache[rows], manifest.loc[rows, "label"].to_numpy(), manifest.loc[rows].reset_index(drop=True)


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def train_run(model_name: str, dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, *, img_size: int,
              epochs: int, batch_size: int = 16, lr: float = 2e-4, weight_decay: float = 0.01, seed: int = 0,
              augment: str = "none", device: str = "auto", amp: bool = True, pretrained: bool = False,
              weights: str | None = None, threads: int | None = None, progress: bool = True,
              compile: bool = False, cache_dir: str | None = None, train_fraction: float = 1.0,
              init_from: str | os.PathLike | None = None) -> dict:
    """Train ``model_name`` on the cached dataset in ``dataset_dir``; write the run into ``out_dir``.

    Writes ``weights.safetensors`` (the best validation epoch), ``history.csv`` and ``train.json``;
    returns the content of ``train.json``. A ``checkpoint.pt`` left in ``out_dir`` by an interrupted
    run with the same settings is resumed from (bit-identical on the CPU).
    """
    if threads:
        torch.set_num_threads(threads)
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    seed_everything(seed)
    dev = resolve_device(device)
    use_amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    manifest = read_manifest(dataset_dir / "manifest.csv")
    classes = read_json(dataset_dir / "classes.json")
    cache = load_cache(dataset_dir / f"cache_{img_size}.npy", len(manifest))
    x_train, y_train, _ = split_arrays(manifest, cache, "train")
    if train_fraction < 1:
        keep = fraction_rows(y_train, train_fraction, seed)
        x_train, y_train = x_train[keep], y_train[keep]
    x_val, y_val, _ = split_arrays(manifest, cache, "val")
    if augment not in ("none", "flip4x"):
        raise ValueError(f"unknown augment {augment!r}")
    store = _storage_device(dev, x_train.nbytes + x_val.nbytes)
    if store != dev:
        log.info("images stay in host memory (%.1f GB): too large for the GPU's free memory", (x_train.nbytes + x_val.nbytes) / 1e9)
    x_train, y_train = to_device_images(x_train, store), torch.tensor(y_train, device=store)
    x_val_d = to_device_images(x_val, store)
    if store.type == "cpu" and dev.type == "cuda":
        x_train, x_val_d = x_train.pin_memory(), x_val_d.pin_memory()
    n_base = len(x_train)
    copies = 4 if augment == "flip4x" else 1

    init = None
    if init_from:  # the other run's weights, not ImageNet's or a file's
        pretrained, weights = False, None
        model, init = start_from_run(model_name, classes, img_size, init_from)
        model = model.to(dev)
    else:
        model = create_model(model_name, len(classes), img_size, pretrained=pretrained, weights=weights,
                             cache_dir=cache_dir).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    # torch.compile wraps the module for the step only: weights, checkpoints and evaluation use ``model``.
    step_model = torch.compile(model) if compile else model
    generator = torch.Generator(device="cpu").manual_seed(seed)

    history, best, best_state = [], (-1.0, float("inf")), None
    n = n_base * copies  # flip4x: a virtual ×4 set, index i is image i % n_base in form i // n_base
    checkpoint = out_dir / CHECKPOINT
    digest = data_digest(manifest, cache)
    settings = {"model": model_name, "classes": classes, "img_size": img_size, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "seed": seed, "augment": augment, "pretrained": pretrained,
                "weights": str(weights or ""), "train_images": int(n), "device": dev.type, "data": digest,
                "normalization": input_normalizations(model), "amp": use_amp, "train_fraction": train_fraction,
                "init_from": init}
    first_epoch, elapsed, partial, resumes = 1, 0.0, None, []
    state = _read_checkpoint(checkpoint)
    if state is not None:
        saved = dict(state.get("settings") or {})
        same_run = {k: v for k, v in saved.items() if k != "data"} == {k: v for k, v in settings.items() if k != "data"}
        if same_run and saved.get("data") == digest and state["epoch"] < epochs:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if dev.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], dev)
            history, best = state["history"], tuple(state["best"])
            if state.get("best_epoch") is not None:
                best_state = {"epoch": state["best_epoch"],
                              "state": {k: v.to(dev) for k, v in state["best_state"].items()}}
            first_epoch, elapsed = state["epoch"] + 1, state["elapsed"]
            partial = state.get("partial")
            resumes = list(state.get("resumes", [])) + [{"after_epoch": state["epoch"],
                                                         "step": partial["step"] if partial else None}]
            log.info("resuming from %s after epoch %d%s", checkpoint, state["epoch"],
                     f", step {partial['step']} of epoch {partial['epoch']}" if partial else "")
        elif same_run and state["epoch"] < epochs:
            log.warning("starting afresh: %s was written on other data (the manifest, its split or the image "
                        "cache changed since)", checkpoint)
        else:
            log.warning("ignoring %s: it was written with other settings or is already complete", checkpoint)
    start = time.perf_counter() - elapsed

    def snapshot(epoch: int, **extra) -> dict:
        return {"settings": settings, "epoch": epoch, "elapsed": time.perf_counter() - start,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "history": history, "best": list(best), "best_epoch": best_state["epoch"] if best_state else None,
                "best_state": best_state["state"] if best_state else {}, "resumes": resumes, **extra}

    stop = StopSignals()
    with stop:
        for epoch in range(first_epoch, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            if partial and partial["epoch"] == epoch:  # resumed mid-epoch: the same order, from the next step
                order, skip = partial["order"].to(store), partial["step"]
                totals = (partial["loss_sum"], partial["correct"], partial["seen"])
                t0 -= partial["seconds"]
            else:
                order, skip, totals = torch.randperm(n, generator=generator).to(store), 0, None
            steps = [order[i:i + batch_size] for i in range(0, n, batch_size)]
            if len(steps) > 1 and len(steps[-1]) == 1:  # BatchNorm cannot train on a batch of one
                steps = steps[:-1]
            bar = tqdm(steps[skip:], desc=f"epoch {epoch}/{epochs}", file=sys.stderr, disable=not progress,
                       mininterval=5.0, leave=True)
            loss_sum, correct, seen, done, first_bad = train_epoch(step_model, optimizer, scaler, x_train, y_train, bar, copies,
                                                        dev, use_amp, on_progress=bar.set_postfix if progress else None,
                                                        stop=stop, totals=totals)
            if stop() and skip + done < len(steps):
                _save_checkpoint(checkpoint, snapshot(epoch - 1, partial={
                    "epoch": epoch, "step": skip + done, "order": order.cpu(), "loss_sum": loss_sum.cpu(),
                    "correct": correct.cpu(), "seen": seen, "seconds": time.perf_counter() - t0}))
                raise CvmError(f"training stopped by {stop.received} in epoch {epoch} after step {skip + done} of "
                               f"{len(steps)}; {checkpoint} holds the run: run the job again to resume")
            loss_sum, correct = float(loss_sum), int(correct)  # the epoch's one read-back from the device
            if int(first_bad) >= 0:  # a diverged run is not a result: stop before anything is written
                raise CvmError(f"training diverged: the loss is not a finite number at epoch {epoch}, step "
                               f"{skip + int(first_bad) + 1} of {len(steps)} (lr {lr}); lower train.lr (or the "
                               f"variant's lr) and run again (no result of this run was written)")
            train_seconds = time.perf_counter() - t0
            out = predict(model, x_val_d, max(batch_size, 64), dev, use_amp)
            probs = torch.from_numpy(out["probs"])
            y_val_t = torch.tensor(y_val)
            val_loss = float(torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y_val_t))
            val_acc = float((probs.argmax(1) == y_val_t).float().mean())
            row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                   "val_loss": val_loss, "val_acc": val_acc, "seconds": time.perf_counter() - t0,
                   "train_seconds": train_seconds}
            history.append(row)
            log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  %.1fs", epoch, epochs,
                     row["train_loss"], row["train_acc"], val_loss, val_acc, row["seconds"])
            if (val_acc, -val_loss) > (best[0], -best[1]):
                best = (val_acc, val_loss)
                best_state = {"epoch": epoch, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            if epoch < epochs:
                _save_checkpoint(checkpoint, snapshot(epoch))
                if stop():  # a signal during validation: the epoch is saved whole
                    raise CvmError(f"training stopped by {stop.received} after epoch {epoch}; {checkpoint} holds "
                                   "the run: run the job again to resume")
    total = time.perf_counter() - start

    model.load_state_dict(best_state["state"])
    info = {
        "model": model_name, "dataset": Path(dataset_dir).name, "augment": augment, "seed": seed,
        "classes": classes, "num_classes": len(classes), "img_size": img_size, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "optimizer": "AdamW",
        "loss": "cross-entropy", "pretrained": pretrained, "weights_init": weights,
        # where and with what statistics the model normalises its input: rebuilt exactly when loaded
        "normalization": input_normalizations(model),
        "train_images": int(n), "val_images": int(len(x_val)), "train_fraction": train_fraction,
        "init_from": init,  # the run it started from: its folder, weights' sha256, whether the head was kept
        "best_epoch": best_state["epoch"], "best_val_acc": best[0],
        "params": int(sum(p.numel() for p in model.parameters())),
        "device": str(dev), "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"),
        "amp": use_amp, "compile": bool(compile), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "data_digest": digest,
        "total_seconds": total, "seconds_per_epoch": total / epochs,
        "resumed": resumes,  # each resumption from a checkpoint: after which epoch (and step within the next)
    }
    save_weights(model, out_dir / "weights.safetensors", {"model": model_name, "num_classes": len(classes),
                                                          "img_size": img_size})
    write_csv(out_dir / "history.csv", pd.DataFrame(history))
    write_json(out_dir / "train.json", info)
    checkpoint.unlink(missing_ok=True)
    return info


def fraction_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of each class's rows (rounded, at least one), drawn with ``seed``, in order."""
    rng = np.random.default_rng([seed, 7919])  # the same subset for every initialisation of a seed
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep.append(rng.permutation(rows)[:max(1, round(fraction * len(rows)))])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=int)


def start_from_run(model_name: str, classes: list[str], img_size: int, source: str | os.PathLike):
    """``model_name`` initialised from the trained run in ``source``; returns the model and a record of it."""
    source = Path(source)
    trained, info = load_trained(source)  # every check a trained run gets: metadata, shapes, normalisation
    if info["model"] != model_name or int(info["img_size"]) != img_size:
        raise CvmError(f"{source / 'train.json'}: that run is {info['model']} at {info['img_size']} px, so it cannot "
                       f"start {model_name} at {img_size} px; point init_from at a run of the same model and size")
    model = create_model(model_name, len(classes), img_size, normalization=input_normalizations(trained))
    state = trained.state_dict()
    same_classes = list(info["classes"]) == list(classes)
    if not same_classes:  # another label space: the backbone carries over, the head starts fresh
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("head.")})
    load_exact(model, state, f"{source / 'weights.safetensors'} (init_from)")
    record = {"run": str(source), "weights_sha256": sha256_file(source / "weights.safetensors"),
              "classes": list(info["classes"]), "head": "kept" if same_classes else "replaced (other classes)"}
    log.info("starting from %s (head %s)", source, record["head"])
    return model, record


def _read_checkpoint(path: Path) -> dict | None:
    """The checkpoint in ``path``, or None (with a warning) when there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise ValueError("not a checkpoint of this workflow")
        return state
    except Exception as err:
        log.warning("starting afresh: %s cannot be read (%s)", path, str(err).splitlines()[0] if str(err) else err)
        return None


def _save_checkpoint(path: Path, state: dict) -> None:
    """Everything needed to continue after an interruption (a cluster time limit, a crash)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# What train.json must hold to rebuild its model: key -> type.
_INFO_KEYS = {"model": str, "num_classes": int, "img_size": int, "classes": list, "seed": int, "augment": str}


def read_train_info(run_dir: str | os.PathLike) -> dict:
    """``train.json`` of a run folder, checked for what rebuilding the model needs; one line otherwise."""
    run_dir = Path(run_dir)
    path = run_dir / "train.json"
    if not path.is_file():
        raise CvmError(f"{run_dir} is not a training run folder (no train.json); "
                       "pass results/runs/<dataset>/<model>/<augment>/seed<N>")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CvmError(f"{path} is not valid JSON ({err}); delete the run folder and train it again") from None
    if not isinstance(info, dict):
        raise CvmError(f"{path} does not hold a JSON object; delete the run folder and train it again")
    for key, kind in _INFO_KEYS.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise CvmError(f"{path} lacks key {key!r} (or it is not a {kind.__name__}); "
                           "delete the run folder and train it again")
    if len(info["classes"]) != info["num_classes"]:
        raise CvmError(f"{path}: {len(info['classes'])} classes listed but num_classes is {info['num_classes']}; "
                       "delete the run folder and train it again")
    return info


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` file written by :func:`save_weights`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CvmError(f"weights file {path} not found; run the workflow's train step for this run")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except Exception as err:
        raise CvmError(f"weights file {path} cannot be read ({str(err).splitlines()[0]}); "
                       "delete it and train the run again") from None


def check_weights_metadata(meta: dict[str, str], info: dict, weights: Path, info_path: Path) -> None:
    """The model name, class count and size stored with the weights must be those of ``train.json``."""
    for key in ("model", "num_classes", "img_size"):
        if key in meta and meta[key] != str(info[key]):
            raise CvmError(f"{weights} was saved for {key} {meta[key]!r} but {info_path} says {info[key]!r}; "
                           "the two files belong to different runs: train the run again")


def load_trained(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                 weights: str | os.PathLike | None = None):
    """Rebuild a trained model from a run folder: returns ``(model, train_info)``.

    Every tensor of ``weights`` (default: the run's ``weights.safetensors``) must fit the model that
    ``train.json`` describes, and its stored model name and class count must agree; otherwise one
    line names both files. A run never loads with a fresh random head.
    """
    run_dir = Path(run_dir)
    info = read_train_info(run_dir)
    path = Path(weights or run_dir / "weights.safetensors")
    state, meta = read_weights(path)
    check_weights_metadata(meta, info, path, run_dir / "train.json")
    normalization = info.get("normalization")
    if normalization is None:  # a run of an earlier version: every network was fed ImageNet statistics
        normalization = {path: IMAGENET for path in input_normalizations(
            create_model(info["model"], info["num_classes"], info["img_size"]))}
    model = create_model(info["model"], info["num_classes"], info["img_size"], normalization=normalization)
    dtype = next(iter(state.values())).dtype if state else torch.float32
    if dtype in (torch.float16, torch.bfloat16):
        model = model.to(dtype)
    load_exact(model, state, f"{path} does not match {run_dir / 'train.json'} "
                              f"({info['model']}, {info['num_classes']} classes, {info['img_size']} px)")
    return model.to(device).eval(), info


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
        digest.update(np.ascontiguousarray(flat[i:i + 256]).data)
    return digest.hexdigest()
