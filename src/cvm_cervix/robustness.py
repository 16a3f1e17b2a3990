"""Does a model survive another lab's slides: the test split under slide-to-slide variation.

Each corruption is applied on the fly at inference to the test images as the network sees them (the
decoded cache, ``img_size``), at severities 1-5 (0 is the clean image, unchanged): stain shift (HED
jitter, Tellez et al. 2018), blur, JPEG compression, brightness and contrast, and magnification
(a zoom). Per corruption and severity: accuracy and the abnormal-against-normal ROC AUC; per severity
the mean over corruptions. One inference-only job per run (``robustness.json``), on a GPU where there is one.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from ._io import write_json
from .errors import CvmError
from .run import Inference

CORRUPTIONS = ("stain", "blur", "jpeg", "brightness_contrast", "scale")
SEVERITIES = (1, 2, 3, 4, 5)

# skimage.color's haematoxylin-eosin-DAB matrix (Ruifrok & Johnston, 2001): three rows, one per stain.
# Kept here rather than importing scikit-image, which the workflow does not otherwise need, for a 3x3 matrix.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LOG_FLOOR = math.log(1e-6)

# the amount of each corruption at severities 1..5
STAIN_SIGMA = (0.03, 0.06, 0.10, 0.15, 0.20)  # the scale jitter of each stain (its shift is a fifth of it)
BLUR_SIGMA_224 = (0.6, 1.0, 1.6, 2.3, 3.0)  # Gaussian sigma in pixels of a 224 px image (scaled to img_size)
JPEG_QUALITY = (80, 60, 40, 25, 12)
BRIGHTNESS = (1.08, 1.16, 1.24, 1.32, 1.40)
CONTRAST = (0.88, 0.76, 0.64, 0.52, 0.40)
ZOOM = (1.1, 1.2, 1.35, 1.5, 1.75)  # a higher magnification: resized up, the centre kept


def _stain(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """HED colour augmentation: each image's haematoxylin, eosin and DAB amounts scaled by 1 + a and
    shifted by b, a and b uniform in ±sigma and ±sigma/5 (one draw per image and stain)."""
    sigma = STAIN_SIGMA[severity - 1]
    rgb = images.double().div(255).clamp_min(1e-6)
    od = (rgb.log() / _LOG_FLOOR).permute(0, 2, 3, 1)  # optical density in [0, 1], channels last
    hed = od @ _HED_FROM_RGB
    n = len(images)
    scale = 1 + (torch.rand((n, 1, 1, 3), generator=generator, dtype=torch.float64) * 2 - 1) * sigma
    shift = (torch.rand((n, 1, 1, 3), generator=generator, dtype=torch.float64) * 2 - 1) * sigma / 5
    od = (hed * scale + shift) @ _RGB_FROM_HED
    out = torch.exp(od * _LOG_FLOOR).permute(0, 3, 1, 2)
    return out.mul(255).round().clamp(0, 255).to(torch.uint8)


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image saved as JPEG at ``quality`` and read back, with Pillow (as a scanner's software would)."""
    import io

    from PIL import Image

    out = []
    for image in images.cpu().permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images.device)


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 B×3×S×S images under corruption ``name`` at ``severity`` (0: the images themselves)."""
    if name not in CORRUPTIONS:
        raise CvmError(f"unknown corruption {name!r}; use one of {', '.join(CORRUPTIONS)}")
    if severity == 0:
        return images
    if severity not in SEVERITIES:
        raise CvmError(f"severity {severity} of {name}: use 0 to 5")
    size = images.shape[-1]
    if name == "stain":
        return _stain(images, severity, generator or torch.Generator().manual_seed(0))
    if name == "blur":
        sigma = max(BLUR_SIGMA_224[severity - 1] * size / 224, 0.3)
        kernel = 2 * math.ceil(3 * sigma) + 1
        return F.gaussian_blur(images, [kernel, kernel], [sigma, sigma])
    if name == "jpeg":
        return _jpeg(images, JPEG_QUALITY[severity - 1])
    if name == "brightness_contrast":
        brighter = F.adjust_brightness(images, BRIGHTNESS[severity - 1])
        return F.adjust_contrast(brighter, CONTRAST[severity - 1])
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
) -> dict:
    """The run's test split clean and under each corruption and severity: ``robustness.json``."""
    from .engine import predict
    from .labels import abnormal_flags

    inference = Inference.open(run, data, weights=weights, cache=cache, device=device, threads=threads)
    x, y, _ = inference.images.split("test")
    classes = inference.run.classes
    labels = np.asarray(y, int)
    flags = abnormal_flags(classes, abnormal)
    images = torch.from_numpy(np.ascontiguousarray(x))

    def scores(batch: torch.Tensor) -> dict:
        out = predict(inference.model, batch, batch_size, inference.device, inference.amp)
        return _scores(labels, out["probs"], flags)

    result: dict = {
        "model": inference.run.info["model"],
        "dataset": inference.run.info["dataset"],
        "seed": inference.run.info["seed"],
        "test_images": int(len(labels)),
        "img_size": inference.run.img_size,
        "precision": inference.run.precision(inference.device),
        "abnormal_classes": [c for c, a in zip(classes, flags if flags is not None else [], strict=False) if a],
        "clean": scores(images),
        "corruptions": {},
    }
    for name in corruptions:
        # one generator per corruption, seeded by the run: the same draws for every model of a seed
        generator = torch.Generator().manual_seed(int(inference.run.info["seed"]))
        result["corruptions"][name] = {
            str(s): scores(torch.cat([corrupt(b, name, s, generator) for b in images.split(256)])) for s in severities
        }
    result["mean"] = {
        str(s): {
            key: (
                float(np.mean(v))
                if (v := [result["corruptions"][c][str(s)][key] for c in corruptions]) and None not in v
                else None
            )
            for key in ("accuracy", "abnormal_auc")
        }
        for s in severities
    }
    write_json(out, result)
    return result
