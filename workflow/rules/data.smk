rule synthesize:
    output:
        root=directory(f"{RESULTS}/synthetic/{{dataset}}"),
    params:
        spec=dataset_spec,
    log:
        "logs/synthesize/{dataset}.log",
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
    params:
        spec=dataset_spec,
        root=dataset_root,
        parts=combined_parts,
        listing=dataset_listing,
    threads: 4
    log:
        "logs/prepare/{dataset}.log",
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
        "logs/cache/{dataset}_{size}.log",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/cache.py"
