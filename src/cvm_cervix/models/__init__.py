"""The model registry (the paper's 23 models plus ablations) and the CVM-Cervix fusion model."""

from ._pretrained import fetch_pretrained, pretrained_sources
from ._registry import (
    PAPER_MODELS,
    FusionBackbone,
    ImageClassifier,
    ModelSpec,
    create_model,
    IMAGENET,
    get_model_spec,
    input_normalizations,
    WeightsDoNotFit,
    fit_position_tables,
    load_exact,
    load_weights,
    model_names,
    read_state_dict,
    register_model,
)

__all__ = [
    "PAPER_MODELS", "FusionBackbone", "ImageClassifier", "ModelSpec", "create_model", "get_model_spec",
    "IMAGENET", "WeightsDoNotFit", "fetch_pretrained", "fit_position_tables", "input_normalizations",
    "pretrained_sources", "load_exact", "load_weights", "model_names", "read_state_dict", "register_model",
]
