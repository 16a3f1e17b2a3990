"""Dataset adapters: one per on-disk layout, each turning a folder into records.

A record is ``{"path", "class", "group"}``; ``group`` names the source image a cell was cut from
(SIPaKMeD cluster, CRIC slide image) so that ``split: grouped`` can keep such cells together.
Adapters only list files; reading and checking the images happens once, in the manifest step.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .._io import atomic_path, safe_component
from ..errors import CvmError
from ._cache import decode_rgb

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

COMBINED_CLASSES = [
    "ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM",
    "Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate",
]
SIPAKMED_CLASSES = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]
CRIC_CLASSES = ["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"]
CRIC_LONG_NAMES = {"Negative for intraepithelial lesion": "NILM"}
HERLEV_FOLDERS = {
    "normal_superficiel": "Normal", "normal_intermediate": "Normal", "normal_columnar": "Normal",
    "light_dysplastic": "Abnormal", "moderate_dysplastic": "Abnormal",
    "severe_dysplastic": "Abnormal", "carcinoma_in_situ": "Abnormal",
}
PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


@dataclass
class Listing:
    """What an adapter found: records, the class names in label order, and files left out."""

    records: list[dict]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


Adapter = Callable[[Path, dict, Path], Listing]
_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(kind: str):
    def wrap(fn: Adapter) -> Adapter:
        _ADAPTERS[kind] = fn
        return fn

    return wrap


def adapter_kinds() -> list[str]:
    return sorted(_ADAPTERS)


def list_dataset(kind: str, root: str | Path, spec: dict | None = None, workdir: str | Path | None = None) -> Listing:
    """List the images of the dataset of ``kind`` unpacked at ``root``.

    ``workdir`` receives files an adapter has to create (CRIC crops cut from the full images).
    """
    if kind not in _ADAPTERS:
        raise CvmError(f"unknown dataset kind {kind!r}; choose one of {', '.join(adapter_kinds())}")
    root = Path(root)
    if not root.is_dir():
        raise CvmError(f"dataset root {root} does not exist or is not a folder; point 'root' at the unpacked dataset")
    listing = _ADAPTERS[kind](root, dict(spec or {}), Path(workdir or root))
    if not listing.records:
        raise CvmError(f"no images found under {root} for dataset kind {kind!r}; check the folder layout (README: Datasets)")
    return listing


def listing_digest(root: str | os.PathLike) -> str:
    """sha256 of every file's relative path, size and modification time under ``root``.

    Cheap (no file is read), so the workflow can compute it whenever it plans: a changed folder
    changes the digest. ``"missing"`` when ``root`` is not a folder.
    """
    root = Path(root)
    if not str(root) or not root.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            try:
                st = path.stat()
            except OSError:  # a dangling link: listed by name only
                st = None
            digest.update(f"{path.relative_to(root)}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n"
                          .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _is_junk(path: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file (e.g. a macOS .DS_Store or ._ resource fork)"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image extension ({path.suffix or 'none'})"
    return None


def _class_folder(folder: Path, cls: str, skipped: list, group=None, exclude=None) -> list[dict]:
    records = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if exclude is not None and exclude(path):
            continue
        reason = _is_junk(path)
        if reason:
            skipped.append((str(path), reason))
            continue
        records.append({"path": str(path.resolve()), "class": cls, "group": group(path) if group else path.stem})
    if not records:
        raise CvmError(f"class folder {folder} has no images; remove the folder or add its images")
    return records


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@register_adapter("imagefolder")
def _imagefolder(root: Path, spec: dict, workdir: Path) -> Listing:
    """``<class>/<image>``; classes in sorted folder order."""
    skipped: list = []
    dirs = _class_dirs(root)
    if not dirs:
        raise CvmError(f"{root} has no class folders; expected <class>/<image> (imagefolder layout)")
    records = [r for d in dirs for r in _class_folder(d, d.name, skipped)]
    return Listing(records, [d.name for d in dirs], skipped)


@register_adapter("synthetic")
def _synthetic(root: Path, spec: dict, workdir: Path) -> Listing:
    from ._synthetic import class_names

    listing = _imagefolder(root, spec, workdir)
    order = class_names(spec.get("classes", "combined"))
    listing.classes = [c for c in order if c in listing.classes]
    return listing


@register_adapter("pbc")
def _pbc(root: Path, spec: dict, workdir: Path) -> Listing:
    """``PBC_dataset_normal_DIB/<class>/*.jpg`` (root may be that folder or its parent)."""
    inner = root / "PBC_dataset_normal_DIB"
    return _imagefolder(inner if inner.is_dir() else root, spec, workdir)


@register_adapter("sipakmed")
def _sipakmed(root: Path, spec: dict, workdir: Path) -> Listing:
    """``im_<Class>[/im_<Class>]/CROPPED/NNN_MM.bmp``; cluster images beside CROPPED are not cells."""
    skipped: list = []
    records, classes = [], []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("im_"))
    if not folders:
        raise CvmError(f"{root} has no im_<Class> folders; point 'root' at the folder holding the unzipped im_*.zip archives")
    for folder in folders:
        cls = folder.name[3:]
        nested = folder / folder.name
        cropped = (nested if nested.is_dir() else folder) / "CROPPED"
        if not cropped.is_dir():
            raise CvmError(f"{folder} has no CROPPED folder of single cells; unzip {folder.name}.zip completely")
        records += _class_folder(
            cropped, cls, skipped,
            group=lambda p, cls=cls: f"{cls}/{p.stem.split('_')[0]}",
            exclude=lambda p: p.suffix.lower() == ".dat",
        )
        classes.append(cls)
    order = [c for c in SIPAKMED_CLASSES if c in classes] + [c for c in classes if c not in SIPAKMED_CLASSES]
    return Listing(records, order, skipped)


@register_adapter("herlev")
def _herlev(root: Path, spec: dict, workdir: Path) -> Listing:
    """``New database pictures/<class>/<id>.BMP``; ``<id>-d.bmp`` masks are left out."""
    inner = root / "New database pictures"
    base = inner if inner.is_dir() else root
    skipped: list = []
    records = []
    dirs = _class_dirs(base)
    unknown = [d.name for d in dirs if d.name not in HERLEV_FOLDERS]
    if unknown or not dirs:
        raise CvmError(
            f"{base} is not a Herlev folder: unexpected class folders {unknown or 'none'}; expected "
            f"{', '.join(HERLEV_FOLDERS)}"
        )
    task = int(spec.get("task", 2))
    for d in dirs:
        cls = HERLEV_FOLDERS[d.name] if task == 2 else d.name
        records += _class_folder(d, cls, skipped, exclude=lambda p: p.stem.lower().endswith("-d"))
    classes = ["Normal", "Abnormal"] if task == 2 else [f for f in HERLEV_FOLDERS if f in {d.name for d in dirs}]
    return Listing(records, [c for c in classes if any(r["class"] == c for r in records)], skipped)


def _cric_class(name: str) -> str:
    return CRIC_LONG_NAMES.get(name, name)


def _cric_image_of_cell(root: Path) -> dict[str, str]:
    table = root / "classifications.csv"
    if not table.is_file():
        return {}
    with open(table, newline="") as handle:
        return {row["cell_id"]: row["image_id"] for row in csv.DictReader(handle)}


@register_adapter("cric")
def _cric(root: Path, spec: dict, workdir: Path) -> Listing:
    """A crops folder ``<class>/<cell_id>.png`` or the full images with ``classifications.csv``."""
    layout = spec.get("layout", "auto")
    if layout == "auto":
        layout = "full" if (root / "classifications.csv").is_file() and not any(
            (root / c).is_dir() for c in CRIC_CLASSES) else "crops"
    if layout == "full":
        return _cric_full(root, int(spec.get("crop_size", 100)), workdir)
    image_of = _cric_image_of_cell(root)
    skipped: list = []
    records = []
    dirs = _class_dirs(root)
    if not dirs:
        raise CvmError(f"{root} has no class folders; expected <Bethesda class>/<cell_id>.png crops")
    for d in dirs:
        records += _class_folder(d, _cric_class(d.name), skipped,
                                 group=lambda p: f"image{image_of[p.stem]}" if p.stem in image_of else f"cell{p.stem}")
    present = {r["class"] for r in records}
    classes = [c for c in CRIC_CLASSES if c in present] + sorted(present - set(CRIC_CLASSES))
    return Listing(records, classes, skipped)


def _cric_coordinate(row: dict, key: str, line: str, size: int) -> int:
    """A 1-based pixel coordinate inside an image of ``size`` pixels along that axis."""
    value = str(row.get(key) or "").strip()
    if not value.isdigit() or not 1 <= int(value) <= size:
        raise CvmError(f"{line}: {key} {value!r} is not a whole pixel coordinate between 1 and {size}; "
                       "correct the row or remove it")
    return int(value)


def _cric_full(root: Path, crop: int, workdir: Path) -> Listing:
    if crop < 1:
        raise CvmError(f"CRIC crop_size {crop} must be a positive number of pixels")
    table = root / "classifications.csv"
    if not table.is_file():
        raise CvmError(f"{table} not found; the full-image CRIC layout needs classifications.csv beside the images")
    with open(table, newline="") as handle:
        rows = [{**row, "_line": i} for i, row in enumerate(csv.DictReader(handle), start=2)]
    needed = {"image_filename", "cell_id", "bethesda_system", "nucleus_x", "nucleus_y", "image_id"}
    if not rows or needed - set(rows[0]):
        raise CvmError(f"{table} lacks columns {sorted(needed - set(rows[0] if rows else {}))}; is it CRIC's classifications.csv?")
    files = {p.name: p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")}
    out = workdir / "crops"
    records, by_image = [], {}
    for row in rows:
        by_image.setdefault(row["image_filename"], []).append(row)
    for filename, cells in sorted(by_image.items()):
        if filename not in files:
            raise CvmError(f"{table} names image {filename!r}, which is not under {root}; download the full CRIC image set")
        pixels, _ = decode_rgb(files[filename])
        half = crop // 2
        padded = np.pad(pixels, ((half, crop), (half, crop), (0, 0)))  # zero padding past the edges
        for row in cells:
            line = f"{table} line {row['_line']}"
            cls = safe_component(_cric_class(row["bethesda_system"]), f"{line}: bethesda_system")
            cell_id = safe_component(row["cell_id"], f"{line}: cell_id")
            x, y = (_cric_coordinate(row, key, line, size) - 1  # 1-based in the CSV
                    for key, size in (("nucleus_x", pixels.shape[1]), ("nucleus_y", pixels.shape[0])))
            cell = padded[y:y + crop, x:x + crop]
            path = out / cls / f"{cell_id}.png"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    Image.fromarray(cell).save(tmp, format="PNG")
            records.append({"path": str(path.resolve()), "class": cls, "group": f"image{row['image_id']}"})
    present = {r["class"] for r in records}
    classes = [c for c in CRIC_CLASSES if c in present] + sorted(present - set(CRIC_CLASSES))
    return Listing(records, classes, [])
