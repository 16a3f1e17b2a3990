"""The backbones the catalog names (``_catalog.Builder.function``): timm and torchvision networks with their
classifier removed, CVM-Cervix's fusion of two, and the networks written in this project. Each returns
``(backbone, D)``: a module that maps images in [0, 1] to D pooled features, normalising its own input."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from ._catalog import IMAGENET
from ._inception_resnet_v1 import InceptionResNetV1
from ._t2t_vit import T2TViT
from ._weights import (
    WeightsDoNotFit,
    fit_position_tables,
    fit_problems,
    load_exact,
    read_state_dict,
    set_input_normalization,
    summarise_load_error,
)


def _timm(
    arch: str, img_size: int, pretrained: bool, sized: bool = True, cache_dir: str | os.PathLike | None = None
) -> tuple[nn.Module, int]:
    import timm
    from timm.models import load_pretrained

    kwargs = {"img_size": img_size} if sized else {}
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    cfg = model.pretrained_cfg or {}
    if pretrained:
        # timm's own loading (hub or URL, its cache, its checkpoint filter: position embeddings
        # resampled for a ViT at another size), with the relative-position tables fitted too
        # and every tensor checked: timm's non-strict load (the ImageNet head dropped) would pass over a gap.
        own_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        classifier = cfg.get("classifier") or ()
        classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)

        def fit(state, m):
            state = fit_position_tables(own_filter(state, m) if own_filter else state, m)
            problems = fit_problems(m, state, ignore=tuple(f"{c}." for c in classifier))
            if problems:
                raise WeightsDoNotFit("; ".join(problems))
            return state

        load_pretrained(
            model, num_classes=0, filter_fn=fit, cache_dir=str(Path(cache_dir) / "timm") if cache_dir else None
        )  # hub snapshots, or URL files
    data = timm.data.resolve_model_data_config(model)
    set_input_normalization(model, data["mean"], data["std"])
    model.pretrained_source = {"library": "timm", "arch": arch, "hub_id": cfg.get("hf_hub_id"), "url": cfg.get("url")}
    return model, model.num_features


def _torchvision(
    arch: str, last: str, img_size: int, pretrained: bool, aux: bool = False, cache_dir: str | os.PathLike | None = None
) -> tuple[nn.Module, int]:
    import torchvision

    if pretrained and cache_dir:
        torch.hub.set_dir(str(Path(cache_dir) / "torch"))  # files in <cache_dir>/torch/checkpoints/

    kwargs = {}
    if aux and not pretrained:
        kwargs = {"aux_logits": False, "init_weights": True}
    try:
        model = getattr(torchvision.models, arch)(weights="DEFAULT" if pretrained else None, **kwargs)
    except RuntimeError as err:  # the file was read; load_state_dict refused it
        if "loading state_dict" not in str(err):
            raise
        raise WeightsDoNotFit(summarise_load_error(str(err))) from None
    default = torchvision.models.get_model_weights(arch).DEFAULT
    transform = default.transforms()
    set_input_normalization(model, transform.mean, transform.std)
    model.pretrained_source = {"library": "torchvision", "arch": arch, "hub_id": None, "url": default.url}
    if aux:  # pretrained GoogLeNet/Inception-v3 come with auxiliary heads we do not train
        model.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    layer = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    dim = layer.in_features
    if attr.isdigit():
        parent[int(attr)] = nn.Identity()
    else:
        setattr(parent, attr, nn.Identity())
    return model, dim


class FusionBackbone(nn.Module):
    """CVM-Cervix's serial (early) fusion: CNN features ‖ visual-transformer features."""

    def __init__(self, cnn: nn.Module, vt: nn.Module):
        super().__init__()
        self.cnn, self.vt = cnn, vt

    def forward(self, x):
        return torch.cat([self.cnn(x), self.vt(x)], dim=1)


def _fusion(deit_arch: str, img_size: int, pretrained: bool, cache_dir=None) -> tuple[nn.Module, int]:
    cnn, d_cnn = _timm("legacy_xception", img_size, pretrained, sized=False, cache_dir=cache_dir)
    vt, d_vt = _timm(deit_arch, img_size, pretrained, cache_dir=cache_dir)
    return FusionBackbone(cnn, vt), d_cnn + d_vt


def _reference_file(url: str, cache_dir: str | os.PathLike | None) -> Path:
    """The file of ``url`` in ``<cache_dir>/torch/checkpoints`` (torchvision's layout), downloaded if absent."""
    folder = Path(cache_dir) / "torch" / "checkpoints" if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    file = folder / Path(url).name
    if not file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(file), progress=False)  # a temporary file, then renamed
    return file


_OWN_NETWORKS = {cls.__name__: cls for cls in (InceptionResNetV1, T2TViT)}


def _own(network: str, img_size: int, pretrained: bool, cache_dir=None, **kwargs) -> tuple[nn.Module, int]:
    """A network written in this project; ``pretrained`` loads its reference implementation's weights."""
    cls = _OWN_NETWORKS[network]
    model = cls(**kwargs) if "img_size" not in cls.__init__.__code__.co_varnames else cls(img_size=img_size, **kwargs)
    norm = getattr(cls, "input_normalization", IMAGENET)
    set_input_normalization(model, norm["mean"], norm["std"])
    model.pretrained_source = {
        "library": "reference",
        "arch": cls.__name__,
        "hub_id": None,
        "url": cls.reference["url"],
    }
    if pretrained:
        file = _reference_file(cls.reference["url"], cache_dir)
        load_exact(
            model,
            model.from_reference(read_state_dict(file)),
            f"{file} is not {cls.__name__}'s reference checkpoint ({cls.reference['repository']})",
        )
    return model, model.num_features
