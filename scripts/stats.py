"""An experiment's statistics: intervals, McNemar's test against the reference model, the clinical view."""

from cvm_cervix._io import write_json
from cvm_cervix._snakemake import run_script
from cvm_cervix.labels import abnormal_classes, paper_abnormal_classes
from cvm_cervix.stats import experiment_stats


def main(sm):
    a = sm.params.analysis
    stats = experiment_stats(
        sm.params.runs,
        a["reference"],
        abnormal_classes(a),
        a["bootstrap"],
        operating_points=a["operating_points"],
        calibration_bins=a["calibration_bins"],
        paper_abnormal=paper_abnormal_classes(),
        referral_coverages=a["referral"]["coverages"],
        subgroups=a["subgroups"],
    )
    write_json(sm.output.stats, stats)


run_script(snakemake, main)
