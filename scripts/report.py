"""Assemble results/report.html from the files the workflow wrote."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
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
