"""Render the synthetic dataset of one config entry into an image folder."""

import shutil
from pathlib import Path

from cvm_cervix._io import partial_path, remove_stale_partials
from cvm_cervix._snakemake import run_script
from cvm_cervix.data import make_synthetic_dataset


def main(sm):
    spec, root = sm.params.spec, Path(sm.output.root)
    remove_stale_partials(root)
    tmp = partial_path(root)
    try:
        make_synthetic_dataset(tmp, spec["classes"], spec["per_class"], spec["image_size"], spec["seed"])
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


run_script(snakemake, main)
