"""Every model of the registry loads files shaped like its public pretrained ones, through the cache the
``weights`` step reads, at the paper's 224 px and at the embedded default's image size."""

from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from cvm_cervix.errors import CvmError
from cvm_cervix.models import create_model, fetch_pretrained, get_model_spec, model_names

DEFAULT_SIZE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["train"]["img_size"]


def _some_loaded_tensor(model, files: dict) -> tuple[str, torch.Tensor, torch.Tensor]:
    """A tensor of the built backbone and the same tensor of its file (the first conv or embedding)."""
    own = {k.removeprefix("backbone."): v for k, v in model.state_dict().items()}
    for state in files:
        for key, value in state.items():
            for prefix in ("", "cnn.", "vt."):
                if prefix + key in own and own[prefix + key].shape == value.shape and value.dtype.is_floating_point:
                    return key, own[prefix + key], value
    raise AssertionError("no tensor of the file found in the model")


@pytest.mark.parametrize("name", model_names())
def test_every_model_loads_its_public_file_at_224_and_the_default_size(public_cache, name):
    from cvm_cervix.models import pretrained_sources

    cache, written = public_cache
    for size in (224, max(DEFAULT_SIZE, get_model_spec(name).min_img_size)):
        record = fetch_pretrained(name, img_size=size, cache_dir=cache)  # the weights step's own code
        assert record["files"] and all(f["path"] and Path(f["path"]).is_file() and f["sha256"] for f in record["files"])
        model = create_model(name, 3, size, pretrained=True, cache_dir=cache).eval()
        files = [written[s["hub_id"] or Path(s["url"]).name] for s in pretrained_sources(model)]
        key, loaded, stored = _some_loaded_tensor(model, files)
        assert torch.equal(loaded, stored), f"{name} at {size} px: {key} not loaded from its file"
        with torch.no_grad():
            out = model(torch.rand(2, 3, size, size))
        assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_botnet_tables_are_cropped_at_224_and_resampled_when_larger(public_cache):
    cache, written = public_cache
    state = written["timm/botnet26t_256.c1_in1k"]
    key = "stages.2.1.self_attn.pos_embed.height_rel"
    assert state[key].shape == (31, 64)  # trained at 256 px: a 16-cell map, offsets -15..15
    small = create_model("botnet", 3, 224, pretrained=True, cache_dir=cache).backbone.state_dict()[key]
    assert small.shape == (27, 64) and torch.equal(small, state[key][2:29])  # offsets -13..13, exactly
    large = create_model("botnet", 3, 320, pretrained=True, cache_dir=cache).backbone.state_dict()[key]
    assert large.shape == (39, 64)
    assert torch.equal(large[0], state[key][0]) and torch.equal(large[-1], state[key][-1])
    torch.testing.assert_close(large[19], state[key][15])  # the zero offset stays the zero offset


def test_a_file_that_does_not_fit_is_named_with_its_tensor(public_cache, tmp_path):
    from weights_cache import hub_snapshot

    _, written = public_cache
    state = dict(written["timm/botnet26t_256.c1_in1k"])
    state["stem.conv1.conv.weight"] = torch.zeros(3, 3, 3, 3)
    file = hub_snapshot(tmp_path / "timm", "timm/botnet26t_256.c1_in1k", state)
    with pytest.raises(CvmError) as err:
        fetch_pretrained("botnet", img_size=224, cache_dir=tmp_path)
    message = str(err.value)
    assert "were fetched" in message and "do not fit this model at img_size 224" in message
    assert str(file) in message and "stem.conv1.conv.weight (3, 3, 3, 3) instead of (24, 3, 3, 3)" in message
    assert "cannot be fetched" not in message and "\n" not in message
