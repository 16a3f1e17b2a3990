"""Device-side preprocessing and batched inference shared by training, evaluation and predict."""

from __future__ import annotations

import random
import time
from contextlib import nullcontext

import numpy as np
import torch

from .errors import CvmError


def resolve_device(name: str = "auto", key: str = "train.device") -> torch.device:
    """The torch device of ``train.device``; on CUDA, float32 is IEEE float32 from here on.

    PyTorch lets cuDNN convolutions run float32 in TF32 (10-bit mantissa) on Ampere and later by
    default; every entry point resolves its device here, so "float32" in ``train.json`` and
    ``metrics.json`` means float32, and mixed precision (``train.amp``) is the one fast path.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        fix = "--device auto or cpu" if key.startswith("--") else f"{key}: auto or cpu"
        raise CvmError(f"{key} is {name!r} but no CUDA device is visible; use {fix}")
    if name.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def scale(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 B×3×H×W (any device) -> float in [0, 1]: what every model takes.

    Each model normalises with its own weights' statistics inside (``set_input_normalization``),
    so one batch feeds CVM-Cervix's two branches, each with its own mean and std.
    """
    return batch_uint8.float().div_(255)


AMP_DTYPES = ("auto", "float16", "bfloat16")


def _auto_dtype() -> str:
    """What ``auto`` (and a run recorded before ``amp_dtype``) means: bfloat16 where the GPU has it."""
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def amp_dtype(device: torch.device, amp: bool, requested: str = "auto") -> str | None:
    """The 16-bit type mixed precision uses (``train.amp``, ``train.amp_dtype``), or None for float32.

    Mixed precision runs on CUDA only (on the CPU a run is float32 whatever the keys say). ``auto``:
    bfloat16 where the GPU has it, else float16; ``float16`` is the paper's (its Quadro RTX 4000 has no
    bfloat16) and trains with a loss scaler; ``bfloat16`` on a GPU without it is one error.
    """
    if requested not in AMP_DTYPES:
        raise CvmError(f"train.amp_dtype is {requested!r}; use one of {', '.join(AMP_DTYPES)}")
    if not amp or device.type != "cuda":
        return None
    if requested == "auto":
        return _auto_dtype()
    if requested == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise CvmError(
            f"train.amp_dtype is bfloat16 but {torch.cuda.get_device_name(device)} has no bfloat16; "
            "use float16 (with a loss scaler) or auto"
        )
    return requested


def loss_scaler(dtype: str | None) -> torch.amp.GradScaler:
    """The loss scaler of a training run: on for float16 (whose small gradients underflow), else off."""
    return torch.amp.GradScaler("cuda", enabled=dtype == "float16")


def autocast(device: torch.device, amp: bool | str | None = True):
    """Mixed precision on CUDA: ``amp`` is the 16-bit type's name (``float16``, ``bfloat16``), True for
    bfloat16 where supported (a run recorded before ``amp_dtype`` existed), or off; a no-op on the CPU."""
    if device.type != "cuda" or not amp:
        return nullcontext()
    name = amp if isinstance(amp, str) else _auto_dtype()
    return torch.autocast("cuda", dtype=getattr(torch, name))


def precision_name(device: torch.device, amp: bool | str | None) -> str:
    """What arithmetic a pass with :func:`autocast` ``amp`` on ``device`` uses: recorded with every metric."""
    if device.type != "cuda" or not amp:
        return "float32"
    name = amp if isinstance(amp, str) else _auto_dtype()
    return f"{name} autocast"


def to_device_images(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy a uint8 image array to ``device`` once (it stays there for every epoch)."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # a slice of the read-only memory-mapped cache
        array = array.copy()
    tensor = torch.from_numpy(array)
    return tensor.to(device, non_blocking=True) if device.type != "cpu" else tensor


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool | str | None = False,
    features: bool = False,
) -> dict[str, np.ndarray | float]:
    """Class probabilities (and optionally pooled features) for uint8 ``images``, in order.

    Returns ``{"probs": N×C, "features": N×D (if asked), "seconds": pure inference time}``.
    """
    model.eval()
    dtype = next(model.parameters()).dtype  # a model stored in fp16/bf16 takes batches of its dtype
    probs, feats = [], []
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        batch = scale(images[i : i + batch_size].to(device, non_blocking=True)).to(dtype)
        with autocast(device, amp):
            f = model.forward_features(batch)
            logits = model.head(f)
        probs.append(logits.float().softmax(1).cpu())
        if features:
            feats.append(f.float().cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    out = {"probs": torch.cat(probs).numpy() if probs else np.zeros((0, 0)), "seconds": time.perf_counter() - start}
    if features:
        out["features"] = torch.cat(feats).numpy()
    return out
