"""Weight files shaped exactly like the public ones, in the cache layouts the ``weights`` step reads.

Shapes and key names come from the libraries' own default configuration (timm's model at its
pretrained config, torchvision's builder as it loads its DEFAULT weights) or, for the two networks
written here, from their reference implementations' key lists, never from the size this project
builds a model at; so a model that cannot load its public file at 224 px fails here as it would for
a researcher.
"""

from pathlib import Path
from unittest.mock import patch

import torch
from safetensors.torch import save_file


def hub_snapshot(cache: Path, repo: str, state: dict) -> Path:
    """A Hugging Face hub cache entry, as huggingface_hub writes it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def timm_public_state(arch: str) -> dict[str, torch.Tensor]:
    """The state dict of timm's ``arch`` as its pretrained file holds it: the default configuration
    (the pretrained input size, the ImageNet head)."""
    import timm

    return timm.create_model(arch, pretrained=False).state_dict()


def torchvision_public_state(arch: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision's ``arch`` as its DEFAULT weights file holds it: the builder is run
    with ``weights="DEFAULT"`` (which sets the classes and, for GoogLeNet and Inception-v3, the
    auxiliary heads the file carries) and the model is captured where it would load the file."""
    import torchvision
    from torchvision.models._api import WeightsEnum

    captured = {}
    real_load = torch.nn.Module.load_state_dict

    def capture(self, state, *args, **kwargs):
        captured.update({k: v.clone() for k, v in self.state_dict().items()})
        return real_load(self, self.state_dict())

    with (
        patch.object(WeightsEnum, "get_state_dict", lambda self, *a, **k: {}),
        patch.object(torch.nn.Module, "load_state_dict", capture),
    ):
        getattr(torchvision.models, arch)(weights="DEFAULT")
    return captured


def _basic(prefix: str) -> list[str]:
    """facenet-pytorch's BasicConv2d (attributes conv, bn, relu)."""
    return [f"{prefix}.conv.weight"] + [
        f"{prefix}.bn.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]


def facenet_keys() -> set[str]:
    """Every key of ``InceptionResnetV1(pretrained='vggface2').state_dict()``, written from facenet-pytorch's
    source (models/inception_resnet_v1.py), independently of this project's mapping."""
    keys = []
    for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "conv2d_3b", "conv2d_4a", "conv2d_4b"):
        keys += _basic(name)

    def block(prefix, branches):
        out = []
        for branch, n in branches.items():
            out += (
                _basic(f"{prefix}.{branch}")
                if n == 0
                else [k for i in range(n) for k in _basic(f"{prefix}.{branch}.{i}")]
            )
        return out

    for i in range(5):
        keys += block(f"repeat_1.{i}", {"branch0": 0, "branch1": 2, "branch2": 3}) + [
            f"repeat_1.{i}.conv2d.weight",
            f"repeat_1.{i}.conv2d.bias",
        ]
    keys += block("mixed_6a", {"branch0": 0, "branch1": 3})
    for i in range(10):
        keys += block(f"repeat_2.{i}", {"branch0": 0, "branch1": 3}) + [
            f"repeat_2.{i}.conv2d.weight",
            f"repeat_2.{i}.conv2d.bias",
        ]
    keys += block("mixed_7a", {"branch0": 2, "branch1": 2, "branch2": 3})
    for prefix in [f"repeat_3.{i}" for i in range(5)] + ["block8"]:
        keys += block(prefix, {"branch0": 0, "branch1": 3}) + [f"{prefix}.conv2d.weight", f"{prefix}.conv2d.bias"]
    keys += ["last_linear.weight"] + [
        f"last_bn.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    return set(keys) | {"logits.weight", "logits.bias"}


def t2t_reference_keys() -> set[str]:
    """Every key of the reference's ``t2t_vit_t_14()`` state dict (yitu-opensource/T2T-ViT)."""

    def layer(prefix):  # Token_transformer / Block: norm1, attn.qkv (no bias), attn.proj, norm2, mlp.fc1, mlp.fc2
        return [
            f"{prefix}.norm1.weight",
            f"{prefix}.norm1.bias",
            f"{prefix}.attn.qkv.weight",
            f"{prefix}.attn.proj.weight",
            f"{prefix}.attn.proj.bias",
            f"{prefix}.norm2.weight",
            f"{prefix}.norm2.bias",
            f"{prefix}.mlp.fc1.weight",
            f"{prefix}.mlp.fc1.bias",
            f"{prefix}.mlp.fc2.weight",
            f"{prefix}.mlp.fc2.bias",
        ]

    keys = layer("tokens_to_token.attention1") + layer("tokens_to_token.attention2")
    keys += [
        "tokens_to_token.project.weight",
        "tokens_to_token.project.bias",
        "cls_token",
        "pos_embed",
        "norm.weight",
        "norm.bias",
        "head.weight",
        "head.bias",
    ]
    for i in range(14):
        keys += layer(f"blocks.{i}")
    return set(keys)


def reference_state(model, keys, to_own):
    """Random tensors under the reference's key names, shaped as this model's tensors they map to."""
    own = model.backbone.state_dict()
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key in keys:
        target = to_own.get(key)
        shape = own[target].shape if target else (7, 3)
        state[key] = (
            torch.randint(0, 9, shape, generator=gen)
            if target and own[target].dtype == torch.long
            else torch.randn(shape, generator=gen)
        )
    return state


def reference_public_state(name: str) -> dict[str, torch.Tensor]:
    """The two networks written here: their reference checkpoints' keys (listed from the reference code),
    holding the tensors of a freshly initialised model they map to (so they compute finite numbers)."""
    from cvm_cervix.models import create_model

    model = create_model(name, 2, 224)
    own = model.backbone.state_dict()
    if name == "t2t_vit":
        keys, to_own = t2t_reference_keys(), {k: k for k in own}
    else:
        from cvm_cervix.models._inception_resnet_v1 import reference_key

        keys, to_own = facenet_keys(), {reference_key(k): k for k in own}
    state = {k: own[to_own[k]].clone() if k in to_own else v for k, v in reference_state(model, keys, to_own).items()}
    return {"state_dict_ema": state} if name == "t2t_vit" else state


def write_public_cache(cache: Path, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Every pretrained file of models ``names`` under ``cache`` (``timm/`` as a Hugging Face hub cache,
    ``torch/checkpoints/`` for torchvision and the reference files); returns file name -> its tensors."""
    from cvm_cervix.models import create_model, pretrained_sources

    written: dict[str, dict] = {}
    for name in names:
        for source in pretrained_sources(create_model(name, 2, 224)):
            key = source["hub_id"] or Path(source["url"]).name
            if key in written:
                continue
            if source["library"] == "timm":
                state = written[key] = timm_public_state(source["arch"])
                if source["hub_id"]:
                    hub_snapshot(cache / "timm", key, state)
                else:  # weights timm has only as a URL: the file itself, in its cache folder
                    (cache / "timm").mkdir(parents=True, exist_ok=True)
                    torch.save(state, cache / "timm" / key)
                continue
            state = (
                torchvision_public_state(source["arch"])
                if source["library"] == "torchvision"
                else reference_public_state(name)
            )
            folder = cache / "torch" / "checkpoints"
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, folder / key)
            written[key] = state.get("state_dict_ema", state)
    return written
