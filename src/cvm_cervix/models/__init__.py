"""The model registry (the paper's 23 models plus ablations) and the CVM-Cervix fusion model.

The catalog (names, the paper's names, sizes, layers) is imported with the package; everything that
builds, loads or fetches a network needs torch, timm and torchvision, about 10 s to import on a
2-core machine, and is imported on first use (a module ``__getattr__``, PEP 562). Checking a config
at each Snakemake start, the report and ``cvm-cervix models`` then never pay for them.
"""

import importlib

from ._catalog import IMAGENET, PAPER_MODELS, Builder, ModelSpec, get_model_spec, model_names, register_model

_ON_FIRST_USE = {
    **dict.fromkeys(("ImageClassifier", "build_backbone", "create_model", "fusion_head", "load_weights"), "._registry"),
    **dict.fromkeys(("FusionBackbone",), "._backbones"),
    **dict.fromkeys(
        (
            "WeightsDoNotFit",
            "fit_position_tables",
            "input_normalizations",
            "load_exact",
            "read_state_dict",
            "set_input_normalization",
        ),
        "._weights",
    ),
    **dict.fromkeys(("fetch_pretrained", "pretrained_sources"), "._pretrained"),
}


def __getattr__(name: str):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_ON_FIRST_USE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})


__all__ = [
    "IMAGENET",
    "PAPER_MODELS",
    "Builder",
    "ModelSpec",
    "get_model_spec",
    "model_names",
    "register_model",
    *_ON_FIRST_USE,
]
