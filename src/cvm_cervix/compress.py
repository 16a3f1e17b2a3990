"""Compression: half-precision weights, static int8 (convolutions and linear layers), ONNX.

Each precision gets an artifact beside the run and a :class:`Predictor` that turns uint8 images
into class probabilities, so evaluation and ``cvm-cervix predict`` use one code path:

- ``fp16``/``bf16``: weights stored and run in half precision (fast on a GPU; on a CPU a smaller
  file, not a faster model);
- ``int8``: static quantisation with ONNX Runtime's ``quantize_static`` (QDQ, per-channel uint8
  weights and uint8 activations, calibrated on training images) of the convolutions and linear
  layers, its calibration method and the layers left float chosen on the validation split
  (``int8.py``: :func:`~cvm_cervix.int8.quantize_int8`), run by ONNX Runtime on the CPU;
- ``int8_dynamic``: PyTorch's dynamic int8 of the linear layers only (the convolutions stay
  float32), kept for comparison;
- ``onnx``: the float32 graph run by ONNX Runtime on the CPU.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score

from ._io import atomic_path, write_csv, write_json
from .engine import predict, resolve_device, to_device_images
from .errors import CvmError
from .int8 import calibration_rows, calibration_size, export_onnx, quantize_int8
from .paths import file_name
from .precisions import PRECISIONS, Precision
from .run import EXPORTED, Images, TrainedRun, check_weights_metadata, save_weights, weights_metadata

log = logging.getLogger(__name__)


def precision_row(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise CvmError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def _quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised on the fly)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao is deprecated in favour of torchao, which is not a dependency
        return quantize_dynamic(model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8)


def export(
    run: str | os.PathLike | TrainedRun,
    precision: str,
    out_dir: str | os.PathLike,
    calibration: np.ndarray | None = None,
    artifact: str | os.PathLike | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    with_choice: bool = False,
):
    """Write the ``precision`` artifact of ``run`` (a run folder, its ``train.json`` or a :class:`TrainedRun`)
    to ``artifact`` (default: its table name in ``out_dir``); return its path (with ``with_choice``, also
    the record of how int8 was chosen: :func:`quantize_int8`).

    ``int8`` needs ``calibration``: uint8 training images (N×3×S×S) to set the activation ranges, and is
    chosen on ``validation`` (uint8 images and labels) where given.
    """
    chosen = None
    row = precision_row(precision)
    trained = TrainedRun.open(run)
    model, info = trained.model("cpu"), trained.info
    path = Path(artifact or Path(out_dir) / row.artifact)
    meta = weights_metadata(info)
    if row.export == "safetensors":
        save_weights(model, path, meta)
    elif row.export == "safetensors_half":
        save_weights(model.to(getattr(torch, row.dtype)), path, {**meta, "precision": precision})
    elif row.export == "torch_dynamic":
        buffer = io.BytesIO()
        torch.save(_quantize_dynamic(model).state_dict(), buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
    else:
        if row.export == "onnx_int8" and (calibration is None or not len(calibration)):
            raise CvmError(
                f"int8 of {trained.dir} needs calibration images from the training split; "
                "run the workflow's compress step with int8"
            )
        with atomic_path(path) as tmp:
            if row.export == "onnx_int8":
                chosen = quantize_int8(trained, calibration, tmp, validation, model=model)
            else:
                export_onnx(model, info["img_size"], tmp)
            _stamp_onnx(tmp, {**meta, "precision": precision})
    return (path, chosen) if with_choice else path


def _stamp_onnx(path: Path, meta: dict) -> None:
    """Record the run's model name, class count and size in the ONNX file's metadata."""
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in meta.items()})
    onnx.save(proto, str(path))


def _onnx_session(path: Path, info: dict, info_path: Path):
    """An ONNX Runtime session for ``path``, refused when the file was exported from another run."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise CvmError(
            f"{path} cannot be loaded by ONNX Runtime ({str(err).splitlines()[0]}); "
            "delete it and run the compress step again"
        ) from None
    meta = session.get_modelmeta().custom_metadata_map
    check_weights_metadata(meta, info, path, info_path)
    if not meta:
        raise CvmError(
            f"{path} carries no model metadata, so it cannot be matched to {info_path}; "
            "delete it and run the compress step again"
        )
    return session


