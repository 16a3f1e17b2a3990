"""GPU device slots: which GPU a job uses when several jobs and several GPUs share one machine.

Snakemake's ``--resources gpu=N`` only counts: it lets N GPU jobs run at once but tells none of
them which device to use, so all would land on ``cuda:0``. A job therefore takes a *slot*, an
exclusive ``flock`` on a small file per (device, k) in a lock folder shared by every workflow on
the machine, and sets ``CUDA_VISIBLE_DEVICES`` to that device before torch initialises CUDA. The
operating system releases the lock when the process ends, however it ends (``kill -9`` included),
so a slot is never left taken. ``jobs_per_device`` slots per device let small runs share a GPU.

Under SLURM the scheduler has already chosen the job's GPUs and set ``CUDA_VISIBLE_DEVICES``: that
choice is kept and no slot is taken.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "cvm_cervix_gpu_slots"


@dataclass
class Slot:
    """A device slot held by this process (``device`` None: no slot was needed)."""

    device: str | None
    index: int = 0
    path: Path | None = None
    reason: str = ""
    _handle: IO | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def visible_gpus(env: dict | None = None) -> list[str]:
    """GPU ids this machine offers, without initialising CUDA (which would fix the visible set).

    ``CUDA_VISIBLE_DEVICES`` when it is set, else ``nvidia-smi``'s list, else the ``/dev/nvidiaN``
    device files; empty on a machine without an NVIDIA GPU.
    """
    env = os.environ if env is None else env
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (subprocess.SubprocessError, OSError):
            pass
    return sorted((p.name[len("nvidia") :] for p in Path("/dev").glob("nvidia[0-9]*")), key=int)


def under_slurm(env: dict | None = None) -> bool:
    """True inside a SLURM job whose GPUs the scheduler assigned (it sets CUDA_VISIBLE_DEVICES)."""
    env = os.environ if env is None else env
    return bool(env.get("SLURM_JOB_ID")) and env.get("CUDA_VISIBLE_DEVICES") is not None


def acquire_slot(
    devices: list[str],
    jobs_per_device: int = 1,
    lock_dir: str | os.PathLike = DEFAULT_LOCK_DIR,
    wait: float | None = None,
    poll: float = 1.0,
) -> Slot:
    """Take a free slot among ``jobs_per_device`` slots on each of ``devices``; block until one is free.

    Slots are tried in the order (device 0, k 0), (device 1, k 0), ..., (device 0, k 1), ..., so
    N jobs spread over N devices before any device runs two. ``wait`` (seconds) bounds the wait;
    None waits as long as it takes (the job would not have a GPU otherwise).
    """
    if not devices:
        return Slot(None, reason="no GPU on this machine")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    order = [(d, k) for k in range(max(1, jobs_per_device)) for d in devices]
    start, said = time.monotonic(), False
    while True:
        for device, k in order:
            path = lock_dir / f"gpu{device}.slot{k}.lock"
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return Slot(device, k, path, "free slot", handle)
        if wait is not None and time.monotonic() - start >= wait:
            raise TimeoutError(f"no free GPU slot among {len(order)} in {lock_dir} after {wait:.0f} s")
        if not said:
            log.info("all %d GPU slots in %s are taken; waiting for one", len(order), lock_dir)
            said = True
        time.sleep(poll)


def claim_gpu(
    device: str = "auto",
    jobs_per_device: int = 1,
    lock_dir: str | os.PathLike | None = None,
    devices: list[str] | None = None,
) -> Slot:
    """Choose this job's GPU and make it the only visible one; call before torch touches CUDA.

    ``device``: the config's ``train.device`` (``cpu`` takes no slot). ``devices`` overrides the
    machine's GPU list (the config's ``gpu.devices``). Returns the held :class:`Slot`; keep it
    for the life of the process.
    """
    if device == "cpu":
        return Slot(None, reason="train.device is cpu")
    if under_slurm():
        return Slot(os.environ["CUDA_VISIBLE_DEVICES"], reason="assigned by SLURM")
    gpus = [str(d) for d in devices] if devices else visible_gpus()
    slot = acquire_slot(gpus, jobs_per_device, lock_dir or DEFAULT_LOCK_DIR)
    if slot.device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.device
        log.info("GPU slot %s of device %s (CUDA_VISIBLE_DEVICES=%s)", slot.index, slot.device, slot.device)
    return slot
