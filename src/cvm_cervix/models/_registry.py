"""Model building: a config name (``_catalog``) -> a network, like timm's ``create_model``.

Every model is an :class:`ImageClassifier`: a backbone that returns pooled features
(``forward_features(x) -> (B, D)``) and a head. Features, t-SNE and Grad-CAM work for all alike.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import CvmError
from . import _backbones
from ._catalog import Builder, ModelSpec, get_model_spec
from ._weights import read_state_dict, set_input_normalization


class ImageClassifier(nn.Module):
    """``backbone`` (image -> pooled features) followed by ``head`` (features -> logits)."""

    def __init__(self, backbone: nn.Module, num_features: int, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# The fusion MLP's open choices (the paper: GELU in Sec. 3, ReLU in Sec. 5.2; the hidden width and no
# dropout are not stated, 2,240 = the fused width and none are what it implies). Defaults as the
# workflow has always built it; train.head_activation, head_hidden and head_dropout set them.
FUSION_HEAD = {"activation": "gelu", "hidden": 0, "dropout": 0.0}
_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def fusion_head(head: dict | None, dim: int) -> dict:
    """The fusion head's settings with its defaults filled in and the hidden width resolved (0: ``dim``)."""
    h = {**FUSION_HEAD, **(head or {})}
    unknown = set(h) - set(FUSION_HEAD)
    if unknown or h["activation"] not in _ACTIVATIONS:
        raise CvmError(
            f"fusion head settings {sorted(unknown) or h['activation']!r} unknown; "
            f"keys: {', '.join(FUSION_HEAD)}; activations: {', '.join(_ACTIVATIONS)}"
        )
    return {**h, "hidden": int(h["hidden"]) or dim, "dropout": float(h["dropout"])}


def build_backbone(spec: ModelSpec, img_size: int, pretrained: bool, cache_dir=None) -> tuple[nn.Module, int]:
    """``(backbone, D)`` of a catalog entry: its :class:`Builder`'s function of ``_backbones``, or the callable
    a registered model gave."""
    build = spec.build_backbone
    if isinstance(build, Builder):
        function = getattr(_backbones, build.function)
        return function(*build.args, img_size, pretrained, cache_dir=cache_dir, **dict(build.kwargs))
    return build(img_size, pretrained, cache_dir=cache_dir)


def create_model(
    name: str,
    num_classes: int,
    img_size: int = 224,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    normalization: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    head: dict | None = None,
) -> ImageClassifier:
    """Build model ``name`` for ``num_classes`` classes at ``img_size`` pixels; it takes images in [0, 1].

    ``pretrained`` asks timm/torchvision for ImageNet weights (needs their download or cache);
    ``weights`` loads a local file written by this workflow (whole model) or a backbone state dict.
    Each network normalises its input with its weights' statistics; ``normalization`` (as recorded
    in a run's train.json, see :func:`input_normalizations`) sets them instead. ``cache_dir`` is
    where pretrained files are looked for (and downloaded to): ``<cache_dir>/timm`` for timm (a Hugging
    Face hub cache, or the file itself for weights timm has only as a URL), ``<cache_dir>/torch/checkpoints``
    for torchvision; default the libraries' own caches. ``head``: the fusion MLP's ``activation``,
    ``hidden`` width (0: the input's) and ``dropout`` (:data:`FUSION_HEAD`; models with an MLP head only).
    """
    spec = get_model_spec(name)
    if img_size < spec.min_img_size:
        raise CvmError(
            f"model {name!r} needs train.img_size >= {spec.min_img_size} (got {img_size}); "
            f"raise img_size or drop {name} from the experiment"
        )
    if img_size % spec.img_size_multiple:
        raise CvmError(
            f"model {name!r} needs train.img_size to be a multiple of {spec.img_size_multiple} (got {img_size})"
        )
    backbone, dim = build_backbone(spec, img_size, pretrained, cache_dir)
    if spec.mlp_head:
        from timm.layers import Mlp

        h = fusion_head(head, dim)
        # dropout after the activation only: timm's second dropout would act on the logits
        classifier = Mlp(
            dim, h["hidden"], num_classes, act_layer=_ACTIVATIONS[h["activation"]], drop=(h["dropout"], 0.0)
        )
    else:
        if head:
            raise CvmError(f"model {name!r} has a linear head: the fusion head's settings apply to MLP heads only")
        classifier = nn.Linear(dim, num_classes)
    model = ImageClassifier(backbone, dim, classifier)
    for path, norm in (normalization or {}).items():
        target = backbone.get_submodule(path) if path else backbone
        if not getattr(target, "input_normalization", None):
            raise CvmError(
                f"model {name!r} has no input normalisation at {path!r}; the run was made by another "
                "version of the model"
            )
        set_input_normalization(target, norm["mean"], norm["std"])
    if weights:
        load_weights(model, weights)
    return model


def load_weights(model: ImageClassifier, path: str | os.PathLike) -> None:
    """Load a whole-model or backbone-only state dict; a head of another class count is left fresh."""
    state = read_state_dict(path)
    own = model.state_dict()

    def whole_model(st):  # keys of this ImageClassifier's backbone (a head alone says nothing)
        return any(k in own and k.startswith("backbone.") for k in st)

    if not whole_model(state) and hasattr(model.backbone, "from_reference"):
        # a network written here, given its reference implementation's file (key names mapped)
        state = model.backbone.from_reference(state) or state
    if not whole_model(state) and any(f"backbone.{k}" in own for k in state):
        state = {f"backbone.{k}": v for k, v in state.items()}
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in fits and not k.startswith("head.")]
    if missing:
        raise CvmError(
            f"weights file {path} does not fit this model: {len(missing)} tensors missing or of another shape "
            f"(first: {missing[0]}); was it saved from the same model and img_size?"
        )
    model.load_state_dict(fits, strict=False)
