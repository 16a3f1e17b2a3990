"""The training data of a run: its splits' cached images on the device, its share of training, its digest."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .engine import to_device_images
from .run import Images, calibration_rows
from .runs import AUGMENTS
from .step import flip4x

log = logging.getLogger(__name__)


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
        calibration_holdout: float = 0.0,
    ) -> TrainData:
        """The training split (``train_fraction`` of it, drawn with ``seed``) and the validation images that
        choose the best epoch: the validation split less its calibration part (``run.calibration_rows``)."""
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augment {augment!r}")
        images = Images.open(manifest, img_size, cache)
        x_train, y_train, _ = images.split("train")
        if train_fraction < 1:
            keep = fraction_rows(y_train, train_fraction, seed)
            x_train, y_train = x_train[keep], y_train[keep]
        x_val, y_val, val_rows = images.split("val")
        selection = ~calibration_rows(val_rows, calibration_holdout)
        x_val, y_val = x_val[selection], y_val[selection]
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


def fraction_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of each class's rows (rounded, at least one), drawn with ``seed``, in order."""
    rng = np.random.default_rng([seed, 7919])  # the same subset for every initialisation of a seed
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep.append(rng.permutation(rows)[: max(1, round(fraction * len(rows)))])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=int)


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
