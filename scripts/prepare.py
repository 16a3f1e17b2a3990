"""Dataset folder -> manifest.csv, classes.json, summary.json."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
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
