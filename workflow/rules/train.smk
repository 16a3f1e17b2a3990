rule train:
    input:
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
        classes=f"{RESULTS}/data/{{dataset}}/classes.json",
        cache=f"{RESULTS}/data/{{dataset}}/cache_{IMG}.npy",
    output:
        weights=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/weights.safetensors",
        history=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/history.csv",
        info=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/train.json",
    params:
        train=RUN_SETTINGS,
        weights=train_weights,
    threads: 4
    resources:
        gpu=1,
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/train.py"
