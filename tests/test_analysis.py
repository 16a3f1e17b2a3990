import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score

from cvm_cervix.analysis import analyse_run, grad_cam, top_confusions, tsne_3d
from cvm_cervix.errors import CvmError
from cvm_cervix.models import create_model
from cvm_cervix.stats import accuracy_f1_intervals, clinical_view, experiment_stats, macro_f1_resampled, mcnemar_exact


def test_mcnemar_exact_against_the_binomial_table():
    # 1 image only A gets right, 6 only B: p = 2 * P(X <= 1 | n=7, 1/2) = 2 * 8 / 128
    a = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1], bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    result = mcnemar_exact(a, b)
    assert (result["only_a"], result["only_b"]) == (1, 6)
    assert result["p_value"] == pytest.approx(0.125)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    assert mcnemar_exact([1] * 10 + [0] * 0, [0] * 10)["p_value"] == pytest.approx(2 / 1024)


def test_difference_of_two_proportions_is_newcombes_interval_and_never_collapses():
    """Newcombe (1998), Table II, example (a): 56/70 - 48/80 = 0.2000, method 10: 0.0524 to 0.3339."""
    from cvm_cervix.intervals import wilson
    from cvm_cervix.stats import proportion_difference

    gap = proportion_difference(56, 70, 48, 80)
    assert gap["difference"] == pytest.approx(0.2)
    assert gap["interval"] == pytest.approx([0.0524, 0.3339], abs=5e-5)
    assert (gap["correct"], gap["n"], gap["base_correct"], gap["base_n"]) == (56, 70, 48, 80)
    # both at 100%: the Wald interval would be [0, 0]; this one keeps a width, inside [-1, 1]
    lo, hi = proportion_difference(10, 10, 10, 10)["interval"]
    assert -1 < lo < 0 < hi < 1
    assert wilson(0, 20)[0] == 0 and wilson(0, 20)[1] > 0.1  # Wilson at 0 of 20: [0, 0.161]
    with pytest.raises(CvmError, match="needs images on both sides"):
        proportion_difference(0, 0, 3, 4)


def _arm(cells, right_per_seed):
    import pandas as pd

    return [pd.DataFrame({"path": cells, "label": "a", "pred": np.where(r, "a", "b")}) for r in right_per_seed]


def test_the_baseline_gap_resamples_source_images_and_seeds_and_pairs_the_common_cells():
    from cvm_cervix.stats import baseline_gap

    groups = {f"c{i}": f"img{i // 10}" for i in range(200)}  # ten cells per source image
    ours, theirs = [f"c{i}" for i in range(100)], [f"c{i}" for i in range(50, 150)]
    # each source image all right or all wrong: the cells of one image are one observation, not ten
    right = np.repeat(np.arange(20) % 4 != 0, 10)  # image k right unless k % 4 == 0
    a, b = right[:100], right[50:150]
    out = baseline_gap(_arm(ours, [a, a]), _arm(theirs, [b, b]), groups, n_boot=2000)
    assert out["gap"] == pytest.approx(a.mean() - b.mean())  # 0.7 - 0.8
    assert out["source_images"] == [10, 10] and out["seeds"] == [2, 2] and out["seed_spread_included"]
    # clustered by image, the spread is that of 10 images per arm, wider than 100 independent cells give
    lo, hi = out["gap_ci"]
    independent = np.hypot(np.sqrt(0.7 * 0.3 / 100), np.sqrt(0.8 * 0.2 / 100)) * 1.96
    assert hi - lo > 2 * independent * 1.8
    # the 50 common cells (c50..c99) are right or wrong alike in both arms: a paired gap of 0 with no
    # cell right in one arm only, bounded by Wilson's upper bound on 0 of 50 rather than [0, 0]
    common = out["common"]
    assert common["n"] == 50 and common["gap"] == 0 and common["only_ours"] == common["only_baseline"] == 0
    assert common["gap_ci"] == pytest.approx([-0.0714, 0.0714], abs=1e-4) and "Wilson" in common["gap_method"]
    # on common cells where the grouped training errs on 5 cells the random one gets right: -5 of 50
    worse = b[:50].copy()
    worse[[1, 12, 23, 34, 45]] = ~worse[[1, 12, 23, 34, 45]] & True
    a2 = np.r_[a[:50], worse]
    out = baseline_gap(_arm(ours, [a2]), _arm(theirs, [b]), groups, n_boot=2000)
    assert out["seed_spread_included"] is False
    c = out["common"]
    assert (c["only_ours"], c["only_baseline"]) == (sum(worse & ~b[:50]), sum(~worse & b[:50]))
    assert c["gap_ci"][0] < c["gap"] < c["gap_ci"][1]
    # every cell right in both arms: the bootstrap has no spread, Newcombe's interval stands in, named
    ones = np.ones(100, bool)
    out = baseline_gap(_arm(ours, [ones]), _arm(theirs, [ones]), groups)
    assert out["gap_ci"][0] < 0 < out["gap_ci"][1] and out["gap_method"].startswith("Newcombe")
    # a seed tested on other images is an error, not a guess
    with pytest.raises(CvmError, match="the seeds of the experiment were tested on different images"):
        baseline_gap(_arm(ours, [a]) + _arm(theirs, [b]), _arm(theirs, [b]), groups)


