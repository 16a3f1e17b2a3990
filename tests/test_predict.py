"""`cvm-cervix predict` as a lab runs it: calibrated referral, operating points, any number of cells."""

import json

import numpy as np
import pandas as pd
import pytest

from cvm_cervix.cli import main as cli
from cvm_cervix.data import read_manifest
from cvm_cervix.errors import CvmError

ABNORMAL = ["ig", "erythroblast"]  # immature granulocytes, nucleated red cells: what a smear review flags


@pytest.fixture(scope="module")
def blood_run(real_blood_cells, tmp_path_factory):
    """A small network trained on the real blood cells and evaluated as the workflow does (calibration.json)."""
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    results = tmp_path_factory.mktemp("results")  # laid out as the workflow lays it out: export finds the data
    data = results / "data" / real_blood_cells.name
    data.parent.mkdir()
    data.symlink_to(real_blood_cells)
    run = results / "runs" / data.name / "shufflenet_v2_x0_5" / "none" / "seed0"
    train_run("shufflenet_v2_x0_5", data, run, img_size=32, epochs=4, batch_size=32, lr=2e-3, threads=2, progress=False)
    evaluate_run(run, data, threads=2, coverages=[0.9], abnormal=ABNORMAL)
    return run


def _test_split(data):
    manifest = read_manifest(data / "manifest.csv")
    return manifest[manifest["split"] == "test"]


