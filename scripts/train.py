"""Train one (dataset, model, recipe, seed) run."""

from cvm_cervix._snakemake import run_script
from cvm_cervix.runs import split_recipe
from cvm_cervix.settings import TrainSettings
from cvm_cervix.train import train_run


def main(sm):
    augment, _ = split_recipe(sm.wildcards.recipe)  # none+amp: augment none, the variant's settings are in params
    # what decides the result comes from the rule's params (changing it retrains the run); where it is
    # computed (device, compile, weights cache) from the config, so changing that never does
    settings = TrainSettings.of(sm.config["train"], sm.params.train, {"weights": sm.params.weights})
    if settings.init_from:  # the run it starts from, as the file the rule declares
        settings = settings.replace(init_from=sm.input.init_info)
    train_run(
        sm.wildcards.model,
        sm.input.manifest,
        settings=settings,
        seed=int(sm.wildcards.seed),
        augment=augment,
        threads=sm.threads,
        cache=sm.input.cache,
        stain_reference=sm.input.get("stain_reference"),
        classes=sm.input.classes,
        outputs={"weights": sm.output.weights, "history": sm.output.history, "info": sm.output.info},
    )


run_script(snakemake, main)
