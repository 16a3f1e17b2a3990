# One rule per kind of artifact, so each declares the file it writes and whether it needs a GPU.
RUN = f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}"


rule compress_half:
    input:
        weights=f"{RUN}/weights.safetensors",
        metrics=f"{RUN}/metrics.json",
        predictions=f"{RUN}/predictions_test.csv",
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
        cache=f"{RESULTS}/data/{{dataset}}/cache_{IMG}.npy",
    output:
        artifact=f"{RUN}/compressed/{{precision}}/weights.safetensors",
        metrics=f"{RUN}/compressed/{{precision}}/metrics.json",
        predictions=f"{RUN}/compressed/{{precision}}/predictions_test.csv",
    wildcard_constraints:
        precision="fp16|bf16",
    params:
        batch_size=max(TRAIN["batch_size"], 64),
    threads: 4
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{LOGS['compress']}",
    benchmark:
        f"{RESULTS}/benchmarks/compress_half/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}_{{precision}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/compress.py"


# Static int8 (calibrated on training images) and the float32 graph, run by ONNX Runtime on the CPU.
use rule compress_half as compress_onnx with:
    output:
        artifact=f"{RUN}/compressed/{{precision}}/model.onnx",
        metrics=f"{RUN}/compressed/{{precision}}/metrics.json",
        predictions=f"{RUN}/compressed/{{precision}}/predictions_test.csv",
    wildcard_constraints:
        precision="int8|onnx",
    resources:
        gpu=0,
    benchmark:
        f"{RESULTS}/benchmarks/compress_onnx/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}_{{precision}}.tsv",


use rule compress_half as compress_dynamic with:
    output:
        artifact=f"{RUN}/compressed/{{precision}}/weights.pt",
        metrics=f"{RUN}/compressed/{{precision}}/metrics.json",
        predictions=f"{RUN}/compressed/{{precision}}/predictions_test.csv",
    wildcard_constraints:
        precision="int8_dynamic",
    resources:
        gpu=0,
    benchmark:
        f"{RESULTS}/benchmarks/compress_dynamic/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}_{{precision}}.tsv",
