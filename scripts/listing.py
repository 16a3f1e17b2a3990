"""Stamp a dataset folder's new digest: its prepare job runs again (the folder changed since it was prepared)."""

from cvm_cervix._io import write_json
from cvm_cervix._snakemake import run_script


def main(sm):
    write_json(
        sm.output.stamp, {"dataset": sm.wildcards.dataset, "root": sm.params.root, "digest": sm.wildcards.digest}
    )


run_script(snakemake, main)
