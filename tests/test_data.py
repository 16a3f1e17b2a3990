import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import write_image

from cvm_cervix.data import (
    assign_splits,
    build_cache,
    list_dataset,
    load_cache,
    load_image,
    prepare_dataset,
    read_manifest,
    records_frame,
    split_counts,
)
from cvm_cervix.errors import CvmError


def test_imagefolder_manifest_and_stratified_split(imagefolder, tmp_path):
    summary = prepare_dataset("f", {"kind": "imagefolder"}, tmp_path / "out", root=imagefolder)
    frame = read_manifest(tmp_path / "out" / "manifest.csv")
    assert list(frame.columns) == ["path", "class", "label", "sha256", "group", "dataset", "split"]
    assert len(frame) == 30 and summary["classes"] == ["alpha", "beta", "gamma"]
    assert (frame.groupby("class")["label"].first() == pd.Series({"alpha": 0, "beta": 1, "gamma": 2})).all()
    counts = split_counts(frame, summary["classes"])
    assert counts.loc["alpha"].tolist() == [6, 2, 2, 10]
    assert frame["sha256"].str.len().eq(64).all()
    assert (tmp_path / "out" / "classes.json").read_text().count("alpha") == 1


def test_split_is_seeded(imagefolder):
    frame = records_frame(list_dataset("imagefolder", imagefolder), "f")
    a = assign_splits(frame, seed=1)["split"].tolist()
    assert a == assign_splits(frame, seed=1)["split"].tolist()
    assert a != assign_splits(frame, seed=2)["split"].tolist()


def test_duplicates_share_a_split(imagefolder):
    for i in range(4):  # four copies of one image, one of them under another class
        shutil.copy(
            imagefolder / "alpha" / "alpha_0.png", imagefolder / ("beta" if i == 3 else "alpha") / f"copy{i}.png"
        )
    frame = records_frame(list_dataset("imagefolder", imagefolder), "f")
    for seed in range(5):
        split = assign_splits(frame, seed=seed)
        copies = split[split["sha256"] == split.loc[split["path"].str.endswith("alpha_0.png"), "sha256"].iloc[0]]
        assert len(copies) == 5 and copies["split"].nunique() == 1


def test_grouped_split_keeps_groups_together(imagefolder):
    frame = records_frame(list_dataset("imagefolder", imagefolder), "f")
    frame["group"] = [f"slide{i // 3}" for i in range(len(frame))]
    split = assign_splits(frame, seed=0, method="grouped")
    assert (split.groupby("group")["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "val", "test"}


def test_class_too_small_to_split(imagefolder):
    for p in sorted((imagefolder / "gamma").iterdir())[2:]:
        p.unlink()
    frame = records_frame(list_dataset("imagefolder", imagefolder), "f")
    with pytest.raises(CvmError, match=r"class 'gamma' of dataset 'f' has too few images \(2\)"):
        assign_splits(frame, dataset="f")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", r"empty \(zero-byte\) file"),
        (b"this is not a png", "cannot be read as an image"),
    ],
)
def test_unreadable_image_names_the_file(imagefolder, content, words):
    bad = imagefolder / "beta" / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(CvmError, match=words) as err:
        records_frame(list_dataset("imagefolder", imagefolder), "f")
    assert str(bad) in str(err.value)


def test_truncated_image_is_an_error(imagefolder):
    good = write_image(imagefolder / "beta" / "big.jpg", seed=9, size=(64, 64))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(CvmError, match="big.jpg: cannot be read as an image"):
        records_frame(list_dataset("imagefolder", imagefolder), "f")


def test_hidden_and_foreign_files_are_left_out_and_reported(imagefolder):
    (imagefolder / "alpha" / ".DS_Store.jpg").write_bytes(b"\0\0junk")
    (imagefolder / "alpha" / "notes.txt").write_text("hello")
    listing = list_dataset("imagefolder", imagefolder)
    assert len(listing.records) == 30
    reasons = dict(listing.skipped)
    assert "hidden file" in reasons[str(imagefolder / "alpha" / ".DS_Store.jpg")]
    assert "not an image extension" in reasons[str(imagefolder / "alpha" / "notes.txt")]


def test_empty_class_and_missing_root(imagefolder, tmp_path):
    (imagefolder / "delta").mkdir()
    with pytest.raises(CvmError, match="class folder .*delta has no images"):
        list_dataset("imagefolder", imagefolder)
    with pytest.raises(CvmError, match="does not exist"):
        list_dataset("imagefolder", tmp_path / "nowhere")


