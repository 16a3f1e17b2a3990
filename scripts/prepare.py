"""Dataset folder -> manifest.csv, classes.json, summary.json."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.data import prepare_dataset


def main(sm):
    parts = {p: getattr(sm.input, f"part_{p}") for p in sm.params.parts}  # combined: the parts' declared manifests
    prepare_dataset(
        sm.wildcards.dataset,
        sm.params.spec,
        root=sm.params.root or None,
        parts=parts,
        threads=sm.threads,
        outputs={k: getattr(sm.output, k) for k in ("manifest", "classes", "summary", "splits", "crops")},
    )


run_script(snakemake, main)
