rule train:
    input:
        unpack(inputs_of("train")),
    output:
        weights=P("weights"),
        history=P("history"),
        info=P("train_info"),
    log:
        LOG("train"),
    benchmark:
        BENCH("train")
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=minutes(360),
    params:
        train=train_settings,
        weights=train_weights,
    script:
        "../../scripts/train.py"


# Pretrained files are fetched once per model, where Snakemake runs (on a cluster: the submit host,
# which has network when compute nodes do not), before any training job.
rule weights:
    output:
        record=P("pretrained"),
    log:
        LOG("weights"),
    conda:
        "../../envs/cvm_cervix.yaml"
    params:
        cache=TRAIN["weights_cache"],
        img_size=IMG,
    script:
        "../../scripts/weights.py"
