"""Model builders: a config name (``_catalog``) -> a network, like timm's ``create_model``.

Every model is an :class:`ImageClassifier`: a backbone that returns pooled features
(``forward_features(x) -> (B, D)``) and a head. Features, t-SNE and Grad-CAM work for all alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import CvmError
from ._catalog import IMAGENET, get_model_spec
from ._inception_resnet_v1 import InceptionResNetV1
from ._t2t_vit import T2TViT


class WeightsDoNotFit(CvmError):
    """A weights file was found and read, but its tensors do not fit the model as built."""


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


def set_input_normalization(module: nn.Module, mean, std) -> nn.Module:
    """Make ``module`` normalise its input (images in [0, 1]) with its own weights' statistics.

    A forward pre-hook with non-persistent buffers: the state dict is unchanged, so weights files of
    the libraries load as they are. In CVM-Cervix each branch carries its own (Xception's 0.5/0.5,
    DeiT's ImageNet values), so one batch feeds both.
    """
    module.register_buffer("_input_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
    module.register_buffer("_input_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
    module.input_normalization = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    if not hasattr(module, "_normalization_hook"):
        module._normalization_hook = module.register_forward_pre_hook(
            lambda m, args: ((args[0] - m._input_mean.to(args[0].dtype)) / m._input_std.to(args[0].dtype), *args[1:])
        )
    return module


def input_normalizations(model: nn.Module) -> dict[str, dict]:
    """Where a model normalises its input (module path inside ``backbone``, "" for itself) and with what."""
    backbone = model.backbone if hasattr(model, "backbone") else model
    return {
        name: dict(m.input_normalization)
        for name, m in backbone.named_modules()
        if getattr(m, "input_normalization", None)
    }


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
    backbone, dim = spec.build_backbone(img_size, pretrained, cache_dir=cache_dir)
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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CvmError(f"weights file {path} not found; fix the path in train.weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        import argparse

        # timm-style training checkpoints also hold their argparse.Namespace: plain data, allowed
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CvmError(
            f"weights file {path} cannot be read ({str(err).splitlines()[0]}); is it a checkpoint?"
        ) from None
    # Training checkpoints wrap the weights; the EMA weights first, as timm's own load_state_dict does.
    for key in ("state_dict_ema", "state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def fit_problems(model: nn.Module, state: dict[str, torch.Tensor], ignore: tuple[str, ...] = ()) -> list[str]:
    """What keeps ``state`` from loading exactly into ``model``: missing tensors, unexpected ones (keys
    starting with ``ignore`` aside), tensors of another shape; each names its first tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(k for k in set(state) - set(own) if not k.startswith(ignore))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensors (first: {extra[0]})")
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} of another shape (first: {k} {tuple(state[k].shape)} instead of {tuple(own[k].shape)})"
        )
    return problems


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` only if every tensor is there with its shape; else one line naming ``source``.

    Unlike :func:`load_weights` (initialisation, where a fresh head is wanted), a trained run that
    loads with a random head would predict near-uniform noise without any error.
    """
    problems = fit_problems(model, state)
    if problems:
        raise WeightsDoNotFit(f"{source}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


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


# --- builders -------------------------------------------------------------------------------------


def fit_position_tables(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fit the relative-position tables of ``state`` to ``model``'s feature-map size.

    BoTNet's (and HaloNet's) attention keeps one table per axis, ``(2 S - 1, dim_head)`` rows for the
    offsets ``-(S-1) .. S-1`` of an S-cell feature map, so weights trained at 256 px (S = 16, 31 rows)
    do not load into the model built at the paper's 224 px (S = 14, 27 rows). A smaller map uses only
    offsets the table already holds: its centre rows are kept exactly (cropping, not resampling, so
    every offset keeps its learned value). A larger map is resampled linearly along the offset axis,
    as timm resamples position embeddings. Every other tensor is left as it is.
    """
    from timm.layers import bottleneck_attn, halo_attn

    own = model.state_dict()
    tables = {
        f"{name}.{axis}"
        for name, m in model.named_modules()
        if isinstance(m, (bottleneck_attn.PosEmbedRel, halo_attn.PosEmbedRel))
        for axis in ("height_rel", "width_rel")
    }
    out = dict(state)
    for key in tables & set(state):
        src, rows = state[key], own[key].shape[0]
        if src.ndim != 2 or src.shape[1] != own[key].shape[1] or src.shape[0] == rows:
            continue
        if rows < src.shape[0]:
            start = (src.shape[0] - rows) // 2
            out[key] = src[start : start + rows].clone()
        else:
            out[key] = (
                torch.nn.functional.interpolate(src.T[None].float(), size=rows, mode="linear", align_corners=True)[0]
                .T.to(src.dtype)
                .contiguous()
            )
    return out


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


def _load_error_summary(message: str) -> str:
    """PyTorch's ``load_state_dict`` error (every key listed) in :func:`fit_problems`' words: counts and
    the first tensor of each kind."""
    import re

    problems = []
    for kind, words in (("Missing key(s)", "tensors missing"), ("Unexpected key(s)", "unexpected tensors")):
        found = re.search(re.escape(kind) + r" in state_dict: (.*?)\.\s*$", message, re.M)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            problems.append(f"{len(keys)} {words} (first: {keys[0] if keys else '?'})")
    shapes = re.findall(
        r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from "
        r"checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)",
        message,
    )
    if shapes:
        key, theirs, ours = shapes[0]
        problems.append(f"{len(shapes)} of another shape (first: {key} ({theirs}) instead of ({ours}))")
    return "; ".join(problems) or message.splitlines()[0][:300]


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
        raise WeightsDoNotFit(_load_error_summary(str(err))) from None
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
