"""Pretrained weights without network: files in the cache layout the libraries expect, loaded through
the same code a real download takes; a missing file is one line naming the model, the file and where."""

import pytest
import torch
from weights_cache import facenet_keys, hub_snapshot, reference_state, t2t_reference_keys

from cvm_cervix.errors import CvmError
from cvm_cervix.models import create_model, fetch_pretrained


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_timm_weights_from_the_hub_cache(tmp_path, offline):
    import timm

    source = timm.create_model("deit_tiny_patch16_224", num_classes=1000).state_dict()  # an ImageNet checkpoint's keys
    file = hub_snapshot(tmp_path / "timm", "timm/deit_tiny_patch16_224.fb_in1k", source)
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
    assert "model 'deit_tiny': its pretrained weights cannot be fetched" in message
    assert "timm/deit_tiny_patch16_224.fb_in1k" in message
    assert str(tmp_path / "timm") in message and "train.weights: {deit_tiny: FILE}" in message
    assert "\n" not in message


def test_missing_reference_weights_without_network_are_one_line(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    with pytest.raises(CvmError) as err:
        fetch_pretrained("t2t_vit", img_size=32, cache_dir=tmp_path)
    message = str(err.value)
    assert "model 't2t_vit'" in message and "81.7_T2T_ViTt_14.pth.tar" in message
    assert str(tmp_path / "torch" / "checkpoints") in message and "\n" not in message


# --- the two networks written here: their reference implementations' files ---------------------------


def test_inception_resnet_v1_loads_facenet_pytorch_weights(tmp_path, monkeypatch):
    from cvm_cervix.models._inception_resnet_v1 import InceptionResNetV1, reference_key

    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    model = create_model("inception_resnet_v1", 3, 96)
    ours = list(model.backbone.state_dict())
    to_own = {reference_key(k): k for k in ours}
    assert set(to_own) == facenet_keys() - {"logits.weight", "logits.bias"}  # every key maps, one to one
    assert len(to_own) == len(ours)
    state = reference_state(model, facenet_keys(), to_own)
    folder = tmp_path / "torch" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / "20180402-114759-vggface2.pt")  # the file name of the reference's URL

    found = fetch_pretrained("inception_resnet_v1", img_size=96, cache_dir=tmp_path)
    assert found["files"][0]["path"] == str(folder / "20180402-114759-vggface2.pt")
    assert found["files"][0]["url"] == InceptionResNetV1.reference["url"]
    loaded = create_model("inception_resnet_v1", 3, 96, pretrained=True, cache_dir=tmp_path).backbone
    assert torch.equal(loaded.stem[0][0].weight, state["conv2d_1a.conv.weight"])
    assert torch.equal(loaded.stem[6][1].running_var, state["conv2d_4b.bn.running_var"])
    assert torch.equal(loaded.mixed_7a.branch2[2][1].bias, state["mixed_7a.branch2.2.bn.bias"])
    assert torch.equal(loaded.block8.conv2d.weight, state["block8.conv2d.weight"])
    assert torch.equal(loaded.last_bn.running_mean, state["last_bn.running_mean"])
    assert loaded.input_normalization == {"mean": [127.5 / 255] * 3, "std": [128 / 255] * 3}

    # The same file given as train.weights; a file of another network is one line naming it.
    from_file = create_model("inception_resnet_v1", 3, 96, weights=folder / "20180402-114759-vggface2.pt")
    assert torch.equal(from_file.backbone.repeat_2[9].branch1[2][0].weight, state["repeat_2.9.branch1.2.conv.weight"])
    del state["repeat_1.0.branch0.conv.weight"]
    torch.save(state, folder / "20180402-114759-vggface2.pt")
    with pytest.raises(CvmError, match="is not InceptionResNetV1's reference checkpoint.*1 tensors missing"):
        create_model("inception_resnet_v1", 3, 96, pretrained=True, cache_dir=tmp_path)


def test_t2t_vit_loads_the_reference_checkpoint(tmp_path, monkeypatch):
    import argparse

    from cvm_cervix.models._t2t_vit import T2TViT

    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    model = create_model("t2t_vit", 3, 64)
    ours = set(model.backbone.state_dict())
    assert ours == t2t_reference_keys() - {"head.weight", "head.bias", "pos_embed"}
    ema = reference_state(model, t2t_reference_keys(), {k: k for k in ours})
    raw = {k: torch.zeros_like(v) for k, v in ema.items()}
    # As the released .pth.tar: a training checkpoint with its EMA weights, DataParallel prefixes and args
    checkpoint = {
        "state_dict": {f"module.{k}": v for k, v in raw.items()},
        "state_dict_ema": {f"module.{k}": v for k, v in ema.items()},
        "args": argparse.Namespace(model="t2t_vit_t_14"),
        "epoch": 309,
    }
    folder = tmp_path / "torch" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(checkpoint, folder / "81.7_T2T_ViTt_14.pth.tar")

    found = fetch_pretrained("t2t_vit", img_size=64, cache_dir=tmp_path)
    assert found["files"][0]["url"] == T2TViT.reference["url"]
    loaded = create_model("t2t_vit", 3, 64, pretrained=True, cache_dir=tmp_path).backbone
    assert torch.equal(loaded.blocks[13].attn.qkv.weight, ema["blocks.13.attn.qkv.weight"])  # EMA, not the raw
    assert torch.equal(
        loaded.tokens_to_token.attention1.attn.qkv.weight, ema["tokens_to_token.attention1.attn.qkv.weight"]
    )
    assert torch.equal(loaded.cls_token, ema["cls_token"])
    from_file = create_model("t2t_vit", 3, 64, weights=folder / "81.7_T2T_ViTt_14.pth.tar")
    assert torch.equal(from_file.backbone.norm.weight, ema["norm.weight"])


def test_t2t_vit_attention_uses_the_reference_scale():
    """The reference's T2T-ViT_t-14 with its weights: attention scaled by 384^-0.5, not head_dim^-0.5."""
    from cvm_cervix.models._t2t_vit import T2TViT

    torch.manual_seed(0)
    attn = T2TViT(32).eval().blocks[0].attn
    x = torch.randn(2, 5, 384)
    b, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, 6, 64).permute(2, 0, 3, 1, 4)
    expected = attn.proj(((q @ k.transpose(-2, -1)) * 384**-0.5).softmax(-1).matmul(v).transpose(1, 2).reshape(b, n, c))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected.detach(), atol=1e-5, rtol=1e-5)
