import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def write_image(path: Path, seed: int = 0, size=(24, 24), fmt=None) -> Path:
    """A small random RGB image; ``seed`` makes distinct files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


@pytest.fixture
def imagefolder(tmp_path):
    """<class>/<image>.png with 3 classes of 10 images each."""
    root = tmp_path / "folder"
    for c, cls in enumerate(["alpha", "beta", "gamma"]):
        for i in range(10):
            write_image(root / cls / f"{cls}_{i}.png", seed=100 * c + i)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A prepared and cached synthetic dataset (11 classes, 6 per class, 32 px)."""
    from cvm_cervix.data import build_cache, make_synthetic_dataset, prepare_dataset, read_manifest

    base = tmp_path_factory.mktemp("tiny")
    make_synthetic_dataset(base / "images", "combined", per_class=6, image_size=32, seed=0)
    out = base / "data"
    prepare_dataset("tiny", {"kind": "synthetic", "classes": "combined"}, out, root=base / "images")
    build_cache(read_manifest(out / "manifest.csv")["path"].tolist(), 32, out / "cache_32.npy")
    return out
