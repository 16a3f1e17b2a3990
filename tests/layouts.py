"""Tiny datasets in the official layouts the adapters read (README: Datasets), with random images."""

import csv
from pathlib import Path

from conftest import write_image

SIPAKMED = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]


def make_sipakmed(root, nested=True, clusters=3, cells=2):
    """im_<Class>[/im_<Class>]/CROPPED/NNN_MM.bmp with outlines, plus whole cluster images beside."""
    for c, cls in enumerate(SIPAKMED):
        base = root / f"im_{cls}" / (f"im_{cls}" if nested else "")
        for n in range(1, clusters + 1):
            write_image(base / f"{n:03d}.bmp", seed=1000 + 10 * c + n, size=(40, 40))  # cluster image: not a cell
            (base / f"{n:03d}_cyt01.dat").write_text("1,2\n3,4\n")
            for m in range(1, cells + 1):
                write_image(base / "CROPPED" / f"{n:03d}_{m:02d}.bmp", seed=100 * c + 10 * n + m)
                (base / "CROPPED" / f"{n:03d}_{m:02d}_cyt.dat").write_text("1,2\n3,4\n")
                (base / "CROPPED" / f"{n:03d}_{m:02d}_nuc.dat").write_text("1,2\n3,4\n")
    return root


HERLEV = [
    "normal_superficiel",
    "normal_intermediate",
    "normal_columnar",
    "light_dysplastic",
    "moderate_dysplastic",
    "severe_dysplastic",
    "carcinoma_in_situ",
]


def make_herlev(root, per_class=4):
    base = root / "New database pictures"
    for c, folder in enumerate(HERLEV):
        for i in range(per_class):
            write_image(base / folder / f"{c}{i:02d}.BMP", seed=10 * c + i, fmt="BMP")
            write_image(base / folder / f"{c}{i:02d}-d.bmp", seed=500 + 10 * c + i, fmt="BMP")  # mask
    return root


def make_pbc(root, per_class=3, classes=("basophil", "eosinophil", "neutrophil")):
    base = root / "PBC_dataset_normal_DIB"
    for c, cls in enumerate(classes):
        for i in range(per_class):
            write_image(base / cls / f"{cls[:2].upper()}_{i}.jpg", seed=10 * c + i, fmt="JPEG")
    (base / "basophil" / ".DS_Store.jpg").write_bytes(b"Bud1\0\0\0\x01junk")
    return root


def make_cric_full(root: Path, per_class: int = 3, classes=("ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM")) -> Path:
    """CRIC as released: full slide images under base/ and classifications.csv with 1-based nucleus
    coordinates (several cells of each class per image)."""
    images = max(2, per_class)
    for i in range(images):
        write_image(root / "base" / f"slide_{i:02d}.png", seed=7000 + i, size=(160, 200))  # H×W
    with open(root / "classifications.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image_id", "image_filename", "image_doi", "cell_id", "bethesda_system", "nucleus_x", "nucleus_y"]
        )
        cell = 0
        for c, cls in enumerate(classes):
            for k in range(per_class):
                image = (c + k) % images
                cell += 1
                writer.writerow([image + 1, f"slide_{image:02d}.png", "doi", cell, cls, 20 + 25 * c, 20 + 30 * k % 140])
    return root
