"""Stain normalisation: every image's colours mapped to one reference stain (Macenko 2009, Reinhard 2001).

A run with ``train.stain_normalization: macenko`` (or ``reinhard``) is trained on its dataset's images
normalised to a reference fitted on the dataset's training split, in the workflow's ``normalize`` step
(once per dataset, size and method, so it costs nothing per epoch), and every later pass over the run
(evaluate, robustness, transfer, ``cvm-cervix predict``, an export) normalises its images to the same
reference, kept in the run's ``train.json``: a model never sees a colour its training did not.

The two methods are torchstain's numpy normalisers (``NumpyMacenkoNormalizer``, ``NumpyReinhardNormalizer``)
as their authors define them, each image mapped on its own. What is added here: the reference as data
(the median of training images' own, written to and read from JSON, checked), and the images it cannot
map. Macenko's method needs stained pixels (optical density above 0.15 in every channel) to estimate an
image's two stain vectors, Reinhard's a colour spread; an image with too few (:data:`MIN_STAINED`) or no
spread is kept as it is and counted (``unchanged``), never filled with NaN.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CvmError

METHODS = ("macenko", "reinhard")
# The training images the reference is fitted on: at most this many, the first in the order of their sha256
# (the same ones wherever the files lie).
REFERENCE_IMAGES = 256
# Macenko: pixels whose optical density is at least BETA in every channel are stained (torchstain's default,
# Macenko et al.'s 0.15); an image with fewer such pixels than this cannot give two stain vectors.
BETA = 0.15
MIN_STAINED = 16
IO = 240  # the light through an empty slide, torchstain's (and the original HEnorm's) default


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise CvmError(f"unknown stain normalisation {method!r}; use one of none, {', '.join(METHODS)}")


@dataclass(frozen=True)
class StainReference:
    """The stain every image is mapped to: Macenko's stain matrix (3×2, one optical-density column per
    stain) and the 99th percentiles of the two stains' amounts, or Reinhard's means and standard deviations
    of the three LAB channels; and what it was fitted on."""

    method: str
    values: dict
    fitted_on: str = ""

    def to_json(self) -> dict:
        return {"method": self.method, **self.values, "fitted_on": self.fitted_on}

    @classmethod
    def from_json(cls, data: Any, where: str | os.PathLike, fix: str) -> StainReference:
        """The reference in ``data`` (as :meth:`to_json` wrote it); one line naming ``where`` and ``fix`` when
        it is not one (a key missing, a number not finite)."""
        if not isinstance(data, dict) or data.get("method") not in METHODS:
            raise CvmError(f"{where}: the stain reference must name its method ({', '.join(METHODS)}); {fix}")
        shapes = _SHAPES[data["method"]]
        values = {}
        for key, shape in shapes.items():
            array = np.asarray(data.get(key, []), dtype=object)
            ok = array.shape == shape and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in array.ravel()
            )
            if not ok:
                wanted = "×".join(map(str, shape))
                raise CvmError(f"{where}: stain reference {key!r} must be {wanted} finite numbers; {fix}")
            values[key] = np.asarray(data[key], dtype=float).tolist()
        if data["method"] == "reinhard" and min(values["stds"]) <= 0:
            raise CvmError(f"{where}: stain reference 'stds' must each be above 0; {fix}")
        return cls(data["method"], values, str(data.get("fitted_on", "")))


_SHAPES = {"macenko": {"stain_matrix": (3, 2), "max_concentrations": (2,)}, "reinhard": {"means": (3,), "stds": (3,)}}


def _normalizer(reference: StainReference):
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer

    if reference.method == "macenko":
        normalizer = NumpyMacenkoNormalizer()
        normalizer.HERef = np.asarray(reference.values["stain_matrix"], dtype=float)
        normalizer.maxCRef = np.asarray(reference.values["max_concentrations"], dtype=float)
    else:
        normalizer = NumpyReinhardNormalizer()
        normalizer.target_means = np.asarray(reference.values["means"], dtype=float)
        normalizer.target_stds = np.asarray(reference.values["stds"], dtype=float)
    return normalizer


def _mappable(image: np.ndarray, method: str) -> bool:
    """Whether the method can map ``image`` (H×W×3 uint8): enough stained pixels (Macenko), a colour spread
    in each LAB channel (Reinhard)."""
    if method == "macenko":
        od = -np.log((image.reshape(-1, 3).astype(float) + 1) / IO)
        return int((od >= BETA).all(axis=1).sum()) >= MIN_STAINED
    return bool((image.reshape(-1, 3).std(axis=0) > 0).all())


def fit_reference(images: np.ndarray, method: str, fitted_on: str = "") -> StainReference:
    """The ``method``'s reference of ``images`` (N×3×S×S uint8): each image's own (torchstain's ``fit``), and
    their element-wise median, the stain of a typical image. Not one fit on all pixels pooled: the spread
    between images would widen the target (Reinhard's standard deviations, Macenko's 99th percentiles), and
    every image would be stretched towards it. Images the method cannot map are left out."""
    _check_method(method)
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer

    fits = []
    for image in np.asarray(images):
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        if not _mappable(hwc, method):
            continue
        with np.errstate(all="ignore"):
            try:
                if method == "macenko":
                    normalizer = NumpyMacenkoNormalizer()
                    normalizer.fit(hwc, Io=IO, beta=BETA)
                    fit = np.concatenate([normalizer.HERef.ravel(), normalizer.maxCRef])
                else:
                    normalizer = NumpyReinhardNormalizer()
                    normalizer.fit(hwc)
                    fit = np.concatenate([normalizer.target_means, normalizer.target_stds])
            except (np.linalg.LinAlgError, ValueError, IndexError):
                continue
        if np.isfinite(fit).all():
            fits.append(fit)
    if not fits:
        raise CvmError(
            f"none of the {len(images)} training images has enough stained pixels to fit a {method} stain "
            f"reference ({fitted_on or 'the training split'}); set train.stain_normalization: none for this dataset"
        )
    median = np.median(np.stack(fits), axis=0)
    if method == "macenko":
        matrix = median[:6].reshape(3, 2)
        values = {
            "stain_matrix": (matrix / np.linalg.norm(matrix, axis=0)).tolist(),  # unit stain vectors, as fitted
            "max_concentrations": median[6:].tolist(),
        }
    else:
        values = {"means": median[:3].tolist(), "stds": median[3:].tolist()}
    note = f"{fitted_on}: " if fitted_on else ""
    return StainReference.from_json(
        {"method": method, **values, "fitted_on": f"{note}the median of {len(fits)} images' own references"},
        "the fitted reference",
        "report this as a bug",
    )


def normalize_image(image: np.ndarray, reference: StainReference, normalizer=None) -> tuple[np.ndarray, bool]:
    """One image (3×S×S uint8) mapped to ``reference``, and whether it was: an image the method cannot map
    (too few stained pixels, no colour spread, a result that is not finite) is returned as it is."""
    hwc = np.ascontiguousarray(np.asarray(image).transpose(1, 2, 0))
    if not _mappable(hwc, reference.method):
        return np.asarray(image), False
    normalizer = normalizer or _normalizer(reference)
    with np.errstate(all="ignore"):
        try:
            if reference.method == "macenko":
                out, _, _ = normalizer.normalize(hwc, Io=IO, beta=BETA, stains=False)
            else:
                out = normalizer.normalize(hwc.copy())
        except (np.linalg.LinAlgError, ValueError, IndexError):
            return np.asarray(image), False
    # torchstain casts to uint8 after clipping above only: a NaN or a negative value would wrap silently
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)), True


def normalize_images(
    images: np.ndarray, reference: StainReference | None, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``images`` (N×3×S×S uint8) each mapped to ``reference`` (None: returned as they are), and per image
    whether it was mapped."""
    images = np.asarray(images)
    if reference is None:
        return images, np.ones(len(images), dtype=bool)
    out = np.empty_like(images)
    mapped = np.zeros(len(images), dtype=bool)
    normalizer = _normalizer(reference)

    def one(i: int) -> None:
        out[i], mapped[i] = normalize_image(images[i], reference, normalizer)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(one, range(len(images))))
    return out, mapped
