# CVM-Cervix workflow: data -> cache -> train -> evaluate -> compress / analyse / stats -> report.
# Default: the embedded synthetic config. `--configfile config/paper.yaml` replaces it (not merged).
from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/report.smk"


# Cheap rules run where Snakemake runs (on a cluster: the submit host), never as cluster jobs.
localrules:
    all,
    plan,
    report,
    stats,
    transfer_matrix,
    weights,


# A failed job costs only what depends on it: the profiles keep going, and the report of everything
# that finished is written anyway, saying on its first screen what is missing and why.
onerror:
    incomplete_report()


rule all:
    default_target: True
    input:
        P("report"),