def test_accuracy_has_wilsons_interval_and_macro_f1_a_seeded_bootstrap_never_of_zero_width():
    labels = np.array(["a", "b"] * 50)
    preds = labels.copy()
    preds[:30] = np.where(labels[:30] == "a", "b", "a")  # 70% right
    ci = accuracy_f1_intervals(labels, preds, ["a", "b"], n_boot=500, seed=7)
    assert ci == accuracy_f1_intervals(labels, preds, ["a", "b"], n_boot=500, seed=7)
    assert ci["f1_macro"] != accuracy_f1_intervals(labels, preds, ["a", "b"], n_boot=500, seed=8)["f1_macro"]
    assert (ci["correct"], ci["n"]) == (70, 100)
    # Wilson's score interval for 70 of 100 (Agresti and Coull 1998, their formula): 0.6041 to 0.7811
    assert ci["accuracy"] == pytest.approx([0.6041, 0.7811], abs=1e-4)
    assert ci["f1_macro"][0] < 0.7 < ci["f1_macro"][1]
    perfect = accuracy_f1_intervals(labels[:24], labels[:24], ["a", "b"], n_boot=200)
    # 24 of 24: Wilson keeps a width ([86.2%, 100%]); every bootstrap resample's F1 is 1, so no interval
    assert perfect["accuracy"][0] == pytest.approx(0.8620, abs=1e-4) and perfect["accuracy"][1] == 1.0
    assert perfect["f1_macro"] is None


def test_sensitivity_and_specificity_come_with_counts_and_wilson_intervals():
    labels = np.array(["HSIL"] * 56 + ["NILM"] * 32)
    preds = labels.copy()
    clinical = clinical_view(labels, preds, ["HSIL"])
    assert (clinical["tp"], clinical["fn"], clinical["tn"], clinical["fp"]) == (56, 0, 32, 0)
    # 32 of 32: [89.3%, 100%], not [100, 100]
    assert clinical["specificity_ci"][0] == pytest.approx(0.8928, abs=1e-4) and clinical["specificity_ci"][1] == 1


def test_resampled_macro_f1_is_sklearns_on_each_resample():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d"]  # "d" never occurs: 0 in the macro mean, as sklearn's zero_division=0
    labels = rng.choice(["a", "b", "c", "x"], 40)  # "x": a label outside the classes counts for none
    preds = np.where(rng.random(40) < 0.6, labels, rng.choice(["a", "b", "c"], 40))
    idx = rng.integers(0, 40, (30, 40))
    idx[0] = 0  # one resample of a single image
    got = macro_f1_resampled(labels, preds, classes, idx)
    want = [f1_score(labels[i], preds[i], labels=classes, average="macro", zero_division=0) for i in idx]
    assert got.shape == (30,) and np.allclose(got, want, rtol=0, atol=1e-12)
    assert len(set(np.round(got, 9))) > 10  # the resamples differ


