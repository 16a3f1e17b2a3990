"""A finished run's record (``train.json``): one frozen type, written whole, read in one place.

:class:`RunRecord` holds which run it is, its :class:`~cvm_cervix.settings.TrainSettings` whole, how
those settings took effect (device, arithmetic, the step, input normalisation, the run it started
from) and what was measured. ``train.json`` is :meth:`RunRecord.to_json`, with a format version;
:meth:`RunRecord.from_json` is the only code that knows the layouts written before it. What a
checkpoint (or a result finished by another job) must match to be used is :func:`run_identity`,
computed from the same fields before training and from the record after it, and the rule's params
are ``TrainSettings.params``: a setting that decides the result is in both by construction.
No torch: the report and Snakemake's own process read records too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CvmError
from .paths import file_name
from .settings import RESULT, TrainSettings

# train.json layouts: 1, the flat record written before this key existed (keys added over time, so any
# may be missing); 2, the flat record with the settings whole and the identity beside it.
FORMAT = 2
OPTIMIZER, LOSS = "AdamW", "cross-entropy"
# What every layout holds, as rebuilding the model needs it: key -> type.
REQUIRED = {"model": str, "num_classes": int, "img_size": int, "classes": list, "seed": int, "augment": str}


def run_identity(
    *,
    model: str,
    seed: int,
    augment: str,
    classes,
    settings: TrainSettings,
    device_type: str,
    amp_dtype: str | None,
    captured: bool,
    normalization: dict | None,
    fusion_head: dict | None,
    init: dict | None,
    data_digest: str | None,
    train_images: int,
) -> dict:
    """What a checkpoint, or a run finished by another job, must match to be used: every setting that
    decides the result (every ``result`` field of :class:`TrainSettings`) as it took effect, and the data.

    As they took effect: the 16-bit type mixed precision ran in (float32 on a CPU), the step as it ran,
    the run started from by its weights' digest rather than its path. One exception: with a constant
    learning rate the epoch count shapes no epoch before the last, so a checkpoint resumes into a longer
    run (a schedule over the epochs makes every epoch count's run another run).
    """
    effect = {"amp": amp_dtype, "step": "cuda_graph" if captured else "eager", "init_from": init}
    chosen = {}
    for name in TrainSettings.names(RESULT):
        if name == "epochs" and settings.lr_schedule == "none":
            continue
        if name == "amp_dtype":
            continue  # in "amp" as it ran
        chosen[name] = effect[name] if name in effect else getattr(settings, name)
    identity = {
        "model": model,
        "seed": int(seed),
        "augment": augment,
        "classes": list(classes),
        "settings": chosen,
        "device": device_type,
        "normalization": normalization,
        "fusion_head": fusion_head,
        "data": data_digest,
        "train_images": int(train_images),
    }
    return json.loads(json.dumps(identity))  # as train.json holds it (tuples as lists)


@dataclass(frozen=True)
class RunRecord:
    """One finished run: which, its settings whole, how they took effect, and what was measured."""

    # which run
    model: str
    dataset: str
    augment: str
    seed: int
    classes: tuple[str, ...]
    # how it was asked to train
    settings: TrainSettings
    # how that took effect
    device: str  # "cpu", "cuda:0"
    device_name: str | None
    amp: bool  # mixed precision ran (asked for on a CPU, it trains in float32)
    amp_dtype: str | None  # its 16-bit type; None: float32, or a format-1 run that did not record it
    step: str  # eager or cuda_graph, as it ran
    normalization: dict | None  # None: a format-1 run from before the key, fed ImageNet statistics
    fusion_head: dict | None  # the MLP head as built (hidden width resolved); None: a linear head
    init: dict | None  # the run it started from: its folder, weights' sha256, whether the head was kept
    data_digest: str | None
    train_images: int | None
    val_images: int | None
    threads: int | None
    torch: str | None
    # what was measured (None: a format-1 run from before the key)
    params: int | None
    best_epoch: int | None
    best_val_acc: float | None
    total_seconds: float | None
    first_step_seconds: float | None
    startup_seconds: float | None
    resumed: tuple = ()
    # the stain every image is mapped to (stain_norm.StainReference.to_json), where the settings ask for one
    stain_reference: dict | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> dict:
        return run_identity(
            model=self.model,
            seed=self.seed,
            augment=self.augment,
            classes=self.classes,
            settings=self.settings,
            device_type=self.device.split(":")[0],
            amp_dtype=self.amp_dtype if self.amp else None,
            captured=self.step == "cuda_graph",
            normalization=self.normalization,
            fusion_head=self.fusion_head,
            init=self.init,
            data_digest=self.data_digest,
            train_images=self.train_images or 0,
        )

    def to_json(self) -> dict:
        """``train.json``: the record whole, flat as every reader takes it, with the settings and the identity."""
        s = self.settings
        flat = {
            "format": FORMAT,
            "model": self.model,
            "dataset": self.dataset,
            "augment": self.augment,
            "seed": self.seed,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "img_size": s.img_size,
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "lr": s.lr,
            "lr_schedule": s.lr_schedule,
            "weight_decay": s.weight_decay,
            "optimizer": OPTIMIZER,
            "loss": LOSS,
            "pretrained": s.pretrained,
            "weights_init": s.weights or None,
            # where and with what statistics the model normalises its input: rebuilt exactly when loaded
            "normalization": self.normalization,
            "fusion_head": self.fusion_head,
            # the stain every input is mapped to before the network (train.stain_normalization), else None
            "stain_reference": self.stain_reference,
            "train_images": self.train_images,
            "val_images": self.val_images,
            "train_fraction": s.train_fraction,
            "init_from": self.init,
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "params": self.params,
            "device": self.device,
            "device_name": self.device_name,
            "amp": self.amp,
            "amp_dtype": self.amp_dtype,  # float16 or bfloat16 where mixed precision ran, else None (float32)
            "compile": s.compile,
            "deterministic": s.deterministic,
            "tensorboard": s.tensorboard,
            "step": self.step,
            "threads": self.threads,
            "torch": self.torch,
            "data_digest": self.data_digest,
            "total_seconds": self.total_seconds,
            "seconds_per_epoch": None if self.total_seconds is None else self.total_seconds / s.epochs,
            # from the start of training (data, model, cuDNN autotuning, capture) to the end of its first
            # step (None: resumed after the last one); before that, the process's own start (None: unknown)
            "first_step_seconds": self.first_step_seconds,
            "startup_seconds": self.startup_seconds,
            "resumed": list(self.resumed),  # each resumption from a checkpoint: after which epoch (and step)
            "settings": dataclasses.asdict(s),
        }
        flat["identity"] = self.identity()
        return json.loads(json.dumps(flat))

    @classmethod
    def from_json(cls, data: Any, where: str | os.PathLike, fix: str = "delete the run folder and train it again"):
        """The record in ``data`` (a parsed ``train.json``, of any layout this workflow wrote), checked for
        what rebuilding the model needs; one line naming ``where`` and ``fix`` when it is not one."""
        if not isinstance(data, dict):
            raise CvmError(f"{where} does not hold a JSON object; {fix}")
        version = data.get("format", 1)
        if version not in (1, FORMAT):
            raise CvmError(
                f"{where} is a run record of format {version!r}, which this version does not know (it reads "
                f"formats 1 to {FORMAT}); use the cvm-cervix version that trained the run, or {fix}"
            )
        for key, kind in REQUIRED.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise CvmError(f"{where} lacks key {key!r} (or it is not a {kind.__name__}); {fix}")
        classes = data["classes"]
        if data["num_classes"] != len(classes):
            raise CvmError(f"{where}: {len(classes)} classes listed but num_classes is {data['num_classes']}; {fix}")
        if not all(isinstance(c, str) and c for c in classes):
            raise CvmError(f"{where}: every class name must be a non-empty text; {fix}")
        twice = next((c for i, c in enumerate(classes) if c in classes[:i]), None)
        if twice is not None:  # two probability columns of one name would collapse into one
            raise CvmError(f"{where}: class {twice!r} is listed twice; {fix}")
        _check_normalization(data.get("normalization"), where, fix)
        settings = _settings(data, version, where, fix)
        stain = _stain_reference(data.get("stain_reference"), settings, where, fix)
        return cls(
            model=data["model"],
            dataset=str(data.get("dataset", "")),
            augment=data["augment"],
            seed=data["seed"],
            classes=tuple(classes),
            settings=settings,
            device=str(data.get("device") or "cpu"),
            device_name=data.get("device_name"),
            amp=bool(data.get("amp")),
            amp_dtype=data.get("amp_dtype"),
            step=data.get("step") or "eager",
            normalization=data.get("normalization"),
            fusion_head=data.get("fusion_head"),
            init=data.get("init_from") if isinstance(data.get("init_from"), dict) else None,
            data_digest=data.get("data_digest"),
            train_images=data.get("train_images"),
            val_images=data.get("val_images"),
            threads=data.get("threads"),
            torch=data.get("torch"),
            params=data.get("params"),
            best_epoch=data.get("best_epoch"),
            best_val_acc=data.get("best_val_acc"),
            total_seconds=data.get("total_seconds"),
            first_step_seconds=data.get("first_step_seconds"),
            startup_seconds=data.get("startup_seconds"),
            resumed=tuple(
                tuple(r) if isinstance(r, list) else r for r in data.get("resumed") or ()
            ),  # as it was listed
            stain_reference=stain,
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunRecord:
        """A run's ``train.json`` (or the run folder holding it)."""
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
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise CvmError(f"{path} is not valid JSON ({err}); delete the run folder and train it again") from None
        return cls.from_json(data, path)


def _settings(data: dict, version: int, where, fix: str) -> TrainSettings:
    """The settings whole (format 2), or as far as a format-1 record states them: its flat keys, as they
    took effect, and the schema's defaults for the keys it was written before."""
    if version == FORMAT:
        given = data.get("settings")
        if not isinstance(given, dict):
            raise CvmError(f"{where} lacks its 'settings'; {fix}")
        unknown = sorted(set(given) - set(TrainSettings.names()))
        if unknown:
            raise CvmError(f"{where}: settings {unknown} are not settings of this version; {fix}")
        # a run recorded before the key kept no validation image out of model selection
        return TrainSettings(**{"calibration_holdout": 0.0, **given})
    flat = {k: data[k] for k in TrainSettings.names() if k in data and data[k] is not None}
    flat.setdefault("calibration_holdout", 0.0)
    flat.pop("device", None)  # the device it ran on ("cuda:0"), not the one asked for ("auto")
    flat.pop("init_from", None)  # the run it started from, as recorded (its folder, weights' sha256)
    if isinstance(data.get("init_from"), dict):
        flat["init_from"] = str(data["init_from"].get("run", "")) or None
    if data.get("weights_init"):
        flat["weights"] = str(data["weights_init"])
    head = data.get("fusion_head")
    if isinstance(head, dict):
        flat.update({f"head_{k}": v for k, v in head.items() if f"head_{k}" in TrainSettings.names()})
    return TrainSettings.of(flat)


def _stain_reference(given, settings: TrainSettings, where, fix: str) -> dict | None:
    """The run's stain reference, checked: one of the method its settings name, or none where they name none."""
    from .stain_norm import StainReference

    method = settings.stain_normalization
    if method == "none":
        if given is not None:
            raise CvmError(f"{where} holds a stain reference but its settings ask for no stain normalisation; {fix}")
        return None
    if given is None:
        raise CvmError(f"{where}: stain_normalization is {method!r} but the record holds no stain reference; {fix}")
    reference = StainReference.from_json(given, where, fix)
    if reference.method != method:
        raise CvmError(f"{where}: the stain reference is {reference.method}'s, the settings ask for {method}; {fix}")
    return reference.to_json()


def _check_normalization(normalization, where, fix: str) -> None:
    """Each branch's mean and std: three finite numbers, std above zero (a std of 0 divides by zero and
    the model answers nothing but NaN)."""
    if normalization is None:  # a format-1 run from before the key: ImageNet statistics (TrainedRun.normalization)
        return
    if not isinstance(normalization, dict) or not normalization:
        raise CvmError(f"{where}: 'normalization' must map each input branch to its mean and std; {fix}")
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
                    f"{where}: normalization {key} of {branch!r} is {str(values)[:60]}; it must be three finite "
                    f"numbers{', each above 0' if key == 'std' else ''}; {fix}"
                )
