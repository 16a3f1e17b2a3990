"""Dataset adapters: one per on-disk layout, each turning a folder into records.

A record is ``{"path", "class", "group"}``; ``group`` names the source image a cell was cut from
(SIPaKMeD cluster, CRIC slide image) so that ``split: grouped`` can keep such cells together.
Adapters only list files; reading and checking the images happens once, in the manifest step.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import atomic_path, safe_component, shown_path
from ..errors import CvmError
from ._cache import decode_rgb

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

COMBINED_CLASSES = [
    "ASC-H",
    "ASC-US",
    "SCC",
    "HSIL",
    "LSIL",
    "NILM",
    "Dyskeratotic",
    "Koilocytotic",
    "Metaplastic",
    "Parabasal",
    "Superficial-Intermediate",
]
SIPAKMED_CLASSES = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]
CRIC_CLASSES = ["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"]
CRIC_LONG_NAMES = {"Negative for intraepithelial lesion": "NILM"}
HERLEV_FOLDERS = {
    "normal_superficiel": "Normal",
    "normal_intermediate": "Normal",
    "normal_columnar": "Normal",
    "light_dysplastic": "Abnormal",
    "moderate_dysplastic": "Abnormal",
    "severe_dysplastic": "Abnormal",
    "carcinoma_in_situ": "Abnormal",
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
    bad = [(path, reason) for path, reason in listing.skipped if reason.startswith(UNREADABLE)]
    if bad and (spec or {}).get("unreadable", "error") != "skip":
        path, reason = bad[0]
        shown = shown_path(path)
        raise CvmError(
            f"{shown}: {reason.removeprefix(UNREADABLE)}; {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} of "
            f"{root} cannot be read (a checkout whose large files were never fetched?): fix or remove "
            "them, or set unreadable: skip to train without them (summary.json lists each)"
        )
    for record in listing.records:  # manifests and reports are UTF-8 text: a name that is not cannot be kept
        try:
            str(record["path"]).encode("utf-8")
        except UnicodeEncodeError:
            shown = shown_path(record["path"])
            raise CvmError(
                f"{shown}: its file name is not valid UTF-8 (written in another encoding); rename it, "
                "e.g. with convmv -f latin1 -t utf8 --notest, and run again"
            ) from None
    if not listing.records:
        raise CvmError(
            f"no images found under {root} for dataset kind {kind!r}; check the folder layout (README: Datasets)"
        )
    return listing


def _walk_files(root: Path):
    """Every entry under ``root`` that is not a folder, following symbolic links to folders as the
    adapters do (each real folder once, so a link loop ends), in a stable order."""
    seen = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(files):
            yield Path(folder, name)


def listing_digest(root: str | os.PathLike) -> str:
    """sha256 of every file's relative path, size and modification time under ``root``.

    Cheap (no file is read), so the workflow can compute it whenever it plans: a changed folder
    changes the digest. ``"missing"`` when ``root`` is not a folder.
    """
    if not str(root) or not Path(root).is_dir():  # "" is not set: Path("") would be the working folder
        return "missing"
    root = Path(root)
    digest = hashlib.sha256()
    for path in _walk_files(root):  # links followed as the adapters follow them: a linked class folder counts
        try:
            st = path.stat()
        except OSError:  # a dangling link: listed by name only
            st = None
        digest.update(
            f"{path.relative_to(root)}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n".encode(
                "utf-8", "surrogateescape"
            )
        )
    return digest.hexdigest()


def _is_junk(path: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file (e.g. a macOS .DS_Store or ._ resource fork)"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image extension ({path.suffix or 'none'})"
    return None


UNREADABLE = "unreadable: "  # the reasons of entries a folder holds but that cannot be read as images


def unreadable_reason(path: Path) -> str | None:
    """Why the entry ``path`` (followed if it is a link) cannot be read as a file, or None if it can."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (
            f"{UNREADABLE}a symbolic link to {os.readlink(path)!r}, which does not exist"
            if path.is_symlink()
            else f"{UNREADABLE}vanished while being listed"
        )
    except OSError as err:  # ELOOP, EACCES, ...
        return (
            f"{UNREADABLE}{err.strerror or err} (a symbolic link loop?)" if path.is_symlink() else f"{UNREADABLE}{err}"
        )
    if stat.S_ISDIR(st.st_mode):
        if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in _walk_files(path)):
            return f"{UNREADABLE}a folder of images inside a class folder (its images are not read); move them up"
        return "a folder without images"
    if not stat.S_ISREG(st.st_mode):
        return f"{UNREADABLE}not a regular file (a FIFO, socket or device)"
    if not os.access(path, os.R_OK):
        return f"{UNREADABLE}no permission to read it"
    return None


