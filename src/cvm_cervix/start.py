"""The model a training run starts from: ImageNet's weights, a local file, another run's, or random."""

from __future__ import annotations

import logging
import os

import torch

from ._io import sha256_file
from .errors import CvmError
from .models import create_model, load_exact
from .run import TrainedRun

log = logging.getLogger("cvm_cervix.train")


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
    head: dict | None = None,
) -> tuple[torch.nn.Module, dict | None]:
    """The model a run starts from (ImageNet, a local file, another run or random), on ``dev``;
    ``head``: the fusion MLP's settings (models with an MLP head)."""
    init = None
    if init_from:  # the other run's weights, not ImageNet's or a file's
        model, init = start_from_run(model_name, classes, img_size, init_from, head)
    else:
        model = create_model(
            model_name,
            len(classes),
            img_size,
            pretrained=pretrained,
            weights=weights,
            cache_dir=cache_dir,
            head=head,
        )
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, init


def start_from_run(
    model_name: str, classes: list[str], img_size: int, source: str | os.PathLike, head: dict | None = None
):
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
    model = create_model(model_name, len(classes), img_size, normalization=trained.normalization(), head=head)
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
