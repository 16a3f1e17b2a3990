"""Each dataset adapter on fixtures written in the dataset's real on-disk layout."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, write_image
from layouts import HERLEV, SIPAKMED, make_herlev, make_pbc, make_sipakmed
from PIL import Image

from cvm_cervix.cli import main as cli
from cvm_cervix.data import COMBINED_CLASSES, list_dataset, prepare_dataset, read_manifest
from cvm_cervix.errors import CvmError


@pytest.mark.parametrize("nested", [True, False])
def test_sipakmed_reads_only_cropped_cells(tmp_path, nested):
    listing = list_dataset("sipakmed", make_sipakmed(tmp_path / "sip", nested))
    assert listing.classes == SIPAKMED
    assert len(listing.records) == 5 * 3 * 2
    assert all("/CROPPED/" in r["path"] and r["path"].endswith(".bmp") for r in listing.records)
    first = next(r for r in listing.records if r["path"].endswith("Dyskeratotic/CROPPED/002_01.bmp"))
    assert first["class"] == "Dyskeratotic" and first["group"] == "Dyskeratotic/002"
    assert not listing.skipped  # .dat outlines are expected companions, not junk


def test_sipakmed_grouped_split_keeps_clusters_together(tmp_path):
    make_sipakmed(tmp_path / "sip", clusters=5, cells=3)
    prepare_dataset("sip", {"kind": "sipakmed", "split": "grouped"}, tmp_path / "out", root=tmp_path / "sip")
    frame = read_manifest(tmp_path / "out" / "manifest.csv")
    assert (frame.groupby("group")["split"].nunique() == 1).all()
    assert frame.groupby("class")["split"].nunique().eq(3).all()


def test_sipakmed_without_cropped_folder(tmp_path):
    (tmp_path / "im_Parabasal").mkdir(parents=True)
    with pytest.raises(CvmError, match="im_Parabasal has no CROPPED folder"):
        list_dataset("sipakmed", tmp_path)
    with pytest.raises(CvmError, match="no im_<Class> folders"):
        list_dataset("sipakmed", tmp_path / "im_Parabasal")


CRIC_ROWS = [  # image_id, file, cell_id, class, x, y (1-based nucleus coordinates)
    (1, "a.png", 10, "Negative for intraepithelial lesion", 60, 50),
    (1, "a.png", 11, "ASC-US", 3, 4),  # near the top-left corner: padded
    (1, "a.png", 12, "HSIL", 150, 120),  # near the bottom-right corner: padded
    (2, "b.png", 20, "LSIL", 80, 70),
    (2, "b.png", 21, "SCC", 40, 90),
    (3, "c.png", 30, "ASC-H", 100, 60),
]


def make_cric_full(root):
    root.mkdir(parents=True)
    for name, seed in (("a.png", 1), ("b.png", 2), ("c.png", 3)):
        write_image(root / "base" / name, seed=seed, size=(120, 160))  # H×W
    with open(root / "classifications.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image_id", "image_filename", "image_doi", "cell_id", "bethesda_system", "nucleus_x", "nucleus_y"]
        )
        for image_id, name, cell, cls, x, y in CRIC_ROWS:
            writer.writerow([image_id, name, "doi", cell, cls, x, y])
    return root


def test_cric_full_images_are_cut_into_centred_crops(tmp_path):
    root = make_cric_full(tmp_path / "cric")
    listing = list_dataset("cric", root, {"crop_size": 100}, tmp_path / "work")
    assert len(listing.records) == 6
    assert listing.classes == ["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"]
    by_cell = {r["path"].rsplit("/", 1)[1]: r for r in listing.records}
    assert by_cell["a__10.png"]["class"] == "NILM" and by_cell["a__10.png"]["group"] == "image1"
    assert by_cell["b__20.png"]["group"] == "image2"
    source = np.asarray(Image.open(root / "base" / "a.png").convert("RGB"))
    for name, (x, y) in {"a__10.png": (60, 50), "a__11.png": (3, 4), "a__12.png": (150, 120)}.items():
        crop = np.asarray(Image.open(by_cell[name]["path"]))
        assert crop.shape == (100, 100, 3)
        np.testing.assert_array_equal(crop[50, 50], source[y - 1, x - 1])  # centred on the 1-based nucleus
    corner = np.asarray(Image.open(by_cell["a__11.png"]["path"]))
    assert (corner[:40, :40] == 0).all()  # padded past the edge


def test_cric_crops_folder_with_groups_from_classifications(tmp_path):
    root = tmp_path / "crops"
    for _, _, cell, cls, _, _ in CRIC_ROWS:
        folder = "Negative for intraepithelial lesion" if cls.startswith("Negative") else cls
        write_image(root / folder / f"{cell}.png", seed=cell)
    listing = list_dataset("cric", root)
    assert {r["class"] for r in listing.records} == {"NILM", "ASC-US", "HSIL", "LSIL", "SCC", "ASC-H"}
    assert all(r["group"].startswith("cell") for r in listing.records)  # no table: each cell alone
    make_cric_full(tmp_path / "table")
    (root / "classifications.csv").write_bytes((tmp_path / "table" / "classifications.csv").read_bytes())
    listing = list_dataset("cric", root, {"layout": "crops"})
    assert {r["path"].rsplit("/", 1)[1]: r["group"] for r in listing.records}["21.png"] == "image2"


def test_cric_full_with_a_missing_image(tmp_path):
    root = make_cric_full(tmp_path / "cric")
    (root / "base" / "b.png").unlink()
    with pytest.raises(CvmError, match="names image 'b.png', which is not under"):
        list_dataset("cric", root, {"layout": "full"}, tmp_path / "work")


def test_cric_cells_are_keyed_by_image_and_cell_and_cut_again_when_the_table_changes(tmp_path):
    root = make_cric_full(tmp_path / "cric")
    table = root / "classifications.csv"
    lines = table.read_text().splitlines()
    # cell 10 of image c.png too: another cell, not image a.png's cell 10
    table.write_text("\n".join(lines + ["3,c.png,doi,10,LSIL,20,20"]) + "\n")
    listing = list_dataset("cric", root, {"layout": "full"}, tmp_path / "work")
    by_name = {Path(r["path"]).name: r for r in listing.records}
    assert by_name["a__10.png"]["class"] == "NILM" and by_name["c__10.png"]["class"] == "LSIL"
    source = np.asarray(Image.open(root / "base" / "c.png").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(by_name["c__10.png"]["path"]))[50, 50], source[19, 19])
    # the table moves that cell: the crop is cut again, never an earlier one reused
    table.write_text("\n".join(lines + ["3,c.png,doi,10,LSIL,90,70"]) + "\n")
    again = {Path(r["path"]).name: r for r in list_dataset("cric", root, {"layout": "full"}, tmp_path / "work").records}
    np.testing.assert_array_equal(np.asarray(Image.open(again["c__10.png"]["path"]))[50, 50], source[69, 89])
    # one cell twice, and one file name in two folders, are refused with the rows and files named
    table.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(
        CvmError, match=r"lines 2 and 8 both describe cell '10' of image 'a.png'; remove the duplicate row"
    ):
        list_dataset("cric", root, {"layout": "full"}, tmp_path / "work")
    table.write_text("\n".join(lines) + "\n")
    write_image(root / "other" / "a.png", seed=9, size=(120, 160))
    with pytest.raises(CvmError, match=r"names image 'a.png', and .* holds 2 files of that name"):
        list_dataset("cric", root, {"layout": "full"}, tmp_path / "work")


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda text: ("\ufeff" + text).encode("utf-8"), None),  # a spreadsheet's byte-order mark: read as it is
        (lambda text: text.replace(",", ";").encode("utf-8"), None),  # semicolons: read as they are
        (lambda text: text.replace("doi", "r\xe9f").encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
        (lambda text: text.replace(",60,50", ",six,50").encode("utf-8"), "nucleus_x 'six' is not a whole pixel"),
        (lambda text: text.replace(",60,50", ",\u00b2,50").encode("utf-8"), "nucleus_x '\u00b2' is not a whole pixel"),
        (
            lambda text: text.replace("cell_id", "cell").encode("utf-8"),
            "lacks columns ['cell_id'] (its header: image_id",
        ),
    ],
)
def test_cric_tables_as_spreadsheets_save_them(tmp_path, damage, words):
    root = make_cric_full(tmp_path / "cric")
    table = root / "classifications.csv"
    table.write_bytes(damage(table.read_text()))
    if words is None:
        assert len(list_dataset("cric", root, {"layout": "full"}, tmp_path / "work").records) == 6
        return
    with pytest.raises(CvmError) as err:
        list_dataset("cric", root, {"layout": "full"}, tmp_path / "work")
    assert words in str(err.value) and str(table) in str(err.value) and "\n" not in str(err.value)


def test_the_manifest_command_never_writes_into_the_dataset(tmp_path, capsys):
    from layouts import make_cric_full as make_cric_release

    root = make_cric_release(tmp_path / "cric", per_class=3)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert cli(["manifest", "--kind", "cric", str(root)]) == 0
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert "18 images, 6 classes" in capsys.readouterr().out
    # a class too small for three splits: the fix it names is not the split it already uses
    assert cli(["manifest", "--kind", "cric", str(make_cric_full(tmp_path / "small"))]) == 1
    err = capsys.readouterr().err
    assert "has too few images (1)" in err and "use split: stratified" not in err


def test_herlev_two_and_seven_classes_without_masks(tmp_path):
    root = make_herlev(tmp_path / "herlev")
    two = list_dataset("herlev", root, {"task": 2})
    assert len(two.records) == 7 * 4  # not 56: masks are not cells
    assert not any(r["path"].lower().endswith("-d.bmp") for r in two.records)
    assert two.classes == ["Normal", "Abnormal"]
    assert sum(r["class"] == "Normal" for r in two.records) == 3 * 4
    seven = list_dataset("herlev", root, {"task": 7})
    assert seven.classes == HERLEV and len(seven.records) == 28


def test_herlev_rejects_foreign_folders(tmp_path):
    write_image(tmp_path / "cats" / "1.png")
    with pytest.raises(CvmError, match="not a Herlev folder: unexpected class folders \\['cats'\\]"):
        list_dataset("herlev", tmp_path)


def test_pbc_leaves_junk_out_and_reports_it(tmp_path):
    root = make_pbc(tmp_path / "pbc")
    listing = list_dataset("pbc", root)
    assert len(listing.records) == 9 and listing.classes == ["basophil", "eosinophil", "neutrophil"]
    assert len(listing.skipped) == 1 and listing.skipped[0][0].endswith(".DS_Store.jpg")
    assert len(list_dataset("pbc", root / "PBC_dataset_normal_DIB").records) == 9  # either folder works


def make_cric_crops(crops: Path) -> Path:
    for cls in ["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"]:
        for i in range(4):
            write_image(crops / cls / f"{i}.png", seed=hash(cls) % 1000 + i)
    return crops


def test_combined_pools_sipakmed_and_cric_in_the_papers_order(tmp_path):
    make_sipakmed(tmp_path / "sip", clusters=2, cells=2)
    crops = make_cric_crops(tmp_path / "cric")
    prepare_dataset("sipakmed", {"kind": "sipakmed"}, tmp_path / "d" / "sipakmed", root=tmp_path / "sip")
    prepare_dataset("cric", {"kind": "cric"}, tmp_path / "d" / "cric", root=crops)
    summary = prepare_dataset(
        "combined",
        {"kind": "combined", "parts": ["sipakmed", "cric"]},
        tmp_path / "d" / "combined",
        parts={"sipakmed": tmp_path / "d" / "sipakmed", "cric": tmp_path / "d" / "cric"},
    )
    assert summary["classes"] == COMBINED_CLASSES
    frame = read_manifest(tmp_path / "d" / "combined" / "manifest.csv")
    assert len(frame) == 5 * 4 + 6 * 4
    assert frame.loc[frame["class"] == "Parabasal", "label"].unique().tolist() == [9]
    assert set(frame["dataset"]) == {"sipakmed", "cric"}
    assert frame["group"].str.startswith(("sipakmed:", "cric:")).all()


def test_manifest_cli_reports_counts_and_writes_csv(tmp_path, capsys):
    root = make_pbc(tmp_path / "pbc", per_class=5)
    out = tmp_path / "m.csv"
    assert cli(["manifest", "--kind", "pbc", str(root), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "15 images, 3 classes" in text and "left out:" in text and ".DS_Store.jpg" in text
    assert "basophil" in text and "exact duplicates: 0 sets" in text
    frame = pd.read_csv(out)
    assert len(frame) == 15 and set(frame["split"]) == {"train", "val", "test"}


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda root: (root / "PBC_dataset_normal_DIB" / "eosinophil" / "EO_0.jpg").write_bytes(b""), "zero-byte"),
        (
            lambda root: (root / "PBC_dataset_normal_DIB" / "eosinophil" / "EO_1.jpg").write_bytes(
                b"\xff\xd8\xff\xe0 cut"
            ),
            "cannot be read as an image",
        ),
    ],
)
def test_manifest_cli_fails_on_bad_images(tmp_path, capsys, damage, words):
    root = make_pbc(tmp_path / "pbc", per_class=5)
    damage(root)
    assert cli(["manifest", "--kind", "pbc", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "eosinophil" in err and err.count("\n") == 1


def test_manifest_cli_missing_root(tmp_path, capsys):
    assert cli(["manifest", "--kind", "sipakmed", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real data folder ../shared/data not present")


@needs_shared
def test_real_cric_crops(tmp_path):
    summary = prepare_dataset("cric", {"kind": "cric"}, tmp_path, root=SHARED_DATA / "cric")
    counts = {c: sum(v.values()) for c, v in summary["counts"].items()}
    assert counts == {"ASC-H": 341, "ASC-US": 126, "SCC": 43, "HSIL": 321, "LSIL": 388, "NILM": 902}
    dup = summary["duplicates"]
    assert dup["duplicate_sets"] == 1 and not dup["label_conflicts"]
    assert sorted(p.rsplit("/", 1)[1] for p in dup["sets"][0]["paths"]) == ["8825.png", "8832.png"]
    frame = read_manifest(tmp_path / "manifest.csv")
    assert frame[frame["sha256"] == dup["sets"][0]["sha256"]]["split"].nunique() == 1


@needs_shared
def test_real_pbc_cross_class_duplicate(tmp_path):
    summary = prepare_dataset("pbc", {"kind": "pbc"}, tmp_path, root=SHARED_DATA / "pbc")
    assert summary["images"] == 1200 and len(summary["classes"]) == 8
    conflicts = summary["duplicates"]["label_conflicts"]
    assert len(conflicts) == 1 and conflicts[0]["classes"] == ["eosinophil", "neutrophil"]
    assert {p.rsplit("/", 1)[1] for p in conflicts[0]["paths"]} == {"EO_225902.jpg", "BNE_191112.jpg"}
    frame = read_manifest(tmp_path / "manifest.csv")
    assert frame[frame["sha256"] == conflicts[0]["sha256"]]["split"].nunique() == 1
    assert json.loads((tmp_path / "classes.json").read_text())[3] == "ig"


def test_a_linked_class_folder_is_listed_and_watched_like_a_real_one(tmp_path):
    from cvm_cervix.data import listing_digest

    elsewhere = tmp_path / "elsewhere" / "beta"
    for i in range(4):
        write_image(tmp_path / "root" / "alpha" / f"{i}.png", seed=i)
        write_image(elsewhere / f"{i}.png", seed=50 + i)
    (tmp_path / "root" / "beta").symlink_to(elsewhere, target_is_directory=True)
    listing = list_dataset("imagefolder", tmp_path / "root")
    assert sorted(listing.classes) == ["alpha", "beta"] and len(listing.records) == 8
    # the manifest names the link the user made, not where it points
    assert all(r["path"].startswith(str(tmp_path / "root")) for r in listing.records)
    before = listing_digest(tmp_path / "root")
    write_image(elsewhere / "new.png", seed=99)  # added to the link's target: the folder changed
    assert listing_digest(tmp_path / "root") != before


def _unreadable_entries(folder):
    """A dangling link, a link loop, a FIFO named like an image and a folder of images inside a class folder."""
    (folder / "gone.png").symlink_to(folder / "never-fetched.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    write_image(folder / "more" / "0.png", seed=7)
    return {
        "gone.png": "a symbolic link to",
        "loop.png": "symbolic link loop",
        "pipe.png": "not a regular file",
        "more": "a folder of images inside a class folder",
    }


def test_entries_that_cannot_be_read_stop_the_listing_unless_skipped(imagefolder, tmp_path, capsys):
    expected = _unreadable_entries(imagefolder / "alpha")
    with pytest.raises(CvmError) as err:
        list_dataset("imagefolder", imagefolder)
    message = str(err.value)
    assert (
        message.startswith(str(imagefolder / "alpha")) and "4 entries of" in message and "unreadable: skip" in message
    )
    assert "never-fetched" in message or "gone.png" in message  # the link is named, with where it points
    assert cli(["manifest", "--kind", "imagefolder", str(imagefolder)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    summary = prepare_dataset(
        "f", {"kind": "imagefolder", "unreadable": "skip"}, tmp_path / "out", root=imagefolder, threads=1
    )
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons.get(name))
    assert sum(summary["counts"]["alpha"].values()) == 10  # the ten real images, nothing else
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {Path(s["path"]).name for s in written["skipped"]} >= set(expected)


def test_a_broken_image_behind_a_link_is_named_by_the_link(imagefolder, tmp_path):
    target = tmp_path / "store" / "x.png"
    target.parent.mkdir()
    target.write_bytes(b"not a png")
    (imagefolder / "beta" / "linked.png").symlink_to(target)
    with pytest.raises(CvmError, match=f"^{imagefolder / 'beta' / 'linked.png'}: cannot be read as an image"):
        prepare_dataset("f", {"kind": "imagefolder"}, tmp_path / "out", root=imagefolder, threads=1)


def test_a_split_file_reproduces_a_split_elsewhere_and_a_mismatch_is_refused_by_name(tmp_path, imagefolder):
    """splits.csv of one results folder gives another (other seed, other dataset name, the images copied
    elsewhere) the same split; missing, extra and changed images are each named."""
    import shutil

    first = tmp_path / "a" / "data" / "folder"
    prepare_dataset("folder", {"kind": "imagefolder", "split_seed": 1}, first, root=imagefolder)
    splits = pd.read_csv(first / "splits.csv")
    assert list(splits.columns) == ["dataset", "path", "sha256", "class", "split"]
    assert splits["path"].iloc[0] == "alpha/alpha_0.png" and len(splits) == 30
    copy = tmp_path / "copy"
    shutil.copytree(imagefolder, copy)
    second = tmp_path / "b" / "data" / "lab2"
    prepare_dataset(
        "lab2", {"kind": "imagefolder", "split_seed": 7, "split_file": str(first / "splits.csv")}, second, root=copy
    )
    a, b = read_manifest(first / "manifest.csv"), read_manifest(second / "manifest.csv")
    assert (a["split"] == b["split"]).all() and list(b["sha256"]) == list(a["sha256"])
    drawn = tmp_path / "c"
    prepare_dataset("folder", {"kind": "imagefolder", "split_seed": 7}, drawn, root=copy)
    assert not (read_manifest(drawn / "manifest.csv")["split"] == a["split"]).all()  # seed 7 alone draws another

    (copy / "beta" / "beta_3.png").unlink()
    write_image(copy / "gamma" / "new.png", seed=999)
    write_image(copy / "alpha" / "alpha_2.png", seed=555)  # same name, other pixels
    with pytest.raises(CvmError) as err:
        prepare_dataset(
            "lab2", {"kind": "imagefolder", "split_file": str(first / "splits.csv")}, tmp_path / "d", root=copy
        )
    message = str(err.value)
    assert "does not match the images of dataset 'lab2'" in message
    assert "in the file but not among the images: 1 (first: beta/beta_3.png)" in message
    assert "among the images but not in the file: 1 (first: gamma/new.png)" in message
    assert "changed: 1 (first: alpha/alpha_2.png, its content (sha256) differs)" in message
    assert not (tmp_path / "d" / "manifest.csv").exists()


def test_a_split_file_that_leaves_a_class_without_validation_images_is_refused(tmp_path, imagefolder):
    """A drawn split gives every class an image in each split; so must a split file (with no validation
    image of a class, the run's operating points would be undefined and the report show '-')."""
    first = tmp_path / "a"
    prepare_dataset("folder", {"kind": "imagefolder"}, first, root=imagefolder)
    splits = pd.read_csv(first / "splits.csv")
    splits.loc[(splits["class"] == "beta") & (splits["split"] == "val"), "split"] = "train"
    edited = tmp_path / "edited.csv"
    splits.to_csv(edited, index=False)
    with pytest.raises(CvmError) as err:
        prepare_dataset("f", {"kind": "imagefolder", "split_file": str(edited)}, tmp_path / "b", root=imagefolder)
    assert str(err.value) == (
        f"{edited} puts no image of class 'beta' (dataset 'f') in val; every class needs at least one image in "
        "each of train, val and test: move some of its 10 images, or remove 'datasets.f.split_file' to draw a split"
    )
    assert not (tmp_path / "b" / "manifest.csv").exists()


def test_a_combined_sets_split_file_names_its_parts(tmp_path):
    make_sipakmed(tmp_path / "sip", clusters=2, cells=2)
    crops = make_cric_crops(tmp_path / "cric")
    d = tmp_path / "d"
    prepare_dataset("sipakmed", {"kind": "sipakmed"}, d / "sipakmed", root=tmp_path / "sip")
    prepare_dataset("cric", {"kind": "cric"}, d / "cric", root=crops)
    parts = {"sipakmed": d / "sipakmed", "cric": d / "cric"}
    prepare_dataset(
        "combined", {"kind": "combined", "parts": list(parts), "split_seed": 3}, d / "combined", parts=parts
    )
    table = pd.read_csv(d / "combined" / "splits.csv")
    assert set(table["dataset"]) == {"sipakmed", "cric"} and "ASC-H/0.png" in set(table["path"])
    again = tmp_path / "again"
    prepare_dataset(
        "combined",
        {"kind": "combined", "parts": list(parts), "split_file": str(d / "combined" / "splits.csv")},
        again,
        parts=parts,
    )
    assert (
        read_manifest(again / "manifest.csv")["split"] == read_manifest(d / "combined" / "manifest.csv")["split"]
    ).all()


def test_a_file_that_is_not_a_split_file_is_named_with_what_it_lacks(tmp_path, imagefolder):
    bad = tmp_path / "splits.csv"
    bad.write_text("path,split\nalpha/alpha_0.png,train\n")
    with pytest.raises(CvmError, match=r"splits\.csv is not a split file: it lacks column\(s\) dataset, sha256, class"):
        prepare_dataset("f", {"kind": "imagefolder", "split_file": str(bad)}, tmp_path / "out", root=imagefolder)
    bad.write_text("dataset,path,sha256,class,split\nf,alpha/alpha_0.png,00,alpha,holdout\n")
    with pytest.raises(CvmError, match=r"split 'holdout' is not train, val or test"):
        prepare_dataset("f", {"kind": "imagefolder", "split_file": str(bad)}, tmp_path / "out", root=imagefolder)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_a_root_not_set_is_missing_not_the_working_folder(tmp_path, monkeypatch):
    """An empty root (config/paper.yaml as shipped) is "missing": Path("") is the working folder, and
    planning from a checkout walked its whole .venv (15 s of every dry run)."""
    from cvm_cervix.data import listing_digest

    write_image(tmp_path / "a" / "0.png", seed=0)
    monkeypatch.chdir(tmp_path)
    assert listing_digest("") == "missing" and listing_digest(tmp_path / "nowhere") == "missing"
    assert listing_digest(".") != "missing"  # the folder itself, named, is listed
