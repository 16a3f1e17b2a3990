"""Compression: half-precision weights, static int8 (convolutions and linear layers), ONNX.

Each precision gets an artifact beside the run and a :class:`Predictor` that turns uint8 images
into class probabilities, so evaluation and ``cvm-cervix predict`` use one code path:

- ``fp16``/``bf16``: weights stored and run in half precision (fast on a GPU; on a CPU a smaller
  file, not a faster model);
- ``int8``: static quantisation with ONNX Runtime's ``quantize_static`` (QDQ, per-channel uint8
  weights and uint8 activations, calibrated on training images) of the convolutions and linear
  layers, its calibration method and the layers left float chosen on the validation split
  (:func:`quantize_int8`), run by ONNX Runtime on the CPU;
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
from .engine import predict, resolve_device, scale, to_device_images
from .errors import CvmError
from .paths import file_name
from .precisions import PRECISIONS, Precision
from .run import EXPORTED, Images, TrainedRun, check_weights_metadata, save_weights, weights_metadata

log = logging.getLogger(__name__)

# Calibration images for static int8: a fixed budget of pixels, 256 images at 224 px (what ONNX Runtime's
# calibrators hold in memory grows with images × pixels), so more at smaller sizes, up to 1,024: on 720 real
# blood cells at 32 px, calibrating on all of them instead of 256 halved int8's loss against float32.
CALIBRATION_IMAGES = 256
MAX_CALIBRATION_IMAGES = 1024


def calibration_size(img_size: int) -> int:
    """How many training images calibrate int8 at ``img_size`` (:data:`CALIBRATION_IMAGES` at 224 px)."""
    return int(min(MAX_CALIBRATION_IMAGES, CALIBRATION_IMAGES * (224 / img_size) ** 2))


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


def calibration_rows(manifest: pd.DataFrame, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """Manifest rows of up to ``n`` training images, drawn with ``seed``: never validation or test images."""
    train = manifest.index[manifest["split"] == "train"].to_numpy()
    if len(train) == 0:
        raise CvmError("the manifest has no training images to calibrate int8 with")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train, size=min(n, len(train)), replace=False))


def _export_onnx(model: torch.nn.Module, img_size: int, path: Path) -> None:
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
        _export_onnx(model, img_size, fp32)
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
                _export_onnx(model, info["img_size"], tmp)
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


class _Normalised(torch.nn.Module):
    """Model with preprocessing and softmax inside, so the ONNX file takes uint8 images as they are."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(scale(images)).softmax(1)


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

    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, float]:
        """Probabilities (N×C, float32) and the pure inference seconds."""
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
    images_all = Images.open(data, trained.img_size, cache)
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
        cache_array[calibration] if len(calibration) else None,
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
