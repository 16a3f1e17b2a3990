"""One run's test split under slide-to-slide variation (inference only)."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.labels import abnormal_classes
from cvm_cervix.robustness import robustness_run


def main(sm):
    a = sm.params.analysis
    robustness_run(
        sm.input.info,
        sm.input.manifest,
        sm.output.robustness,
        corruptions=a["robustness"]["corruptions"],
        severities=a["robustness"]["severities"],
        abnormal=abnormal_classes(a),
        weights=sm.input.weights,
        cache=sm.input.cache,
        device=sm.config["train"]["device"],
        threads=sm.threads,
    )


run_script(snakemake, main)
