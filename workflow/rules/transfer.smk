# Zero-shot transfer: a trained run tested on another dataset's test split, both classes mapped into a
# shared label space (config 'transfer'); then one matrix, rows trained on, columns tested on.
rule transfer_predict:
    input:
        unpack(inputs_of("transfer_predict")),
    output:
        predictions=P("transfer_predictions"),
    log:
        LOG("transfer_predict"),
    benchmark:
        BENCH("transfer_predict")
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=minutes(20),
    params:
        mapping=lambda w: transfer_mapping(),
        mapping_name=lambda w: config["transfer"]["mapping"],
        batch_size=max(TRAIN["batch_size"], 64),
    script:
        "../../scripts/transfer.py"


rule transfer_matrix:
    input:
        unpack(inputs_of("transfer_matrix")),
    output:
        matrix=P("transfer_matrix"),
    log:
        LOG("transfer_matrix"),
    benchmark:
        BENCH("transfer_matrix")
    conda:
        "../../envs/cvm_cervix.yaml"
    params:
        entries=PLAN.transfer_entries(RESULTS),
        mapping_name=lambda w: config["transfer"]["mapping"],
    script:
        "../../scripts/transfer_matrix.py"