def test_clinical_view_counts_abnormal_as_positive():
    labels = ["HSIL", "HSIL", "SCC", "NILM", "NILM", "LSIL"]
    preds = ["SCC", "NILM", "SCC", "NILM", "HSIL", "LSIL"]  # HSIL→SCC still caught as abnormal
    view = clinical_view(labels, preds, ["HSIL", "SCC", "ASC-H"])
    assert (view["tp"], view["fn"], view["tn"], view["fp"]) == (2, 1, 2, 1)
    assert view["sensitivity"] == pytest.approx(2 / 3) and view["specificity"] == pytest.approx(2 / 3)
    assert clinical_view(["a", "b"], ["a", "b"], ["HSIL"]) is None  # no abnormal class present


def test_experiment_stats_compares_with_the_reference(tmp_path):
    paths = [f"img{i}.png" for i in range(8)]
    truth = ["HSIL", "NILM"] * 4

    def write(name, preds):
        pd.DataFrame({"path": paths, "label": truth, "pred": preds}).to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)

    runs = [
        {"model": "cvm_cervix", "recipe": "none", "seed": 0, "predictions": write("ref.csv", truth)},
        {"model": "resnet18", "recipe": "none", "seed": 0, "predictions": write("r18.csv", ["NILM"] * 8)},
    ]
    stats = experiment_stats(runs, "cvm_cervix", ["HSIL"], n_boot=100)
    by_model = {r["model"]: r for r in stats["runs"]}
    assert by_model["cvm_cervix"]["mcnemar"] is None
    assert by_model["resnet18"]["mcnemar"]["only_a"] == 4 and by_model["resnet18"]["mcnemar"]["only_b"] == 0
    assert by_model["resnet18"]["clinical"]["sensitivity"] == 0.0


def test_holm_adjustment_against_a_hand_computed_example():
    from cvm_cervix.stats import holm

    # sorted 0.01, 0.02, 0.04, 0.30 -> 4×0.01, max(.04, 3×.02), max(.06, 2×.04), max(.08, .30)
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_the_experiments_own_contrasts_with_holm_and_a_paired_interval(tmp_path):
    paths = [f"img{i}.png" for i in range(40)]
    truth = ["HSIL", "NILM"] * 20
    wrong = {"HSIL": "NILM", "NILM": "HSIL"}

    def write(name, n_wrong):
        preds = [wrong[t] if i < n_wrong else t for i, t in enumerate(truth)]
        pd.DataFrame({"path": paths, "label": truth, "pred": preds}).to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)

    runs = [
        {"model": "cvm_cervix", "recipe": a, "seed": s, "predictions": write(f"c{a}{s}.csv", n)}
        for a, s, n in (("none", 0, 12), ("flip4x", 0, 2), ("none", 1, 10), ("flip4x", 1, 9))
    ]
    runs.append({"model": "xception", "recipe": "none", "seed": 0, "predictions": write("x.csv", 20)})
    stats = experiment_stats(runs, "cvm_cervix", ["HSIL"], n_boot=500)
    by = {(c["contrast"], c["b"]["model"], c["b"]["seed"]): c for c in stats["contrasts"]}
    assert set(by) == {
        ("flip4x vs none", "cvm_cervix", 0),
        ("flip4x vs none", "cvm_cervix", 1),
        ("vs cvm_cervix", "xception", 0),
    }
    x4 = by[("flip4x vs none", "cvm_cervix", 0)]
    assert (x4["only_a"], x4["only_b"]) == (0, 10)  # the 10 images only flip4x gets right
    assert x4["accuracy_diff"] == pytest.approx(10 / 40)
    lo, hi = x4["accuracy_diff_ci"]
    assert 0 < lo < 0.25 < hi  # paired: every resample keeps flip4x ahead
    p = [c["p_value"] for c in stats["contrasts"]]
    from cvm_cervix.stats import holm

    assert [c["p_holm"] for c in stats["contrasts"]] == pytest.approx(holm(p))
    assert all(c["p_holm"] >= c["p_value"] for c in stats["contrasts"])


