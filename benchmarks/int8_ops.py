"""Static int8 of one trained run with the workflow's op set against ONNX Runtime's default list.

The workflow quantises convolutions and linear layers only (``compress.QUANTISED_OPS``); ONNX
Runtime's default list also takes residual additions, LayerNorm, GELU and attention. This runs the
workflow's compress step on ``RUN`` (a run folder) and ``DATA`` (its prepared dataset's folder, with
the cache at the run's size) both ways, twice each (the second timing is printed), and prints test
accuracy, agreement with float32, milliseconds per image and size. Usage:

    .venv/bin/python benchmarks/int8_ops.py RUN DATA [--threads 2]

The artifacts are written to a temporary folder; the run folder is left as it is.
"""

import argparse
import tempfile
from pathlib import Path

import onnx
import onnxruntime.quantization as ort_quantization

import cvm_cervix.compress as compress


def ort_defaults(real):
    """quantize_static with ONNX Runtime's own op list; the final softmax stays float (as the workflow always did)."""

    def quantize(model_input, *args, op_types_to_quantize=None, nodes_to_exclude=None, **kwargs):
        softmax = [n.name for n in onnx.load(model_input).graph.node if n.op_type == "Softmax"]
        return real(model_input, *args, nodes_to_exclude=softmax, **kwargs)

    return quantize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    real = ort_quantization.quantize_static
    for label in ("convolutions and linear layers (the workflow)", "ONNX Runtime's default op list"):
        if label.startswith("ONNX"):
            ort_quantization.quantize_static = ort_defaults(real)
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(2):  # the first pass warms the page cache and ONNX Runtime
                m = compress.compress_run(args.run, args.data, "int8", out_dir=Path(tmp), threads=args.threads)
        print(
            f"{label}: accuracy {100 * m['accuracy']:.2f}% (float32 {100 * m['fp32']['accuracy']:.2f}%), "
            f"agreement {100 * m['agreement_with_fp32']:.1f}%, {m['ms_per_image']:.2f} ms/image "
            f"(float32 in PyTorch {m['fp32']['ms_per_image']:.2f}), {m['size_mib']:.1f} MiB, {m['n']} test images"
        )


if __name__ == "__main__":
    main()