def _class_folder(folder: Path, cls: str, skipped: list, group=None, exclude=None) -> list[dict]:
    """The images of one class folder. Every other entry is recorded in ``skipped`` with its reason
    (an unreadable one with :data:`UNREADABLE`, which :func:`list_dataset` refuses unless allowed)."""
    records = []
    for path in sorted(folder.iterdir()):
        if exclude is not None and exclude(path):
            continue
        reason = unreadable_reason(path) or _is_junk(path)
        if reason:
            skipped.append((str(path), reason))
            continue
        # the path as listed (a link stays the link, so every message names what the user sees)
        records.append({"path": os.path.abspath(path), "class": cls, "group": group(path) if group else path.stem})
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
    from ._synthetic import SOURCES, class_names

    listing = _imagefolder(root, spec, workdir)
    order = class_names(spec.get("classes", "combined"))
    listing.classes = [c for c in order if c in listing.classes]
    sources = SOURCES.get(spec.get("classes", "combined"), {})
    for record in listing.records:  # the dataset each class imitates, where the class set pools several
        if record["class"] in sources:
            record["source"] = sources[record["class"]]
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
        raise CvmError(
            f"{root} has no im_<Class> folders; point 'root' at the folder holding the unzipped im_*.zip archives"
        )
    for folder in folders:
        cls = folder.name[3:]
        nested = folder / folder.name
        cropped = (nested if nested.is_dir() else folder) / "CROPPED"
        if not cropped.is_dir():
            raise CvmError(f"{folder} has no CROPPED folder of single cells; unzip {folder.name}.zip completely")
        records += _class_folder(
            cropped,
            cls,
            skipped,
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


def read_classifications(table: Path, needed: set[str]) -> list[dict]:
    """The rows of CRIC's ``classifications.csv`` (each with its line number as ``_line``).

    Saved by a spreadsheet it may start with a byte-order mark (read as UTF-8 with BOM) and use
    semicolons: the delimiter is the one of ``,``/``;``/tab whose header holds every ``needed`` column.
    Text that is not UTF-8 (Latin-1, say) is one line naming the file, never decoded by a guess.
    """
    try:
        text = table.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CvmError(
            f"{table} is not UTF-8 text (byte {err.object[err.start]:#04x} at position {err.start}); "
            "save it as UTF-8 (CSV UTF-8 in a spreadsheet) and run again"
        ) from None
    header = text.splitlines()[0] if text.strip() else ""
    delimiter = next((d for d in (",", ";", "\t") if needed <= {c.strip() for c in header.split(d)}), None)
    if delimiter is None:
        found = max((header.split(d) for d in (",", ";", "\t")), key=len) if header else []
        raise CvmError(
            f"{table} lacks columns {sorted(needed - {c.strip() for c in found})} (its header: "
            f"{', '.join(c.strip() for c in found) or 'empty'}); is it CRIC's classifications.csv?"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
    return [{**row, "_line": i} for i, row in enumerate(reader, start=2)]


def _cric_image_of_cell(root: Path) -> dict[str, str]:
    table = root / "classifications.csv"
    if not table.is_file():
        return {}
    return {row["cell_id"]: row["image_id"] for row in read_classifications(table, {"cell_id", "image_id"})}


@register_adapter("cric")
def _cric(root: Path, spec: dict, workdir: Path) -> Listing:
    """A crops folder ``<class>/<cell_id>.png`` or the full images with ``classifications.csv``."""
    layout = spec.get("layout", "auto")
    if layout == "auto":
        layout = (
            "full"
            if (root / "classifications.csv").is_file() and not any((root / c).is_dir() for c in CRIC_CLASSES)
            else "crops"
        )
    if layout == "full":
        return _cric_full(root, int(spec.get("crop_size", 100)), workdir)
    image_of = _cric_image_of_cell(root)
    skipped: list = []
    records = []
    dirs = _class_dirs(root)
    if not dirs:
        raise CvmError(f"{root} has no class folders; expected <Bethesda class>/<cell_id>.png crops")
    for d in dirs:
        records += _class_folder(
            d,
            _cric_class(d.name),
            skipped,
            group=lambda p: f"image{image_of[p.stem]}" if p.stem in image_of else f"cell{p.stem}",
        )
    present = {r["class"] for r in records}
    classes = [c for c in CRIC_CLASSES if c in present] + sorted(present - set(CRIC_CLASSES))
    return Listing(records, classes, skipped)


def _cric_coordinate(row: dict, key: str, line: str, size: int) -> int:
    """A 1-based pixel coordinate inside an image of ``size`` pixels along that axis."""
    value = str(row.get(key) or "").strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= size:
        raise CvmError(
            f"{line}: {key} {value!r} is not a whole pixel coordinate between 1 and {size}; "
            "correct the row or remove it"
        )
    return int(value)


def out_of(path: Path, folder: Path) -> bool:
    """``path`` is not inside ``folder`` (the crops an earlier listing wrote are not images of the set)."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return True
    return False


def _cric_full(root: Path, crop: int, workdir: Path) -> Listing:
    if crop < 1:
        raise CvmError(f"CRIC crop_size {crop} must be a positive number of pixels")
    table = root / "classifications.csv"
    if not table.is_file():
        raise CvmError(f"{table} not found; the full-image CRIC layout needs classifications.csv beside the images")
    needed = {"image_filename", "cell_id", "bethesda_system", "nucleus_x", "nucleus_y", "image_id"}
    rows = read_classifications(table, needed)
    if not rows:
        raise CvmError(f"{table} has no rows; is it CRIC's classifications.csv?")
    files: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and out_of(p, workdir):
            files.setdefault(p.name, []).append(p)
    out = workdir / "crops"
    records, by_image, seen = [], {}, {}
    for row in rows:
        key = (row["image_filename"], row["cell_id"])  # a cell is its image and its id, never the id alone
        if key in seen:
            raise CvmError(
                f"{table} lines {seen[key]} and {row['_line']} both describe cell {row['cell_id']!r} of "
                f"image {row['image_filename']!r}; remove the duplicate row"
            )
        seen[key] = row["_line"]
        by_image.setdefault(row["image_filename"], []).append(row)
    for filename, cells in sorted(by_image.items()):
        if filename not in files:
            raise CvmError(
                f"{table} names image {filename!r}, which is not under {root}; download the full CRIC image set"
            )
        if len(files[filename]) > 1:
            raise CvmError(
                f"{table} names image {filename!r}, and {root} holds {len(files[filename])} files of that "
                f"name ({', '.join(map(str, files[filename][:3]))}); keep one, so every cell is cut from "
                "the image it was marked on"
            )
        pixels, _ = decode_rgb(files[filename][0])
        half = crop // 2
        padded = np.pad(pixels, ((half, crop), (half, crop), (0, 0)))  # zero padding past the edges
        for row in cells:
            line = f"{table} line {row['_line']}"
            cls = safe_component(_cric_class(row["bethesda_system"]), f"{line}: bethesda_system")
            cell_id = safe_component(row["cell_id"], f"{line}: cell_id")
            x, y = (
                _cric_coordinate(row, key, line, size) - 1  # 1-based in the CSV
                for key, size in (("nucleus_x", pixels.shape[1]), ("nucleus_y", pixels.shape[0]))
            )
            cell = padded[y : y + crop, x : x + crop]
            image = safe_component(Path(filename).stem, f"{line}: image_filename")
            path = out / cls / f"{image}__{cell_id}.png"  # keyed by image and cell; cut again every time (the CSV may
            path.parent.mkdir(parents=True, exist_ok=True)  # have moved a cell since), written atomically
            with atomic_path(path) as tmp:
                Image.fromarray(cell).save(tmp, format="PNG")
            records.append({"path": str(path.resolve()), "class": cls, "group": f"image{row['image_id']}"})
    present = {r["class"] for r in records}
    classes = [c for c in CRIC_CLASSES if c in present] + sorted(present - set(CRIC_CLASSES))
    return Listing(records, classes, [])
