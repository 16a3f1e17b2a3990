# One rule per kind of artifact (cvm_cervix.precisions), so each declares the file it writes and
# whether it needs a GPU.
rule compress_half:
    input:
        unpack(inputs_of("compress")),
    output:
        artifact=f"{P('compressed')}/{rule_artifact('compress_half')}",
        metrics=P("compressed_metrics"),
        predictions=P("compressed_predictions"),
    log:
        LOG("compress"),
    benchmark:
        BENCH("compress_half")
    wildcard_constraints:
        precision="|".join(rule_precisions("compress_half")),
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=minutes(60),
    params:
        batch_size=max(TRAIN["batch_size"], 64),
    script:
        "../../scripts/compress.py"


# Static int8 (calibrated on training images) and the float32 graph, run by ONNX Runtime on the CPU.
use rule compress_half as compress_onnx with:
    output:
        artifact=f"{P('compressed')}/{rule_artifact('compress_onnx')}",
        metrics=P("compressed_metrics"),
        predictions=P("compressed_predictions"),
    benchmark:
        BENCH("compress_onnx")
    wildcard_constraints:
        precision="|".join(rule_precisions("compress_onnx")),
    resources:
        gpu=0,
        mem_mb=16000,
        runtime=minutes(60),


use rule compress_half as compress_dynamic with:
    output:
        artifact=f"{P('compressed')}/{rule_artifact('compress_dynamic')}",
        metrics=P("compressed_metrics"),
        predictions=P("compressed_predictions"),
    benchmark:
        BENCH("compress_dynamic")
    wildcard_constraints:
        precision="|".join(rule_precisions("compress_dynamic")),
    resources:
        gpu=0,
        mem_mb=16000,
        runtime=minutes(60),
