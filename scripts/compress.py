"""Export one compressed variant of a run and evaluate it on the test split."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.compress import compress_run


def main(sm):
    compress_run(
        sm.input.info,
        sm.input.manifest,
        sm.wildcards.precision,
        weights=sm.input.weights,
        cache=sm.input.cache,
        artifact=sm.output.artifact,
        metrics_json=sm.output.metrics,
        predictions_csv=sm.output.predictions,
        device=sm.config["train"]["device"],
        batch_size=sm.params.batch_size,
        threads=sm.threads,
    )


run_script(snakemake, main)
