"""Weights against a network: reading a file, fitting position tables, checking every tensor, and the
input normalisation each network carries with its weights' statistics."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CvmError


class WeightsDoNotFit(CvmError):
    """A weights file was found and read, but its tensors do not fit the model as built."""


def set_input_normalization(module: nn.Module, mean, std) -> nn.Module:
    """Make ``module`` normalise its input (images in [0, 1]) with its own weights' statistics.

    A forward pre-hook with non-persistent buffers: the state dict is unchanged, so weights files of
    the libraries load as they are. In CVM-Cervix each branch carries its own (Xception's 0.5/0.5,
    DeiT's ImageNet values), so one batch feeds both.
    """
    module.register_buffer("_input_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
    module.register_buffer("_input_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
    module.input_normalization = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    if not hasattr(module, "_normalization_hook"):
        module._normalization_hook = module.register_forward_pre_hook(
            lambda m, args: ((args[0] - m._input_mean.to(args[0].dtype)) / m._input_std.to(args[0].dtype), *args[1:])
        )
    return module


def input_normalizations(model: nn.Module) -> dict[str, dict]:
    """Where a model normalises its input (module path inside ``backbone``, "" for itself) and with what."""
    backbone = model.backbone if hasattr(model, "backbone") else model
    return {
        name: dict(m.input_normalization)
        for name, m in backbone.named_modules()
        if getattr(m, "input_normalization", None)
    }


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CvmError(f"weights file {path} not found; fix the path in train.weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        import argparse

        # timm-style training checkpoints also hold their argparse.Namespace: plain data, allowed
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CvmError(
            f"weights file {path} cannot be read ({str(err).splitlines()[0]}); is it a checkpoint?"
        ) from None
    # Training checkpoints wrap the weights; the EMA weights first, as timm's own load_state_dict does.
    for key in ("state_dict_ema", "state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def fit_problems(model: nn.Module, state: dict[str, torch.Tensor], ignore: tuple[str, ...] = ()) -> list[str]:
    """What keeps ``state`` from loading exactly into ``model``: missing tensors, unexpected ones (keys
    starting with ``ignore`` aside), tensors of another shape; each names its first tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(k for k in set(state) - set(own) if not k.startswith(ignore))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensors (first: {extra[0]})")
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} of another shape (first: {k} {tuple(state[k].shape)} instead of {tuple(own[k].shape)})"
        )
    return problems


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` only if every tensor is there with its shape; else one line naming ``source``.

    Unlike :func:`load_weights` (initialisation, where a fresh head is wanted), a trained run that
    loads with a random head would predict near-uniform noise without any error.
    """
    problems = fit_problems(model, state)
    if problems:
        raise WeightsDoNotFit(f"{source}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def fit_position_tables(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fit the relative-position tables of ``state`` to ``model``'s feature-map size.

    BoTNet's (and HaloNet's) attention keeps one table per axis, ``(2 S - 1, dim_head)`` rows for the
    offsets ``-(S-1) .. S-1`` of an S-cell feature map, so weights trained at 256 px (S = 16, 31 rows)
    do not load into the model built at the paper's 224 px (S = 14, 27 rows). A smaller map uses only
    offsets the table already holds: its centre rows are kept exactly (cropping, not resampling, so
    every offset keeps its learned value). A larger map is resampled linearly along the offset axis,
    as timm resamples position embeddings. Every other tensor is left as it is.
    """
    from timm.layers import bottleneck_attn, halo_attn

    own = model.state_dict()
    tables = {
        f"{name}.{axis}"
        for name, m in model.named_modules()
        if isinstance(m, (bottleneck_attn.PosEmbedRel, halo_attn.PosEmbedRel))
        for axis in ("height_rel", "width_rel")
    }
    out = dict(state)
    for key in tables & set(state):
        src, rows = state[key], own[key].shape[0]
        if src.ndim != 2 or src.shape[1] != own[key].shape[1] or src.shape[0] == rows:
            continue
        if rows < src.shape[0]:
            start = (src.shape[0] - rows) // 2
            out[key] = src[start : start + rows].clone()
        else:
            out[key] = (
                torch.nn.functional.interpolate(src.T[None].float(), size=rows, mode="linear", align_corners=True)[0]
                .T.to(src.dtype)
                .contiguous()
            )
    return out


def summarise_load_error(message: str) -> str:
    """PyTorch's ``load_state_dict`` error (every key listed) in :func:`fit_problems`' words: counts and
    the first tensor of each kind."""
    import re

    problems = []
    for kind, words in (("Missing key(s)", "tensors missing"), ("Unexpected key(s)", "unexpected tensors")):
        found = re.search(re.escape(kind) + r" in state_dict: (.*?)\.\s*$", message, re.M)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            problems.append(f"{len(keys)} {words} (first: {keys[0] if keys else '?'})")
    shapes = re.findall(
        r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from "
        r"checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)",
        message,
    )
    if shapes:
        key, theirs, ours = shapes[0]
        problems.append(f"{len(shapes)} of another shape (first: {key} ({theirs}) instead of ({ours}))")
    return "; ".join(problems) or message.splitlines()[0][:300]
