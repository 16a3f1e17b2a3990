"""Fetch the pretrained weights one model needs into the cache, before any training job."""

from cvm_cervix._io import write_json
from cvm_cervix._snakemake import run_script
from cvm_cervix.models import fetch_pretrained


def main(sm):
    record = fetch_pretrained(sm.wildcards.model, sm.params.img_size, sm.params.cache or None)
    write_json(sm.output.record, record)


run_script(snakemake, main)
