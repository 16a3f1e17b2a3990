"""Assemble results/report.html from the files the workflow wrote."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.report import build_report


def main(sm):
    inputs = {kind: [files] if isinstance(files, str) else list(files) for kind, files in sm.input.items()}
    build_report(
        sm.params.config,
        sm.output.html,
        files_dir=sm.output.files,
        configfiles=sm.params.configfiles,
        workflow_dir=sm.params.workflow_dir,
        inputs=inputs,
    )


run_script(snakemake, main)
