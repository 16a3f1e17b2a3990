import pytest
import torch

from cvm_cervix.errors import CvmError
from cvm_cervix.models import PAPER_MODELS, create_model, get_model_spec, model_names

PAPER_TABLE3 = [
    "cvm_cervix",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "densenet121",
    "densenet169",
    "inception_v3",
    "xception",
    "alexnet",
    "googlenet",
    "mobilenet_v2",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x0_5",
    "inception_resnet_v1",
    "vit",
    "botnet",
    "deit_tiny",
    "t2t_vit",
]


def test_registry_holds_the_papers_23_models():
    assert sorted(PAPER_MODELS) == sorted(PAPER_TABLE3) and len(PAPER_MODELS) == 23
    assert set(model_names()) - set(PAPER_MODELS) == {"cvm_cervix_distilled"}


def test_the_catalog_gives_the_sizes_the_networks_written_here_declare():
    """The catalog is read without torch, so it states InceptionResNetV1's smallest size itself: the
    network's own value, and every catalog entry builds through the registry's builders."""
    from cvm_cervix.models import Builder
    from cvm_cervix.models._backbones import _OWN_NETWORKS

    own = {
        get_model_spec(n).build_backbone.args[0]: get_model_spec(n)
        for n in model_names()
        if get_model_spec(n).build_backbone.function == "_own"
    }
    assert set(own) == set(_OWN_NETWORKS) == {"InceptionResNetV1", "T2TViT"}
    for network, spec in own.items():
        assert spec.min_img_size == getattr(_OWN_NETWORKS[network], "min_img_size", spec.min_img_size)
    assert all(isinstance(get_model_spec(n).build_backbone, Builder) for n in model_names())


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_every_model_builds_and_runs_forward(name):
    torch.manual_seed(0)
    size = max(32, get_model_spec(name).min_img_size)
    model = create_model(name, num_classes=5, img_size=size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.num_features)
    assert logits.shape == (2, 5)
    assert torch.allclose(model.head(feats), logits, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_every_parameter_of_every_model_gets_a_finite_gradient(name):
    """One training step's backward pass (as timm tests its models): a parameter left without a gradient
    would silently never train, a non-finite one would wreck the run."""
    torch.manual_seed(0)
    size = max(32, get_model_spec(name).min_img_size)
    model = create_model(name, num_classes=5, img_size=size).train()
    x = torch.rand(3, 3, size, size)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 3, 4]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{len(missing)} parameters get no gradient, first {missing[:3]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:3]}"
    assert any(p.grad.abs().sum() > 0 for p in model.head.parameters())


def test_cvm_cervix_is_xception_deit_fusion_with_gelu_mlp():
    model = create_model("cvm_cervix", num_classes=11, img_size=32)
    assert model.num_features == 2048 + 192
    assert model.head.fc1.in_features == 2240 and model.head.fc1.out_features == 2240
    assert isinstance(model.head.act, torch.nn.GELU) and model.head.fc2.out_features == 11
    params = sum(p.numel() for p in model.parameters())
    assert 31.2e6 < params < 31.5e6  # 20.8 M + 5.5 M + 5.0 M, the paper's "about 120 MB" in float32
    assert not hasattr(model.backbone.vt, "dist_token") or model.backbone.vt.dist_token is None
    distilled = create_model("cvm_cervix_distilled", num_classes=11, img_size=32)
    assert distilled.backbone.vt.dist_token is not None


@pytest.mark.parametrize("name, minimum", [("inception_v3", 75), ("inception_resnet_v1", 75), ("alexnet", 63)])
def test_too_small_image_size_names_the_minimum(name, minimum):
    with pytest.raises(CvmError, match=f"model '{name}' needs train.img_size >= {minimum} \\(got 32\\)"):
        create_model(name, 3, img_size=32)


