"""Each dataset adapter on fixtures written in the dataset's real on-disk layout."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SHARED_DATA, write_image
from layouts import HERLEV, SIPAKMED, make_herlev, make_pbc, make_sipakmed
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
    (1, "a.png", 11, "ASC-US", 3, 4),          # near the top-left corner: padded
    (1, "a.png", 12, "HSIL", 150, 120),        # near the bottom-right corner: padded
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
        writer.writerow(["image_id", "image_filename", "image_doi", "cell_id", "bethesda_system", "nucleus_x", "nucleus_y"])
        for image_id, name, cell, cls, x, y in CRIC_ROWS:
            writer.writerow([image_id, name, "doi", cell, cls, x, y])
    return root


def test_cric_full_images_are_cut_into_centred_crops(tmp_path):
    root = make_cric_full(tmp_path / "cric")
    listing = list_dataset("cric", root, {"crop_size": 100}, tmp_path / "work")
    assert len(listing.records) == 6
    assert listing.classes == ["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"]
    by_cell = {r["path"].rsplit("/", 1)[1]: r for r in listing.records}
    assert by_cell["10.png"]["class"] == "NILM" and by_cell["10.png"]["group"] == "image1"
    assert by_cell["20.png"]["group"] == "image2"
    source = np.asarray(Image.open(root / "base" / "a.png").convert("RGB"))
    for name, (x, y) in {"10.png": (60, 50), "11.png": (3, 4), "12.png": (150, 120)}.items():
        crop = np.asarray(Image.open(by_cell[name]["path"]))
        assert crop.shape == (100, 100, 3)
        np.testing.assert_array_equal(crop[50, 50], source[y - 1, x - 1])  # centred on the 1-based nucleus
    corner = np.asarray(Image.open(by_cell["11.png"]["path"]))
    assert (corner[:40, :40] == 0).all()  # padded past the edge


def test_cric_crops_folder_with_groups_from_classifications(tmp_path):
    root = tmp_path / "crops"
    for image_id, _, cell, cls, _, _ in CRIC_ROWS:
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


def test_combined_pools_sipakmed_and_cric_in_the_papers_order(tmp_path):
    make_sipakmed(tmp_path / "sip", clusters=2, cells=2)
    crops = tmp_path / "cric"
    for cls in ["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"]:
        for i in range(4):
            write_image(crops / cls / f"{i}.png", seed=hash(cls) % 1000 + i)
    prepare_dataset("sipakmed", {"kind": "sipakmed"}, tmp_path / "d" / "sipakmed", root=tmp_path / "sip")
    prepare_dataset("cric", {"kind": "cric"}, tmp_path / "d" / "cric", root=crops)
    summary = prepare_dataset("combined", {"kind": "combined", "parts": ["sipakmed", "cric"]}, tmp_path / "d" / "combined",
                              parts={"sipakmed": tmp_path / "d" / "sipakmed", "cric": tmp_path / "d" / "cric"})
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


@pytest.mark.parametrize("damage, words", [
    (lambda root: (root / "PBC_dataset_normal_DIB" / "eosinophil" / "EO_0.jpg").write_bytes(b""), "zero-byte"),
    (lambda root: (root / "PBC_dataset_normal_DIB" / "eosinophil" / "EO_1.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut"),
     "cannot be read as an image"),
])
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
