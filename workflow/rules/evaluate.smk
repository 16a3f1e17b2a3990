rule evaluate:
    input:
        unpack(inputs_of("evaluate")),
    output:
        val=P("predictions_val"),
        test=P("predictions_test"),
        metrics=P("metrics"),
    log:
        LOG("evaluate"),
    benchmark:
        BENCH("evaluate")
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=minutes(30),
    params:
        batch_size=max(TRAIN["batch_size"], 64),
    script:
        "../../scripts/evaluate.py"
