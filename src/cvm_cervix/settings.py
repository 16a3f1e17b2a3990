"""A run's training settings as one typed object: what decides its result, and where it is computed.

The defaults are the config schema's (``config.schema.yaml``, ``train``), read here, not repeated;
``tests/test_config.py`` ties every field to the schema and every schema key of ``train`` to a
field. A field marked ``result`` decides the run's result: the rule's params hold those fields, so
changing one retrains the run. A field marked ``place`` only says where and how the run is computed
(device, ``torch.compile``, the weights cache, TensorBoard events): changing it never retrains a finished run.
``train_run`` takes the object whole, and ``train.json`` records it with what was measured.
No torch: Snakemake's own process builds these while it plans.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from typing import Any

RESULT, PLACE = "result", "place"


@cache
def schema_defaults() -> dict[str, Any]:
    """The defaults of the config schema's ``train`` section."""
    from .configfile import load_schema

    props = load_schema()["properties"]["train"]["properties"]
    return {key: spec.get("default") for key, spec in props.items()}


def _from_schema(name: str, kind: str):
    return field(default=schema_defaults()[name], metadata={"kind": kind})


@dataclass(frozen=True)
class TrainSettings:
    """How one run is trained (its identity, the model, seed and augmentation, is the run's own)."""

    img_size: int = _from_schema("img_size", RESULT)
    epochs: int = _from_schema("epochs", RESULT)
    batch_size: int = _from_schema("batch_size", RESULT)
    lr: float = _from_schema("lr", RESULT)
    weight_decay: float = _from_schema("weight_decay", RESULT)
    # the share of the validation split kept out of model selection, to calibrate the conformal sets on
    calibration_holdout: float = _from_schema("calibration_holdout", RESULT)
    lr_schedule: str = _from_schema("lr_schedule", RESULT)
    # every image mapped to a reference stain (stain_norm.py) before the network: none, macenko, reinhard
    stain_normalization: str = _from_schema("stain_normalization", RESULT)
    amp: bool = _from_schema("amp", RESULT)
    amp_dtype: str = _from_schema("amp_dtype", RESULT)
    pretrained: bool = _from_schema("pretrained", RESULT)
    step: str = _from_schema("step", RESULT)
    # the fusion MLP's open choices (models with an MLP head: cvm_cervix, cvm_cervix_distilled)
    head_activation: str = _from_schema("head_activation", RESULT)
    head_hidden: int = _from_schema("head_hidden", RESULT)
    head_dropout: float = _from_schema("head_dropout", RESULT)
    # a local weights file this model starts from (the model's entry of train.weights), else ""
    weights: str = field(default="", metadata={"kind": RESULT})
    # a variant's keys: the share of the training split, and the run (folder or train.json) it starts from
    train_fraction: float = field(default=1.0, metadata={"kind": RESULT})
    init_from: str | None = field(default=None, metadata={"kind": RESULT})
    device: str = _from_schema("device", PLACE)
    compile: bool = _from_schema("compile", PLACE)
    deterministic: bool = _from_schema("deterministic", PLACE)
    tensorboard: bool = _from_schema("tensorboard", PLACE)
    weights_cache: str = _from_schema("weights_cache", PLACE)

    @classmethod
    def names(cls, kind: str | None = None) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if kind is None or f.metadata["kind"] == kind]

    @classmethod
    def of(cls, *sources: dict) -> TrainSettings:
        """From dicts merged in order (a run's params, then the config's ``train`` for where it runs),
        taking the keys that are fields; ``None`` for ``weights``, ``weights_cache`` or ``init_from``
        means none."""
        merged: dict = {}
        for source in sources:
            merged.update({k: v for k, v in dict(source).items() if k in cls.names()})
        for key in ("weights", "weights_cache"):
            if merged.get(key) is None and key in merged:
                merged[key] = ""
        return cls(**merged)

    def fusion_head(self) -> dict:
        """The fusion head's settings, as ``models.create_model`` takes them."""
        return {"activation": self.head_activation, "hidden": self.head_hidden, "dropout": self.head_dropout}

    def params(self, mlp_head: bool) -> dict:
        """The train rule's params: the fields that decide the result (changing one retrains the run), by
        name, sorted (Snakemake compares params by their repr, which keeps a dict's order).

        Not among them: ``weights`` (a params entry of its own), and the fields added after runs existed
        at the value every earlier run had (``ADDED_LATER``; ``amp_dtype`` without mixed precision, the
        fusion head's for a model with a linear head), so adding them retrained no finished run.
        """
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        chosen = {}
        for name in self.names(RESULT):
            value = getattr(self, name)
            if name == "weights" or (name in ADDED_LATER and value == defaults[name]):
                continue
            if (name == "amp_dtype" and not self.amp) or (name in HEAD_KEYS and not mlp_head):
                continue
            chosen[name] = value
        return dict(sorted(chosen.items()))

    def replace(self, **changes) -> TrainSettings:
        """A copy with ``changes`` (unknown names are a TypeError naming them)."""
        return dataclasses.replace(self, **changes)


# The fusion MLP head's keys (``TrainSettings.fusion_head``), which models with a linear head ignore.
HEAD_KEYS = ("head_activation", "head_hidden", "head_dropout")
# Result fields added after finished runs existed: at their default they stay out of the rule's params.
ADDED_LATER = ("amp_dtype", "lr_schedule", *HEAD_KEYS, "train_fraction", "init_from", "stain_normalization")

# Keys of the config's ``train`` section that are not one run's settings: which seeds make runs, and the
# local weights of every model (a run takes its own model's entry, as ``weights``).
NOT_SETTINGS = ("seeds", "weights")
# What the rule's params leave out, so that changing it never retrains a run.
NOT_RUN_SETTINGS = (*NOT_SETTINGS, *TrainSettings.names(PLACE))
