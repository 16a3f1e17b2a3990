"""Write the plan a report covers: its digest, the config it was made from and the training runs it asks for."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from cvm_cervix._snakemake import run_script
from cvm_cervix.plan import write_plan
from cvm_cervix.report_state import stamp_reason


def main(sm):
    write_plan(sm.params.config, sm.output.plan, sm.params.configfiles, why=stamp_reason())


run_script(snakemake, main)
