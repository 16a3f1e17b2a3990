# The plan a report covers, named by its digest (made here when missing). A report of another plan, or one
# made from other files, gets it written anew when Snakemake plans (common.smk), so the report runs again.
rule plan:
    output:
        plan=P("plan", digest=PLAN.stamp),
    log:
        LOG("plan", digest=PLAN.stamp),
    conda:
        "../../envs/cvm_cervix.yaml"
    params:
        config=as_dict(config),
        configfiles=[str(f) for f in workflow.configfiles],
    script:
        "../../scripts/plan.py"


rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            P("report"),
            caption="../../report/report.rst",
            category="Report",
        ),
        # The report's figures and tables one by one, for `snakemake --report` (a category per experiment).
        files=report(
            directory(P("report_files")),
            patterns=["{category}__{name}.{ext}"],
            caption="../../report/figure.rst",
            category="{category}",
            labels={"figure or table": "{name}", "format": "{ext}"},
        ),
    log:
        LOG("report"),
    benchmark:
        BENCH("report")
    conda:
        "../../envs/cvm_cervix.yaml"
    params:
        config=as_dict(config),
        configfiles=[str(f) for f in workflow.configfiles],
        workflow_dir=str(WORKFLOW_DIR),
    script:
        "../../scripts/report.py"
