"""Test one trained run on another dataset's test split through the class mapping."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.transfer import transfer_predict


def main(sm):
    transfer_predict(
        sm.input.info,
        sm.input.manifest,
        sm.output.predictions,
        sm.params.mapping,
        sm.params.mapping_name,
        weights=sm.input.weights,
        cache=sm.input.cache,
        classes=sm.input.classes,
        device=sm.config["train"]["device"],
        batch_size=sm.params.batch_size,
        threads=sm.threads,
    )


run_script(snakemake, main)
