"""Synthetic single-cell images that imitate the morphology of the real classes.

The generator is deterministic per (seed, class, index). Classes differ the way the real ones do:
nucleus size and nucleus-to-cytoplasm ratio, chromatin texture and darkness, shape irregularity,
number and lobation of nuclei, a perinuclear halo (koilocytes) and stain colour. Per-image jitter
overlaps neighbouring classes, so the task is learnable but not trivial.

Everything written by this module is synthetic; the images carry it in their folder's README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import atomic_path


@dataclass(frozen=True)
class CellProfile:
    """Mean morphology of one class; sizes are fractions of the image side."""

    cell_radius: float = 0.36  # cytoplasm radius
    nc_ratio: float = 0.25  # nucleus radius / cell radius
    irregularity: float = 0.05  # amplitude of boundary harmonics
    nuclei: int = 1  # number of nuclei (or lobes)
    lobe_spread: float = 0.0  # distance of lobes from the centre, in nucleus radii
    chromatin: float = 0.15  # amplitude of nuclear texture
    darkness: float = 0.6  # nuclear stain intensity 0..1
    halo: float = 0.0  # perinuclear clearing width, in nucleus radii
    elongation: float = 1.0  # cell aspect ratio
    cytoplasm_rgb: tuple = (150, 190, 200)
    nucleus_rgb: tuple = (60, 40, 110)
    background_rgb: tuple = (228, 226, 235)
    granules: float = 0.0  # density of cytoplasmic granules
    granule_rgb: tuple = (120, 40, 120)
    satellites: int = 0  # small bodies beside the cell (e.g. red cells in blood smears)


_PAP = dict(background_rgb=(232, 228, 236))
_SUPERFICIAL = CellProfile(
    cell_radius=0.42,
    nc_ratio=0.10,
    darkness=0.85,
    chromatin=0.05,
    cytoplasm_rgb=(236, 170, 180),
    irregularity=0.08,
    **_PAP,
)
_NILM = replace(_SUPERFICIAL, cytoplasm_rgb=(170, 205, 210), nc_ratio=0.12)

CLASS_SETS: dict[str, dict[str, CellProfile]] = {
    # SIPaKMeD + CRIC, in the paper's order.
    "combined": {
        "ASC-H": CellProfile(
            cell_radius=0.26,
            nc_ratio=0.55,
            darkness=0.7,
            chromatin=0.25,
            irregularity=0.08,
            cytoplasm_rgb=(150, 190, 205),
            **_PAP,
        ),
        "ASC-US": CellProfile(
            cell_radius=0.38,
            nc_ratio=0.22,
            darkness=0.6,
            chromatin=0.18,
            irregularity=0.07,
            cytoplasm_rgb=(175, 200, 205),
            **_PAP,
        ),
        "SCC": CellProfile(
            cell_radius=0.34,
            nc_ratio=0.45,
            darkness=0.95,
            chromatin=0.35,
            irregularity=0.25,
            elongation=1.7,
            cytoplasm_rgb=(235, 150, 110),
            **_PAP,
        ),
        "HSIL": CellProfile(
            cell_radius=0.28,
            nc_ratio=0.68,
            darkness=0.9,
            chromatin=0.35,
            irregularity=0.16,
            cytoplasm_rgb=(140, 180, 200),
            **_PAP,
        ),
        "LSIL": CellProfile(
            cell_radius=0.40,
            nc_ratio=0.26,
            darkness=0.75,
            chromatin=0.25,
            halo=1.0,
            nuclei=2,
            lobe_spread=0.8,
            irregularity=0.10,
            cytoplasm_rgb=(180, 205, 195),
            **_PAP,
        ),
        "NILM": _NILM,
        "Dyskeratotic": CellProfile(
            cell_radius=0.27,
            nc_ratio=0.30,
            darkness=0.95,
            chromatin=0.10,
            irregularity=0.12,
            cytoplasm_rgb=(240, 140, 90),
            **_PAP,
        ),
        "Koilocytotic": CellProfile(
            cell_radius=0.40,
            nc_ratio=0.24,
            darkness=0.8,
            chromatin=0.2,
            halo=1.6,
            irregularity=0.10,
            cytoplasm_rgb=(160, 200, 190),
            **_PAP,
        ),
        "Metaplastic": CellProfile(
            cell_radius=0.32,
            nc_ratio=0.32,
            darkness=0.55,
            chromatin=0.12,
            irregularity=0.15,
            cytoplasm_rgb=(110, 160, 190),
            **_PAP,
        ),
        "Parabasal": CellProfile(
            cell_radius=0.24,
            nc_ratio=0.45,
            darkness=0.5,
            chromatin=0.08,
            irregularity=0.03,
            cytoplasm_rgb=(100, 170, 185),
            **_PAP,
        ),
        "Superficial-Intermediate": _SUPERFICIAL,
    },
    # Herlev's two-class task. Normal is drawn like the combined set's NILM and Abnormal like its
    # HSIL/ASC-H, so the normal/abnormal notion is shared and cross-set transfer means something.
    "herlev": {
        "Normal": replace(_NILM, nc_ratio=0.14),
        "Abnormal": CellProfile(
            cell_radius=0.30,
            nc_ratio=0.55,
            darkness=0.85,
            chromatin=0.3,
            irregularity=0.15,
            cytoplasm_rgb=(150, 185, 200),
            **_PAP,
        ),
    },
    # Peripheral blood cells (May-Grünwald-Giemsa: pink red cells, purple nuclei).
    "pbc": {
        name: replace(profile, background_rgb=(238, 215, 210), satellites=3)
        for name, profile in {
            "basophil": CellProfile(
                cell_radius=0.24,
                nc_ratio=0.6,
                granules=0.5,
                granule_rgb=(60, 20, 90),
                cytoplasm_rgb=(170, 140, 190),
                nucleus_rgb=(80, 30, 110),
            ),
            "eosinophil": CellProfile(
                cell_radius=0.27,
                nc_ratio=0.35,
                nuclei=2,
                lobe_spread=1.1,
                granules=0.45,
                granule_rgb=(235, 120, 80),
                cytoplasm_rgb=(240, 170, 140),
                nucleus_rgb=(90, 40, 120),
            ),
            "erythroblast": CellProfile(
                cell_radius=0.18,
                nc_ratio=0.7,
                darkness=0.95,
                chromatin=0.3,
                cytoplasm_rgb=(180, 150, 190),
                nucleus_rgb=(50, 20, 80),
            ),
            "ig": CellProfile(
                cell_radius=0.32,
                nc_ratio=0.55,
                darkness=0.55,
                elongation=1.3,
                irregularity=0.12,
                cytoplasm_rgb=(170, 170, 210),
                nucleus_rgb=(100, 60, 140),
            ),
            "lymphocyte": CellProfile(
                cell_radius=0.20,
                nc_ratio=0.82,
                darkness=0.85,
                chromatin=0.2,
                cytoplasm_rgb=(150, 170, 220),
                nucleus_rgb=(70, 30, 120),
            ),
            "monocyte": CellProfile(
                cell_radius=0.34,
                nc_ratio=0.55,
                darkness=0.5,
                irregularity=0.2,
                elongation=1.2,
                cytoplasm_rgb=(175, 175, 205),
                nucleus_rgb=(110, 70, 150),
            ),
            "neutrophil": CellProfile(
                cell_radius=0.28,
                nc_ratio=0.5,
                nuclei=4,
                lobe_spread=1.2,
                darkness=0.8,
                cytoplasm_rgb=(225, 200, 215),
                nucleus_rgb=(90, 40, 130),
            ),
            "platelet": CellProfile(
                cell_radius=0.09,
                nc_ratio=0.0,
                granules=0.6,
                irregularity=0.3,
                granule_rgb=(120, 60, 150),
                cytoplasm_rgb=(185, 150, 205),
            ),
        }.items()
    },
}


def class_names(class_set: str) -> list[str]:
    return list(CLASS_SETS[class_set])


# The source each class of a class set imitates: the combined set's classes come from two datasets, so
# its synthetic imitation has two sources too (the manifest's ``dataset`` column; per-source metrics).
SOURCES = {
    "combined": {
        **dict.fromkeys(["ASC-H", "ASC-US", "SCC", "HSIL", "LSIL", "NILM"], "synthetic CRIC"),
        **dict.fromkeys(
            ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"],
            "synthetic SIPaKMeD",
        ),
    }
}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a random ``cells``×``cells`` grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)).clip(-1, 1)


def _blob(rng, yy, xx, cy, cx, radius, irregularity, elongation, angle):
    """Soft mask (0..1) of a closed shape whose radius wobbles with a few harmonics."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = (dx * c + dy * s) / elongation, -dx * s + dy * c
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    edge = np.ones_like(theta)
    for k in (2, 3, 5):
        edge += irregularity * rng.uniform(0.3, 1.0) / k * 2 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.clip((radius * edge - r) / max(radius * 0.08, 0.6) + 0.5, 0, 1)


