"""Fetch the pretrained weights one model needs into the cache, before any training job."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from cvm_cervix._io import write_json
from cvm_cervix._snakemake import run_script
from cvm_cervix.models import fetch_pretrained


def main(sm):
    record = fetch_pretrained(sm.wildcards.model, sm.params.img_size, sm.params.cache or None)
    write_json(sm.output.record, record)


run_script(snakemake, main)
