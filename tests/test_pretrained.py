"""Pretrained weights without network: files in the cache layout the libraries expect, loaded through
the same code a real download takes; a missing file is one line naming the model, the file and where."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cvm_cervix.errors import CvmError
from cvm_cervix.models import create_model, fetch_pretrained


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _hub_snapshot(cache: Path, repo: str, state: dict) -> Path:
    """A Hugging Face hub cache entry, as huggingface_hub writes it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def test_timm_weights_from_the_hub_cache(tmp_path, offline):
    import timm

    source = timm.create_model("deit_tiny_patch16_224", num_classes=1000).state_dict()  # an ImageNet checkpoint's keys
    file = _hub_snapshot(tmp_path / "timm", "timm/deit_tiny_patch16_224.fb_in1k", source)
    found = fetch_pretrained("deit_tiny", img_size=224, cache_dir=tmp_path)
    assert [f["path"] for f in found["files"]] == [str(file)] and found["files"][0]["sha256"]
    model = create_model("deit_tiny", 3, 224, pretrained=True, cache_dir=tmp_path)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, source["blocks.0.attn.qkv.weight"])


def test_torchvision_weights_from_the_hub_checkpoints_folder(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # create_model points it at the cache

    source = torchvision.models.resnet18().state_dict()
    folder = tmp_path / "torch" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(source, folder / "resnet18-f37072fd.pth")  # the file name torchvision's URL ends in
    found = fetch_pretrained("resnet18", img_size=64, cache_dir=tmp_path)
    assert found["files"][0]["path"] == str(folder / "resnet18-f37072fd.pth")
    model = create_model("resnet18", 3, 64, pretrained=True, cache_dir=tmp_path)
    assert torch.equal(model.backbone.conv1.weight, source["conv1.weight"])


def test_missing_weights_without_network_are_one_line(tmp_path, offline):
    with pytest.raises(CvmError) as err:
        fetch_pretrained("deit_tiny", img_size=224, cache_dir=tmp_path)
    message = str(err.value)
    assert "model 'deit_tiny'" in message and "timm/deit_tiny_patch16_224.fb_in1k" in message
    assert str(tmp_path / "timm") in message and "train.weights: {deit_tiny: FILE}" in message
    assert "\n" not in message
    with pytest.raises(CvmError, match="no public ImageNet weights are wired for T2TViT"):
        fetch_pretrained("t2t_vit", img_size=32, cache_dir=tmp_path)