def render_cell(profile: CellProfile, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one cell as an ``size``×``size``×3 uint8 RGB array."""
    jit = lambda v, rel: v * float(np.exp(rng.normal(0, rel)))  # noqa: E731  (log-normal jitter)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = size / 2 + rng.normal(0, size * 0.04, 2)
    angle = rng.uniform(0, np.pi)
    cell_r = jit(profile.cell_radius, 0.12) * size
    nuc_r = jit(profile.nc_ratio, 0.15) * cell_r
    elong = jit(profile.elongation, 0.1)

    image = np.empty((size, size, 3), np.float32)
    image[:] = np.asarray(profile.background_rgb, np.float32) + rng.normal(0, 4, 3)
    image += 6 * _smooth_noise(rng, size, 6)[..., None]

    for _ in range(profile.satellites):  # red cells around white cells in blood smears
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.6) * size
        m = _blob(rng, yy, xx, size / 2 + d * np.sin(a), size / 2 + d * np.cos(a), size * 0.13, 0.05, 1.0, 0)
        image = image * (1 - m[..., None]) + m[..., None] * np.array([225, 160, 160], np.float32)

    cyto = _blob(rng, yy, xx, *centre, cell_r, profile.irregularity, elong, angle)
    cyto_rgb = np.asarray(profile.cytoplasm_rgb, np.float32) + rng.normal(0, 10, 3)
    cyto_tex = 1 + 0.06 * _smooth_noise(rng, size, 10)[..., None]
    image = image * (1 - cyto[..., None]) + cyto[..., None] * cyto_rgb * cyto_tex

    if profile.granules > 0:
        dots = (rng.uniform(size=(size, size)) < profile.granules * 0.25).astype(np.float32)
        dots *= cyto > 0.5
        image = image * (1 - 0.7 * dots[..., None]) + 0.7 * dots[..., None] * np.asarray(profile.granule_rgb)

    if nuc_r > 0.5:
        nuc = np.zeros((size, size), np.float32)
        n = max(1, profile.nuclei + int(rng.integers(-1, 2)) * (profile.nuclei > 1))
        phase = rng.uniform(0, 2 * np.pi)
        lobe_r = nuc_r / np.sqrt(n) if n > 1 else nuc_r
        for i in range(n):
            a = phase + 2 * np.pi * i / n
            d = profile.lobe_spread * lobe_r if n > 1 else 0.0
            cy, cx = centre[0] + d * np.sin(a), centre[1] + d * np.cos(a)
            nuc = np.maximum(nuc, _blob(rng, yy, xx, cy, cx, lobe_r, profile.irregularity * 1.5, 1.1, a))
        if profile.halo > 0:
            halo = (
                _blob(
                    rng,
                    yy,
                    xx,
                    *centre,
                    nuc_r * (1 + jit(profile.halo, 0.2)) + profile.lobe_spread * lobe_r,
                    0.15,
                    1.0,
                    angle,
                )
                * cyto
            )
            image = image * (1 - 0.75 * halo[..., None]) + 0.75 * halo[..., None] * np.array([245, 243, 240])
        dark = np.clip(jit(profile.darkness, 0.12), 0, 1)
        chrom = 1 + profile.chromatin * _smooth_noise(rng, size, max(4, size // 4))[..., None]
        nuc_rgb = np.asarray(profile.nucleus_rgb, np.float32) * (1.4 - 0.8 * dark) * chrom
        image = image * (1 - nuc[..., None]) + nuc[..., None] * nuc_rgb

    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_synthetic_dataset(
    root: str | os.PathLike, class_set: str = "combined", per_class: int = 40, image_size: int = 64, seed: int = 0
) -> list[Path]:
    """Write ``per_class`` PNG images per class into ``root/<class>/``; return the paths.

    Deterministic: the same arguments give byte-identical files.
    """
    if class_set not in CLASS_SETS:
        raise ValueError(f"unknown synthetic class set {class_set!r}; choose from {sorted(CLASS_SETS)}")
    root = Path(root)
    paths = []
    for label, (name, profile) in enumerate(CLASS_SETS[class_set].items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, label, index])
            path = folder / f"{name}_{index:04d}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(render_cell(profile, image_size, rng)).save(tmp, format="PNG")
            paths.append(path)
    (root / "SYNTHETIC.txt").write_text(
        f"SYNTHETIC DATA generated by cvm_cervix (class set {class_set!r}, seed {seed}, "
        f"{per_class} per class, {image_size} px). These are not real cells.\n"
    )
    return paths