def test_vision_transformers_are_built_for_the_configured_size():
    model = create_model("deit_tiny", 3, img_size=64)
    assert model.backbone.patch_embed.num_patches == 16
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_unknown_model():
    with pytest.raises(CvmError, match="unknown model 'resnet9'"):
        create_model("resnet9", 3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip_and_head_of_other_size(tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_model("resnet18", 4, img_size=32)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    same = create_model("resnet18", 4, img_size=32, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, same.state_dict()[key])
    other = create_model("resnet18", 7, img_size=32, weights=path)  # fine-tune: backbone loads, head fresh
    assert torch.equal(other.backbone.conv1.weight, source.backbone.conv1.weight)
    assert other.head.out_features == 7


def test_backbone_only_weights_load(tmp_path):
    torch.manual_seed(0)
    source = create_model("shufflenet_v2_x0_5", 3, img_size=32)
    torch.save(source.backbone.state_dict(), tmp_path / "backbone.pt")
    model = create_model("shufflenet_v2_x0_5", 3, img_size=32, weights=tmp_path / "backbone.pt")
    assert torch.equal(model.backbone.conv1[0].weight, source.backbone.conv1[0].weight)


def test_weights_of_another_model_are_refused(tmp_path):
    torch.save(create_model("resnet18", 3, img_size=32).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CvmError, match="does not fit this model"):
        create_model("resnet34", 3, img_size=32, weights=tmp_path / "r18.pt")
    with pytest.raises(CvmError, match="not found"):
        create_model("resnet18", 3, weights=tmp_path / "absent.pt")


def test_models_command_prints_one_name_per_line(capsys):
    from cvm_cervix.cli import main as cli

    assert cli(["models"]) == 0
    assert capsys.readouterr().out.splitlines() == model_names()
    assert cli(["models", "-v"]) == 0
    verbose = capsys.readouterr().out.splitlines()
    assert verbose[0].startswith("cvm_cervix\tCVM-Cervix\t") and "min 75px" in next(
        line for line in verbose if line.startswith("inception_v3")
    )


def test_each_network_normalises_its_input_with_its_own_weights_statistics():
    import torch

    from cvm_cervix.models import IMAGENET, create_model, input_normalizations

    fusion = create_model("cvm_cervix", 3, 32)
    norms = input_normalizations(fusion)
    assert norms == {"cnn": {"mean": [0.5] * 3, "std": [0.5] * 3}, "vt": IMAGENET}  # Xception ‖ DeiT
    assert input_normalizations(create_model("resnet18", 3, 32)) == {"": IMAGENET}
    assert not any("_input" in k for k in fusion.state_dict())  # weights files are unchanged
    # the hook computes (x - mean) / std: the same as feeding normalised images to an identity-normalised copy
    torch.manual_seed(0)
    model = create_model("resnet18", 3, 32).eval()
    plain = create_model("resnet18", 3, 32, normalization={"": {"mean": [0, 0, 0], "std": [1, 1, 1]}}).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1), torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), plain((x - mean) / std), atol=1e-5)


def test_a_trained_run_is_rebuilt_with_the_normalisation_it_recorded(tiny_dataset, tmp_path):
    import json

    from cvm_cervix.models import IMAGENET, input_normalizations
    from cvm_cervix.run import load_trained
    from cvm_cervix.train import train_run

    info = train_run("cvm_cervix", tiny_dataset, tmp_path, img_size=32, epochs=1, threads=2, progress=False)
    assert info["normalization"]["cnn"]["mean"] == [0.5] * 3 and info["normalization"]["vt"] == IMAGENET
    model, _ = load_trained(tmp_path)
    assert input_normalizations(model) == info["normalization"]
    saved = json.loads((tmp_path / "train.json").read_text())
    # a run recorded before the format key and the normalisation: it was fed ImageNet statistics everywhere
    legacy_record = {k: v for k, v in saved.items() if k not in ("format", "settings", "identity", "normalization")}
    (tmp_path / "train.json").write_text(json.dumps(legacy_record))
    legacy, _ = load_trained(tmp_path)
    assert input_normalizations(legacy) == {"cnn": IMAGENET, "vt": IMAGENET}


def test_the_fusion_heads_open_choices_are_keys_with_todays_defaults():
    """Sec. 3 says GELU, Sec. 5.2 ReLU; the width 2,240 and no dropout are inferred: each is a key, and
    the defaults build the head the workflow always built (so earlier runs load unchanged)."""
    import torch.nn as nn

    from cvm_cervix.errors import CvmError
    from cvm_cervix.models import create_model

    default = create_model("cvm_cervix", 11, 32).head
    assert isinstance(default.act, nn.GELU) and default.fc1.out_features == 2240 == default.fc1.in_features
    assert default.drop1.p == 0.0
    chosen = create_model("cvm_cervix", 11, 32, head={"activation": "relu", "hidden": 512, "dropout": 0.25}).head
    assert isinstance(chosen.act, nn.ReLU) and chosen.fc1.out_features == 512 and chosen.fc2.in_features == 512
    assert chosen.drop1.p == 0.25 and chosen.drop2.p == 0.0  # never on the logits
    with pytest.raises(CvmError, match="activations: gelu, relu"):
        create_model("cvm_cervix", 11, 32, head={"activation": "tanh"})
    with pytest.raises(CvmError, match="has a linear head"):
        create_model("resnet18", 11, 32, head={"activation": "relu"})
