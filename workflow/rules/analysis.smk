rule analyse:
    input:
        unpack(inputs_of("analyse")),
    output:
        features=P("features"),
        tsne=P("tsne"),
        gallery=P("gallery"),
        images=directory(P("gallery_images")),
    log:
        LOG("analyse"),
    benchmark:
        BENCH("analyse")
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=minutes(60),
    params:
        analysis=as_dict(config["analysis"]),
    script:
        "../../scripts/analyse.py"


# The test split under slide-to-slide variation (stain, blur, JPEG, brightness/contrast, magnification):
# inference only, on a GPU where there is one.
rule robustness:
    input:
        unpack(inputs_of("robustness")),
    output:
        robustness=P("robustness"),
    log:
        LOG("robustness"),
    benchmark:
        BENCH("robustness")
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=minutes(60),
    params:
        analysis=as_dict(config["analysis"]),
    script:
        "../../scripts/robustness.py"


rule stats:
    input:
        unpack(inputs_of("stats")),
    output:
        stats=P("stats"),
    log:
        LOG("stats"),
    benchmark:
        BENCH("stats")
    conda:
        "../../envs/cvm_cervix.yaml"
    params:
        runs=stats_params,
        analysis=as_dict(config["analysis"]),
        format=STATS_FORMAT,
    script:
        "../../scripts/stats.py"
