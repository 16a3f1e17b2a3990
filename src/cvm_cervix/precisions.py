"""The precisions a trained run can be compressed to, as one table (as the model registry is one).

Each row says what the artifact is called in ``compressed/<precision>/``, which rule of the
workflow makes it (one rule per kind of artifact, so each declares its file and whether it takes a
GPU), where it runs, how it is exported and loaded, and what its timing means. The compress rules
read their artifact names and wildcard values from here, ``compress.py`` dispatches on ``export``
and ``load``, the report's note comes from ``note`` and its choice of artifact from :func:`recommend`. No
torch import: Snakemake reads this table while it parses the workflow, and the report job uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from .paths import PATHS


@dataclass(frozen=True)
class Precision:
    name: str
    artifact: str  # the file in compressed/<name>/
    rule: str  # the workflow rule that writes it
    device: str  # "run": the run's device (the GPU when there is one); "cpu": always the CPU
    export: str  # how the artifact is written: safetensors | safetensors_half | torch_dynamic | onnx | onnx_int8
    load: str  # how it is run: torch | torch_half | torch_dynamic | onnxruntime
    note: str  # for the report; {calibration} is the number of calibration images, {where} the device
    dtype: str | None = None  # the torch dtype of half-precision weights

    @property
    def gpu(self) -> bool:
        return self.device == "run"

    def describe(self, device: str, calibration: int = 0) -> str:
        on_cpu = not str(device).startswith("cuda")
        where = (
            (
                " on the CPU: a smaller file, not a faster model"
                + (" (this CPU emulates 16-bit arithmetic)" if self.name == "fp16" else "")
            )
            if on_cpu
            else " on the GPU"
        )
        return self.note.format(calibration=calibration, where=where)


def _name(key: str) -> str:
    """An artifact's file name, from the plan's one table of the results folder's paths."""
    return PurePosixPath(PATHS[key]).name


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision(
            "fp32", _name("weights"), "compress_half", "run", "safetensors", "torch", "float32 weights, as trained"
        ),
        Precision(
            "fp16",
            _name("artifact_safetensors"),
            "compress_half",
            "run",
            "safetensors_half",
            "torch_half",
            "float16 weights, run in float16{where}",
            dtype="float16",
        ),
        Precision(
            "bf16",
            _name("artifact_safetensors"),
            "compress_half",
            "run",
            "safetensors_half",
            "torch_half",
            "bfloat16 weights, run in bfloat16{where}",
            dtype="bfloat16",
        ),
        Precision(
            "int8",
            _name("artifact_onnx"),
            "compress_onnx",
            "cpu",
            "onnx_int8",
            "onnxruntime",
            "static int8 (QDQ, uint8 weights and activations) of the convolutions and linear layers, calibrated "
            "on {calibration} training images, chosen on validation; ONNX Runtime on the CPU",
        ),
        Precision(
            "int8_dynamic",
            _name("artifact_torch"),
            "compress_dynamic",
            "cpu",
            "torch_dynamic",
            "torch_dynamic",
            "dynamic int8 of the linear layers only (convolutions stay float32); PyTorch on the CPU",
        ),
        Precision(
            "onnx",
            _name("artifact_onnx"),
            "compress_onnx",
            "cpu",
            "onnx",
            "onnxruntime",
            "float32 graph; ONNX Runtime on the CPU",
        ),
    )
}
# What the config's ``compress`` lists may name: every precision but the float32 it is compared with.
COMPRESSED = tuple(name for name in PRECISIONS if name != "fp32")


def rule_precisions(rule: str) -> list[str]:
    """The compressed precisions one compress rule makes: its ``precision`` wildcard's values."""
    return [p.name for p in PRECISIONS.values() if p.rule == rule and p.name in COMPRESSED]


def rule_artifact(rule: str) -> str:
    """The artifact file name every precision of ``rule`` writes (one per rule: it is a declared output)."""
    names = {PRECISIONS[p].artifact for p in rule_precisions(rule)}
    if len(names) != 1:
        raise ValueError(f"compress rule {rule!r} writes {sorted(names)}: one artifact name per rule")
    return names.pop()


def recommend(rows: list[dict], tolerance: float = 0.01) -> dict:
    """Among ``rows`` (fp32 first) within ``tolerance`` of float32 accuracy: the smallest artifact, and
    the fastest on each device that ran one. Returns ``{"smallest": row, "fastest": {device: row}}``."""
    fp32 = next(r for r in rows if r["precision"] == "fp32")
    # an artifact its compress step did not keep (static int8 beyond its bound on validation) is never recommended
    ok = [r for r in rows if r.get("kept", True) and r["accuracy"] >= fp32["accuracy"] - tolerance - 1e-12]
    fastest: dict = {}
    for r in ok:
        kind = "cuda" if str(r["device"]).startswith("cuda") else "cpu"
        if kind not in fastest or r["ms_per_image"] < fastest[kind]["ms_per_image"]:
            fastest[kind] = r
    return {"tolerance": tolerance, "smallest": min(ok, key=lambda r: r["size_mib"]), "fastest": fastest}
