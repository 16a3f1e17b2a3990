"""Train one (dataset, model, recipe, seed) run."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cvm_cervix") is None:  # a checkout used without `pip install .`
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from cvm_cervix._snakemake import run_script
from cvm_cervix.config import split_recipe
from cvm_cervix.train import train_run


def main(sm):
    t, w, c = sm.params.train, sm.wildcards, sm.config["train"]
    augment, _ = split_recipe(w.recipe)  # none+amp: augment none, the variant's settings are in t
    train_run(
        w.model,
        sm.input.manifest,
        cache=sm.input.cache,
        classes=sm.input.classes,
        outputs={"weights": sm.output.weights, "history": sm.output.history, "info": sm.output.info},
        img_size=t["img_size"],
        epochs=t["epochs"],
        batch_size=t["batch_size"],
        lr=t["lr"],
        weight_decay=t["weight_decay"],
        seed=int(w.seed),
        augment=augment,
        amp=t["amp"],
        pretrained=t["pretrained"],
        weights=sm.params.weights or None,
        threads=sm.threads,
        train_fraction=t.get("train_fraction", 1.0),
        step=t["step"],
        init_from=sm.input.init_info if t.get("init_from") else None,
        device=c["device"],
        compile=c["compile"],  # from the config, not params: no retraining
        cache_dir=c["weights_cache"] or None,
    )


run_script(snakemake, main)
