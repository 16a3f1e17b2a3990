rule synthesize:
    output:
        root=directory(f"{RESULTS}/synthetic/{{dataset}}"),
    params:
        spec=dataset_spec,
    log:
        f"{RESULTS}/{LOGS['synthesize']}",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize/{{dataset}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/synthesize.py"


rule prepare:
    input:
        unpack(prepare_input),
    output:
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
        classes=f"{RESULTS}/data/{{dataset}}/classes.json",
        summary=f"{RESULTS}/data/{{dataset}}/summary.json",
        crops=directory(f"{RESULTS}/data/{{dataset}}/crops"),  # CRIC cells cut from the full images; else empty
    params:
        spec=dataset_spec,
        root=dataset_root,
        parts=combined_parts,
        listing=dataset_listing,
    threads: 4
    log:
        f"{RESULTS}/{LOGS['prepare']}",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/prepare.py"


rule cache:
    input:
        manifest=f"{RESULTS}/data/{{dataset}}/manifest.csv",
    output:
        cache=f"{RESULTS}/data/{{dataset}}/cache_{{size}}.npy",
    wildcard_constraints:
        size=r"\d+",
    threads: 4
    log:
        f"{RESULTS}/{LOGS['cache']}",
    benchmark:
        f"{RESULTS}/benchmarks/cache/{{dataset}}_{{size}}.tsv",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/cache.py"
