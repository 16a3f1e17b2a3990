"""t-SNE of one run's test features and its Grad-CAM gallery of misclassified images."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.analysis import analyse_run


def main(sm):
    a = sm.params.analysis
    analyse_run(
        sm.input.info,
        sm.input.manifest,
        weights=sm.input.weights,
        cache=sm.input.cache,
        metrics_json=sm.input.metrics,
        outputs={
            "features": sm.output.features,
            "tsne": sm.output.tsne,
            "gallery": sm.output.gallery,
            "gallery_images": sm.output.images,
        },
        perplexity=a["perplexity"],
        pairs=a["gallery_pairs"],
        per_pair=a["gallery_per_pair"],
        device=sm.config["train"]["device"],
        threads=sm.threads,
    )


run_script(snakemake, main)