def test_cache_decodes_once_in_manifest_order(imagefolder, tmp_path):
    frame = records_frame(list_dataset("imagefolder", imagefolder), "f")
    paths = frame["path"].tolist()
    array = build_cache(paths, 16, tmp_path / "cache_16.npy", threads=2)
    assert array.shape == (30, 3, 16, 16) and array.dtype == np.uint8
    loaded = load_cache(tmp_path / "cache_16.npy", expected_rows=30)
    np.testing.assert_array_equal(loaded[7], load_image(paths[7], 16))
    with pytest.raises(CvmError, match="holds uint8 30x3x16x16, not the manifest.s uint8 31x3x16x16"):
        load_cache(tmp_path / "cache_16.npy", expected_rows=31)
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_split_counts_follow_the_fractions_like_the_papers_table1():
    n = 806  # ASC-H in the paper's Table 1: 484 / 161 / 161
    frame = pd.DataFrame(
        {
            "path": [f"p{i}" for i in range(n)],
            "class": "ASC-H",
            "label": 0,
            "sha256": [f"{i:064x}" for i in range(n)],
            "group": [str(i) for i in range(n)],
            "dataset": "d",
        }
    )
    split = assign_splits(frame, seed=3)
    assert split["split"].value_counts().to_dict() == {"train": 484, "val": 161, "test": 161}


