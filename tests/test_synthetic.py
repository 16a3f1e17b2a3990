import numpy as np
import pytest
from PIL import Image

from cvm_cervix.data import CLASS_SETS, class_names, make_synthetic_dataset, render_cell


def test_class_sets_have_the_papers_class_counts():
    assert len(class_names("combined")) == 11 and class_names("combined")[:2] == ["ASC-H", "ASC-US"]
    assert class_names("herlev") == ["Normal", "Abnormal"]
    assert len(class_names("pbc")) == 8 and "ig" in class_names("pbc")


def test_dataset_is_deterministic_and_labelled_synthetic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", "herlev", per_class=3, image_size=40, seed=5)
    b = make_synthetic_dataset(tmp_path / "b", "herlev", per_class=3, image_size=40, seed=5)
    c = make_synthetic_dataset(tmp_path / "c", "herlev", per_class=3, image_size=40, seed=6)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].read_bytes() != c[0].read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["Abnormal", "Normal", "SYNTHETIC.txt"]
    assert "SYNTHETIC" in (tmp_path / "a" / "SYNTHETIC.txt").read_text()
    with Image.open(a[0]) as img:
        assert img.size == (40, 40) and img.mode == "RGB"


def _dark_fraction(profile, n=20, size=64):
    """Share of pixels dark enough to be nucleus: grows with nucleus size (N:C ratio)."""
    imgs = np.stack([render_cell(profile, size, np.random.default_rng(i)) for i in range(n)])
    return float((imgs.mean(-1) < 110).mean())


def test_classes_differ_in_morphology():
    combined = CLASS_SETS["combined"]
    # high N:C abnormal cells have far more nucleus than mature superficial cells
    assert _dark_fraction(combined["HSIL"]) > 3 * _dark_fraction(combined["Superficial-Intermediate"])
    # koilocytes carry a bright perinuclear halo inside the cell
    halo = np.stack([render_cell(combined["Koilocytotic"], 64, np.random.default_rng(i)) for i in range(10)])
    plain = np.stack([render_cell(combined["Parabasal"], 64, np.random.default_rng(i)) for i in range(10)])
    centre = slice(24, 40)
    assert halo[:, centre, centre].mean() > plain[:, centre, centre].mean()
    # SCC's orange (keratinised) cytoplasm: red channel above blue
    scc = np.stack([render_cell(combined["SCC"], 64, np.random.default_rng(i)) for i in range(10)]).astype(float)
    assert scc[..., 0].mean() > scc[..., 2].mean()


def test_unknown_class_set_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic class set"):
        make_synthetic_dataset(tmp_path, "mnist")
