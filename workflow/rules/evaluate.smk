rule evaluate:
    input:
        weights=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/weights.safetensors",
        info=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/train.json",
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
        cache=f"{RESULTS}/data/{{dataset}}/cache_{IMG}.npy",
    output:
        val=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/predictions_val.csv",
        test=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/predictions_test.csv",
        metrics=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/metrics.json",
    params:
        batch_size=max(TRAIN["batch_size"], 64),
    threads: 4
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{LOGS['evaluate']}",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/evaluate.py"
