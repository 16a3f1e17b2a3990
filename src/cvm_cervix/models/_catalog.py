"""The model catalog: every config name, what the paper calls it and what building it needs.

Read without torch, timm or torchvision. Checking a config (at every Snakemake start, and in every
cluster job's own Snakemake), the report and ``cvm-cervix models`` need only these facts, and
importing those libraries for them took about 10 s per start on a 2-core machine. The builders
live in ``_registry`` and are imported when a model is first built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import CvmError

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass(frozen=True)
class Builder:
    """A backbone of ``_backbones``, named: ``_backbones.<function>(*args, img_size, pretrained,
    cache_dir=..., **kwargs)``, called by ``_registry.create_model``. A name, not the function, so that the
    catalog is read without torch and imports nothing that builds."""

    function: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    paper_name: str
    # (img_size, pretrained, cache_dir=None) -> (backbone, D): a Builder, or any callable of a registered model
    build_backbone: Callable[..., tuple[Any, int]]
    source: str
    min_img_size: int = 32
    # a size its layers need: BoTNet's attention tables (whole cells at stride 32); a ViT's 16-pixel patches,
    # which drop the pixels past the last whole patch (72% of a 30-px image), so other sizes are refused
    img_size_multiple: int = 1
    cam_layer: str | None = None  # module (inside ``backbone``) whose activations Grad-CAM uses
    attention: str | None = None  # a timm vision transformer (inside ``backbone``; "" = itself) for attention rollout
    mlp_head: bool = False
    note: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def model_names() -> list[str]:
    """Every registered config name, in the paper's Table 3 order."""
    return list(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CvmError(f"unknown model {name!r}; `cvm-cervix models` lists the registered names") from None


def _tv(arch: str, last: str, **kwargs) -> Builder:
    """A torchvision network whose layer ``last`` (the ImageNet classifier) becomes the head."""
    return Builder("_torchvision", (arch, last), tuple(kwargs.items()))


def _tm(arch: str, **kwargs) -> Builder:
    return Builder("_timm", (arch,), tuple(kwargs.items()))


def _register_all() -> None:
    tv, tm = "torchvision", "timm"
    specs = [
        ModelSpec(
            "cvm_cervix",
            "CVM-Cervix",
            Builder("_fusion", ("deit_tiny_patch16_224",)),
            "cvm_cervix",
            mlp_head=True,
            cam_layer="cnn.act4",
            attention="vt",
            img_size_multiple=16,
            note="legacy_xception (2048) ‖ deit_tiny_patch16_224 (192) → MLP 2240-2240-classes, GELU",
        ),
        *[
            ModelSpec(f"vgg{d}", f"VGG{d}", _tv(f"vgg{d}", "classifier.6"), tv, cam_layer="features")
            for d in (11, 13, 16, 19)
        ],
        *[
            ModelSpec(f"resnet{d}", f"ResNet{d}", _tv(f"resnet{d}", "fc"), tv, cam_layer="layer4")
            for d in (18, 34, 50, 101)
        ],
        *[
            ModelSpec(f"densenet{d}", f"DenseNet{d}", _tv(f"densenet{d}", "classifier"), tv, cam_layer="features")
            for d in (121, 169)
        ],
        ModelSpec(
            "inception_v3",
            "InceptionV3",
            _tv("inception_v3", "fc", aux=True),
            tv,
            min_img_size=75,
            cam_layer="Mixed_7c",
        ),
        ModelSpec("xception", "Xception", _tm("legacy_xception", sized=False), tm, cam_layer="act4"),
        ModelSpec("alexnet", "AlexNet", _tv("alexnet", "classifier.6"), tv, min_img_size=63, cam_layer="features"),
        ModelSpec("googlenet", "GoogLeNet", _tv("googlenet", "fc", aux=True), tv, cam_layer="inception5b"),
        ModelSpec("mobilenet_v2", "MobileNetV2", _tv("mobilenet_v2", "classifier.1"), tv, cam_layer="features"),
        ModelSpec("shufflenet_v2_x1_0", "ShuffleNetV2×1.0", _tv("shufflenet_v2_x1_0", "fc"), tv, cam_layer="conv5"),
        ModelSpec("shufflenet_v2_x0_5", "ShuffleNetV2×0.5", _tv("shufflenet_v2_x0_5", "fc"), tv, cam_layer="conv5"),
        # written in this project (``_own``); InceptionResNetV1.min_img_size, checked against the class in the tests
        ModelSpec(
            "inception_resnet_v1",
            "InceptionResNetV1",
            Builder("_own", ("InceptionResNetV1",)),
            "cvm_cervix",
            min_img_size=75,
            cam_layer="block8",
        ),
        ModelSpec("vit", "ViT", _tm("vit_base_patch16_224"), tm, min_img_size=16, attention="", img_size_multiple=16),
        ModelSpec("botnet", "BoTNet", _tm("botnet26t_256"), tm, cam_layer="stages", img_size_multiple=32),
        ModelSpec(
            "deit_tiny", "DeiT", _tm("deit_tiny_patch16_224"), tm, min_img_size=16, attention="", img_size_multiple=16
        ),
        ModelSpec(
            "t2t_vit",
            "T2T-ViT",
            Builder("_own", ("T2TViT",)),
            "cvm_cervix",
            min_img_size=16,
            note="T2T-ViT-14 (transformer T2T layers), written in this project",
        ),
        # Fusion ablations (Sec. 5.2): DeiT with its distillation token fused instead.
        ModelSpec(
            "cvm_cervix_distilled",
            "CVM-Cervix (DeiT distilled)",
            Builder("_fusion", ("deit_tiny_distilled_patch16_224",)),
            "cvm_cervix",
            mlp_head=True,
            cam_layer="cnn.act4",
            attention="vt",
            img_size_multiple=16,
            note="ablation: deit_tiny_distilled_patch16_224 in the VT branch",
        ),
    ]
    for spec in specs:
        register_model(spec)


_register_all()

PAPER_MODELS = [name for name in _REGISTRY if name != "cvm_cervix_distilled"]
