rule synthesize:
    output:
        root=directory(P("synthetic")),
    log:
        LOG("synthesize"),
    benchmark:
        BENCH("synthesize")
    conda:
        "../../envs/cvm_cervix.yaml"
    params:
        spec=prepare_spec,
    script:
        "../../scripts/synthesize.py"


# A dataset folder changed since it was prepared: its stamp, named by the new digest (common.smk).
rule listing:
    output:
        stamp=P("listing"),
    log:
        LOG("listing"),
    wildcard_constraints:
        digest=r"[0-9a-f]{64}",
    conda:
        "../../envs/cvm_cervix.yaml"
    params:
        root=listing_root,
    script:
        "../../scripts/listing.py"


rule prepare:
    input:
        unpack(inputs_of("prepare")),
        listing=listing_stamp,
    output:
        manifest=P("manifest"),
        classes=P("classes"),
        summary=P("summary"),
        splits=P("splits"),  # the portable split file: relative path, sha256, class -> split
        crops=directory(P("crops")),  # CRIC cells cut from the full images; else empty
    log:
        LOG("prepare"),
    benchmark:
        BENCH("prepare")
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=minutes(60),
    params:
        spec=prepare_spec,
        root=dataset_root,
        parts=combined_parts,
        listing=dataset_listing,
    script:
        "../../scripts/prepare.py"


rule cache:
    input:
        unpack(inputs_of("cache")),
    output:
        cache=P("cache"),
    log:
        LOG("cache"),
    benchmark:
        BENCH("cache")
    wildcard_constraints:
        size=r"\d+",
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=minutes(60),
    script:
        "../../scripts/cache.py"


# The cache mapped to one stain, for the runs with train.stain_normalization (stain_norm.py): once per
# dataset, size and method, so normalising costs nothing per epoch.
rule normalize:
    input:
        unpack(inputs_of("normalize")),
    output:
        reference=P("stain_reference"),
        cache=P("stain_cache"),
    log:
        LOG("normalize"),
    benchmark:
        BENCH("normalize")
    wildcard_constraints:
        size=r"\d+",
        method="macenko|reinhard",
    conda:
        "../../envs/cvm_cervix.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=minutes(60),
    script:
        "../../scripts/normalize.py"
