"""Predict the validation and test splits of one run and compute its metrics."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.evaluate import evaluate_run


def main(sm):
    evaluate_run(
        sm.input.info,
        sm.input.manifest,
        weights=sm.input.weights,
        cache=sm.input.cache,
        predictions_val=sm.output.val,
        predictions_test=sm.output.test,
        metrics_json=sm.output.metrics,
        calibration_json=sm.output.calibration,
        coverages=sm.params.coverages,
        operating_points=sm.params.operating_points,
        abnormal=sm.params.abnormal,
        device=sm.config["train"]["device"],
        batch_size=sm.params.batch_size,
        threads=sm.threads,
    )


run_script(snakemake, main)