def _all_hsil_predictions(folder, name, n_wrong):
    """predictions_test.csv of 20 HSIL images, the first ``n_wrong`` called NILM; returns its path."""
    pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(20)],
            "label": ["HSIL"] * 20,
            "pred": ["NILM" if i < n_wrong else "HSIL" for i in range(20)],
        }
    ).to_csv(folder / name, index=False)
    return str(folder / name)


def test_a_variant_is_compared_with_the_plain_run_of_its_augment(tmp_path):
    write = partial(_all_hsil_predictions, tmp_path)
    runs = [
        {"model": "cvm_cervix", "recipe": a, "seed": 0, "predictions": write(f"{a}.csv", n)}
        for a, n in (("none", 2), ("none+amp", 5), ("flip4x", 1), ("flip4x+amp", 1))
    ]
    stats = experiment_stats(runs, "cvm_cervix", ["HSIL"], n_boot=100)
    pairs = {(c["a"]["recipe"], c["b"]["recipe"]): c["contrast"] for c in stats["contrasts"]}
    assert pairs == {
        ("none", "none+amp"): "amp vs default",
        ("flip4x", "flip4x+amp"): "amp vs default",
        ("none", "flip4x"): "flip4x vs none",
    }
    amp = next(c for c in stats["contrasts"] if c["b"]["recipe"] == "none+amp")
    assert amp["accuracy_diff"] == pytest.approx(-3 / 20) and (amp["only_a"], amp["only_b"]) == (3, 0)


def test_each_start_is_compared_with_random_weights_at_the_same_fraction(tmp_path):
    write = partial(_all_hsil_predictions, tmp_path)
    runs = [
        {
            "model": "cvm_cervix",
            "recipe": a,
            "seed": 0,
            "predictions": write(f"{a}.csv", n),
            "start": start,
            "train_fraction": f,
        }
        for a, n, start, f in (
            ("none", 10, "random weights", 1.0),
            ("none+random_f25", 12, "random weights", 0.25),
            ("none+from_main", 2, "from main/cvm_cervix/none", 1.0),
            ("none+from_main_f25", 4, "from main/cvm_cervix/none", 0.25),
        )
    ]
    stats = experiment_stats(runs, "cvm_cervix", ["HSIL"], n_boot=100)
    pairs = {(c["a"]["recipe"], c["b"]["recipe"]): c["contrast"] for c in stats["contrasts"]}
    assert pairs == {
        ("none", "none+random_f25"): "random_f25 vs default",
        ("none", "none+from_main"): "from_main vs default",  # already start against random at 100%: once
        ("none", "none+from_main_f25"): "from_main_f25 vs default",
        ("none+random_f25", "none+from_main_f25"): "from main/cvm_cervix/none vs random weights, 25% of training",
    }
    at25 = next(c for c in stats["contrasts"] if c["a"]["recipe"] == "none+random_f25")
    assert at25["accuracy_diff"] == pytest.approx(8 / 20) and (at25["only_a"], at25["only_b"]) == (0, 8)


def test_top_confusions_are_ordered_by_count():
    cm = [[5, 2, 0], [7, 3, 1], [0, 2, 9]]
    assert top_confusions(cm, ["a", "b", "c"], 2) == [("b", "a", 7), ("a", "b", 2)]


def test_tsne_of_too_few_images_is_one_clear_line():
    from cvm_cervix.errors import CvmError

    with pytest.raises(CvmError, match="a t-SNE of 2 test images means nothing"):
        tsne_3d(np.zeros((2, 8)))


def test_tsne_3d_shape_and_determinism():
    feats = np.random.default_rng(0).normal(size=(40, 16))
    a, b = tsne_3d(feats, perplexity=10, seed=1), tsne_3d(feats, perplexity=10, seed=1)
    assert a.shape == (40, 3) and np.allclose(a, b)


def test_grad_cam_maps_the_cnn_branch():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, img_size=64)
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    cams = grad_cam(model, images, [0, 2], "layer4")
    assert cams.shape == (2, 64, 64) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    fusion = create_model("cvm_cervix", 3, img_size=64)
    assert grad_cam(fusion, images, [1, 1], "cnn.act4").shape == (2, 64, 64)
    _, resolution = grad_cam(model, images, [0, 2], "layer4", return_resolution=True)
    assert resolution == (2, 2)


