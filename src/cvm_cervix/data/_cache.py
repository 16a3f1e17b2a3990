"""Decode-once cache: every image of a manifest resized to S×S, as one uint8 N×3×S×S array."""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .._io import atomic_path, shown_path
from ..errors import CvmError

_INTEGER_MODES = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 16}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def to_rgb(img: Image.Image, path: str | os.PathLike = "image") -> tuple[Image.Image, str | None]:
    """``img`` as 8-bit RGB, and a note of the conversion when it changed more than the layout.

    Pillow's ``convert("RGB")`` clips high-depth grey (16-bit PNG, TIFF) to 255, which turns almost
    every pixel white: such images are scaled to 8 bits instead. Alpha is composited on white
    (a transparent background is the slide's light background, not black).
    """
    mode = img.mode
    if mode in ("RGB", "L", "1"):
        return (img if mode == "RGB" else img.convert("RGB")), None
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "P with transparency"
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), f"{mode}: alpha composited on white"
    if mode in _INTEGER_MODES or mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if mode == "F":
            top, how = 1.0, "floating-point grey in [0, 1] scaled to 8 bits"
        else:
            top, how = 65535.0, "16-bit grey scaled to 8 bits"
        if values.size and (values.min() < 0 or values.max() > top):
            raise CvmError(
                f"{path}: {mode} pixel values {values.min():g}..{values.max():g} are outside 0..{top:g}; "
                "convert the image to 8-bit RGB"
            )
        grey = np.rint(values * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB"), f"{mode}: {how}"
    return img.convert("RGB"), f"{mode}: converted to RGB"


def decode_rgb(path: str | os.PathLike, data: bytes | None = None) -> tuple[np.ndarray, str | None]:
    """Decode ``path`` (or its bytes ``data``, already read) fully as H×W×3 uint8 RGB; a :class:`CvmError`
    naming the file if it cannot be.

    An EXIF orientation (phone and some microscope cameras store pixels unrotated and say how to turn
    them) is applied as every image viewer applies it, so a cell is learned as a person sees it; the
    note says so.
    """
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            img.load()
            orientation = img.getexif().get(0x0112, 1)  # the EXIF Orientation tag
            turned = ImageOps.exif_transpose(img) if orientation not in (None, 1) else img
            rgb, note = to_rgb(turned, path)
            if turned is not img:
                note = "; ".join(filter(None, [f"EXIF orientation {orientation} applied", note]))
    except CvmError:
        raise
    except Exception as err:  # PIL raises several types for corrupt data
        raise CvmError(f"{path}: cannot be read as an image ({err}); delete it or download it again") from None
    return np.asarray(rgb, dtype=np.uint8), note


def load_image(path: str | os.PathLike, size: int, sha256: str | None = None) -> np.ndarray:
    """Decode ``path`` as RGB and resize it (both sides, like the paper) to ``size``: 3×S×S uint8.

    ``sha256``: what the manifest recorded of the file; other bytes (the image was replaced since the
    manifest was made) are one :class:`CvmError` naming it, never trained on under the old record.
    """
    data = None
    if sha256 is not None:
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise CvmError(
                f"{shown_path(path)}: cannot be read ({err.strerror}); it was readable when the manifest was "
                "made: restore it, or run the workflow again so that prepare lists the folder anew"
            ) from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CvmError(
                f"{shown_path(path)} changed after the manifest was made (its sha256 is not the one recorded); "
                "run the same command again: prepare lists the folder anew and the cache follows"
            )
    pixels, _ = decode_rgb(path, data)
    img = Image.fromarray(pixels).resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def build_cache(
    paths: list[str], size: int, out: str | os.PathLike, threads: int = 4, sha256: list[str] | None = None
) -> np.ndarray:
    """Decode ``paths`` once into ``out`` (.npy, rows in the given order); returns the array.

    ``sha256``: the manifest's digest of each file; a file whose bytes differ is refused (see :func:`load_image`).
    """
    array = np.empty((len(paths), 3, size, size), np.uint8)

    def fill(i):
        array[i] = load_image(paths[i], size, None if sha256 is None else sha256[i])

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(fill, range(len(paths))))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
    return array


def load_cache(path: str | os.PathLike, expected_rows: int | None = None, size: int | None = None) -> np.ndarray:
    """Memory-map a cache written by :func:`build_cache`, checking it matches its manifest.

    A cache that cannot be mapped (cut short by a full disk or an interrupted copy) or whose shape is
    not its manifest's is removed, with one line saying so: it is derived data, and the next run of
    the workflow makes it again (left in place, its date would keep it "up to date" for ever).
    """
    path = Path(path)
    if not path.is_file():
        raise CvmError(f"image cache {path} not found; run the workflow's cache step first")
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        problem = f"cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    else:
        side = size or (array.shape[-1] if array.ndim == 4 else 0)
        want = (array.shape[0] if expected_rows is None else expected_rows, 3, side, side)
        if array.dtype == np.uint8 and array.shape == want:
            return array
        shape, wanted = "x".join(map(str, array.shape)), "x".join(map(str, want))
        problem = f"holds {array.dtype} {shape}, not the manifest's uint8 {wanted}"
        del array
    path.unlink(missing_ok=True)
    raise CvmError(
        f"image cache {path} {problem}: it was cut short or belongs to other data, and has been "
        "removed; run the same command again to rebuild it"
    )
