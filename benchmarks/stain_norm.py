"""What stain normalisation costs: the normalize step's fit and its mapping per image, Macenko and Reinhard,
at the default's 32 px and the paper's 224 px, on real cells.

The images are decoded and resized as the cache step does; the reference is fitted on at most
``REFERENCE_IMAGES`` of them as the normalize step fits it; each image is then mapped with ``threads``
threads. Once per dataset in the workflow (the mapped cache); per image again wherever a run reads raw
images (evaluate's and robustness's splits, predict), which is the figure a lab pays per cell.

    .venv/bin/python benchmarks/stain_norm.py IMAGE_FOLDER [--images 400] [--sizes 32 224] [--threads 1 2]

IMAGE_FOLDER is any folder of cell images (e.g. ../shared/data/cric). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from cvm_cervix.data import load_image  # noqa: E402
from cvm_cervix.stain_norm import METHODS, REFERENCE_IMAGES, fit_reference, normalize_images  # noqa: E402

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in EXTENSIONS)[: args.images]
    print(f"{len(files)} images of {args.folder}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| method | size | fit on | fit s | threads | ms per image | mapped |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        images = np.stack([load_image(f, size) for f in files])
        for method in METHODS:
            start = time.perf_counter()
            reference = fit_reference(images[:REFERENCE_IMAGES], method)
            fit = time.perf_counter() - start
            for threads in args.threads:
                start = time.perf_counter()
                _, mapped = normalize_images(images, reference, threads)
                ms = 1000 * (time.perf_counter() - start) / len(images)
                fitted, share = min(len(images), REFERENCE_IMAGES), f"{mapped.sum()}/{len(images)}"
                print(f"| {method} | {size} | {fitted} | {fit:.2f} | {threads} | {ms:.2f} | {share} |")


if __name__ == "__main__":
    main()
