"""A trained run: its record (``train.json``), its checked weights, its model on a device, the precision
rule every pass over it follows, and the images of a split it is evaluated on.

Training writes a run through :func:`write_run`; evaluation, compression, analysis, transfer,
``cvm-cervix predict`` and ``init_from`` read it through :class:`TrainedRun`, so the checks a run
gets (the record's keys, the weights' metadata and every tensor's shape) are made in one place.
"""

from __future__ import annotations

import functools
import json
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
from .paths import file_name
from .record import RunRecord
from .stain_norm import StainReference, normalize_images

# An exported run's folder (cvm_cervix.export), laid out as timm and Hugging Face lay out a model.
EXPORTED = {
    "weights": "model.safetensors",
    "config": "config.json",
    "card": "README.md",
    "onnx": "model.onnx",
    "calibration": "calibration.json",  # the run's, as its evaluate step wrote it (predict --coverage)
}


def _read_exported(path: Path) -> RunRecord:
    """The run's record kept in an exported folder's ``config.json`` (under ``cvm_cervix.run``), with the
    weights' digest recorded at export."""
    fix = "export the run again (cvm-cervix export RUN -o DIR)"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CvmError(f"{path} is not valid JSON ({err}); {fix}") from None
    record = config.get("cvm_cervix", {}) if isinstance(config, dict) else {}
    info = dict(record.get("run") or {}) if isinstance(record, dict) else {}
    if isinstance(record, dict) and "normalization" in record:
        info["normalization"] = record["normalization"]  # kept once, beside the record
    return RunRecord.from_json(info, path, fix)


def _exported_digest(config: Path) -> str | None:
    """The weights' sha256 an exported folder's ``config.json`` recorded (``cvm_cervix.weights_sha256``)."""
    record = json.loads(config.read_text(encoding="utf-8")).get("cvm_cervix")
    digest = record.get("weights_sha256") if isinstance(record, dict) else None
    return digest if isinstance(digest, str) else None


