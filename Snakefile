# CVM-Cervix workflow, run from the repository's top level: `snakemake --cores all`.
# The workflow itself is workflow/Snakefile (where the Snakemake workflow catalog and snakedeploy look
# for it); this file includes it whole, so both places run the same rules on the same config.
include: "workflow/Snakefile"


# An include keeps the including file's default target (none here): the workflow's `rule all` is it.
workflow.default_target = "all"
