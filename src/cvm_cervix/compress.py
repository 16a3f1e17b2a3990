"""Compression: float16 and bfloat16 weights, int8 dynamic quantisation of the linear layers, ONNX.

Each precision gets an artifact beside the run and a :class:`Predictor` that turns uint8 images
into class probabilities, so evaluation and ``cvm-cervix predict`` use one code path.
"""

from __future__ import annotations

import io
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score

from ._io import atomic_path, read_json, write_json
from .data import load_cache, read_manifest
from .engine import normalize, predict, resolve_device, to_device_images
from .errors import CvmError
from .train import check_weights_metadata, load_trained, save_weights, split_arrays

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "onnx")
ARTIFACTS = {"fp32": "weights.safetensors", "fp16": "weights_fp16.safetensors", "bf16": "weights_bf16.safetensors",
             "int8": "weights_int8.pt", "onnx": "model.onnx"}
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised on the fly)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao is deprecated in favour of torchao, which is not a dependency
        return quantize_dynamic(model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8)


def export(run_dir: str | os.PathLike, precision: str, out_dir: str | os.PathLike) -> Path:
    """Write the ``precision`` artifact of the run in ``run_dir`` into ``out_dir``; return its path."""
    if precision not in PRECISIONS:
        raise CvmError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model, info = load_trained(run_dir, "cpu")
    path = Path(out_dir) / ARTIFACTS[precision]
    meta = {k: info[k] for k in ("model", "num_classes", "img_size")}
    if precision == "fp32":
        save_weights(model, path, meta)
    elif precision in _DTYPES:
        save_weights(model.to(_DTYPES[precision]), path, {**meta, "precision": precision})
    elif precision == "int8":
        buffer = io.BytesIO()
        torch.save(_quantize_int8(model).state_dict(), buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
    else:
        dummy = torch.zeros(1, 3, info["img_size"], info["img_size"])
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Normalised(model), dummy.to(torch.uint8), str(tmp), dynamo=False, opset_version=17,
                              input_names=["images"], output_names=["probs"],
                              dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}})
            _stamp_onnx(tmp, meta)
    return path


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
        raise CvmError(f"{path} cannot be loaded by ONNX Runtime ({str(err).splitlines()[0]}); "
                       "delete it and run the compress step again") from None
    meta = session.get_modelmeta().custom_metadata_map
    check_weights_metadata(meta, info, path, info_path)
    if not meta:
        raise CvmError(f"{path} carries no model metadata, so it cannot be matched to {info_path}; "
                       "delete it and run the compress step again")
    return session


class _Normalised(torch.nn.Module):
    """Model with preprocessing and softmax inside, so the ONNX file takes uint8 images as they are."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(normalize(images)).softmax(1)


class Predictor:
    """uint8 B×3×S×S images -> class probabilities, for one run at one precision."""

    def __init__(self, run_dir: str | os.PathLike, precision: str = "fp32", device: str = "auto"):
        if precision not in PRECISIONS:
            raise CvmError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.run_dir, self.precision = Path(run_dir), precision
        model, self.info = load_trained(run_dir, "cpu")
        self.classes, self.img_size = self.info["classes"], self.info["img_size"]
        self.device = torch.device("cpu") if precision in ("int8", "onnx") else resolve_device(device)
        self.session = None
        if precision == "onnx":
            path = self.run_dir / "compressed" / "onnx" / ARTIFACTS["onnx"]
            info_path = self.run_dir / "train.json"
            if path.is_file():
                self.session = _onnx_session(path, self.info, info_path)
            else:  # not exported by the workflow: export to a temporary file, leave the run untouched
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    self.session = _onnx_session(export(run_dir, "onnx", tmp), self.info, info_path)
        elif precision == "int8":
            self.model = _quantize_int8(model)
        elif precision in _DTYPES:
            stored = self.run_dir / "compressed" / precision / ARTIFACTS[precision]
            if stored.is_file():  # evaluate the very file whose size is reported, checked against the run
                self.model, _ = load_trained(run_dir, self.device, weights=stored)
            else:
                self.model = model.to(_DTYPES[precision]).to(self.device)
        else:
            self.model = model.to(self.device)

    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, float]:
        """Probabilities (N×C, float32) and the pure inference seconds."""
        if self.session is not None:
            probs, start = [], time.perf_counter()
            for i in range(0, len(images), batch_size):
                probs.append(self.session.run(None, {"images": images[i:i + batch_size].cpu().numpy()})[0])
            return np.concatenate(probs), time.perf_counter() - start
        out = predict(self.model, images, batch_size, self.device, amp=False)
        return out["probs"].astype(np.float32), out["seconds"]


def compress_run(run_dir: str | os.PathLike, dataset_dir: str | os.PathLike, precision: str,
                 out_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 64,
                 threads: int | None = None) -> dict:
    """Export ``precision``, predict the test split with it and compare with float32.

    Writes ``metrics.json`` (size, accuracy, macro F1, their change against float32, agreement
    with the float32 predictions, latency per image) and ``predictions_test.csv``.
    """
    if threads:
        torch.set_num_threads(threads)
    run_dir, dataset_dir = Path(run_dir), Path(dataset_dir)
    out_dir = Path(out_dir or run_dir / "compressed" / precision)
    artifact = export(run_dir, precision, out_dir)
    predictor = Predictor(run_dir, precision, device)
    manifest = read_manifest(dataset_dir / "manifest.csv")
    cache = load_cache(dataset_dir / f"cache_{predictor.img_size}.npy", len(manifest))
    x, y, rows = split_arrays(manifest, cache, "test")
    images = to_device_images(x, predictor.device)
    predictor(images[:batch_size], batch_size)  # warm-up
    probs, seconds = predictor(images, batch_size)
    classes = predictor.classes
    from .evaluate import predictions_frame

    frame = predictions_frame(rows["path"], y, probs, classes)
    fp32 = read_json(run_dir / "metrics.json")["test"]
    reference = pd.read_csv(run_dir / "predictions_test.csv")
    accuracy = float((frame["label"] == frame["pred"]).mean())
    f1 = float(f1_score(frame["label"], frame["pred"], labels=classes, average="macro", zero_division=0))
    metrics = {
        "precision": precision, "artifact": artifact.name, "size_mb": artifact.stat().st_size / 1e6,
        "fp32_size_mb": (run_dir / "weights.safetensors").stat().st_size / 1e6,
        "accuracy": accuracy, "f1_macro": f1,
        "delta_accuracy": accuracy - fp32["accuracy"], "delta_f1_macro": f1 - fp32["f1_macro"],
        "agreement_with_fp32": float((frame["pred"].to_numpy() == reference["pred"].to_numpy()).mean()),
        "ms_per_image": 1000 * seconds / max(len(x), 1), "fp32_ms_per_image": fp32["ms_per_image"],
        "device": str(predictor.device), "n": int(len(frame)),
    }
    from ._io import write_csv

    write_csv(out_dir / "predictions_test.csv", frame)
    write_json(out_dir / "metrics.json", metrics)
    return metrics
