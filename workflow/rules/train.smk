rule train:
    input:
        unpack(init_input),
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
        classes=f"{RESULTS}/data/{{dataset}}/classes.json",
        cache=f"{RESULTS}/data/{{dataset}}/cache_{IMG}.npy",
        pretrained=pretrained_marker,
    output:
        weights=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/weights.safetensors",
        history=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/history.csv",
        info=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/train.json",
    params:
        train=train_settings,
        weights=train_weights,
    threads: 4
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{LOGS['train']}",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/train.py"


# Pretrained files are fetched once per model, where Snakemake runs (on a cluster: the submit host,
# which has network when compute nodes do not), before any training job.
rule weights:
    output:
        record=f"{RESULTS}/weights/{{model}}.json",
    params:
        cache=TRAIN["weights_cache"],
        img_size=IMG,
    log:
        f"{RESULTS}/{LOGS['weights']}",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/weights.py"
