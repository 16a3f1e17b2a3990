"""The transfer matrix: accuracy, sensitivity and specificity with their counts and Wilson intervals per cell."""

from cvm_cervix._io import write_json
from cvm_cervix._snakemake import run_script
from cvm_cervix.transfer import transfer_matrix


def main(sm):
    write_json(sm.output.matrix, transfer_matrix(sm.params.entries, sm.params.mapping_name))


run_script(snakemake, main)
