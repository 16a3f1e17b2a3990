"""Robustness to slide variation: corruptions at severities 0-5 at inference, per run."""

import json

import numpy as np
import pytest
import torch

from cvm_cervix import robustness
from cvm_cervix.errors import CvmError
from cvm_cervix.robustness import CORRUPTIONS, corrupt, robustness_run


@pytest.fixture(scope="module")
def images():
    """Six rendered cells (stained-looking, not noise), 48 px."""
    from cvm_cervix.data import CLASS_SETS, render_cell

    rng = np.random.default_rng(0)
    profiles = list(CLASS_SETS["combined"].values())[:6]
    return torch.from_numpy(np.stack([render_cell(p, 48, rng).transpose(2, 0, 1) for p in profiles]))


def test_severity_zero_is_the_image_and_every_corruption_grows_with_severity(images):
    for name in CORRUPTIONS:
        assert torch.equal(corrupt(images, name, 0), images), name
        change = [
            (corrupt(images, name, s, torch.Generator().manual_seed(1)).float() - images.float()).abs().mean().item()
            for s in range(1, 6)
        ]
        out = corrupt(images, name, 3)
        assert out.shape == images.shape and out.dtype == torch.uint8, name
        assert change[0] > 0 and change[-1] > change[0], (name, change)
    with pytest.raises(CvmError, match="unknown corruption 'fog'"):
        corrupt(images, "fog", 1)
    with pytest.raises(CvmError, match="use 0 to 5"):
        corrupt(images, "blur", 6)


def test_the_stain_conversion_is_exact_without_jitter(images, monkeypatch):
    """RGB -> haematoxylin/eosin/DAB -> RGB gives the image back: the jitter alone changes it."""
    monkeypatch.setattr(robustness, "STAIN_SIGMA", (0.0,) * 5)
    back = corrupt(images, "stain", 1)
    assert (back.int() - images.int()).abs().max() <= 1


def test_a_runs_robustness_at_severity_zero_is_its_clean_evaluation(tiny_dataset, tmp_path):
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    run = tmp_path / "run"
    train_run("shufflenet_v2_x0_5", tiny_dataset, run, img_size=32, epochs=2, batch_size=8, threads=2, progress=False)
    metrics = evaluate_run(run, tiny_dataset, threads=2)
    out = tmp_path / "robustness.json"
    result = robustness_run(run, tiny_dataset, out, severities=[0, 2, 5], abnormal=["ASC-H", "HSIL", "SCC"], threads=2)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["clean"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert result["test_images"] == metrics["test"]["n"]
    for name in CORRUPTIONS:
        assert result["corruptions"][name]["0"] == result["clean"], name
        assert 0 <= result["corruptions"][name]["5"]["accuracy"] <= 1
    assert result["clean"]["abnormal_auc"] is not None
    assert sorted(result["abnormal_classes"]) == ["ASC-H", "HSIL", "SCC"]
    for s in ("2", "5"):
        accs = [result["corruptions"][c][s]["accuracy"] for c in CORRUPTIONS]
        assert result["mean"][s]["accuracy"] == pytest.approx(np.mean(accs))