def test_attention_rollout_maps_the_transformer_branch():
    from cvm_cervix.analysis import attention_rollout

    torch.manual_seed(0)
    fusion = create_model("cvm_cervix", 3, img_size=64)
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    maps = attention_rollout(fusion, images, "vt")
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    assert all(block.attn.fused_attn for block in fusion.backbone.vt.blocks)  # the fast path is restored
    # one block whose attention is uniform: every patch gets the same share, so the map is flat
    deit = create_model("deit_tiny", 3, img_size=32)
    deit.backbone.blocks = deit.backbone.blocks[:1]
    torch.nn.init.zeros_(deit.backbone.blocks[0].attn.qkv.weight)
    torch.nn.init.zeros_(deit.backbone.blocks[0].attn.qkv.bias)
    flat = attention_rollout(deit, images[:, :, :32, :32])
    assert np.allclose(flat, 1)


def test_grad_cam_of_a_one_pixel_map_stays_flat():
    torch.manual_seed(0)
    model = create_model("cvm_cervix", 3, img_size=32)  # Xception's last map is 1×1 at 32 px
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    cams, resolution = grad_cam(model, images, [0, 1], "cnn.act4", return_resolution=True)
    assert resolution == (1, 1)
    assert np.ptp(cams, axis=(1, 2)).max() < 1e-5  # no rounding noise blown up into structure


@pytest.fixture(scope="module")
def cvm_run(tiny_dataset, tmp_path_factory):
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    out = tmp_path_factory.mktemp("cvm")
    train_run("cvm_cervix", tiny_dataset, out, img_size=32, epochs=1, batch_size=16, threads=2, progress=False)
    evaluate_run(out, tiny_dataset, threads=2)
    return out


def test_analyse_run_writes_tsne_features_and_gallery(cvm_run, tiny_dataset):
    gallery = analyse_run(cvm_run, tiny_dataset, perplexity=5, pairs=2, per_pair=2, threads=2)
    tsne = pd.read_csv(cvm_run / "analysis" / "tsne.csv")
    assert list(tsne.columns) == ["x", "y", "z", "path", "label", "pred"] and len(tsne) == 11
    assert np.load(cvm_run / "analysis" / "features_test.npy").shape == (11, 2240)
    metrics = json.loads((cvm_run / "metrics.json").read_text())
    assert gallery["pairs"] == [list(p) for p in top_confusions(metrics["test"]["confusion"], metrics["classes"], 2)]
    assert gallery["layer"] == "cnn.act4" and gallery["attention"] == "vt"
    assert gallery["panels"] == ["image", "Grad-CAM", "attention rollout"]  # both branches beside the image
    for img in gallery["images"]:
        assert (cvm_run / "analysis" / img["file"]).is_file() and img["true"] != img["pred"]
        assert Image.open(cvm_run / "analysis" / img["file"]).size == (3 * 160, 160)
        assert (img["true"], img["pred"]) in {(p[0], p[1]) for p in gallery["pairs"]}


def test_spread_separates_splits_from_seeds_against_hand_computed_values():
    from cvm_cervix.stats import spread

    # split 0: seeds 0.80, 0.84; split 1: 0.70, 0.72; split 2: 0.90, 0.86
    acc = {(0, 0): 0.80, (0, 1): 0.84, (1, 0): 0.70, (1, 1): 0.72, (2, 0): 0.90, (2, 1): 0.86}
    scores = {("m", "none", seed, split): {"accuracy": a, "f1_macro": a / 2} for (split, seed), a in acc.items()}
    (entry,) = spread(scores)
    assert (entry["splits"], entry["seeds"], entry["runs"]) == (3, [2], 6)
    a = entry["accuracy"]
    assert a["mean"] == pytest.approx(sum(acc.values()) / 6)
    assert a["split_means"] == pytest.approx({"0": 0.82, "1": 0.71, "2": 0.88})
    assert a["sd_split"] == pytest.approx(np.std([0.82, 0.71, 0.88], ddof=1))
    # pooled within-split variance: each split's two seeds give (d/2)^2 * 2 / 1 = d^2 / 2
    pooled = (0.04**2 / 2 + 0.02**2 / 2 + 0.04**2 / 2) / 3
    assert a["sd_seed"] == pytest.approx(np.sqrt(pooled))
    assert a["sd_total"] == pytest.approx(np.std(list(acc.values()), ddof=1))
    assert entry["f1_macro"]["sd_split"] == pytest.approx(a["sd_split"] / 2)
    one_seed = spread({("m", "none", 0, s): {"accuracy": v, "f1_macro": v} for s, v in ((0, 0.8), (1, 0.7))})
    assert one_seed[0]["accuracy"]["sd_seed"] is None and one_seed[0]["accuracy"]["sd_split"] is not None
    one_split = spread({("m", "none", s, 0): {"accuracy": v, "f1_macro": v} for s, v in ((0, 0.8), (1, 0.7))})
    assert one_split[0]["accuracy"]["sd_split"] is None
    assert one_split[0]["accuracy"]["sd_seed"] == pytest.approx(np.std([0.8, 0.7], ddof=1))


