"""Map every image of a dataset's cache to one stain reference, fitted on its training split."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.data import build_stain_cache


def main(sm):
    build_stain_cache(
        sm.input.manifest,
        sm.input.cache,
        sm.wildcards.method,
        sm.output.reference,
        sm.output.cache,
        threads=sm.threads,
    )


run_script(snakemake, main)
