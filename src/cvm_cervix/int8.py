"""Static int8 as the field does post-training quantisation when accuracy matters (ONNX Runtime, QDQ, U8U8).

The model's float graph is exported to ONNX, calibrated on training images (a pixel budget, not a fixed
count), each calibration method of :data:`CALIBRATION_METHODS` tried and the best on the validation split
kept; where it still loses more than :data:`INT8_BOUND` against float32, the layers a per-layer
sensitivity pass finds most hurt are left float (:data:`FLOAT_SHARES`). ``compress.py`` writes the
artifact and runs it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .engine import scale
from .errors import CvmError
from .run import TrainedRun

log = logging.getLogger("cvm_cervix.compress")


# Calibration images for static int8: a fixed budget of pixels, 256 images at 224 px (what ONNX Runtime's
# calibrators hold in memory grows with images × pixels), so more at smaller sizes, up to 1,024: on 720 real
# blood cells at 32 px, calibrating on all of them instead of 256 halved int8's loss against float32.
CALIBRATION_IMAGES = 256
MAX_CALIBRATION_IMAGES = 1024


def calibration_size(img_size: int) -> int:
    """How many training images calibrate int8 at ``img_size`` (:data:`CALIBRATION_IMAGES` at 224 px)."""
    return int(min(MAX_CALIBRATION_IMAGES, CALIBRATION_IMAGES * (224 / img_size) ** 2))


def calibration_rows(manifest: pd.DataFrame, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """Manifest rows of up to ``n`` training images, drawn with ``seed``: never validation or test images."""
    train = manifest.index[manifest["split"] == "train"].to_numpy()
    if len(train) == 0:
        raise CvmError("the manifest has no training images to calibrate int8 with")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train, size=min(n, len(train)), replace=False))


class _Normalised(torch.nn.Module):
    """Model with preprocessing and softmax inside, so the ONNX file takes uint8 images as they are."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(scale(images)).softmax(1)


def export_onnx(model: torch.nn.Module, img_size: int, path: Path) -> None:
    dummy = torch.zeros(1, 3, img_size, img_size, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Normalised(model),
            dummy,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["probs"],
            dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}},
        )


class _Calibration:
    """ONNX Runtime's calibration reader over uint8 images, in batches of one size: the largest that divides
    the number of images, up to ``batch`` (the histogram calibrators stack every batch's tensors, which a
    shorter last batch breaks)."""

    def __init__(self, images: np.ndarray, batch: int = 16):
        batch = max(d for d in range(1, max(1, min(batch, len(images))) + 1) if len(images) % d == 0)
        self.batches = iter(
            [{"images": np.ascontiguousarray(images[i : i + batch])} for i in range(0, len(images), batch)]
        )

    def get_next(self):
        return next(self.batches, None)

    def __iter__(self):  # qdq_loss_debug's collect_activations iterates
        return iter(self.get_next, None)


class _Measured(_Calibration):
    """Validation images the sensitivity pass runs through both models: measured, never calibrated on."""


# What static int8 quantises: the convolutions and linear layers, whose weights are most of the model.
# ONNX Runtime's own default list also takes residual additions, LayerNorm, GELU, the attention's softmax
# and its products of two activations; quantised with uint8 activation ranges, those cost a CVM-Cervix
# trained on real blood cells 21 points of accuracy for no gain in size.
QUANTISED_OPS = ("Conv", "Gemm", "MatMul")


def float_nodes(graph) -> list[str]:
    """Nodes of an exported graph that stay float under :data:`QUANTISED_OPS`: every product of two
    activations (attention's query·key and weights·value, which have no weight to quantise and the
    widest ranges), and any softmax (quantised, probabilities come in steps of 1/255 and do not sum to
    one, so confidences and every curve drawn from them would be coarse)."""
    weights = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return [
        n.name
        for n in graph.node
        if n.op_type == "Softmax" or (n.op_type == "MatMul" and not any(i in weights for i in n.input))
    ]


# Static int8 arithmetic: uint8 activations and per-channel uint8 weights (U8U8). ONNX Runtime's U8S8 (int8
# weights) multiplies with VPMADDUBSW on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake), whose 16-bit
# sums saturate: a CVM-Cervix trained on real blood cells lost 16 points there and none on a CPU with VNNI.
# U8U8 widens to 16 bits before it multiplies and never saturates (ONNX Runtime's quantisation guide), so an
# int8 model answers the same on every x86 CPU; benchmarks/int8_cpus.py runs it on an emulated AVX2 CPU.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # ONNX Runtime's calibrators, chosen by measurement
INT8_BOUND = 0.02  # the validation accuracy int8 may lose against float32 and still be kept
FLOAT_SHARES = (0.1, 0.25)  # shares of the quantised layers left float, most sensitive first, when it loses more
SENSITIVITY_IMAGES = 64  # validation images the per-layer sensitivity pass runs


def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[name]


