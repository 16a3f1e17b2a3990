"""Decode-once cache: every image of a manifest resized to S×S, as one uint8 N×3×S×S array."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import atomic_path
from ..errors import CvmError


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode ``path`` as RGB and resize it (both sides, like the paper) to ``size``: 3×S×S uint8."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    except Exception as err:
        raise CvmError(f"{path}: cannot be read as an image ({err}); delete it or download it again") from None
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def build_cache(paths: list[str], size: int, out: str | os.PathLike, threads: int = 4) -> np.ndarray:
    """Decode ``paths`` once into ``out`` (.npy, rows in the given order); returns the array."""
    array = np.empty((len(paths), 3, size, size), np.uint8)

    def fill(i):
        array[i] = load_image(paths[i], size)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(fill, range(len(paths))))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
    return array


def load_cache(path: str | os.PathLike, expected_rows: int | None = None) -> np.ndarray:
    """Memory-map a cache written by :func:`build_cache`, checking it matches its manifest."""
    if not Path(path).is_file():
        raise CvmError(f"image cache {path} not found; run the workflow's cache step first")
    array = np.load(path, mmap_mode="r")
    if expected_rows is not None and array.shape[0] != expected_rows:
        raise CvmError(f"image cache {path} has {array.shape[0]} rows but its manifest {expected_rows}; delete the cache")
    return array
