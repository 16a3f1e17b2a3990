rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            f"{RESULTS}/report.html",
            caption="../../report/report.rst",
            category="Report",
        ),
    params:
        config=as_dict(config),
    log:
        f"{RESULTS}/logs/report/report.log",
    conda:
        "../../envs/cvm_cervix.yaml"
    script:
        "../../scripts/report.py"
