"""Does a model survive another lab's slides: the test split under slide-to-slide variation.

Each corruption is applied on the fly at inference to the test images as the network sees them (the
decoded cache, ``img_size``), at severities 1-5 (0 is the clean image, unchanged):

- ``stain``: another lab's staining. The stain basis is estimated from the run's own training images by
  Macenko's method (2009: the plane of the two main directions of the pixels' optical densities, and
  the robust extreme angles in it), not a fixed H&E-DAB matrix: a Pap smear is stained with haematoxylin,
  OG-6 and EA, and Macenko's two vectors are the two directions its pixels vary along most. Each test
  cell's two stain amounts are scaled by 1 + a and shifted by b (a, b uniform in ±sigma, ±sigma/5), the
  part of its optical density outside the plane kept, as torchstain's MacenkoAugmentor perturbs them;
  written here because torchstain fits one matrix per image, which a 32-px crop cannot support.
- ``blur``, ``jpeg``, ``brightness``, ``contrast``: ImageNet-C's definitions and constants (Hendrycks &
  Dietterich 2019; the ``imagecorruptions`` package), blur's sigma scaled to ``img_size`` from 224 px.
  Not the package itself: it needs OpenCV's GUI build (libGL) and scikit-image for these four formulas.
- ``scale``: a higher magnification (resized up, the centre kept).

A run trained on normalised stains (``train.stain_normalization``) sees each corrupted image mapped to its
reference stain, as it would see another lab's slide: the corruption is applied to the image as decoded.

A severity that changes (almost) nothing at this image size, as blur's smallest at 32 px, is marked
``no_effect`` and left out of the mean over corruptions. A random corruption (stain) is drawn
:data:`DRAWS` times per severity: the accuracy is their mean, with the spread between draws and a
Wilson interval over all draws' predictions. Per corruption and severity: accuracy and the
abnormal-against-normal ROC AUC; per severity the mean over corruptions. One inference-only job per run
(``robustness.json``), on a GPU where there is one.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from ._io import write_json
from .errors import CvmError
from .intervals import wilson
from .run import Inference

CORRUPTIONS = ("stain", "blur", "jpeg", "brightness", "contrast", "scale")
SEVERITIES = (1, 2, 3, 4, 5)
RANDOM = ("stain",)  # corruptions that draw at random: several draws per severity
DRAWS = 5
# a severity that changes fewer than this share of the test images' pixel values does nothing at this size
NO_EFFECT = 0.01

# the amount of each corruption at severities 1..5
STAIN_SIGMA = (0.05, 0.10, 0.15, 0.20, 0.30)  # the scale jitter of each stain amount (its shift is a fifth)
BLUR_SIGMA_224 = (1, 2, 3, 4, 6)  # ImageNet-C gaussian_blur, pixels of a 224 px image (scaled to img_size)
JPEG_QUALITY = (25, 18, 15, 10, 7)  # ImageNet-C jpeg_compression
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # ImageNet-C brightness: added to V of HSV
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # ImageNet-C contrast: the distance to the mean kept
ZOOM = (1.1, 1.2, 1.35, 1.5, 1.75)  # a higher magnification: resized up, the centre kept

_IO = 255.0  # the light through an empty slide


def optical_density(images: torch.Tensor) -> torch.Tensor:
    """B×3×S×S uint8 -> B×S×S×3 optical density, -log((I + 1) / (Io + 1)) as Macenko et al. take it."""
    return -torch.log((images.double().permute(0, 2, 3, 1) + 1) / (_IO + 1))


def macenko_basis(images: torch.Tensor, beta: float = 0.15, alpha: float = 1.0) -> torch.Tensor:
    """Macenko's two stain vectors (2×3, unit rows, the more haematoxylin-like first) of ``images``: the
    pixels whose optical density exceeds ``beta`` in every channel, their two main directions, and the
    ``alpha``-th and (100 − ``alpha``)-th percentile angles in that plane."""
    od = optical_density(images).reshape(-1, 3)
    od = od[(od > beta).all(1)]
    if len(od) < 10:
        raise CvmError(
            f"too few stained pixels ({len(od)}) in the training images to estimate a stain basis; "
            "drop 'stain' from the robustness corruptions of this dataset"
        )
    _, vectors = torch.linalg.eigh(torch.cov(od.T))
    plane = vectors[:, 1:]  # the two largest eigenvalues' directions (eigh sorts ascending)
    plane = plane * torch.where(plane.sum(0) < 0, -1.0, 1.0)  # each pointing into positive densities
    angles = torch.atan2(od @ plane[:, 1], od @ plane[:, 0])
    low, high = torch.quantile(angles, alpha / 100), torch.quantile(angles, 1 - alpha / 100)
    ends = [plane @ torch.stack([torch.cos(a), torch.sin(a)]) for a in (low, high)]
    basis = torch.stack(ends if ends[0][0] > ends[1][0] else ends[::-1])  # haematoxylin absorbs red most
    return basis / basis.norm(dim=1, keepdim=True)


def _stain(images: torch.Tensor, severity: int, basis: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image's two stain amounts (least squares in ``basis``) scaled by 1 + a and shifted by b, a and b
    uniform in ±sigma and ±sigma/5 (one draw per image and stain); what lies outside the plane is kept."""
    sigma = STAIN_SIGMA[severity - 1]
    od = optical_density(images)
    amounts = od @ torch.linalg.pinv(basis)  # B×S×S×2
    rest = od - amounts @ basis
    n = len(images)
    scale = 1 + (torch.rand((n, 1, 1, 2), generator=generator, dtype=torch.float64) * 2 - 1) * sigma
    shift = (torch.rand((n, 1, 1, 2), generator=generator, dtype=torch.float64) * 2 - 1) * sigma / 5
    od = (amounts * scale + shift) @ basis + rest
    out = (_IO + 1) * torch.exp(-od) - 1
    return out.permute(0, 3, 1, 2).round().clamp(0, 255).to(torch.uint8)


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image saved as JPEG at ``quality`` and read back, with Pillow (as ImageNet-C does)."""
    import io

    from PIL import Image

    out = []
    for image in images.cpu().permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images.device)


def _brightness(images: torch.Tensor, c: float) -> torch.Tensor:
    """ImageNet-C's brightness: V of HSV raised by ``c`` (clipped at 1), hue and saturation kept. V is the
    largest channel, so that is every channel scaled by V'/V (a black pixel becomes grey V')."""
    x = images.double() / 255
    v = x.max(1, keepdim=True).values
    raised = (v + c).clamp(max=1.0)
    out = torch.where(v > 0, x * raised / v.clamp_min(1e-12), raised.expand_as(x))
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def _contrast(images: torch.Tensor, c: float) -> torch.Tensor:
    """ImageNet-C's contrast: each pixel's distance to the image's mean (over pixels and channels) times ``c``."""
    x = images.double() / 255
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (((x - mean) * c + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    generator: torch.Generator | None = None,
    basis: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 B×3×S×S images under corruption ``name`` at ``severity`` (0: the images themselves).
    ``basis``: the stain basis (:func:`macenko_basis` of the training images; default: of ``images``)."""
    if name not in CORRUPTIONS:
        raise CvmError(f"unknown corruption {name!r}; use one of {', '.join(CORRUPTIONS)}")
    if severity == 0:
        return images
    if severity not in SEVERITIES:
        raise CvmError(f"severity {severity} of {name}: use 0 to 5")
    size = images.shape[-1]
    if name == "stain":
        basis = macenko_basis(images) if basis is None else basis
        return _stain(images, severity, basis, generator or torch.Generator().manual_seed(0))
    if name == "blur":
        sigma = BLUR_SIGMA_224[severity - 1] * size / 224
        kernel = 2 * math.ceil(3 * sigma) + 1
        return F.gaussian_blur(images, [kernel, kernel], [sigma, sigma])
    if name == "jpeg":
        return _jpeg(images, JPEG_QUALITY[severity - 1])
    if name == "brightness":
        return _brightness(images, BRIGHTNESS[severity - 1])
    if name == "contrast":
        return _contrast(images, CONTRAST[severity - 1])
    larger = round(size * ZOOM[severity - 1])  # scale
    return F.center_crop(F.resize(images, [larger, larger], antialias=True), [size, size])


def _scores(labels: np.ndarray, probs: np.ndarray, abnormal: np.ndarray | None) -> dict:
    from sklearn.metrics import roc_auc_score

    out = {"accuracy": float(np.mean(probs.argmax(1) == labels)) if len(labels) else None, "abnormal_auc": None}
    if abnormal is not None:
        truth = abnormal[labels]
        if truth.any() and not truth.all():
            out["abnormal_auc"] = float(roc_auc_score(truth, probs[:, abnormal].sum(1)))
    return out


def robustness_run(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    corruptions: list[str] | tuple[str, ...] = CORRUPTIONS,
    severities: list[int] | tuple[int, ...] = SEVERITIES,
    abnormal: list[str] | None = None,
    weights=None,
    cache=None,
    device: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    draws: int = DRAWS,
) -> dict:
    """The run's test split clean and under each corruption and severity: ``robustness.json``."""
    from .engine import predict
    from .labels import abnormal_flags

    inference = Inference.open(run, data, weights=weights, cache=cache, device=device, threads=threads)
    # as decoded: each corruption is another lab's slide, which the run's stain normalisation (if any) then
    # maps to its reference before the network, as it would map that lab's images
    x, y, _ = inference.images.split("test", raw=True)
    classes = inference.run.classes
    labels = np.asarray(y, int)
    flags = abnormal_flags(classes, abnormal)
    images = torch.from_numpy(np.ascontiguousarray(x))
    basis = None
    if "stain" in corruptions:  # the stain basis of the run's own training images
        basis = macenko_basis(torch.from_numpy(np.ascontiguousarray(inference.images.split("train", raw=True)[0])))

    def probs_of(batch: torch.Tensor) -> np.ndarray:
        prepared = torch.from_numpy(inference.images.prepare(batch.cpu().numpy()))
        return predict(inference.model, prepared, batch_size, inference.device, inference.amp)["probs"]

    def right_string(counts: np.ndarray) -> str:
        """Per test image, how many draws classified it right (one digit each, at most 9 draws): the
        statistics job pairs two recipes' images from it."""
        return "".join(str(int(c)) for c in counts)

    def measure(name: str, severity: int, seed: int) -> dict:
        outs, changed, right_counts = [], [], np.zeros(len(labels), int)
        for draw in range(draws if name in RANDOM else 1):
            generator = torch.Generator().manual_seed(seed * 1000 + draw)  # the same draws for every model of a seed
            batch = torch.cat([corrupt(b, name, severity, generator, basis) for b in images.split(256)])
            changed.append(float((batch != images).float().mean()))
            probs = probs_of(batch)
            right_counts += probs.argmax(1) == labels
            outs.append(_scores(labels, probs, flags))
        entry = {
            "accuracy": float(np.mean([o["accuracy"] for o in outs])),
            "abnormal_auc": None if None in (aucs := [o["abnormal_auc"] for o in outs]) else float(np.mean(aucs)),
            "pixels_changed": float(np.mean(changed)),
            "no_effect": bool(np.mean(changed) < NO_EFFECT),
            "draws": len(outs),
            "right": right_string(right_counts),
        }
        right = int(round(sum(o["accuracy"] for o in outs) * len(labels)))
        total = len(outs) * len(labels)
        if total:
            entry["accuracy_ci"] = wilson(right, total)
        if len(outs) > 1:
            entry["accuracy_sd_between_draws"] = float(np.std([o["accuracy"] for o in outs], ddof=1))
        return entry

    clean_probs = probs_of(images)
    clean = {**_scores(labels, clean_probs, flags), "right": right_string(clean_probs.argmax(1) == labels)}
    result: dict = {
        "model": inference.run.info["model"],
        "dataset": inference.run.info["dataset"],
        "seed": inference.run.info["seed"],
        "test_images": int(len(labels)),
        "img_size": inference.run.img_size,
        "precision": inference.run.precision(inference.device),
        "abnormal_classes": [c for c, a in zip(classes, flags if flags is not None else [], strict=False) if a],
        "stain_basis": None if basis is None else basis.tolist(),
        # each corrupted image mapped to this reference before the network (train.stain_normalization)
        "stain_normalization": inference.run.record.settings.stain_normalization,
        "stain_reference": inference.run.record.stain_reference,
        "draws": {name: draws if name in RANDOM else 1 for name in corruptions},
        "clean": clean,
        "corruptions": {},
    }
    seed = int(inference.run.info["seed"])
    for name in corruptions:
        result["corruptions"][name] = {
            str(s): {**clean, "pixels_changed": 0.0, "no_effect": False, "draws": 0}
            if s == 0
            else measure(name, s, seed)
            for s in severities
        }
    result["mean"] = {}
    for s in severities:
        counted = [c for c in corruptions if not result["corruptions"][c][str(s)]["no_effect"]]
        row = {"corruptions": counted}
        for key in ("accuracy", "abnormal_auc"):
            values = [result["corruptions"][c][str(s)][key] for c in counted]
            row[key] = float(np.mean(values)) if values and None not in values else None
        result["mean"][str(s)] = row
    write_json(out, result)
    return result
