# Zero-shot transfer: a trained run tested on another dataset's test split, both classes mapped into a
# shared label space (config 'transfer'); then one matrix, rows trained on, columns tested on.
RUN_DIR = f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}"


rule transfer_predict:
    input:
        weights=f"{RUN_DIR}/weights.safetensors",
        info=f"{RUN_DIR}/train.json",
        manifest=f"{RESULTS}/data/{{target}}/manifest.csv",
        classes=f"{RESULTS}/data/{{target}}/classes.json",
        cache=f"{RESULTS}/data/{{target}}/cache_{IMG}.npy",
    output:
        predictions=f"{RUN_DIR}/transfer/{{target}}.csv",
    params:
        mapping=lambda w: transfer_mapping(),
        mapping_name=lambda w: config["transfer"]["mapping"],
        batch_size=max(TRAIN["batch_size"], 64),
    threads: 2
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{LOGS['transfer_predict']}",
    benchmark:
        f"{RESULTS}/benchmarks/transfer_predict/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}_on_{{target}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/transfer.py"


rule transfer_matrix:
    input:
        [e["predictions"] for e in transfer_entries()],
    output:
        matrix=f"{RESULTS}/transfer/matrix.json",
    params:
        entries=transfer_entries(),
        mapping_name=lambda w: config["transfer"]["mapping"],
        bootstrap=config["analysis"]["bootstrap"],
    log:
        f"{RESULTS}/{LOGS['transfer_matrix']}",
    benchmark:
        f"{RESULTS}/benchmarks/transfer_matrix/matrix.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/transfer_matrix.py"
