"""What a run records of itself (``train.json``) and where its files go."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ._train_data import TrainData
from .checkpoint import TrainingState
from .models import fusion_head, get_model_spec, input_normalizations
from .plan import file_name
from .settings import TrainSettings


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


def run_record(
    model: torch.nn.Module,
    state: TrainingState,
    settings: TrainSettings,
    *,
    model_name: str,
    dataset: str,
    augment: str,
    seed: int,
    classes: list[str],
    data: TrainData,
    init,
    dev: torch.device,
    amp: str | None,
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
        "img_size": settings.img_size,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "lr_schedule": settings.lr_schedule,
        "weight_decay": settings.weight_decay,
        "optimizer": "AdamW",
        "loss": "cross-entropy",
        "pretrained": settings.pretrained,
        "weights_init": settings.weights or None,
        # where and with what statistics the model normalises its input: rebuilt exactly when loaded
        "normalization": input_normalizations(model),
        "fusion_head": fusion_head_record(model_name, settings, model),
        "train_images": int(data.n),
        "val_images": int(len(data.x_val)),
        "train_fraction": settings.train_fraction,
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
        "amp": bool(amp),
        "amp_dtype": amp,  # float16 or bfloat16 where mixed precision ran, else None (float32)
        "compile": bool(settings.compile),
        "deterministic": bool(settings.deterministic),
        "tensorboard": bool(settings.tensorboard),
        "step": step,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "data_digest": data.digest,
        "total_seconds": total,
        "seconds_per_epoch": total / settings.epochs,
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
    # the rule's names for the files (info) and the plan's (train_info)
    keys = {"weights": "weights", "history": "history", "info": "train_info", "checkpoint": "checkpoint"}
    return {key: given.get(key, folder / file_name(plan_key)) for key, plan_key in keys.items()}