def test_corrected_resampled_t_test_against_a_hand_computed_value():
    from scipy.stats import t as student

    from cvm_cervix.stats import corrected_resampled_t

    d = [0.02, 0.05, 0.03, 0.06]  # mean 0.04, sample variance 0.000333...
    out = corrected_resampled_t(d, 0.25)
    var = (1 / 4 + 0.25) * np.var(d, ddof=1)
    assert out["t"] == pytest.approx(0.04 / np.sqrt(var))  # 3.098
    assert out["t"] == pytest.approx(3.0984, abs=1e-4)
    assert out["df"] == 3 and out["p_value"] == pytest.approx(2 * student.sf(out["t"], 3))
    plain = 0.04 / np.sqrt(np.var(d, ddof=1) / 4)
    assert out["t"] < plain  # the correction widens the interval the naive paired t-test would give
    assert corrected_resampled_t([0.0, 0.0], 0.3)["p_value"] == 1.0
    assert corrected_resampled_t([0.1, 0.1], 0.3)["p_value"] == 0.0
    with pytest.raises(ValueError, match="at least two splits"):
        corrected_resampled_t([0.1], 0.3)


def test_contrasts_pair_runs_of_one_split_and_are_tested_over_the_splits(tmp_path):
    write = partial(_all_hsil_predictions, tmp_path)
    runs = []
    for split, (n_ref, n_other) in enumerate(((4, 6), (2, 5), (6, 7))):
        runs += [
            {
                "model": "cvm_cervix",
                "recipe": "none",
                "seed": 0,
                "split_seed": split,
                "test_train_ratio": 0.5,
                "predictions": write(f"ref{split}.csv", n_ref),
            },
            {
                "model": "resnet18",
                "recipe": "none",
                "seed": 0,
                "split_seed": split,
                "test_train_ratio": 0.5,
                "predictions": write(f"r18{split}.csv", n_other),
            },
        ]
    stats = experiment_stats(runs, "cvm_cervix", ["HSIL"], n_boot=100)
    diffs = {c["b"]["split_seed"]: c["accuracy_diff"] for c in stats["contrasts"]}
    assert diffs == pytest.approx({0: -2 / 20, 1: -3 / 20, 2: -1 / 20})  # each split against its own reference
    assert {r["split_seed"] for r in stats["runs"]} == {0, 1, 2}
    (over,) = stats["split_contrasts"]
    assert over["splits"] == 3 and over["split_diffs"] == pytest.approx({"0": -0.1, "1": -0.15, "2": -0.05})
    d = np.array([-0.1, -0.15, -0.05])
    assert over["t"] == pytest.approx(d.mean() / np.sqrt((1 / 3 + 0.5) * d.var(ddof=1)))
    assert over["test_train_ratio"] == 0.5 and over["p_holm"] == pytest.approx(over["p_value"])
    by_model = {e["model"]: e for e in stats["spread"]}
    assert by_model["resnet18"]["accuracy"]["split_means"] == pytest.approx({"0": 0.7, "1": 0.75, "2": 0.65})


