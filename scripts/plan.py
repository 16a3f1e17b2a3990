"""Write the plan a report covers: its digest, the config it was made from and the training runs it asks for."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.plan import write_plan
from cvm_cervix.report_state import stamp_reason


def main(sm):
    write_plan(sm.params.config, sm.output.plan, sm.params.configfiles, why=stamp_reason())


run_script(snakemake, main)
