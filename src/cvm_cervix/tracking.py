"""Optional experiment tracking, as timm offers it: ``train.tensorboard: true`` writes TensorBoard
events (loss, accuracy and learning rate of each epoch) into the run folder's ``tensorboard/``.

Watched live with ``tensorboard --logdir results/runs``. The events are a view of ``history.csv``,
which stays the record the report reads; the package is an extra (``pip install
'cvm-cervix[tensorboard]'``), asked for only when the key is on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import CvmError

FOLDER = "tensorboard"

# history.csv's columns and the TensorBoard tag each is written under
TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
}


class EpochEvents:
    """One run's TensorBoard writer: a scalar per tag per epoch."""

    def __init__(self, log_dir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CvmError(
                "train.tensorboard: true needs the tensorboard package, which is not installed: "
                "pip install 'cvm-cervix[tensorboard]' (or set train.tensorboard: false)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, row: dict, lr: float) -> None:
        for column, tag in TAGS.items():
            self.writer.add_scalar(tag, row[column], row["epoch"])
        self.writer.add_scalar("learning_rate", lr, row["epoch"])
        self.writer.flush()  # visible to a TensorBoard watching the run, epoch by epoch

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def epoch_events(enabled: bool, run_dir: str | os.PathLike) -> Iterator[EpochEvents | None]:
    """An :class:`EpochEvents` writing into ``run_dir/tensorboard`` while the block runs, or None when off."""
    if not enabled:
        yield None
        return
    events = EpochEvents(Path(run_dir) / FOLDER)
    try:
        yield events
    finally:
        events.close()