def test_a_combined_sets_test_metrics_per_source_and_per_configured_column(tmp_path):
    """Per source dataset (SIPaKMeD, CRIC) and per subgroup column, from the manifest, by hand."""
    paths = [f"img{i}.png" for i in range(8)]
    truth = ["HSIL", "NILM", "HSIL", "NILM", "Dyskeratotic", "Metaplastic", "Dyskeratotic", "Metaplastic"]
    preds = ["HSIL", "NILM", "NILM", "NILM", "Dyskeratotic", "Dyskeratotic", "Metaplastic", "Metaplastic"]
    pd.DataFrame({"path": paths, "label": truth, "pred": preds}).to_csv(tmp_path / "p.csv", index=False)
    classes = sorted(set(truth))
    manifest = pd.DataFrame(
        {
            "path": paths,
            "class": truth,
            "label": [classes.index(c) for c in truth],
            "sha256": [f"{i:064x}" for i in range(8)],
            "group": range(8),
            "dataset": ["cric"] * 4 + ["sipakmed"] * 4,
            "split": "test",
            "stain": ["pap", "pap", "pap", "hema", "pap", "pap", "hema", "hema"],
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    run = {
        "model": "cvm_cervix",
        "recipe": "none",
        "seed": 0,
        "predictions": str(tmp_path / "p.csv"),
        "manifest": str(tmp_path / "manifest.csv"),
    }
    abnormal = ["HSIL", "Dyskeratotic"]
    stats = experiment_stats([run], "cvm_cervix", abnormal, n_boot=200, subgroups=["stain"])
    groups = stats["runs"][0]["subgroups"]
    cric, sipakmed = groups["dataset"]
    assert (cric["value"], cric["n"], cric["accuracy"]) == ("cric", 4, 0.75)
    assert (sipakmed["value"], sipakmed["n"], sipakmed["accuracy"]) == ("sipakmed", 4, 0.5)
    assert cric["sensitivity"] == 0.5 and cric["specificity"] == 1.0  # one HSIL of two called NILM
    assert sipakmed["sensitivity"] == 0.5 and sipakmed["specificity"] == 0.5
    assert cric["accuracy_ci"][0] <= 0.75 <= cric["accuracy_ci"][1]
    # each source's class mix beside its numbers: the two share no class
    assert cric["classes"] == {"HSIL": 2, "NILM": 2} and sipakmed["classes"] == {"Dyskeratotic": 2, "Metaplastic": 2}
    assert cric["abnormal_share"] == 0.5
    assert (cric["clinical"]["tp"], cric["clinical"]["fn"]) == (1, 1) and cric["correct"] == 3
    # macro F1 over CRIC's own two classes here: HSIL 2/3 (one of two found), NILM 4/5 (one false alarm)
    assert cric["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    hema, pap = groups["stain"]
    assert (hema["value"], hema["n"], hema["accuracy"]) == ("hema", 3, 2 / 3)
    assert (pap["value"], pap["n"], pap["accuracy"]) == ("pap", 5, 3 / 5)
    with pytest.raises(CvmError, match="analysis.subgroups names column 'scanner'.*remove it or add the column"):
        experiment_stats([run], "cvm_cervix", abnormal, n_boot=50, subgroups=["scanner"])


def test_one_multiplicity_family_across_experiments_counts_a_shared_contrast_once():
    from cvm_cervix.report.collect import holm_across_experiments
    from cvm_cervix.stats import holm

    a, b, c = ({"model": m, "recipe": "none", "seed": 0, "split_seed": 0} for m in ("x", "y", "z"))
    experiments = [
        {"dataset": "combined", "comparisons": [{"a": a, "b": b, "p_value": 0.01}, {"a": a, "b": c, "p_value": 0.04}]},
        {"dataset": "combined", "comparisons": [{"a": a, "b": b, "p_value": 0.01}]},  # the same test again
        {"dataset": "herlev", "comparisons": [{"a": a, "b": b, "p_value": 0.03}]},  # other runs, other images
    ]
    holm_across_experiments(experiments)
    expected = holm([0.01, 0.04, 0.03])  # three distinct tests, not four
    assert [c["p_holm_all"] for e in experiments for c in e["comparisons"]] == pytest.approx(
        [expected[0], expected[1], expected[0], expected[2]]
    )


def test_friedman_and_nemenyi_as_demsar_defines_them():
    from scipy.stats import friedmanchisquare

    from cvm_cervix.stats import friedman_nemenyi

    # 5 blocks × 3 models: A always best; B and C trade places except a tie in the last block
    table = [[0.9, 0.8, 0.7], [0.92, 0.75, 0.8], [0.88, 0.7, 0.72], [0.91, 0.85, 0.8], [0.95, 0.8, 0.8]]
    out = friedman_nemenyi(table, ["A", "B", "C"])
    # ranks per block: A 1 everywhere; B 2, 3, 3, 2, 2.5; C 3, 2, 2, 3, 2.5
    assert out["mean_ranks"] == pytest.approx({"A": 1.0, "B": 2.5, "C": 2.5})
    assert out["friedman"]["statistic"] == pytest.approx(friedmanchisquare(*np.array(table).T).statistic)
    assert out["friedman"]["p_value"] == pytest.approx(friedmanchisquare(*np.array(table).T).pvalue)
    # Demšar's Table 5: q_0.05 = 2.343 for three models; CD = q √(k(k+1)/6N) = 2.343 √(12/30)
    assert out["q_alpha"] == pytest.approx(2.343, abs=1e-3)
    assert out["critical_difference"] == pytest.approx(2.343 * np.sqrt(12 / 30), abs=1e-3)
    ab = next(p for p in out["nemenyi"] if (p["a"], p["b"]) == ("A", "B"))
    bc = next(p for p in out["nemenyi"] if (p["a"], p["b"]) == ("B", "C"))
    assert ab["rank_difference"] == -1.5 and ab["p_value"] < 0.05 < bc["p_value"] == pytest.approx(1.0)
    # his worked example: four models over 14 data sets, CD = 2.569 √(20/84) = 1.25, and Iman-Davenport's F
    # from chi-square 9.28 is 3.69
    out = friedman_nemenyi(np.random.default_rng(0).random((14, 4)), list("abcd"))
    assert out["critical_difference"] == pytest.approx(1.25, abs=0.01)
    chi2 = out["friedman"]["statistic"]
    assert out["iman_davenport"]["statistic"] == pytest.approx(13 * chi2 / (14 * 3 - chi2))
    assert out["iman_davenport"]["df"] == [3, 39]


def test_nemenyis_p_values_are_scikit_posthocs_ones():
    """The ranking's own few lines give scikit-posthocs' ``posthoc_nemenyi_friedman`` p-values (a test
    dependency only: it would bring matplotlib, seaborn and statsmodels into the workflow's environment)."""
    import scikit_posthocs as sp

    from cvm_cervix.stats import friedman_nemenyi

    for seed, shape in ((0, (14, 4)), (1, (6, 5)), (2, (30, 3))):
        table = np.random.default_rng(seed).random(shape)
        names = [f"m{i}" for i in range(shape[1])]
        theirs = sp.posthoc_nemenyi_friedman(table).to_numpy()
        for pair in friedman_nemenyi(table, names)["nemenyi"]:
            i, j = names.index(pair["a"]), names.index(pair["b"])
            assert pair["p_value"] == pytest.approx(theirs[i, j], abs=1e-9), (seed, pair)


def test_a_ranking_needs_three_models_and_two_complete_splits_or_says_why():
    from cvm_cervix.stats import ranking

    scores = {
        (m, "none", seed, 0): {"accuracy": acc} for m, acc in [("a", 0.9), ("b", 0.8), ("c", 0.7)] for seed in (0,)
    }
    assert "one split alone is too few to rank" in ranking(scores)["too_few"]
    scores |= {(m, "none", 1, 0): {"accuracy": acc} for m, acc in [("a", 0.85), ("b", 0.8), ("c", 0.75)]}
    out = ranking(scores)
    assert out["too_few"] is None and out["blocks"] == 2 and out["result"]["mean_ranks"]["a"] == 1.0
    two = {k: v for k, v in scores.items() if k[0] != "c"}
    assert "a ranking needs three or more" in ranking(two)["too_few"]
