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
def stain_run(real_blood_cells, tmp_path_factory):
    """A small network trained on the real blood cells mapped to their Reinhard stain, evaluated as the workflow
    does. Real cells and a few epochs at a high rate: its outputs depend on its input (a network of two
    epochs on a few synthetic cells answers almost the same for any image, and could not tell a pass that
    forgot the mapping)."""
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    results = tmp_path_factory.mktemp("results")  # laid out as the workflow lays it out: export finds the data
    (results / "data").mkdir()
    data = results / "data" / real_blood_cells.name
    data.symlink_to(real_blood_cells)
    stain = tmp_path_factory.mktemp("stain")
    build_stain_cache(
        data / "manifest.csv", data / "cache_32.npy", "reinhard", stain / "ref.json", stain / "cache.npy", threads=2
    )
    run = results / "runs" / data.name / "shufflenet_v2_x0_5" / "none+reinhard" / "seed0"
    train_run(
        "shufflenet_v2_x0_5", data, run, img_size=32, epochs=4, batch_size=32, lr=2e-3, threads=2, progress=False,
        stain_normalization="reinhard", cache=stain / "cache.npy", stain_reference=stain / "ref.json",
    )  # fmt: skip
    evaluate_run(run, data, threads=2, coverages=[0.9])
    return run


def _unmapped_probabilities(run, data) -> np.ndarray:
    """The run's test probabilities on its images as decoded, not mapped: what a pass that forgot would give."""
    import torch

    from cvm_cervix.engine import predict
    from cvm_cervix.run import Images, TrainedRun

    x, _, _ = Images.open(data, 32).split("test")
    images = torch.from_numpy(np.ascontiguousarray(x))
    return predict(TrainedRun.open(run).model(), images, 64, torch.device("cpu"), False)["probs"]


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


def test_the_run_records_its_reference_and_every_pass_maps_images_to_it(stain_run, real_blood_cells, tmp_path):
    """evaluate (from the plain cache), predict (from the image files) and an export (from its config.json)
    give the same probabilities: each maps the images to the reference the run recorded; without the mapping
    they would be others."""
    from cvm_cervix.calibration import scale_temperature
    from cvm_cervix.export import export_run
    from cvm_cervix.record import RunRecord

    info = json.loads((stain_run / "train.json").read_text())
    assert info["settings"]["stain_normalization"] == "reinhard"
    assert info["stain_reference"]["method"] == "reinhard" and len(info["stain_reference"]["stds"]) == 3
    assert "the training split of" in info["stain_reference"]["fitted_on"]
    manifest = read_manifest(real_blood_cells / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    evaluated = pd.read_csv(stain_run / "predictions_test.csv")
    probs = [c for c in evaluated if c.startswith("prob_")]
    assert np.abs(evaluated[probs].to_numpy() - _unmapped_probabilities(stain_run, real_blood_cells)).max() > 0.05
    outs = {}
    folder = export_run(stain_run, tmp_path / "export")
    assert "every image is first mapped to one Reinhard reference stain" in (folder / "README.md").read_text()
    files = list(test["path"][:80])
    for name, where in (("run", stain_run), ("export", folder)):
        outs[name] = tmp_path / f"{name}.csv"
        assert cli(["predict", *files, "--run", str(where), "-o", str(outs[name])]) == 0
        rows = pd.read_csv(outs[name])
        assert rows["path"].tolist() == evaluated["path"][:80].tolist()
        assert rows["pred"].tolist() == evaluated["pred"][:80].tolist(), name
        shown = [c for c in rows if c.startswith("prob_")]  # temperature-scaled where one was estimated
        temperature = json.loads((stain_run / "calibration.json").read_text())["temperature"]
        expected = evaluated[probs][:80].to_numpy()
        expected = scale_temperature(expected, temperature) if temperature else expected
        assert np.allclose(rows[shown].to_numpy(), expected, atol=1e-5), name
    # a record that says reinhard but holds no reference, or one of another method, is refused
    broken = {**info, "stain_reference": None}
    with pytest.raises(CvmError, match="stain_normalization is 'reinhard' but the record holds no stain reference"):
        RunRecord.from_json(broken, "train.json")
    plain = {**info, "settings": {**info["settings"], "stain_normalization": "none"}}
    with pytest.raises(CvmError, match="holds a stain reference but its settings ask for no stain normalisation"):
        RunRecord.from_json(plain, "train.json")
    other = {**info, "settings": {**info["settings"], "stain_normalization": "macenko"}}
    with pytest.raises(CvmError, match="the stain reference is reinhard's, the settings ask for macenko"):
        RunRecord.from_json(other, "train.json")


def test_robustness_corrupts_the_decoded_images_then_maps_them(stain_run, real_blood_cells):
    """Another lab's slide is corrupted as decoded and then normalised, as that lab's images would be: the
    clean pass is the evaluation's, and the corruption changed the images before the mapping."""
    from cvm_cervix.robustness import robustness_run

    metrics = json.loads((stain_run / "metrics.json").read_text())
    out = robustness_run(
        stain_run, real_blood_cells, stain_run / "r.json", corruptions=["stain"], severities=[0, 5], draws=2, threads=2
    )
    assert out["stain_normalization"] == "reinhard" and out["stain_reference"]["method"] == "reinhard"
    assert out["clean"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert out["corruptions"]["stain"]["5"]["pixels_changed"] > 0.05  # the raw images were shifted


def test_transfer_and_compression_map_the_images_as_evaluate_does(stain_run, real_blood_cells, tmp_path):
    """The transfer's predictions on the same test split are evaluate's; compression's float32 baseline has
    evaluate's accuracy: neither feeds the normalised run images it never saw."""
    from cvm_cervix.compress import compress_run
    from cvm_cervix.transfer import transfer_predict

    evaluated = pd.read_csv(stain_run / "predictions_test.csv")
    classes = json.loads((real_blood_cells / "classes.json").read_text())
    mapping = {c: c for c in classes}
    frame = transfer_predict(stain_run, real_blood_cells, tmp_path / "t.csv", mapping, "same", threads=2)
    assert frame["pred"].tolist() == evaluated["pred"].tolist()
    metrics = json.loads((stain_run / "metrics.json").read_text())
    out = compress_run(stain_run, real_blood_cells, "int8_dynamic", tmp_path / "int8", threads=2)
    assert out["fp32"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    unmapped = _unmapped_probabilities(stain_run, real_blood_cells).argmax(1)
    assert np.mean(np.asarray(classes)[unmapped] == evaluated["label"].to_numpy()) != pytest.approx(
        out["fp32"]["accuracy"]
    )