def _quantize_prepared(prepared: Path, out: Path, calibration: np.ndarray, method: str, exclude=()) -> None:
    """quantize_static of the prepared float graph: QDQ, per-channel U8U8 of QUANTISED_OPS, calibrated with
    ``method`` on ``calibration``; attention's products, the softmax and ``exclude`` stay float."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(prepared), load_external_data=False).graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(
            str(prepared),
            str(out),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QUInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_exclude=float_nodes(graph) + list(exclude),
            calibrate_method=_calibrate_method(method),
            extra_options={"CalibPercentile": 99.999} if method == "percentile" else {},
        )


def _onnx_probs(path: Path, images: np.ndarray, batch: int = 64) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate(
        [
            session.run(None, {"images": np.ascontiguousarray(images[i : i + batch])})[0]
            for i in range(0, len(images), batch)
        ]
    )


def _sensitivity(prepared: Path, quantised: Path, images: np.ndarray, folder: Path) -> list[str]:
    """The quantised layers, most sensitive first: each one's input activation compared before and after
    its quantisation on ``images`` (signal-to-quantisation-noise ratio, ONNX Runtime's qdq_loss_debug),
    lowest first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    augmented = {}
    for name, source in (("float", prepared), ("qdq", quantised)):
        augmented[name] = folder / f"augmented_{name}.onnx"
        modify_model_output_intermediate_tensors(str(source), str(augmented[name]), save_as_external_data=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        activations = {k: collect_activations(str(v), _Measured(images)) for k, v in augmented.items()}
    errors = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]))
    graph = onnx.load(str(quantised), load_external_data=False).graph
    producer = {out: n for n in graph.node for out in n.output}
    ranked = []
    for node in graph.node:
        if node.op_type not in QUANTISED_OPS:
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        source = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None
        if source in errors:
            ranked.append((errors[source].get("qdq_err", float("inf")), node.name))
    return [name for _, name in sorted(ranked)]


def quantize_int8(
    trained: TrainedRun,
    calibration: np.ndarray,
    path: Path,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    bound: float = INT8_BOUND,
    model: torch.nn.Module | None = None,
) -> dict:
    """Static int8 of ``trained`` into ``path`` (ONNX, QDQ, U8U8), chosen on ``validation`` (uint8 images and
    labels) as the field does post-training quantisation when accuracy matters: each calibration method
    of :data:`CALIBRATION_METHODS` is tried, the one with the best validation accuracy kept; if it still
    loses more than ``bound`` against float32, the layers a sensitivity pass finds most hurt by
    quantisation are left float (:data:`FLOAT_SHARES` of them, in turn). Returns the record of the choice:
    method, float layers, validation accuracy against float32, every candidate tried, and whether int8
    is kept (within ``bound``) or why not. Without ``validation``: min-max calibration, nothing chosen.
    ``model``: the run's model on the CPU where the caller built it already."""
    import math
    import shutil

    model, img_size = model if model is not None else trained.model("cpu"), trained.img_size
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp = Path(tmp)
        fp32, prepared = tmp / "fp32.onnx", tmp / "prepared.onnx"
        export_onnx(model, img_size, fp32)
        try:  # shape inference and graph fusion before quantisation, as ONNX Runtime recommends
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception as err:  # some graphs do not pass the optimiser; quantise them as exported
            log.warning("ONNX pre-processing skipped (%s)", str(err).splitlines()[0] if str(err) else err)
            prepared = fp32
        if validation is None:
            _quantize_prepared(prepared, path, calibration, "minmax")
            return {"method": "minmax", "float_layers": [], "kept": True, "why": None, "validation": None, "tried": []}
        x_val, y_val = validation
        reference = _onnx_probs(prepared, x_val).argmax(1)
        fp32_acc = float(np.mean(reference == y_val))
        tried: list[dict] = []

        def candidate(method: str, exclude: list[str]) -> dict:
            out = tmp / f"int8_{method}_{len(exclude)}.onnx"
            _quantize_prepared(prepared, out, calibration, method, exclude)
            pred = _onnx_probs(out, x_val).argmax(1)
            row = {
                "method": method,
                "float_layers": list(exclude),
                "accuracy": float(np.mean(pred == y_val)),
                "agreement_with_fp32": float(np.mean(pred == reference)),
                "file": out,
            }
            tried.append(row)
            return row

        best = max(
            (candidate(m, []) for m in CALIBRATION_METHODS),
            key=lambda r: (r["accuracy"], r["agreement_with_fp32"]),
        )
        if fp32_acc - best["accuracy"] > bound + 1e-12:
            ranked = _sensitivity(prepared, best["file"], x_val[:SENSITIVITY_IMAGES], tmp)
            for share in FLOAT_SHARES:
                row = candidate(best["method"], ranked[: max(1, math.ceil(share * len(ranked)))])
                if row["accuracy"] > best["accuracy"] or (
                    row["accuracy"] == best["accuracy"] and row["agreement_with_fp32"] > best["agreement_with_fp32"]
                ):
                    best = row
                if fp32_acc - best["accuracy"] <= bound + 1e-12:
                    break
        shutil.copyfile(best["file"], path)
    loss = fp32_acc - best["accuracy"]
    kept = loss <= bound + 1e-12
    return {
        "method": best["method"],
        "float_layers": best["float_layers"],
        "bound": bound,
        "kept": kept,
        "why": None
        if kept
        else (
            f"static int8 loses {100 * loss:.1f} points of validation accuracy against float32 (bound "
            f"{100 * bound:.0f}), with the best calibration ({best['method']}) and {len(best['float_layers'])} "
            "layer(s) left float; not recommended"
        ),
        "validation": {
            "images": int(len(y_val)),
            "fp32_accuracy": fp32_acc,
            "accuracy": best["accuracy"],
            "agreement_with_fp32": best["agreement_with_fp32"],
        },
        "tried": [{k: v for k, v in r.items() if k != "file"} for r in tried],
    }
