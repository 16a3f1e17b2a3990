rule analyse:
    input:
        weights=P("weights"),
        info=P("train_info"),
        metrics=P("metrics"),
        manifest=P("manifest"),
        cache=P("cache", size=IMG),
    output:
        features=P("features"),
        tsne=P("tsne"),
        gallery=P("gallery"),
        images=directory(P("gallery_images")),
    params:
        analysis=as_dict(config["analysis"]),
    threads: 4
    resources:
        gpu=1,
    log:
        LOG("analyse"),
    benchmark:
        BENCH("analyse")
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/analyse.py"


rule stats:
    input:
        stats_inputs,
    output:
        stats=P("stats"),
    params:
        runs=stats_params,
        analysis=as_dict(config["analysis"]),
    log:
        LOG("stats"),
    benchmark:
        BENCH("stats")
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/stats.py"