class Predictor:
    """uint8 B×3×S×S images -> class probabilities, for one run at one precision.

    ``artifact``: the exported file to run (default: the run's ``compressed/<precision>/`` one).
    """

    def __init__(
        self,
        run: str | os.PathLike | TrainedRun,
        precision: str = "fp32",
        device: str = "auto",
        artifact: str | os.PathLike | None = None,
    ):
        row = precision_row(precision)
        self.run = trained = TrainedRun.open(run)
        self.run_dir, self.precision, self.info = trained.dir, precision, trained.info
        self.classes, self.img_size = trained.classes, trained.img_size
        self.device = torch.device("cpu") if row.device == "cpu" else resolve_device(device)
        self.session = None
        if artifact is None and trained.exported:  # an exported folder holds model.onnx at most
            if row.export == "onnx_int8":
                raise CvmError(
                    f"{trained.dir} is an exported folder: static int8 needs the run's training images to "
                    "calibrate; use --precision onnx, fp16, bf16 or int8_dynamic, or the run folder itself"
                )
            artifact = trained.dir / EXPORTED["onnx"] if row.export == "onnx" else None
        stored = Path(artifact or trained.dir / file_name("compressed", precision=precision) / row.artifact)
        if row.load == "onnxruntime":
            if stored.is_file():
                self.session = _onnx_session(stored, self.info, trained.info_path)
            elif row.export == "onnx_int8":
                raise CvmError(
                    f"{stored} not found: static int8 is calibrated on the run's training images; "
                    "run the workflow's compress step with int8 first (compress: [int8])"
                )
            else:  # not exported by the workflow: export to a temporary file, leave the run untouched
                with tempfile.TemporaryDirectory() as tmp:
                    self.session = _onnx_session(export(trained, precision, tmp), self.info, trained.info_path)
        elif row.load == "torch_dynamic":
            self.model = _quantize_dynamic(trained.model("cpu"))
        elif row.load == "torch_half":
            if stored.is_file():  # evaluate the very file whose size is reported, checked against the run
                self.model = trained.model(self.device, weights=stored)
            else:
                self.model = trained.model("cpu").to(getattr(torch, row.dtype)).to(self.device)
        else:
            self.model = trained.model(self.device)

    def prepare(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decoded images (N×3×S×S uint8) as this run's network takes them (``TrainedRun.prepare_images``)."""
        return self.run.prepare_images(images, torch.get_num_threads())

    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, float]:
        """Probabilities (N×C, float32) and the pure inference seconds, of images prepared (:meth:`prepare`)."""
        if self.session is not None:
            probs, start = [], time.perf_counter()
            for i in range(0, len(images), batch_size):
                probs.append(self.session.run(None, {"images": images[i : i + batch_size].cpu().numpy()})[0])
            return np.concatenate(probs), time.perf_counter() - start
        out = predict(self.model, images, batch_size, self.device, amp=False)
        return out["probs"].astype(np.float32), out["seconds"]


def describe(precision: str, device: str, calibration: int = 0) -> str:
    """What an artifact is and what its timing means, for the report."""
    return precision_row(precision).describe(device, calibration)


