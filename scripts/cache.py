"""Decode every image of a dataset once, resized to the training size."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.data import build_cache, read_manifest


def main(sm):
    manifest = read_manifest(sm.input.manifest)
    # each file's bytes are checked against the manifest's sha256 as it is decoded: an image replaced
    # since prepare is refused, never trained on under the old record
    build_cache(
        manifest["path"].tolist(),
        int(sm.wildcards.size),
        sm.output.cache,
        threads=sm.threads,
        sha256=manifest["sha256"].tolist(),
    )


run_script(snakemake, main)
