rule synthesize:
    output:
        root=directory(P("synthetic")),
    params:
        spec=prepare_spec,
    log:
        LOG("synthesize"),
    benchmark:
        BENCH("synthesize")
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/synthesize.py"


rule prepare:
    input:
        unpack(prepare_input),
    output:
        manifest=P("manifest"),
        classes=P("classes"),
        summary=P("summary"),
        splits=P("splits"),  # the portable split file: relative path, sha256, class -> split
        crops=directory(P("crops")),  # CRIC cells cut from the full images; else empty
    params:
        spec=prepare_spec,
        root=dataset_root,
        parts=combined_parts,
        listing=dataset_listing,
    threads: 4
    log:
        LOG("prepare"),
    benchmark:
        BENCH("prepare")
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/prepare.py"


rule cache:
    input:
        manifest=P("manifest"),
    output:
        cache=P("cache"),
    wildcard_constraints:
        size=r"\d+",
    threads: 4
    log:
        LOG("cache"),
    benchmark:
        BENCH("cache")
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/cache.py"
