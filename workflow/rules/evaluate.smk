rule evaluate:
    input:
        unpack(inputs_of("evaluate")),
    output:
        val=P("predictions_val"),
        test=P("predictions_test"),
        metrics=P("metrics"),
        calibration=P("calibration"),
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
        # what the run's calibration.json holds thresholds for (predict --coverage / --operating-point)
        coverages=config["analysis"]["referral"]["coverages"],
        operating_points=config["analysis"]["operating_points"],
        abnormal=abnormal_classes(config["analysis"]),
    script:
        "../../scripts/evaluate.py"