@pytest.mark.parametrize("table", ["combined", "herlev", "pbc"])
def test_split_quotas_give_every_count_of_the_papers_tables(table):
    """Tables 1, 4 and 5, every class: validation round(0.2 n), test floor(0.2 n), train the rest."""
    from cvm_cervix.report import paper_results

    times = 4 if table in paper_results()["split_notes"] else 1  # Herlev's training split is counted after ×4
    rows, label = [], 0
    expected = {}
    for cls, (train, val, test) in paper_results()["splits"][table].items():
        n = train // times + val + test
        rows += [
            {
                "path": f"{cls}{i}",
                "class": cls,
                "label": label,
                "sha256": f"{label:08x}{i:056x}",
                "group": f"{cls}{i}",
                "dataset": table,
            }
            for i in range(n)
        ]
        expected[cls] = {"train": train // times, "val": val, "test": test}
        label += 1
    split = assign_splits(pd.DataFrame(rows), seed=0)
    counts = pd.crosstab(split["class"], split["split"]).to_dict("index")
    assert counts == expected
    total = sum(sum(v.values()) for v in expected.values())
    assert table != "combined" or (sum(v["train"] for v in expected.values()), total) == (5308, 8838)


def test_class_limits_draw_a_seeded_subset_and_refuse_too_many(imagefolder, tmp_path):
    from cvm_cervix.data import prepare_dataset
    from cvm_cervix.errors import CvmError

    spec = {"kind": "imagefolder", "class_limits": {"alpha": 6}, "max_per_class": 8, "split_seed": 1}
    summary = prepare_dataset("f", spec, tmp_path / "a", root=imagefolder, threads=1)
    counts = {c: sum(v.values()) for c, v in summary["counts"].items()}
    assert counts == {"alpha": 6, "beta": 8, "gamma": 8}
    assert summary["class_limits"]["alpha"] == {"asked": 6, "found": 10, "kept": 6}
    again = prepare_dataset("f", spec, tmp_path / "b", root=imagefolder, threads=1)
    assert again["counts"] == summary["counts"]
    paths = lambda d: set(pd.read_csv(tmp_path / d / "manifest.csv")["path"])  # noqa: E731
    prepare_dataset("f", {**spec, "split_seed": 2}, tmp_path / "c", root=imagefolder, threads=1)
    assert paths("a") == paths("b") and paths("a") != paths("c")  # drawn with the seed
    # another split of the same images (an experiment's split_seeds): the dataset's draw, split anew
    resplit = prepare_dataset(
        "f", {**spec, "split_seed": 5, "sample_seed": 1, "split_of": "f"}, tmp_path / "r", root=imagefolder, threads=1
    )
    splits = lambda d: pd.read_csv(tmp_path / d / "manifest.csv").set_index("path")["split"]  # noqa: E731
    assert paths("r") == paths("a") and not splits("r").sort_index().equals(splits("a").sort_index())
    assert resplit["counts"] == summary["counts"]  # stratified: the same counts per class and split
    assert (resplit["split_seed"], resplit["split_of"]) == (5, "f")
    with pytest.raises(
        CvmError, match="class_limits.beta': asks for 11 images but class 'beta' has 10; .*short_classes: take_all"
    ):
        prepare_dataset("f", {"kind": "imagefolder", "class_limits": {"beta": 11}}, tmp_path / "d", root=imagefolder)
    # take_all: a class short of its limit is taken whole, and the record says by how much
    short = prepare_dataset(
        "f",
        {"kind": "imagefolder", "class_limits": {"beta": 11, "alpha": 4}, "short_classes": "take_all"},
        tmp_path / "s",
        root=imagefolder,
        threads=1,
    )
    assert short["class_limits"] == {
        "alpha": {"asked": 4, "found": 10, "kept": 4},
        "beta": {"asked": 11, "found": 10, "kept": 10},
    }
    assert {c: sum(v.values()) for c, v in short["counts"].items()} == {"alpha": 4, "beta": 10, "gamma": 10}
    with pytest.raises(CvmError, match="class 'delta' is not in the dataset"):
        prepare_dataset("f", {"kind": "imagefolder", "class_limits": {"delta": 1}}, tmp_path / "e", root=imagefolder)
    assert not (tmp_path / "d" / "manifest.csv").exists()


def test_a_dataset_of_one_class_is_refused(tmp_path):
    from conftest import write_image

    from cvm_cervix.data import prepare_dataset
    from cvm_cervix.errors import CvmError

    for i in range(6):
        write_image(tmp_path / "only" / "NILM" / f"{i}.png", seed=i)
    with pytest.raises(
        CvmError, match=r"dataset 'one' \(.*only\) has 1 class \('NILM'\); a classifier needs at least two"
    ):
        prepare_dataset("one", {"kind": "imagefolder"}, tmp_path / "out", root=tmp_path / "only", threads=1)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_class_names_pandas_would_misread_round_trip_exactly(tmp_path):
    """Folders named 0, 1, NA and None stay those names in every CSV the workflow reads back."""
    from conftest import write_image

    from cvm_cervix._io import read_table
    from cvm_cervix.data import prepare_dataset, read_manifest, split_counts
    from cvm_cervix.evaluate import predictions_frame

    names = ["0", "1", "NA", "None"]
    for c, name in enumerate(names):
        for i in range(5):
            write_image(tmp_path / "root" / name / f"{i}.png", seed=10 * c + i)
    prepare_dataset("odd", {"kind": "imagefolder"}, tmp_path / "out", root=tmp_path / "root", threads=1)
    manifest = read_manifest(tmp_path / "out" / "manifest.csv")
    assert sorted(set(manifest["class"])) == sorted(names) and manifest["class"].map(type).eq(str).all()
    assert split_counts(manifest, names)["total"].tolist() == [5, 5, 5, 5]  # the report's table: no zeros
    frame = predictions_frame(manifest["path"], manifest["label"].to_numpy(), np.eye(4)[manifest["label"]], names)
    frame.to_csv(tmp_path / "p.csv", index=False)
    back = read_table(tmp_path / "p.csv")
    assert back["label"].tolist() == frame["label"].tolist() and back["pred"].tolist() == frame["pred"].tolist()


def test_cells_that_start_a_formula_are_neutralised_and_read_back_exactly(tmp_path):
    from cvm_cervix._io import read_table, spreadsheet_safe, write_csv

    names = ["=HYPERLINK(1)", "+1", "-x", "@SUM", "NILM", "'quoted"]
    frame = pd.DataFrame({"class": names, "n": [1, -2, 3, 4, 5, 6]})
    safe = spreadsheet_safe(frame)
    assert safe["class"].tolist() == ["'=HYPERLINK(1)", "'+1", "'-x", "'@SUM", "NILM", "''quoted"]
    assert safe["n"].tolist() == [1, -2, 3, 4, 5, 6]  # numbers stay numbers (a negative one is no formula)
    write_csv(tmp_path / "t.csv", frame)  # every CSV the workflow writes is safe to open in a spreadsheet
    assert (tmp_path / "t.csv").read_text().splitlines()[1] == "'=HYPERLINK(1),1"
    back = read_table(tmp_path / "t.csv", text=("class",))
    assert back["class"].tolist() == names and back["n"].tolist() == [1, -2, 3, 4, 5, 6]  # and read back exactly


def test_exif_orientation_is_applied_on_decoding_and_noted(tmp_path):
    from PIL import Image

    from cvm_cervix.data import build_cache, decode_rgb

    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[0, :5] = 255  # a bright bar at the top left, as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    image.save(tmp_path / "turned.jpg", exif=exif, quality=100)
    decoded, note = decode_rgb(tmp_path / "turned.jpg")
    assert decoded.shape == (20, 10, 3) and note == "EXIF orientation 6 applied"
    assert decoded[:5, -1].mean() > 200 and decoded[-5:, 0].mean() < 50  # the bar is now at the top right
    cache = build_cache([str(tmp_path / "turned.jpg")], 20, tmp_path / "c.npy", threads=1)
    assert cache[0, :, :5, -1].mean() > 200  # the cache (and predict, which decodes the same way) sees it turned