def compress_run(
    run: str | os.PathLike,
    data: str | os.PathLike,
    precision: str,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    calibration_images: int | None = None,
    *,
    weights: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    artifact: str | os.PathLike | None = None,
    metrics_json: str | os.PathLike | None = None,
    predictions_csv: str | os.PathLike | None = None,
) -> dict:
    """Export ``precision``, predict the test split with it and compare with float32.

    ``run``: the run folder or its ``train.json`` (``weights`` beside it unless given); ``data``: the
    prepared dataset's folder or its manifest (``cache`` beside it unless given). Writes the
    artifact, ``metrics.json`` (size, accuracy, macro F1, their change against float32, agreement
    with the float32 predictions, latency per image, what was timed where) and
    ``predictions_test.csv``, to the files named or into ``out_dir`` (default:
    ``compressed/<precision>/`` of the run). ``int8`` is calibrated on up to ``calibration_images`` (default:
    :func:`calibration_size` of the run's image size)
    images of the training split.
    """
    row = precision_row(precision)
    if threads:
        torch.set_num_threads(threads)
    trained = TrainedRun.open(run, weights)  # its weights are read and checked once, for every model below
    out_dir = Path(out_dir or trained.dir / file_name("compressed", precision=precision))
    images_all = Images.open(data, trained.img_size, cache, trained.stain_reference)
    manifest, cache_array = images_all.manifest, images_all.cache
    calibration = (
        calibration_rows(manifest, calibration_images or calibration_size(trained.img_size), trained.record.seed)
        if row.export == "onnx_int8"
        else []
    )
    validation = images_all.split("val")[:2] if row.export == "onnx_int8" else None
    artifact, chosen = export(
        trained,
        precision,
        out_dir,
        images_all.prepare(cache_array[calibration]) if len(calibration) else None,
        artifact=artifact,
        validation=validation,
        with_choice=True,
    )
    predictor = Predictor(trained, precision, device, artifact=artifact)
    x, y, rows = images_all.split("test")
    images = to_device_images(x, predictor.device)
    predictor(images[:batch_size], batch_size)  # warm-up
    probs, seconds = predictor(images, batch_size)
    classes = predictor.classes
    from .evaluate import predictions_frame

    frame = predictions_frame(rows["path"], y, probs, classes)
    # The baseline is the run evaluated here in float32, whatever precision metrics.json was measured in
    # (a run trained with AMP is evaluated in autocast).
    baseline = Predictor(trained, "fp32", device)
    ref_images = to_device_images(x, baseline.device)
    baseline(ref_images[:batch_size], batch_size)
    ref_probs, ref_seconds = baseline(ref_images, batch_size)
    reference = predictions_frame(rows["path"], y, ref_probs, classes)

    def scores(f: pd.DataFrame) -> tuple[float, float]:
        return (
            float((f["label"] == f["pred"]).mean()),
            float(f1_score(f["label"], f["pred"], labels=classes, average="macro", zero_division=0)),
        )

    accuracy, f1 = scores(frame)
    fp32 = dict(
        zip(("accuracy", "f1_macro"), scores(reference)),
        ms_per_image=1000 * ref_seconds / max(len(x), 1),
        device=str(baseline.device),
    )
    size, fp32_size = artifact.stat().st_size, trained.weights_path.stat().st_size
    metrics = {
        "precision": precision,
        "artifact": artifact.name,
        "size_mib": size / 2**20,
        "fp32_size_mib": fp32_size / 2**20,
        "size_mb": size / 1e6,
        "accuracy": accuracy,
        "f1_macro": f1,
        "delta_accuracy": accuracy - fp32["accuracy"],
        "delta_f1_macro": f1 - fp32["f1_macro"],
        "agreement_with_fp32": float((frame["pred"].to_numpy() == reference["pred"].to_numpy()).mean()),
        "ms_per_image": 1000 * seconds / max(len(x), 1),
        "device": str(predictor.device),
        "n": int(len(frame)),
        "fp32": fp32,
        "calibration": (
            {"split": "train", "images": int(len(calibration)), "method": chosen["method"]}
            if row.export == "onnx_int8"
            else None
        ),
        "note": describe(precision, str(predictor.device), len(calibration))
        + (f" {chosen['why']}." if chosen and chosen.get("why") else ""),
    }
    if chosen is not None:  # how int8 was chosen: on validation, against float32 (quantize_int8)
        metrics.update(
            kept=chosen["kept"],
            float_layers=chosen["float_layers"],
            validation=chosen["validation"],
            bound=chosen.get("bound"),
            tried=chosen["tried"],
        )
    # the files declared by the rule, else the plan's names in out_dir
    default = {
        k: out_dir / Path(file_name(f"compressed_{k}", precision=precision)).name for k in ("predictions", "metrics")
    }
    write_csv(predictions_csv or default["predictions"], frame)
    write_json(metrics_json or default["metrics"], metrics)
    return metrics
