rule analyse:
    input:
        weights=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/weights.safetensors",
        metrics=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/metrics.json",
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
        cache=f"{RESULTS}/data/{{dataset}}/cache_{IMG}.npy",
    output:
        features=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/analysis/features_test.npy",
        tsne=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/analysis/tsne.csv",
        gallery=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/analysis/gallery.json",
        images=directory(f"{RESULTS}/runs/{{dataset}}/{{model}}/{{augment}}/seed{{seed}}/analysis/gallery"),
    params:
        analysis=as_dict(config["analysis"]),
    threads: 4
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{LOGS['analyse']}",
    benchmark:
        f"{RESULTS}/benchmarks/analyse/{{dataset}}/{{model}}_{{augment}}_seed{{seed}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/analyse.py"


rule stats:
    input:
        stats_inputs,
    output:
        stats=f"{RESULTS}/stats/{{experiment}}.json",
    params:
        runs=stats_params,
        analysis=as_dict(config["analysis"]),
    log:
        f"{RESULTS}/{LOGS['stats']}",
    benchmark:
        f"{RESULTS}/benchmarks/stats/{{experiment}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/stats.py"