def test_predict_refers_the_cells_the_report_refers_on_real_blood_cells(blood_run, real_blood_cells, tmp_path, capsys):
    """On the run's own test images, --coverage 0.9 gives the very sets of the report's referral (same cells
    referred, same coverage), and that coverage is inside the Wilson interval around it, with 90% no lower
    than what 95% of calibration sets of this size reach."""
    from cvm_cervix.diagnostics import class_codes, probabilities, validation_parts
    from cvm_cervix.referral import referral

    calibration = json.loads((blood_run / "calibration.json").read_text())
    assert calibration["calibration_images"] > 100 and calibration["fitted_on"] == "validation"
    assert calibration["calibration_held_out"] and calibration["images"] > 100  # the other part chose the epoch
    test = _test_split(real_blood_cells)
    out = tmp_path / "p.csv"
    assert cli(["predict", *test["path"], "--run", str(blood_run), "--coverage", "0.9", "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    rows = pd.read_csv(out, keep_default_na=False)
    assert list(rows["path"]) == list(test["path"]) and rows["set"].str.len().gt(0).any()
    covered = [label in row.split("|") for label, row in zip(test["class"], rows["set"], strict=True)]
    # the report's referral, from the evaluate step's own predictions
    classes = json.loads((real_blood_cells / "classes.json").read_text())
    _, val, _ = validation_parts(pd.read_csv(blood_run / "predictions_val.csv"))  # the calibration part
    tst = pd.read_csv(blood_run / "predictions_test.csv")
    report = referral(
        class_codes(val["label"], classes), probabilities(val)[0], class_codes(tst["label"], classes),
        probabilities(tst)[0], [0.9],
    )["rows"][0]  # fmt: skip
    assert report["method"] == "marginal"
    assert int(rows["refer"].sum()) == report["referred_images"] and sum(covered) == report["covered_images"]
    lo, hi = report["coverage_ci"]
    assert lo <= np.mean(covered) <= hi and report["coverage_lower_95"] < 0.9
    assert f"referred at coverage 0.9: {int(rows['refer'].sum())}" in summary


def test_an_operating_point_and_the_calibrated_probabilities(blood_run, real_blood_cells, tmp_path):
    calibration = json.loads((blood_run / "calibration.json").read_text())
    (point,) = [p for p in calibration["operating_points"] if p["name"] == "specificity0.95"]
    files = list(_test_split(real_blood_cells)["path"][:40])
    out = tmp_path / "p.csv"
    assert (
        cli(["predict", *files, "--run", str(blood_run), "--operating-point", "specificity0.95", "-o", str(out)]) == 0
    )
    rows = pd.read_csv(out)
    prefix = "prob_T_" if calibration["temperature"] else "prob_"
    probs = rows[[c for c in rows.columns if c.startswith(prefix)]].to_numpy()
    abnormal = rows[[f"{prefix}{c}" for c in calibration["abnormal_classes"]]].sum(1)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and rows["abnormal_at_specificity0.95"].dtype == bool
    if not calibration["temperature"]:  # raw probabilities: the decision is their abnormal sum at the threshold
        assert (rows["abnormal_at_specificity0.95"] == (abnormal >= point["threshold"])).all()
    assert cli(["predict", files[0], "--run", str(blood_run), "--coverage", "0.5"]) == 1
    assert cli(["predict", files[0], "--run", str(blood_run), "--operating-point", "nope"]) == 1


def test_an_exported_folder_gives_the_same_sets(blood_run, real_blood_cells, tmp_path):
    from cvm_cervix.export import export_run

    folder = export_run(blood_run, tmp_path / "shared")
    config = json.loads((folder / "config.json").read_text())
    assert config["cvm_cervix"]["calibration_sha256"] and (folder / "calibration.json").is_file()
    assert "## Calibration" in (folder / "README.md").read_text()
    files = list(_test_split(real_blood_cells)["path"][:60])
    outs = {}
    for name, where in (("run", blood_run), ("export", folder)):
        outs[name] = tmp_path / f"{name}.csv"
        assert cli(["predict", *files, "--run", str(where), "--coverage", "0.9", "-o", str(outs[name])]) == 0
    assert pd.read_csv(outs["run"]).equals(pd.read_csv(outs["export"]))
    (folder / "calibration.json").write_text(
        json.dumps({**json.loads((folder / "calibration.json").read_text()), "temperature": 9})
    )
    with pytest.raises(CvmError, match="is not the calibration .*config.json was exported with"):
        from cvm_cervix.predict import read_calibration

        read_calibration(folder)


def test_test_time_flips_give_the_reports_flip_predictor(blood_run, real_blood_cells, tmp_path):
    """--tta: the mean over the four flip4x views, as the evaluate step kept it for the report, and the sets of
    its own calibration (calibration.json's tta part)."""
    from cvm_cervix.predictors import _referred, tta_frame

    test = _test_split(real_blood_cells)
    out = tmp_path / "p.csv"
    args = ["predict", *test["path"], "--run", str(blood_run), "--tta", "--coverage", "0.9", "-o", str(out)]
    assert cli(args) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    kept = pd.read_csv(blood_run / "predictions_test.csv")
    flips = tta_frame(kept)
    calibration = json.loads((blood_run / "calibration.json").read_text())
    prefix = "prob_T_" if calibration["tta"]["temperature"] else "prob_"
    assert prefix == "prob_" or calibration["tta"]["temperature"] != calibration["temperature"]
    assert (rows["pred"] == flips["pred"]).mean() > 0.99  # decoded from the files again: a tie may flip
    referred = _referred(flips, tta_frame(pd.read_csv(blood_run / "predictions_val.csv")), [0.9])["0.9"]
    assert abs(int(rows["refer"].sum()) - int(referred.sum())) <= 2


@pytest.fixture(scope="module")
def second_blood_run(real_blood_cells, blood_run):
    """The same network trained again with another seed, evaluated beside the first."""
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.train import train_run

    run = blood_run.parent / "seed1"
    train_run(
        "shufflenet_v2_x0_5", blood_run.parents[4] / "data" / real_blood_cells.name, run, img_size=32, epochs=4,
        batch_size=32, lr=2e-3, seed=1, threads=2, progress=False,
    )  # fmt: skip
    evaluate_run(
        run, blood_run.parents[4] / "data" / real_blood_cells.name, threads=2, coverages=[0.9], abnormal=ABNORMAL
    )
    return run


def test_an_ensemble_of_runs_averages_them_and_refers_as_the_report_does(
    blood_run, second_blood_run, real_blood_cells, tmp_path, capsys
):
    import torch

    from cvm_cervix.compress import Predictor
    from cvm_cervix.predict import Combined
    from cvm_cervix.predictors import ensemble
    from cvm_cervix.run import Images
    from cvm_cervix.step import flip_views

    test = _test_split(real_blood_cells)
    files = list(test["path"])
    # the ensemble's probabilities are the mean of its members' (before any temperature: its own follows)
    images = torch.from_numpy(Images.open(real_blood_cells, 32).split("test")[0][:64])
    a, b = Predictor(blood_run, "fp32", "cpu"), Predictor(second_blood_run, "fp32", "cpu")
    both, _ = Combined([a, b])(images)
    assert np.allclose(both, (a(images)[0] + b(images)[0]) / 2, atol=1e-6)
    flipped, _ = Combined([a], tta=True)(images)
    assert np.allclose(flipped, np.mean([a(v)[0] for v in flip_views(images)], axis=0), atol=1e-6)
    # --coverage: the ensemble calibrated on its members' validation predictions, as the statistics job does
    out = tmp_path / "sets.csv"
    args = ["predict", *files, "--run", str(blood_run), "--run", str(second_blood_run), "--coverage", "0.9"]
    assert cli([*args, "-o", str(out)]) == 0
    assert "ensemble of 2 runs" in capsys.readouterr().out
    rows = pd.read_csv(out, keep_default_na=False)
    found = ensemble(
        [pd.read_csv(r / "predictions_test.csv") for r in (blood_run, second_blood_run)],
        [pd.read_csv(r / "predictions_val.csv") for r in (blood_run, second_blood_run)],
        ABNORMAL, [0.9], n_boot=50,
    )  # fmt: skip
    assert abs(int(rows["refer"].sum()) - found["ensemble"]["referral"][0]["referred_images"]) <= 2
    # an exported member has no validation predictions to calibrate the ensemble on
    from cvm_cervix.export import export_run

    exported = export_run(second_blood_run, tmp_path / "exported")
    capsys.readouterr()
    assert cli([*args[:-2], "--run", str(exported), "--coverage", "0.9", "-o", str(tmp_path / "x.csv")]) != 0
    assert "an ensemble's referral is calibrated on its members' validation predictions" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_predict_streams_any_number_of_cells_in_bounded_batches(blood_run, real_blood_cells, monkeypatch):
    """4,000 cells are decoded at most a batch ahead of the one being classified: what is held at once does
    not grow with the number of images (500 or 4,000)."""
    import cvm_cervix.data as data
    from cvm_cervix.compress import Predictor
    from cvm_cervix.predict import predict_files

    file = _test_split(real_blood_cells)["path"].iloc[0]
    predictor = Predictor(blood_run, "fp32", "cpu")
    real_load, real_call = data.load_image, type(predictor).__call__
    state = {"decoded": 0, "classified": 0, "ahead": 0, "batch": 0}

    def load(path, size):
        state["decoded"] += 1
        state["ahead"] = max(state["ahead"], state["decoded"] - state["classified"])
        return real_load(path, size)

    def call(self, images, batch_size=64):
        state["classified"] += len(images)
        state["batch"] = max(state["batch"], len(images))
        return real_call(self, images, batch_size)

    monkeypatch.setattr(data, "load_image", load)
    monkeypatch.setattr(type(predictor), "__call__", call)
    peaks = {}
    for n in (500, 4000):
        state.update(decoded=0, classified=0, ahead=0, batch=0)
        rows = list(predict_files(predictor, [file] * n, batch_size=50, workers=2, progress=False))
        assert rows[-1]["summary"]["images"] == n and len(rows) == n + 1
        peaks[n] = state["ahead"], state["batch"]
    # never more than the batch being classified and the one decoding beside it, for 500 as for 4,000
    assert all(ahead <= 2 * 50 and batch == 50 for ahead, batch in peaks.values())


def test_an_unreadable_image_is_one_line_or_skipped_and_listed(blood_run, real_blood_cells, tmp_path, capsys):
    good = _test_split(real_blood_cells)["path"].iloc[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    assert cli(["predict", good, str(bad), "--run", str(blood_run), "-o", str(tmp_path / "a.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png cannot be read as an image" in err[0] and "--skip-unreadable" in err[0]
    assert not (tmp_path / "a.csv").exists()  # nothing half-written under the name asked for
    out = tmp_path / "b.csv"
    assert cli(["predict", good, str(bad), "--run", str(blood_run), "--skip-unreadable", "-o", str(out)]) == 0
    assert len(pd.read_csv(out)) == 1 and "1 unreadable, left out" in capsys.readouterr().out


def test_the_review_page_puts_referred_cells_first_and_keeps_its_limit(blood_run, real_blood_cells, tmp_path):
    files = list(_test_split(real_blood_cells)["path"][:120])
    page = tmp_path / "review.html"
    args = ["--run", str(blood_run), "--coverage", "0.9", "--review", str(page), "--review-max", "30"]
    assert cli(["predict", *files, *args, "-o", str(tmp_path / "p.csv")]) == 0
    rows = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    html = page.read_text()
    assert html.count("<tr data-pred=") == 30 and html.count("data:image/png;base64,") == 30
    assert f"<b>{len(rows)}</b> cells classified" in html and "<script src" not in html
    # the most urgent first: every referred cell before any decided one (as many as fit)
    shown = html.count('class="refer"')
    assert shown == min(30, int(rows["refer"].sum()))


def test_the_review_page_renders_in_a_browser_with_hostile_names_inert(browser, tmp_path):
    """Every thumbnail renders, the filter works, no console error, and class names written like HTML stay text."""
    from conftest import artifact_dir, open_page

    from cvm_cervix.review import Review, write_review

    classes = ["<img src=x onerror=alert(1)>", "normal"]
    review = Review(limit=10)
    rng = np.random.default_rng(0)
    for i in range(25):
        row = {
            "path": f"cell{i}.png",
            "pred": classes[i % 2],
            "confidence": float(rng.uniform(0.3, 1)),
            "refer": i % 3 == 0,
        }
        row.update({f"prob_{c}": 0.5 for c in classes})
        review.offer(row, rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    summary = {"images": 25, "per_class": {c: 12 for c in classes}, "referred": 9, "coverage": 0.9, "unreadable": []}
    page = tmp_path / "review.html"
    write_review(page, review, summary, classes, "runs/x", "fp32")
    logs = open_page(browser, page, artifact_dir(tmp_path) / "review.png")
    assert [e for e in logs if e["level"] == "SEVERE"] == [] and browser.execute_script("return window.__alerts") == []
    loaded = browser.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert len(loaded) == 10 and all(loaded)
    assert browser.execute_script("return document.querySelectorAll('#cells img[src=x]').length") == 0
    browser.execute_script(
        "const s = document.getElementById('filter'); s.value = 'normal'; s.dispatchEvent(new Event('change'))"
    )
    visible = browser.execute_script(
        "return Array.from(document.querySelectorAll('#cells tr[data-pred]')).filter(r => r.style.display !== 'none')"
        ".map(r => r.dataset.pred)"
    )
    assert visible and set(visible) == {"normal"}


def test_every_option_of_predict_and_export_says_what_it_does_and_its_default():
    import argparse

    from cvm_cervix.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("predict", "export"):
        for action in subparsers.choices[name]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            has_default = action.default not in (None, False) or action.option_strings and not action.required
            if action.option_strings and has_default and not isinstance(action, argparse._StoreTrueAction):
                assert "default" in action.help, (name, action.dest)