def check_exported_digest(weights: Path, recorded: str | None, config: Path) -> None:
    """An exported folder's weights are the ones its ``config.json`` (and model card) describe: their
    sha256 is recorded at export. Two exports of one architecture and class count would otherwise load
    each other's weights, and predict as one model under the other one's card."""
    from ._io import sha256_file

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
    record: RunRecord
    weights_sha256: str | None = None  # an exported folder's: its weights as config.json recorded them
    _tensors: dict | None = field(default=None, repr=False)

    @property
    def info(self) -> dict:
        """The record in ``train.json``'s current layout, whatever layout the file has."""
        return self.record.to_json()

    @classmethod
    def open(cls, run: str | os.PathLike | TrainedRun, weights: str | os.PathLike | None = None) -> TrainedRun:
        """``run``: a run folder or its ``train.json``; ``weights``: the weights file (default: beside it)."""
        if isinstance(run, TrainedRun):
            return run if weights is None else cls.open(run.info_path, weights)
        path = Path(run)
        exported = (
            path.is_dir() and not (path / file_name("train_info")).is_file() and (path / EXPORTED["config"]).is_file()
        )
        if exported or (path.name == EXPORTED["config"] and path.is_file()):
            info_path = path / EXPORTED["config"] if path.is_dir() else path
            path = info_path.parent
            record = _read_exported(info_path)
            digest = _exported_digest(info_path)
            return cls(info_path, Path(weights) if weights else path / EXPORTED["weights"], record, digest)
        info_path = path / file_name("train_info") if path.is_dir() or not path.suffix else path
        record = RunRecord.read(info_path)
        return cls(info_path, Path(weights) if weights else info_path.parent / file_name("weights"), record)

    @property
    def exported(self) -> bool:
        """Opened from a folder ``cvm-cervix export`` wrote, not from a run folder of the workflow."""
        return self.info_path.name == EXPORTED["config"]

    @property
    def dir(self) -> Path:
        return self.info_path.parent

    @property
    def classes(self) -> list[str]:
        return list(self.record.classes)

    @property
    def img_size(self) -> int:
        return int(self.record.settings.img_size)

    @functools.cached_property
    def stain_reference(self) -> StainReference | None:
        """The stain every image is mapped to before this run's network (None: the images as they are); read
        and checked once, not per batch."""
        given = self.record.stain_reference
        return None if given is None else StainReference.from_json(given, self.info_path, "train the run again")

    def prepare_images(self, images: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Decoded, resized images (N×3×S×S uint8) as the network takes them: mapped to the run's stain
        reference where it trained on normalised stains, else as they are; and per image whether it was
        mapped (an image with too few stained pixels is not: ``stain_norm.normalize_image``)."""
        return normalize_images(images, self.stain_reference, threads)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights file's tensors, read and checked against ``train.json`` once."""
        if self._tensors is None:
            if self.exported:
                check_exported_digest(self.weights_path, self.weights_sha256, self.info_path)
            state, meta = read_weights(self.weights_path)
            check_weights_metadata(meta, self.info, self.weights_path, self.info_path)
            self._tensors = state
        return self._tensors

    def normalization(self) -> dict:
        normalization = self.record.normalization
        if normalization is None:  # a format-1 run from before the key: every network was fed ImageNet statistics
            normalization = {
                path: IMAGENET
                for path in input_normalizations(
                    create_model(self.record.model, self.record.num_classes, self.img_size)
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
            head=info["fusion_head"],
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
        if not self.record.amp or device.type != "cuda":
            return False
        return self.record.amp_dtype or True

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
    """A prepared dataset's manifest and the uint8 image cache of one size, row for row; with a run's
    ``stain`` reference, each split is handed out mapped to it (the cache itself holds the images as decoded)."""

    manifest: pd.DataFrame
    cache: np.ndarray
    stain: StainReference | None = None

    @classmethod
    def open(
        cls,
        data: str | os.PathLike,
        img_size: int,
        cache: str | os.PathLike | None = None,
        stain: StainReference | None = None,
    ) -> Images:
        manifest_path, cache_path = dataset_files(data, img_size, cache)
        manifest = read_manifest(manifest_path)
        return cls(manifest, load_cache(cache_path, len(manifest), img_size), stain)

    def split(self, split: str, raw: bool = False) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """(images, labels, manifest rows) of one split, in manifest order: as the network takes them, or as
        decoded (``raw``: for a corruption applied before the stain normalisation, as on another lab's slide)."""
        x, y, rows = split_arrays(self.manifest, self.cache, split)
        return (x if raw else self.prepare(x)), y, rows

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Decoded images as the network takes them (mapped to the stain reference, if any)."""
        return normalize_images(images, self.stain, torch.get_num_threads())[0]


def calibration_rows(rows: pd.DataFrame, fraction: float) -> np.ndarray:
    """Which of a validation split's ``rows`` (manifest rows) are its calibration part: ``fraction`` of each
    class's images (rounded; none of a class with one image, and never all of a class), those first in the
    order of their sha256. The content's digest orders them: the same part wherever the files lie and
    whatever the seed, and independent of everything the model sees. Training selects its best epoch on
    the rest only, so the conformal sets calibrated on this part keep their guarantee (``calibration_holdout``).
    """
    keep = np.zeros(len(rows), dtype=bool)
    if fraction <= 0 or not len(rows):
        return keep
    for _, index in rows.groupby("label", sort=True).indices.items():
        take = min(round(fraction * len(index)), len(index) - 1)
        order = index[np.argsort(rows["sha256"].to_numpy()[index], kind="stable")]
        keep[order[:take]] = True
    return keep


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
        return cls(run, run.model(dev), dev, Images.open(data, run.img_size, cache, run.stain_reference))

    @property
    def amp(self) -> bool:
        return self.run.amp(self.device)
