"""The transfer matrix: accuracy, sensitivity and specificity with bootstrap intervals per cell."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from cvm_cervix._io import write_json
from cvm_cervix._snakemake import run_script
from cvm_cervix.transfer import transfer_matrix


def main(sm):
    write_json(sm.output.matrix, transfer_matrix(sm.params.entries, sm.params.mapping_name, sm.params.bootstrap))


run_script(snakemake, main)
