"""The state of a training run that saves and restores itself (as timm keeps a ``CheckpointSaver``).

:class:`TrainingState` holds what changes while a run trains: the model, the optimiser, the loss
scaler, the sampling generator and the random state of the flips, the history, the best epoch so
far and, after a signal, where in an epoch it stopped. :class:`Checkpoint` writes it after every
epoch (and mid-epoch on a signal) to ``checkpoint.pt`` and resumes from it only when the settings
and the data it was written with are the run's own; a run that completes removes it.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class TrainingState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # draws each epoch's order
    device: torch.device
    history: list = field(default_factory=list)
    best: tuple = (-1.0, float("inf"))  # (val accuracy, val loss) of the best epoch
    best_epoch: int | None = None
    best_weights: dict = field(default_factory=dict)
    epoch: int = 0  # the last completed epoch
    elapsed: float = 0.0  # seconds trained before this process (earlier attempts)
    partial: dict | None = None  # an epoch stopped mid-way: its order, the step reached, its running sums
    resumes: list = field(default_factory=list)

    def record(self, row: dict) -> None:
        """Add an epoch's row; keep its weights when it is the best so far (accuracy, then loss)."""
        self.history.append(row)
        self.epoch = row["epoch"]
        if (row["val_acc"], -row["val_loss"]) > (self.best[0], -self.best[1]):
            self.best = (row["val_acc"], row["val_loss"])
            self.best_epoch = row["epoch"]
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_best(self) -> None:
        self.model.load_state_dict(self.best_weights)

    def snapshot(self, settings: dict, started: float, epoch: int | None = None, partial: dict | None = None) -> dict:
        """Everything needed to continue after an interruption (a cluster time limit, a crash)."""
        dev = self.device
        return {
            "settings": settings,
            "epoch": self.epoch if epoch is None else epoch,
            "elapsed": time.perf_counter() - started,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "history": self.history,
            "best": list(self.best),
            "best_epoch": self.best_epoch,
            "best_state": self.best_weights if self.best_epoch is not None else {},
            "resumes": self.resumes,
            **({"partial": partial} if partial is not None else {}),
        }

    def restore(self, state: dict) -> None:
        dev = self.device
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        self.history, self.best = state["history"], tuple(state["best"])
        if state.get("best_epoch") is not None:
            self.best_epoch = state["best_epoch"]
            self.best_weights = {k: v.to(dev) for k, v in state["best_state"].items()}
        self.epoch, self.elapsed = state["epoch"], state["elapsed"]
        self.partial = state.get("partial")
        self.resumes = list(state.get("resumes", [])) + [
            {"after_epoch": state["epoch"], "step": self.partial["step"] if self.partial else None}
        ]


class Checkpoint:
    """``checkpoint.pt`` of one run: written whole or not at all, resumed only by the same run on the same data."""

    def __init__(self, path: str | Path, settings: dict):
        self.path, self.settings = Path(path), settings

    def resume(self, state: TrainingState, epochs: int) -> bool:
        """Restore ``state`` from the file when it was written by this run (settings and data digest) and
        has epochs left; otherwise say why it is not used and leave ``state`` as it is."""
        saved_state = read_checkpoint(self.path)
        if saved_state is None:
            return False
        saved = dict(saved_state.get("settings") or {})
        same_run = {k: v for k, v in saved.items() if k != "data"} == {
            k: v for k, v in self.settings.items() if k != "data"
        }
        if same_run and saved.get("data") == self.settings["data"] and saved_state["epoch"] < epochs:
            state.restore(saved_state)
            partial = state.partial
            log.info(
                "resuming from %s after epoch %d%s",
                self.path,
                saved_state["epoch"],
                f", step {partial['step']} of epoch {partial['epoch']}" if partial else "",
            )
            return True
        if same_run and saved_state["epoch"] < epochs:
            log.warning(
                "starting afresh: %s was written on other data (the manifest, its split or the image "
                "cache changed since)",
                self.path,
            )
        else:
            log.warning("ignoring %s: it was written with other settings or is already complete", self.path)
        return False

    def save(self, state: TrainingState, started: float, epoch: int | None = None, partial: dict | None = None) -> None:
        save_checkpoint(self.path, state.snapshot(self.settings, started, epoch, partial))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict | None:
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


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
