"""A trained run: its record (``train.json``), its checked weights, its model on a device, the precision
rule every pass over it follows, and the images of a split it is evaluated on.

Training writes a run through :func:`write_run`; evaluation, compression, analysis, transfer,
``cvm-cervix predict`` and ``init_from`` read it through :class:`TrainedRun`, so the checks a run
gets (the record's keys, the weights' metadata and every tensor's shape) are made in one place.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from ._io import atomic_path, write_csv, write_json
from .data import load_cache, read_manifest
from .engine import precision_name, resolve_device
from .errors import CvmError
from .models import IMAGENET, create_model, input_normalizations, load_exact
from .plan import file_name

# An exported run's folder (cvm_cervix.export), laid out as timm and Hugging Face lay out a model.
EXPORTED = {"weights": "model.safetensors", "config": "config.json", "card": "README.md", "onnx": "model.onnx"}

# What train.json must hold to rebuild its model: key -> type.
_INFO_KEYS = {"model": str, "num_classes": int, "img_size": int, "classes": list, "seed": int, "augment": str}


def read_train_info(path: str | os.PathLike) -> dict:
    """A run's ``train.json`` (or the run folder holding it), checked for what rebuilding the model needs."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        run_dir, path = path, path / file_name("train_info")
    else:
        run_dir = path.parent
    if not path.is_file():
        raise CvmError(
            f"{run_dir} is not a training run folder (no {path.name}); "
            "pass results/runs/<dataset>/<model>/<recipe>/seed<N>, or a folder cvm-cervix export wrote"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CvmError(f"{path} is not valid JSON ({err}); delete the run folder and train it again") from None
    return check_info(info, path)


def check_info(info, path: Path, fix: str = "delete the run folder and train it again") -> dict:
    """A run's record (``train.json``, or ``config.json`` of an exported folder) holds what rebuilding
    its model needs: each key of ``_INFO_KEYS`` of its type, and as many classes as ``num_classes``."""
    if not isinstance(info, dict):
        raise CvmError(f"{path} does not hold a JSON object; {fix}")
    for key, kind in _INFO_KEYS.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise CvmError(f"{path} lacks key {key!r} (or it is not a {kind.__name__}); {fix}")
    if len(info["classes"]) != info["num_classes"]:
        raise CvmError(f"{path}: {len(info['classes'])} classes listed but num_classes is {info['num_classes']}; {fix}")
    if not all(isinstance(c, str) and c for c in info["classes"]):
        raise CvmError(f"{path}: every class name must be a non-empty text; {fix}")
    twice = next((c for i, c in enumerate(info["classes"]) if c in info["classes"][:i]), None)
    if twice is not None:  # two probability columns of one name would collapse into one
        raise CvmError(f"{path}: class {twice!r} is listed twice; {fix}")
    _check_normalization(info.get("normalization"), path, fix)
    return info


def _check_normalization(normalization, path: Path, fix: str) -> None:
    """Each branch's mean and std: three finite numbers, std above zero (a std of 0 divides by zero and
    the model answers nothing but NaN)."""
    if normalization is None:  # a run of an earlier version: ImageNet statistics (TrainedRun.normalization)
        return
    if not isinstance(normalization, dict) or not normalization:
        raise CvmError(f"{path}: 'normalization' must map each input branch to its mean and std; {fix}")
    for branch, stats in normalization.items():
        for key in ("mean", "std"):
            values = stats.get(key) if isinstance(stats, dict) else None
            ok = (
                isinstance(values, list)
                and len(values) == 3
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            )
            if not ok or (key == "std" and min(values) <= 0):
                raise CvmError(
                    f"{path}: normalization {key} of {branch!r} is {str(values)[:60]}; it must be three finite "
                    f"numbers{', each above 0' if key == 'std' else ''}; {fix}"
                )


def _read_exported(path: Path) -> dict:
    """The run's record kept in an exported folder's ``config.json`` (under ``cvm_cervix.run``)."""
    fix = "export the run again (cvm-cervix export RUN -o DIR)"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CvmError(f"{path} is not valid JSON ({err}); {fix}") from None
    record = config.get("cvm_cervix", {}) if isinstance(config, dict) else {}
    info = dict(record.get("run") or {}) if isinstance(record, dict) else {}
    if isinstance(record, dict) and "normalization" in record:
        info["normalization"] = record["normalization"]
    if isinstance(record, dict) and "weights_sha256" in record:
        info["weights_sha256"] = record["weights_sha256"]
    return check_info(info, path, fix)


def check_exported_digest(weights: Path, info: dict, config: Path) -> None:
    """An exported folder's weights are the ones its ``config.json`` (and model card) describe: their
    sha256 is recorded at export. Two exports of one architecture and class count would otherwise load
    each other's weights, and predict as one model under the other one's card."""
    from ._io import sha256_file

    recorded = info.get("weights_sha256")
    if recorded is None:
        raise CvmError(
            f"{config} records no weights digest (cvm_cervix.weights_sha256), so {weights.name} cannot be matched "
            "to it; export the run again (cvm-cervix export RUN -o DIR)"
        )
    if not weights.is_file():
        raise CvmError(f"weights file {weights} not found; export the run again (cvm-cervix export RUN -o DIR)")
    if sha256_file(weights) != recorded:
        raise CvmError(
            f"{weights} is not the weights {config} was exported with (their sha256 differs): the card and the "
            "model would describe two different models; export the run again (cvm-cervix export RUN -o DIR)"
        )


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
        raise CvmError(
            f"weights file {path} cannot be read ({str(err).splitlines()[0]}); delete it and train the run again"
        ) from None


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """The model's tensors (on the CPU) with ``metadata`` as text, written whole or not at all; the same
    tensors and metadata give the same bytes."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        _sort_metadata(tmp)


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys in sorted order, in place.

    safetensors writes the metadata map in a random order on every save (safetensors/safetensors#584,
    open), so two identical trainings gave weights files of different bytes and sha256, the digest a
    fine-tuned run records of the run it started from. Only the order changes, so the header keeps its
    length and every tensor its offset; a header that would not (it cannot) is left as written.
    """
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= length:
            handle.seek(8)
            handle.write(text.ljust(length, b" "))  # safetensors pads its header with spaces too


def weights_metadata(info: dict) -> dict:
    """What a run's weights (and every artifact exported from them) carry to be matched to ``train.json``."""
    return {k: info[k] for k in ("model", "num_classes", "img_size")}


def check_weights_metadata(meta: dict[str, str], info: dict, weights: Path, info_path: Path) -> None:
    """The model name, class count and size stored with the weights must be those of ``train.json``."""
    for key in ("model", "num_classes", "img_size"):
        if key in meta and meta[key] != str(info[key]):
            raise CvmError(
                f"{weights} was saved for {key} {meta[key]!r} but {info_path} says {info[key]!r}; "
                "the two files belong to different runs: train the run again"
            )


def write_run(
    model: torch.nn.Module,
    info: dict,
    history: pd.DataFrame,
    *,
    weights: str | os.PathLike,
    history_csv: str | os.PathLike,
    info_json: str | os.PathLike,
) -> None:
    """A finished run's three files; ``train.json`` last, so a run folder with a record is whole."""
    save_weights(model, weights, weights_metadata(info))
    write_csv(history_csv, history)
    write_json(info_json, info)


@dataclass
class TrainedRun:
    """One trained run, opened from its ``train.json`` and weights file (by default the folder's own)."""

    info_path: Path
    weights_path: Path
    info: dict
    _tensors: dict | None = field(default=None, repr=False)

    @classmethod
    def open(cls, run: str | os.PathLike | TrainedRun, weights: str | os.PathLike | None = None) -> TrainedRun:
        """``run``: a run folder or its ``train.json``; ``weights``: the weights file (default: beside it)."""
        if isinstance(run, TrainedRun):
            return run if weights is None else cls.open(run.info_path, weights)
        path = Path(run)
        if path.is_dir() and not (path / file_name("train_info")).is_file() and (path / EXPORTED["config"]).is_file():
            info_path = path / EXPORTED["config"]
            config = _read_exported(info_path)
            return cls(info_path, Path(weights) if weights else path / EXPORTED["weights"], config)
        info_path = path / file_name("train_info") if path.is_dir() or not path.suffix else path
        info = read_train_info(info_path)
        return cls(info_path, Path(weights) if weights else info_path.parent / file_name("weights"), info)

    @property
    def exported(self) -> bool:
        """Opened from a folder ``cvm-cervix export`` wrote, not from a run folder of the workflow."""
        return self.info_path.name == EXPORTED["config"]

    @property
    def dir(self) -> Path:
        return self.info_path.parent

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def img_size(self) -> int:
        return int(self.info["img_size"])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights file's tensors, read and checked against ``train.json`` once."""
        if self._tensors is None:
            if self.exported:
                check_exported_digest(self.weights_path, self.info, self.info_path)
            state, meta = read_weights(self.weights_path)
            check_weights_metadata(meta, self.info, self.weights_path, self.info_path)
            self._tensors = state
        return self._tensors

    def normalization(self) -> dict:
        normalization = self.info.get("normalization")
        if normalization is None:  # a run of an earlier version: every network was fed ImageNet statistics
            normalization = {
                path: IMAGENET
                for path in input_normalizations(
                    create_model(self.info["model"], self.info["num_classes"], self.img_size)
                )
            }
        return normalization

    def model(self, device: str | torch.device = "cpu", weights: str | os.PathLike | None = None) -> torch.nn.Module:
        """A fresh model with the run's weights (or another file's, checked against the same record), in eval mode.

        Every tensor must fit the model that ``train.json`` describes; otherwise one line names both
        files. A run never loads with a fresh random head.
        """
        if weights is not None and Path(weights) != self.weights_path:
            return TrainedRun.open(self.info_path, weights).model(device)
        state, path = self.tensors(), self.weights_path
        info = self.info
        # the fusion head as it was built (a run recorded before the key: the defaults it was built with)
        model = create_model(
            info["model"],
            info["num_classes"],
            self.img_size,
            normalization=self.normalization(),
            head=info.get("fusion_head"),
        )
        dtype = next(iter(state.values())).dtype if state else torch.float32
        if dtype in (torch.float16, torch.bfloat16):
            model = model.to(dtype)
        load_exact(
            model,
            state,
            f"{path} does not match {self.info_path} "
            f"({info['model']}, {info['num_classes']} classes, {info['img_size']} px)",
        )
        return model.to(device).eval()

    def amp(self, device: torch.device) -> str | bool:
        """One rule for training and every pass over a run: float32 (False), unless it trained with mixed
        precision and runs on CUDA: then the 16-bit type it trained in (True for a run recorded before
        ``amp_dtype``: bfloat16 where the GPU has it)."""
        if not self.info.get("amp") or device.type != "cuda":
            return False
        return self.info.get("amp_dtype") or True

    def precision(self, device: torch.device) -> str:
        return precision_name(device, self.amp(device))


def load_trained(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu", weights: str | os.PathLike | None = None
) -> tuple[torch.nn.Module, dict]:
    """``(model, train_info)`` of a run folder: :meth:`TrainedRun.model` for callers that need no more."""
    run = TrainedRun.open(run_dir, weights)
    return run.model(device), run.info


def dataset_files(data: str | os.PathLike, img_size: int, cache: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(manifest, cache) given a prepared dataset's folder or its manifest file (and optionally its cache)."""
    data = Path(data)
    manifest = data / file_name("manifest") if data.is_dir() else data
    return manifest, Path(cache) if cache else manifest.parent / file_name("cache", size=img_size)


@dataclass
class Images:
    """A prepared dataset's manifest and the uint8 image cache of one size, row for row."""

    manifest: pd.DataFrame
    cache: np.ndarray

    @classmethod
    def open(cls, data: str | os.PathLike, img_size: int, cache: str | os.PathLike | None = None) -> Images:
        manifest_path, cache_path = dataset_files(data, img_size, cache)
        manifest = read_manifest(manifest_path)
        return cls(manifest, load_cache(cache_path, len(manifest), img_size))

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """(images, labels, manifest rows) of one split, in manifest order."""
        return split_arrays(self.manifest, self.cache, split)


def split_arrays(manifest: pd.DataFrame, cache: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rows = manifest.index[manifest["split"] == split].to_numpy()
    return cache[rows], manifest.loc[rows, "label"].to_numpy(), manifest.loc[rows].reset_index(drop=True)


@dataclass
class Inference:
    """What every pass over a trained run starts with: the run, its model on the device, the images."""

    run: TrainedRun
    model: torch.nn.Module
    device: torch.device
    images: Images

    @classmethod
    def open(
        cls,
        run: str | os.PathLike | TrainedRun,
        data: str | os.PathLike,
        *,
        weights=None,
        cache=None,
        device: str = "auto",
        threads: int | None = None,
    ) -> Inference:
        """``run`` (folder or ``train.json``) with ``weights``, on the dataset ``data`` (folder or manifest)."""
        if threads:
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        run = TrainedRun.open(run, weights)
        return cls(run, run.model(dev), dev, Images.open(data, run.img_size, cache))

    @property
    def amp(self) -> bool:
        return self.run.amp(self.device)
