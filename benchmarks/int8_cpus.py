"""Static int8 on two kinds of x86 CPU: this machine's, and an AVX2 CPU without VNNI (qemu-user's Haswell).

ONNX Runtime multiplies uint8 activations by int8 weights (U8S8) with VPMADDUBSW where a CPU lacks VNNI; its
16-bit sums saturate. The workflow quantises to uint8 weights (U8U8), which never saturate. This quantises
the run ``RUN`` (a trained run folder; ``DATA`` its prepared dataset, with the cache at the run's size) both
ways, calibrated as the workflow calibrates (min-max, its calibration images), and prints the test accuracy
of each on both CPUs. Needs ``qemu-x86_64`` (Debian's qemu-user). Usage:

    .venv/bin/python benchmarks/int8_cpus.py RUN DATA
"""

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

import cvm_cervix.int8 as int8
from cvm_cervix.run import Images, TrainedRun

PREDICT = """
import sys, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
p = np.concatenate([s.run(None, {"images": x[i : i + 48]})[0] for i in range(0, len(x), 48)])
np.save(sys.argv[3], p.argmax(1))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data")
    args = parser.parse_args()
    trained = TrainedRun.open(args.run)
    images = Images.open(args.data, trained.img_size)
    x_test, y_test, _ = images.split("test")
    calibration = images.cache[int8.calibration_rows(images.manifest, int8.calibration_size(trained.img_size))]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = tmp / "fp32.onnx"
        int8.export_onnx(trained.model("cpu"), trained.img_size, fp32)
        graph = onnx.load(str(fp32)).graph
        for name, weights in (("U8S8 (int8 weights)", QuantType.QInt8), ("U8U8 (uint8 weights)", QuantType.QUInt8)):
            model = tmp / f"{weights.name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(
                    str(fp32),
                    str(model),
                    int8._Calibration(calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    weight_type=weights,
                    activation_type=QuantType.QUInt8,
                    op_types_to_quantize=list(int8.QUANTISED_OPS),
                    nodes_to_exclude=int8.float_nodes(graph),
                )
            np.save(tmp / "x.npy", np.ascontiguousarray(x_test))
            (tmp / "predict.py").write_text(PREDICT)
            out = {}
            for cpu, prefix in (("this CPU", []), ("AVX2 without VNNI (emulated)", ["qemu-x86_64", "-cpu", "Haswell"])):
                target = tmp / "pred.npy"
                subprocess.run(
                    [*prefix, sys.executable, str(tmp / "predict.py"), str(model), str(tmp / "x.npy"), str(target)],
                    check=True,
                    capture_output=True,
                )
                out[cpu] = np.load(target)
                print(
                    f"{name:22s} {cpu:30s} test accuracy {100 * np.mean(out[cpu] == y_test):.1f}%"
                    f" ({len(y_test)} images)"
                )
            same = int((out["this CPU"] == out["AVX2 without VNNI (emulated)"]).sum())
            print(f"{name:22s} same prediction on both CPUs: {same} of {len(y_test)}")


if __name__ == "__main__":
    main()
