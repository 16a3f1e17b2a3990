"""Stain normalisation (train.stain_normalization): the reference, the normalised cache, and a run that maps
every image to its reference wherever it reads one: evaluate, robustness, predict, an export."""

import json

import numpy as np
import pandas as pd
import pytest

from cvm_cervix.cli import main as cli
from cvm_cervix.data import build_stain_cache, read_manifest
from cvm_cervix.errors import CvmError
from cvm_cervix.stain_norm import METHODS, StainReference, fit_reference, normalize_image, normalize_images


def _cells(n: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """Rendered cells (synthetic): a light background, a stained cytoplasm and nucleus."""
    from cvm_cervix.data import CLASS_SETS, render_cell

    rng = np.random.default_rng(seed)
    profiles = list(CLASS_SETS["combined"].values())
    return np.stack([render_cell(profiles[i % len(profiles)], size, rng).transpose(2, 0, 1) for i in range(n)])


def _restained(images: np.ndarray, scale=(1.6, 1.6, 1.6)) -> np.ndarray:
    """The same cells under another lab's stain: each channel's optical density scaled (by default, every
    stain 60% stronger)."""
    od = -np.log((images.astype(float) + 1) / 256)
    od *= np.asarray(scale)[None, :, None, None]
    return np.clip(np.rint(256 * np.exp(-od) - 1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", METHODS)
def test_normalising_keeps_shapes_and_maps_another_labs_stain_back_towards_the_reference(method):
    cells = _cells(12)
    reference = fit_reference(cells, method, "twelve rendered cells")
    assert reference.method == method and "median of 12 images" in reference.fitted_on
    assert StainReference.from_json(json.loads(json.dumps(reference.to_json())), "x", "y") == reference
    shifted = _restained(cells)
    before = np.abs(shifted.astype(int) - cells).mean()
    out, mapped = normalize_images(shifted, reference, threads=2)
    assert out.shape == cells.shape and out.dtype == np.uint8 and mapped.all()
    # the same cells, the stain shift mostly undone: far closer to the normalised originals than the shifted ones
    ref_out, _ = normalize_images(cells, reference)
    assert np.abs(out.astype(int) - ref_out).mean() < 0.5 * before
    again, _ = normalize_images(shifted, reference, threads=1)
    assert np.array_equal(out, again)  # deterministic, whatever the threads


def test_an_image_the_method_cannot_map_is_kept_as_it_is_and_counted():
    reference = fit_reference(_cells(6), "macenko")
    blank = np.full((3, 32, 32), 250, np.uint8)  # an empty field: no stained pixel
    out, mapped = normalize_image(blank, reference)
    assert not mapped and np.array_equal(out, blank)
    flat = np.full((3, 32, 32), 120, np.uint8)  # no colour spread for Reinhard
    assert not normalize_image(flat, fit_reference(_cells(6), "reinhard"))[1]
    _, mapped = normalize_images(np.stack([blank, _cells(1)[0]]), reference)
    assert mapped.tolist() == [False, True]
    with pytest.raises(CvmError, match="none of the 2 training images has enough stained pixels"):
        fit_reference(np.stack([blank, blank]), "macenko")


def test_a_reference_that_is_not_one_is_one_line_naming_the_file():
    good = fit_reference(_cells(4), "macenko").to_json()
    with pytest.raises(CvmError, match=r"ref.json: stain reference 'stain_matrix' must be 3×2 finite numbers; redo"):
        StainReference.from_json({**good, "stain_matrix": [[1, 2], [3, float("nan")], [5, 6]]}, "ref.json", "redo")
    with pytest.raises(CvmError, match="must name its method"):
        StainReference.from_json({**good, "method": "vahadane"}, "ref.json", "redo")
    bad = {**fit_reference(_cells(4), "reinhard").to_json(), "stds": [1.0, 0.0, 2.0]}
    with pytest.raises(CvmError, match="'stds' must each be above 0"):
        StainReference.from_json(bad, "ref.json", "redo")


@pytest.fixture(scope="module")
def normalised(tiny_dataset, tmp_path_factory):
    """The tiny synthetic dataset's cache mapped to its training split's Macenko reference."""
    out = tmp_path_factory.mktemp("stain")
    record = build_stain_cache(
        tiny_dataset / "manifest.csv", tiny_dataset / "cache_32.npy", "macenko", out / "ref.json", out / "cache.npy"
    )
    return out, record


def test_the_normalised_cache_is_each_image_mapped_to_the_training_splits_reference(tiny_dataset, normalised):
    out, record = normalised
    manifest = read_manifest(tiny_dataset / "manifest.csv")
    assert json.loads((out / "ref.json").read_text()) == json.loads(json.dumps(record))
    assert record["images"] == len(manifest)
    assert (
        f"the training split of {tiny_dataset.name} ({(manifest['split'] == 'train').sum()} images at 32 px)"
        in (record["fitted_on"])
    )
    plain, mapped_cache = np.load(tiny_dataset / "cache_32.npy"), np.load(out / "cache.npy")
    reference = StainReference.from_json(record, "ref.json", "")
    again, mapped = normalize_images(plain, reference)
    assert np.array_equal(mapped_cache, again)
    # the palest synthetic cells have too few stained pixels for Macenko: kept as decoded, counted and named
    assert record["unmapped"] == int((~mapped).sum()) < len(manifest) // 4
    assert record["unmapped_paths"] == manifest.loc[~mapped, "path"].tolist()[:20]
    assert np.array_equal(mapped_cache[~mapped], plain[~mapped]) and not np.array_equal(mapped_cache, plain)


@pytest.fixture(scope="module")
def stain_run(tiny_dataset, normalised, tmp_path_factory):
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    out, _ = normalised
    results = tmp_path_factory.mktemp("results")  # laid out as the workflow lays it out: export finds the data
    (results / "data").mkdir()
    (results / "data" / tiny_dataset.name).symlink_to(tiny_dataset)
    run = results / "runs" / tiny_dataset.name / "shufflenet_v2_x0_5" / "none+macenko" / "seed0"
    train_run(
        "shufflenet_v2_x0_5", tiny_dataset, run, img_size=32, epochs=2, batch_size=8, threads=2, progress=False,
        stain_normalization="macenko", cache=out / "cache.npy", stain_reference=out / "ref.json",
    )  # fmt: skip
    evaluate_run(run, tiny_dataset, threads=2, coverages=[0.9])
    return run


def test_a_normalised_run_must_be_given_the_reference_and_the_cache_mapped_with_it(tiny_dataset, normalised, tmp_path):
    from cvm_cervix.train import train_run

    out, _ = normalised
    common = dict(img_size=32, epochs=1, batch_size=8, threads=2, progress=False, stain_normalization="macenko")
    with pytest.raises(CvmError, match="no stain reference was given"):
        train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "a", cache=out / "cache.npy", **common)
    with pytest.raises(CvmError, match=r"cache_32.npy is not the image cache .*ref.json was mapped into"):
        train_run("shufflenet_v2_x0_5", tiny_dataset, tmp_path / "b", stain_reference=out / "ref.json", **common)
    common["stain_normalization"] = "reinhard"
    with pytest.raises(CvmError, match="is a macenko stain reference; the run asks for reinhard"):
        train_run(
            "shufflenet_v2_x0_5", tiny_dataset, tmp_path / "c", cache=out / "cache.npy",
            stain_reference=out / "ref.json", **common,
        )  # fmt: skip
    assert not list(tmp_path.glob("*/train.json")) and not list(tmp_path.glob("*/*.safetensors"))  # refused first


def test_the_run_records_its_reference_and_every_pass_maps_images_to_it(stain_run, tiny_dataset, normalised, tmp_path):
    """evaluate (from the plain cache), predict (from the image files) and an export (from its config.json)
    give the same probabilities: each maps the images to the reference the run recorded."""
    from cvm_cervix.export import export_run
    from cvm_cervix.record import RunRecord

    _, record = normalised
    info = json.loads((stain_run / "train.json").read_text())
    assert info["settings"]["stain_normalization"] == "macenko"
    assert info["stain_reference"]["stain_matrix"] == record["stain_matrix"]
    manifest = read_manifest(tiny_dataset / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    evaluated = pd.read_csv(stain_run / "predictions_test.csv")
    outs = {}
    folder = export_run(stain_run, tmp_path / "export")
    assert "every image is first mapped to one Macenko reference stain" in (folder / "README.md").read_text()
    for name, where in (("run", stain_run), ("export", folder)):
        outs[name] = tmp_path / f"{name}.csv"
        assert cli(["predict", *test["path"], "--run", str(where), "-o", str(outs[name])]) == 0
        rows = pd.read_csv(outs[name])
        probs = [c for c in rows if c.startswith("prob_")]
        assert np.allclose(rows[probs].to_numpy(), evaluated[probs].to_numpy(), atol=1e-5), name
    # a record that says macenko but holds no reference, or one of another method, is refused
    broken = {**info, "stain_reference": None}
    with pytest.raises(CvmError, match="stain_normalization is 'macenko' but the record holds no stain reference"):
        RunRecord.from_json(broken, "train.json")
    plain = {**info, "settings": {**info["settings"], "stain_normalization": "none"}}
    with pytest.raises(CvmError, match="holds a stain reference but its settings ask for no stain normalisation"):
        RunRecord.from_json(plain, "train.json")


def test_robustness_corrupts_the_decoded_images_then_maps_them(stain_run, tiny_dataset):
    """Another lab's slide is corrupted as decoded and then normalised, as that lab's images would be: the
    clean pass is the evaluation's, and a stain shift the normalisation undoes costs little."""
    from cvm_cervix.robustness import robustness_run

    metrics = json.loads((stain_run / "metrics.json").read_text())
    out = robustness_run(stain_run, tiny_dataset, stain_run / "r.json", corruptions=["stain"], threads=2)
    assert out["stain_normalization"] == "macenko"
    assert out["clean"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert out["corruptions"]["stain"]["1"]["pixels_changed"] > 0.05  # the raw images were shifted
