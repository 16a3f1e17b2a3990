"""Dataset folder -> manifest.csv, classes.json, summary.json."""
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from cvm_cervix._snakemake import run_script
from cvm_cervix.data import prepare_dataset


def main(sm):
    prepare_dataset(sm.wildcards.dataset, sm.params.spec, Path(sm.output.manifest).parent,
                    root=sm.params.root or None, parts=sm.params.parts, threads=sm.threads)


run_script(snakemake, main)
